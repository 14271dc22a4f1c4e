"""The Ansible roles: lint-clean (production profile), documented key for key, and converged for real."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import debian_venv, free_port, play_recap
from indexserver import IndexServer
from sshd import SshHost, start_ssh_host

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "defaults" / "main.yml").exists())


def test_ansible_lint_production_profile_passes() -> None:
    proc = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(ROOT), "ANSIBLE_LOCAL_TEMP": "/tmp"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_list_the_same_keys(role: str) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    assert sorted(defaults) == sorted(specs["argument_specs"]["main"]["options"])
    assert [key for key in defaults if not key.startswith(f"{role}_")] == []


# The converge: every "host" is an sshd on a loopback address of this machine, admitting root
# (for Ansible) and the host's build user (for the controller); paths and users differ per host.
ADDRESSES = {"master": "127.0.0.6", "b1": "127.0.0.7", "b2": "127.0.0.8", "b3": "127.0.0.9"}


@dataclass
class Site:
    root: Path
    hosts: dict[str, SshHost]
    inventory: Path
    index: IndexServer

    def playbook(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
        }
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=1200,
        )

    def controller(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(self.root / "opt" / "venv" / "bin" / "piwheels-ctl"),
                "--config",
                str(self.root / "etc" / "piwheels.toml"),
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )


def _inventory(root: Path, hosts: dict[str, SshHost], upstream: str, http_port: int) -> Path:
    common = {
        "ansible_user": "root",
        "ansible_become_method": "su",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }
    master_home = hosts["master"].home
    controller = f"{root}/opt/venv/bin/piwheels-ctl --config {root}/etc/piwheels.toml"
    builders = {
        name: {
            "ansible_host": host.address,
            "ansible_port": host.port,
            "ansible_ssh_private_key_file": str(host.key_file),
            "builder_user": host.user,
            "builder_home": str(host.home),
            "builder_build_deps": [],
            "builder_host_key_file": str(host.folder / "host_key.pub"),
            "builder_slots": 1,  # so that two jobs need two builders
            "builder_controller": controller,
            "builder_controller_key": f"{master_home}/.ssh/id_ed25519",
            "builder_controller_user": hosts["master"].user,
        }
        for name, host in hosts.items()
        if name != "master"
    }
    master = hosts["master"]
    inventory = {
        "all": {
            "vars": common,
            "children": {
                "master": {
                    "hosts": {
                        "master1": {
                            "ansible_host": master.address,
                            "ansible_port": master.port,
                            "ansible_ssh_private_key_file": str(master.key_file),
                            "master_user": master.user,
                            "master_home": str(master_home),
                            "master_source": str(ROOT),
                            "master_prefix": f"{root}/opt",
                            "master_config": f"{root}/etc/piwheels.toml",
                            "master_data_dir": f"{root}/data",
                            "master_database": "sqlite",
                            "master_upstream": upstream,
                            "master_manage_services": False,
                            "master_http_port": http_port,
                            "master_nginx_site": f"{root}/nginx/piwheels.conf",
                            "master_nginx_remove_default_site": False,
                        }
                    }
                },
                "builders": {"hosts": builders},
            },
        }
    }
    path = root / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


@pytest.fixture(scope="module")
def site(fixture_sdists: dict[str, Path], build_deps: Path) -> Iterator[Site]:
    root = Path(tempfile.mkdtemp(prefix="piwheels-site-"))
    root.chmod(0o755)
    (root / "nginx").mkdir()
    upstream = root / "upstream"
    upstream.mkdir()
    shutil.copy(fixture_sdists["pure-ok"], upstream)
    shutil.copy(fixture_sdists["c-ext"], upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    users = {"master": "pwmaster", "b1": "pwbuild1", "b2": "pwbuild2", "b3": "pwbuild3"}
    hosts = {name: start_ssh_host(root, ADDRESSES[name], users[name], admit_root=True) for name in ADDRESSES}
    try:
        with IndexServer(upstream) as index:
            yield Site(root, hosts, _inventory(root, hosts, index.url, free_port()), index)
    finally:
        for host in hosts.values():
            host.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_site_converges_idempotently_builds_on_the_builders_and_serves_with_nginx(
    site: Site, tmp_path: Path
) -> None:
    first = site.playbook("playbooks/site.yml", "--limit", "master1,b1,b2")
    assert first.returncode == 0, first.stdout[-5000:]
    second = site.playbook("playbooks/site.yml", "--limit", "master1,b1,b2")
    assert second.returncode == 0, second.stdout[-5000:]
    recap = play_recap(second.stdout)
    assert set(recap) == {"master1", "b1", "b2"}
    assert all(counts["changed"] == 0 for counts in recap.values()), second.stdout[-5000:]
    listing = json.loads(site.controller("builders", "list", "--json").stdout)
    assert sorted(b["name"] for b in listing) == ["b1", "b2"]
    # A third builder joins with --limit; the others are not touched.
    third = site.playbook("playbooks/site.yml", "--limit", "master1,b3")
    assert third.returncode == 0, third.stdout[-5000:]
    assert "b1" not in play_recap(third.stdout) and "b2" not in play_recap(third.stdout)
    listing = json.loads(site.controller("builders", "list", "--json").stdout)
    assert sorted(b["name"] for b in listing) == ["b1", "b2", "b3"]
    # The controller on that master builds on the builders; nginx, as the role set it up, serves.
    assert site.controller("add", "pure-ok", "c-ext").returncode == 0
    run = site.controller("run")
    assert "built 2, failed 0" in run.stdout, run.stdout + run.stderr
    db = sqlite3.connect(site.root / "data" / "piwheels.db")
    try:
        query = "SELECT b.name FROM builds JOIN builders b ON b.id = builder_id"
        used = {name for (name,) in db.execute(query)}
    finally:
        db.close()
    assert len(used) == 2, used
    assert site.controller("publish").returncode == 0
    port = yaml.safe_load(site.inventory.read_text())["all"]["children"]["master"]["hosts"]["master1"][
        "master_http_port"
    ]
    conf = site.root / "nginx" / "nginx.conf"
    conf.write_text(
        f"pid {site.root}/nginx/nginx.pid;\nerror_log {site.root}/nginx/error.log;\nevents {{}}\n"
        f"http {{\n include /etc/nginx/mime.types;\n access_log {site.root}/nginx/access.log;\n"
        f" include {site.root}/nginx/piwheels.conf;\n}}\n"
    )
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"])
    try:
        url = f"http://127.0.0.1:{port}/simple/"
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "pure-ok/", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline and nginx.poll() is None, "nginx did not serve"
                time.sleep(0.2)
        request = urllib.request.Request(
            url + "pure-ok/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"] == "application/vnd.pypi.simple.v1+json"
            assert json.load(response)["name"] == "pure-ok"
        _check_pages(f"http://127.0.0.1:{port}", site.root / "data" / "logs")
        venv = tmp_path / "venv"
        debian_venv(venv)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--index-url", url, "pure-ok", "c-ext"],
            check=True,
            capture_output=True,
            env={**os.environ, "PIP_CONFIG_FILE": "/dev/null"},
        )
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import c_ext; assert c_ext.add(1, 1) == 2"], check=True
        )
    finally:
        nginx.terminate()
        nginx.wait(timeout=30)


def _check_pages(base: str, logs: Path) -> None:
    """The project page, its JSON and a build log, as the role's nginx serves them."""
    with urllib.request.urlopen(f"{base}/project/pure-ok/", timeout=5) as response:
        kind = response.headers["Content-Type"]
        page = response.read().decode()
    assert kind.split(";")[0] == "text/html", f"/project/pure-ok/ came back as {kind!r}"
    assert response.headers["X-Content-Type-Options"] == "nosniff", dict(response.headers)
    assert "pure-ok" in page and "<table" in page, page[:2000]
    with urllib.request.urlopen(f"{base}/project/pure-ok/json", timeout=5) as response:
        kind = response.headers["Content-Type"]
        data = json.load(response)
    assert kind == "application/json", f"/project/pure-ok/json came back as {kind!r}"
    assert data["name"] == "pure-ok", data
    cells = [cell for release in data["releases"] for cell in release["cells"].values()]
    built = [cell for cell in cells if cell["state"] == "built"]
    assert built and all(cell["log"] for cell in built), cells
    path = built[0]["log"]
    stored = gzip.decompress((logs / path.removeprefix("logs/")).with_suffix(".log.gz").read_bytes())
    assert stored, f"the stored log of {path} is empty"
    request = urllib.request.Request(f"{base}/{path}", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        headers = dict(response.headers)
        body = response.read()
    assert headers.get("Content-Encoding") == "gzip", f"/{path} with gzip accepted: {headers}"
    assert headers["Content-Type"] == "text/plain; charset=utf-8", headers
    assert headers["X-Content-Type-Options"] == "nosniff", headers  # a log is never sniffed as HTML
    assert gzip.decompress(body) == stored
    request = urllib.request.Request(f"{base}/{path}", headers={"Accept-Encoding": "identity"})
    with urllib.request.urlopen(request, timeout=5) as response:
        headers = dict(response.headers)
        body = response.read()
    assert headers.get("Content-Encoding") is None, f"/{path} without gzip: {headers}"
    assert body == stored, body[:500]


def test_unsupported_release_stops_in_preflight_naming_host_and_variable(site: Site) -> None:
    proc = site.playbook(
        "playbooks/builders.yml",
        "--limit",
        "b1",
        "-e",
        "builder_release=wheezy",
        "-e",
        "builder_register=false",
    )
    assert proc.returncode != 0
    assert "b1: release" in proc.stdout and "wheezy" in proc.stdout and "builder_release" in proc.stdout


def test_missing_master_stops_in_preflight(site: Site) -> None:
    proc = site.playbook("playbooks/builders.yml", "--limit", "b1", "-e", "builder_master=nowhere")
    assert proc.returncode != 0
    assert "b1: builder_master must name a host of the inventory" in proc.stdout
