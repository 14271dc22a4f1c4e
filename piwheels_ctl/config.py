"""Settings: a TOML file (``--config`` or ``PIWHEELS_CONFIG``) overridden by ``PIWHEELS_*`` variables
(a Debian mirror of "auto" read from this machine's apt sources)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .abi import parse_glibc
from .agent import netpolicy
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older controllers only
    import tomli as tomllib

ENV_PREFIX = "PIWHEELS_"
PYPI = "pypi"  # the upstream named, not spelled out: PyPI's simple index
# Variables of ours that are not settings: where the config file is.
ENV_NOT_SETTINGS = frozenset({"PIWHEELS_CONFIG"})
# Where this machine's apt sources are: debian_mirror/debian_suite "auto" follow them.
APT_DIR = Path("/etc/apt")


class Settings(BaseModel):
    """Every setting of the controller, validated; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(default=Path("piwheels-data"))
    database_url: str | None = None
    upstream: str = PYPI  # or any PEP 691/503 index URL, or a folder of sdists
    build_index_url: str | None = None
    find_links: list[str] = Field(default_factory=list)
    # More hosts a build may reach through its proxy, beyond the build index, find-links and the
    # sdist's host: "host[:port]" (reached wherever it is), "*.domain" or "*" (public addresses only).
    build_network_allow: list[str] = Field(default_factory=list)
    pythons: list[str] = Field(default_factory=lambda: [sys.executable])
    slots: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    build_timeout: float = Field(default=3600.0, gt=0)
    build_memory_mb: int = Field(default=4096, ge=0)
    log_max_kb: int = Field(default=1024, ge=1)
    build_max_procs: int = Field(default=1024, ge=16)
    sandbox: Literal["auto", "bwrap", "user"] = "auto"
    ccache: bool = True
    ccache_dir: Path | None = None
    ccache_max_size: str = Field(default="5G", pattern=r"^\d+(\.\d+)?[kMGT]?i?$")
    # The farm's shared compiler cache (ccache remote storage, the master role's nginx), e.g.
    # "http://master:8081/ccache/SECRET/": each builder's probe decides whether it can use it.
    ccache_remote_url: str | None = None
    # What one build may write to it (its agent refuses the rest): far above an honest build's.
    ccache_remote_build_mb: int = Field(default=1024, ge=1)
    ccache_remote_build_objects: int = Field(default=20000, ge=1)
    # "auto": uv for the Pythons it supports (3.8+), the pinned pip elsewhere; "pip": pip always.
    frontend: Literal["auto", "pip"] = "auto"
    # Each project's cache of build requirements' wheels (uv's or pip's cache), all projects'
    # together pruned to this size (least recently used first); 0: no cache.
    deps_cache_mb: int = Field(default=2048, ge=0)
    http_timeout: float = Field(default=30.0, gt=0)
    upstream_redirect_hosts: list[str] = Field(default_factory=list)  # hosts the upstream may redirect to
    local_builder: bool = True
    min_free_mb: int = Field(default=500, ge=0)
    connect_timeout: float = Field(default=10.0, gt=0)
    command_timeout: float = Field(default=120.0, gt=0)
    sync_interval: float = Field(default=600.0, gt=0)
    sync_workers: int = Field(default=8, ge=1, le=64)  # project pages a sync fetches at once
    publish_workers: int = Field(default=0, ge=0, le=64)  # processes of `publish --full`; 0: one per CPU
    # A project deleted upstream: "keep" its published wheels listed, or "withdraw" them from
    # the index (its rows and wheel files stay, and come back should the project).
    upstream_deleted: Literal["keep", "withdraw"] = "keep"
    public_url: str | None = None  # where people reach the site; shown in install instructions
    # The Debian mirror whose Contents index names the packages that fix a failure: "auto" is
    # what this machine's apt sources use, "" no hints.
    debian_mirror: str = "auto"
    debian_suite: str = "auto"  # the builders' release ("auto": the apt sources' suite)
    contents_max_days: float = Field(default=7.0, gt=0)  # how old the cached index may get
    builder_fault_limit: int = Field(default=3, ge=1)  # hand-backs of one job before builder-fault
    # The share of the published wheels `audit --fix` may quarantine or forget without --force
    # (10 wheels it always may): more looks like a damaged database or a missing disk, not strays.
    audit_fix_max_share: float = Field(default=0.1, ge=0, le=1)
    # Wheels the upstream already publishes for a target are not built; with this on, they are
    # fetched, verified and published in our index (so it alone installs everything).
    mirror_upstream: bool = True
    mirror_max_mb: int = Field(default=1024, ge=1)  # the largest upstream wheel fetched
    mirror_timeout: float = Field(default=600.0, gt=0)  # seconds for one wheel, as a whole
    # The oldest glibc of the builders (and the Pis the index serves), e.g. "2.31": upstream
    # manylinux wheels that need no newer one count as built. "" (not known): they do not.
    manylinux_glibc: str = Field(default="", pattern=r"^(\d+\.\d+)?$")

    @field_validator("upstream", "build_index_url")
    @classmethod
    def _index_location(cls, value: str | None) -> str | None:
        if value is None or value == PYPI:
            return value
        if value.startswith(("http://", "https://")):
            return value if value.endswith("/") else value + "/"
        path = Path(value.removeprefix("file://")).expanduser()
        return str(path.resolve())

    @field_validator("ccache_remote_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        if value is None or (value.startswith("http://") and len(value) > len("http://")):
            return value or None
        raise ValueError("an http:// URL (ccache speaks no HTTPS)")

    @field_validator("debian_mirror")
    @classmethod
    def _mirror_url(cls, value: str) -> str:
        if value in ("", "auto") or value.startswith(("http://", "https://")):
            return value
        raise ValueError("an http(s) URL of a Debian mirror, 'auto' (the apt sources') or '' (no hints)")

    @field_validator("build_network_allow")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for entry in value:
            netpolicy.parse_host(entry)  # its ValueError names the entry and what is wrong
        return value

    @field_validator("pythons")
    @classmethod
    def _some_python(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one interpreter is needed")
        return value

    @property
    def database(self) -> str:
        """The SQLAlchemy URL of the database: SQLite in the data folder unless configured."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'piwheels.db'}"

    @property
    def upstream_url(self) -> str:
        """The upstream index URL (or folder); "pypi" stands for PyPI's simple index."""
        if self.upstream == PYPI:
            from pypi_simple import PYPI_SIMPLE_ENDPOINT  # a heavy import: only when needed

            return PYPI_SIMPLE_ENDPOINT
        return self.upstream

    @property
    def upstream_is_local(self) -> bool:
        """True when the upstream is a folder of sdists rather than an index URL."""
        return not self.upstream_url.startswith(("http://", "https://"))

    @property
    def debian_source(self) -> tuple[str, str] | None:
        """(mirror URL, suite) of the Contents index for hints, or None: no hints."""
        return self.debian_source_for(None)

    def debian_source_for(self, builders_suite: str | None) -> tuple[str, str] | None:
        """``debian_source`` where the builders said which release they run: ``debian_suite``
        set overrides it, "auto" takes it before the apt sources' suite."""
        if not self.debian_mirror:
            return None
        suite = self.debian_suite
        if suite == "auto" and builders_suite:
            suite = builders_suite
        apt = apt_mirror() if "auto" in (self.debian_mirror, suite) else None
        mirror = apt[0] if self.debian_mirror == "auto" and apt else self.debian_mirror
        suite = apt[1] if suite == "auto" and apt else suite
        if "auto" in (mirror, suite):
            return None  # asked to follow apt sources that name no Debian mirror
        return mirror, suite

    @property
    def glibc(self) -> tuple[int, int] | None:
        """``manylinux_glibc`` as (major, minor); None when not known."""
        return parse_glibc(self.manylinux_glibc)

    @property
    def contents_dir(self) -> Path:
        return self.data_dir / "contents"

    @property
    def www_dir(self) -> Path:
        return self.data_dir / "www"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def work_dir(self) -> Path:
        return self.data_dir / "work"

    @property
    def ccache_path(self) -> Path:
        return self.ccache_dir or self.data_dir / "ccache"

    @property
    def deps_cache_path(self) -> Path:
        return self.data_dir / "deps-cache"


def _env_value(key: str, raw: str) -> Any:
    """Turn an environment string into what the field expects (lists are comma separated)."""
    if key in ("find_links", "pythons", "upstream_redirect_hosts", "build_network_allow"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (if any), apply ``PIWHEELS_*`` overrides and validate the result."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is None and env.get("PIWHEELS_CONFIG"):
        path = Path(env["PIWHEELS_CONFIG"])
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as f:
                values.update(tomllib.load(f))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in Settings.model_fields:
            raise ConfigError(f"{name}: unknown setting (environment)")
        values[key] = _env_value(key, raw)
    try:
        return Settings(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        where = f"PIWHEELS_{key.upper()}" if f"PIWHEELS_{key.upper()}" in env else f"{source}: {key}"
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{where}: unknown setting") from None
        raise ConfigError(f"{where}: {error['msg']} (got {error.get('input')!r})") from None


# "auto" for debian_mirror or debian_suite: the mirror and suite this machine's apt sources name.
def _sources_entries(apt_dir: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """(URI, suites, components) of every "deb" entry of the apt sources, in apt's order."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]], words[3:]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def apt_mirror(apt_dir: Path = APT_DIR) -> tuple[str, str] | None:
    """The mirror URL and release suite this machine's apt sources use for ``main``, or None.

    A release's own suite (``bookworm``) is preferred to its updates and security suites.
    """
    found: list[tuple[str, str]] = []
    for uri, suites, components in _sources_entries(apt_dir):
        if "main" in components and uri.startswith(("http://", "https://")):
            found += [(uri.rstrip("/") + "/", suite) for suite in suites if suite]
    plain = [entry for entry in found if "-" not in entry[1] and "/" not in entry[1]]
    choices = plain or found
    return choices[0] if choices else None
