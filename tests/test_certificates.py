"""One trust store for the controller and every build: ``SSL_CERT_FILE``, else the system's.
An HTTPS index with a CA of its own, trusted only through that file, as behind a proxy that
inspects TLS; real requests, real pip and uv builds in the sandbox."""

from __future__ import annotations

import hashlib
import shutil
import ssl
from pathlib import Path

import certifi
import pytest

from piwheels_ctl.agent import buildstep
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.errors import UpstreamError
from piwheels_ctl.farm import frontend
from piwheels_ctl.farm.probing import last_lines
from piwheels_ctl.upstream.fetcher import Fetcher

from indexserver import IndexServer
from tlsca import make_ca

HOST = "127.0.1.60"
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA of its own and a server context with a certificate it signed for HOST."""
    return make_ca(tmp_path_factory.mktemp("tls"), HOST)


@pytest.fixture
def store_is(monkeypatch: pytest.MonkeyPatch) -> object:
    """Point SSL_CERT_FILE at a file; the other variables at certifi's bundle, which must not win."""

    def set_store(path: Path | str) -> None:
        monkeypatch.setenv("SSL_CERT_FILE", str(path))
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "PIP_CERT"):
            monkeypatch.setenv(name, certifi.where())

    return set_store


def test_the_controller_trusts_the_store_and_names_a_tls_failure(
    tls: tuple[Path, ssl.SSLContext], build_deps: Path, store_is: object, tmp_path: Path
) -> None:
    ca, context = tls
    with IndexServer(build_deps, host=HOST, tls=context) as index:
        store_is(ca)  # type: ignore[operator]
        fetcher = Fetcher(index.url)
        with fetcher.get(index.url, {}, seconds=60, limit=10**6) as answer:
            assert answer.status == 200, answer.status
        fetcher.close()
        store_is(certifi.where())  # type: ignore[operator] # a store without the proxy's CA
        fetcher = Fetcher(index.url)
        with pytest.raises(UpstreamError) as failed, fetcher.get(index.url, {}, seconds=60, limit=10**6):
            pass
        fetcher.close()
    message = str(failed.value)
    assert f"TLS failure with {HOST}" in message and certifi.where() in message, message
    assert "did not answer" not in message, message


@pytest.mark.build
@pytest.mark.parametrize("front", ["uv", "pip"])
def test_builds_trust_the_store_whatever_pip_would_trust(
    front: str,
    tls: tuple[Path, ssl.SSLContext],
    fixture_sdists: dict[str, Path],
    build_deps: Path,
    store_is: object,
    tmp_path: Path,
) -> None:
    pattern = f"uv-{frontend.UV_VERSION}-*_x86_64.whl" if front == "uv" else f"pip-{frontend.NEWEST}-*.whl"
    found = sorted(build_deps.glob(pattern))
    if not found:
        pytest.skip(f"no {pattern} for this machine")
    wheel = tmp_path / "frontends" / found[0].name
    wheel.parent.mkdir()
    shutil.copyfile(found[0], wheel)
    sdist = fixture_sdists["c-ext"]
    ca, context = tls
    store_is(ca)  # type: ignore[operator]
    log = tmp_path / "build.log"

    def build(index_url: str) -> dict[str, object]:
        return buildstep.build(request(
            PYTHON, "c-ext", "1.0", str(tmp_path / "outbox"), str(log), str(tmp_path / "work"),
            index_url=index_url, sdist_url=sdist.as_uri(), frontend=str(wheel),
            sdist_sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(),
        ))  # fmt: skip

    with IndexServer(build_deps, host=HOST, tls=context) as index:
        result = build(index.url)
        assert result["status"] == "success", log.read_text()[-3000:]
        # A store without the proxy's CA: the farm's index not trusted is the builder's fault,
        # said as a TLS failure, never the project's unresolved build requirement.
        store_is(certifi.where())  # type: ignore[operator]
        shutil.rmtree(tmp_path / "outbox")
        result = build(index.url)
    assert result["status"] == "error", (result, log.read_text()[-3000:])
    error = str(result["error"])
    assert f"TLS failure with {HOST}" in error and certifi.where() in error, (error, log.read_text()[-3000:])


def test_a_refusal_keeps_its_first_words() -> None:
    log = (
        "$ uv build ...\n"
        + "x" * 3000
        + "\nERROR: Could not find a version that satisfies the requirement setuptools\n"
    )
    said = last_lines(log[-600:], 600, cut=True)
    assert said.startswith("ERROR: Could not find a version"), said
    long = "ERROR: Could not find a version that satisfies the requirement " + "y" * 2000
    said = last_lines(long, 300)
    assert said.startswith("ERROR: Could not find") and len(said) <= 303, said
