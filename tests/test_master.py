"""The master as an operator gets it: ``playbooks/site.yml`` on a Debian bookworm machine whose PID 1
is systemd (``systemd-nspawn --boot``), reached over SSH; PostgreSQL, the controller's unit and
nginx started by the role; an upgrade from an older commit of this repository with its data.

The tests of this module run in order on one machine, each going on from the state the one
before left: an old farm, a failed upgrade, the upgrade, a new builder, a stop mid-build, the
backups, pip installing from nginx.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from debian_roots import bullseye_pip_root, pip_install_in_root
from helpers import debian_venv, free_port, play_recap
from indexserver import IndexServer
from nspawn import Machine, make_machine, why_no_boot
from sshd import SshHost, start_ssh_host

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The commit before the latest security work: migrations 0001 and 0002 only.
OLD_COMMIT = "0f4a855"
OLD_HEAD_SCHEMA = "0002"
# This checkout's newest migration, which the upgrade must reach.
HEAD_SCHEMA = max(
    p.name[:4] for p in (ROOT / "piwheels_ctl" / "db" / "migrations" / "versions").glob("0*.py")
)
CTL = "/opt/piwheels/venv/bin/piwheels-ctl --config /etc/piwheels/piwheels.toml"
MASTER_ADDRESS = "127.0.1.10"
BUILDER_ADDRESSES = {"b1": "127.0.1.11", "b2": "127.0.1.12"}
FRESH_DEBIAN_LACKS = "python3-packaging sudo"
DB_PASSWORD = "s3cret 'quoted' /slash"
CCACHE_SECRET = "c4che-s3cret"

pytestmark = [
    pytest.mark.master,
    pytest.mark.timeout(1800),  # the first makes the root (debootstrap) and installs the master
    pytest.mark.skipif(why_no_boot() is not None, reason=f"no booted container: {why_no_boot()}"),
]


@dataclass
class Farm:
    root: Path
    machine: Machine
    builders: dict[str, SshHost]
    inventory: Path
    old_checkout: Path
    http_port: int
    https_port: int
    ca_file: Path
    ccache_port: int

    def playbook(self, checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(checkout / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-tmp"),
            "ANSIBLE_VAULT_PASSWORD_FILE": str(self.root / "vault-password"),
        }
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory), *args],
            cwd=checkout, env=env, capture_output=True, text=True, check=False, timeout=1800,
        )  # fmt: skip

    def ctl(self, args: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The controller's CLI on the master, as the controller's user."""
        return self.machine.sh(f"runuser -u piwheels-master -- {CTL} {args}", check=check)

    def status(self) -> dict[str, int]:
        """Builds by state, and the queue's length as "pending"."""
        info = json.loads(self.ctl("status --json").stdout)
        return {**info["builds"], "pending": info["pending"]}

    def idle(self) -> bool:
        status = self.status()
        return status["pending"] == 0 and status["building"] == 0

    def wait(self, what: str, predicate: object, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                journal = self.machine.sh("journalctl -u piwheels-ctl --no-pager -n 60", check=False).stdout
                pytest.fail(f"{what} did not happen within {timeout}s:\n{journal}")
            time.sleep(0.5)

    def sql(self, query: str) -> str:
        return self.machine.sh(
            f"runuser -u piwheels-master -- psql -d piwheels -tAc {_quote(query)}"
        ).stdout.strip()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _task_stdouts(output: str) -> list[str]:
    """The standard output of every command task in ``ansible-playbook -v`` output."""
    outs = []
    for line in output.splitlines():
        _, arrow, result = line.partition("] => {")
        if arrow and line.startswith(("ok: [", "changed: [")):
            with contextlib.suppress(json.JSONDecodeError):
                outs.append(str(json.loads("{" + result).get("stdout", "")))
    return outs


def _vault(root: Path, secret: str) -> str:
    """``secret`` encrypted with ansible-vault, as an operator keeps the database password."""
    (root / "vault-password").write_text("test vault password\n")
    proc = subprocess.run(
        [str(BIN / "ansible-vault"), "encrypt_string", "--vault-password-file", str(root / "vault-password"),
         "--stdin-name", "master_db_password"],
        input=secret, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout


def _tls_files(root: Path, machine: Machine) -> Path:
    """A self-signed certificate for localhost, installed where the role is told it is."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(root / "tls.key"), "-out", str(root / "tls.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.copy(root / "tls.pem", machine.root / "etc" / "ssl" / "certs" / "piwheels.pem")
    key = machine.root / "etc" / "ssl" / "private" / "piwheels.key"
    key.parent.mkdir(exist_ok=True)
    shutil.copy(root / "tls.key", key)
    key.chmod(0o600)
    return root / "tls.pem"


@pytest.fixture(scope="module")
def farm(fixture_sdists: dict[str, Path], build_deps: Path) -> Iterator[Farm]:
    root = Path(tempfile.mkdtemp(prefix="piwheels-master-"))
    root.chmod(0o755)
    old = root / "old-checkout"
    clone = subprocess.run(
        ["git", "clone", "-q", "--no-checkout", str(ROOT), str(old)], capture_output=True, text=True
    )
    checkout = subprocess.run(
        ["git", "-C", str(old), "checkout", "-q", OLD_COMMIT], capture_output=True, text=True
    )
    if clone.returncode or checkout.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"commit {OLD_COMMIT} of this repository is needed (not a shallow clone):\n"
                    f"{clone.stderr}{checkout.stderr}", pytrace=False)  # fmt: skip
    upstream = root / "upstream"
    upstream.mkdir()
    for name in ("pure-ok", "c-ext", "slow-ok", "abi3-ext", "fails-header"):
        shutil.copy(fixture_sdists[name], upstream)
    for wheel in build_deps.glob("*.whl"):
        shutil.copy(wheel, upstream)
    (root / "machine").mkdir()
    machine = make_machine(root / "machine", "piwmaster", MASTER_ADDRESS)
    builders: dict[str, SshHost] = {}
    try:
        ca_file = _tls_files(root, machine)
        try:
            machine.boot()
        except RuntimeError as exc:
            # The prerequisites are there (why_no_boot): a machine that does not boot is a fault
            # to see, not to skip. Once seen here: a root folder of mode 0700 (see nspawn.py).
            pytest.fail(f"the bookworm machine did not boot (systemd-nspawn): {exc}"[:4000], pytrace=False)
        for name, address in BUILDER_ADDRESSES.items():
            builders[name] = start_ssh_host(root, address, f"pwm{name}", admit_root=True)
        with IndexServer(upstream) as index:
            http_port, https_port, ccache_port = free_port(), free_port(), free_port()
            inventory = root / "inventory.yml"
            ssh_args = "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=" + str(root / "known_hosts")
            known = machine.known_hosts.read_text()
            for host in builders.values():
                known += f"[{host.address}]:{host.port} {host.host_key}\n"
            (root / "known_hosts").write_text(known)
            hosts_vars = {
                "master1": {
                    "ansible_host": machine.address,
                    "ansible_port": machine.port,
                    "ansible_ssh_private_key_file": str(machine.key_file),
                    "master_upstream": index.url,
                    "master_sync_interval": 5,
                    "master_build_timeout": 600,
                    "master_http_port": http_port,
                    "master_https_port": https_port,
                }
            }
            builder_vars = {
                name: {
                    "ansible_host": host.address,
                    "ansible_port": host.port,
                    "ansible_ssh_private_key_file": str(host.key_file),
                    "builder_user": host.user,
                    "builder_home": str(host.home),
                    "builder_build_deps": [],
                    "builder_host_key_file": str(host.folder / "host_key.pub"),
                    "builder_slots": 1,
                    # The old builder role registers as root, whom PostgreSQL does not know.
                    "builder_controller": f"runuser -u piwheels-master -- {CTL}",
                }
                for name, host in builders.items()
            }
            inventory.write_text(yaml.safe_dump({"all": {
                "vars": {"ansible_user": "root", "ansible_python_interpreter": "/usr/bin/python3",
                         "ansible_ssh_common_args": ssh_args},
                "children": {"master": {"hosts": hosts_vars}, "builders": {"hosts": builder_vars}},
            }}))  # fmt: skip
            # The settings of the new role, given only to the new playbook (an operator's group_vars).
            new_vars = root / "new-settings.yml"
            new_vars.write_text(
                "master_db_host: localhost\n"
                + _vault(root, DB_PASSWORD)
                + "master_tls: true\nmaster_nginx_server_name: localhost 127.0.0.1\n"
                + "master_backup_keep: 2\nmaster_build_log_days: 1\nmaster_nginx_log_days: 3\n"
                # The new builder role registers as the controller's user itself: no runuser.
                + f"builder_controller: {CTL}\n"
                # The shared compiler cache, for the builders on this machine's loopback addresses.
                + f"master_ccache: true\nmaster_ccache_port: {ccache_port}\n"
                + f"master_ccache_allow: [127.0.0.0/8]\nmaster_ccache_secret: {CCACHE_SECRET}\n"
            )
            yield Farm(root, machine, builders, inventory, old, http_port, https_port, ca_file, ccache_port)
    finally:
        machine.stop()
        for host in builders.values():
            host.stop()
        shutil.rmtree(root, ignore_errors=True)


def _new(farm: Farm, *args: str) -> subprocess.CompletedProcess[str]:
    return farm.playbook(ROOT, "playbooks/site.yml", "-e", f"@{farm.root / 'new-settings.yml'}", *args)


def test_an_old_release_farm_builds_under_systemd(farm: Farm) -> None:
    """The farm as commit 0f4a855's playbook set it up: PostgreSQL, the unit, nginx, one builder."""
    # That release needs python3-packaging (its pip task) and sudo (its tasks as postgres) on the
    # master and did not install them: its operator had to. The new release's role installs them
    # (they go again before it runs).
    farm.machine.sh(f"apt-get update -qq && apt-get install -qq -y {FRESH_DEBIAN_LACKS}", timeout=300)
    proc = farm.playbook(farm.old_checkout, "playbooks/site.yml", "--limit", "master1,b1")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert (
        farm.machine.sh("systemctl is-active piwheels-ctl nginx postgresql").stdout.split() == ["active"] * 3
    )
    assert farm.sql("SELECT version_num FROM alembic_version") == OLD_HEAD_SCHEMA
    farm.ctl("add pure-ok c-ext")
    farm.wait("the builds of the old service", lambda: farm.status()["success"] >= 2 and farm.idle())
    farm.wait("c-ext published", lambda: farm.machine.sh(
        "test -f /var/lib/piwheels/www/simple/c-ext/index.html", check=False).returncode == 0)  # fmt: skip


def _published(farm: Farm) -> dict[str, str]:
    listing = farm.machine.sh("cd /var/lib/piwheels/www && find . -type f -exec sha256sum {} +").stdout
    return {path: digest for digest, path in (line.split() for line in listing.splitlines())}


def test_a_failed_migration_leaves_the_old_release_running_and_says_why(farm: Farm) -> None:
    before = farm.machine.sh("systemctl show -P MainPID piwheels-ctl").stdout.strip()
    # What 0004 adds is there already (a DBA's hand): 0003 works, 0004 fails, nothing stays.
    farm.sql("ALTER TABLE projects ADD COLUMN dirty_generation integer")
    # What the old release's operator installed by hand goes: the new role installs it again.
    farm.machine.sh(f"SUDO_FORCE_REMOVE=yes apt-get purge -qq -y {FRESH_DEBIAN_LACKS}", timeout=300)
    proc = _new(farm, "--limit", "master1")
    assert proc.returncode != 0
    assert "failed, nothing was changed and the old release runs on" in proc.stdout, proc.stdout[-5000:]
    assert "dirty_generation" in proc.stdout and "already exists" in proc.stdout, proc.stdout[-5000:]
    assert farm.sql("SELECT version_num FROM alembic_version") == OLD_HEAD_SCHEMA
    assert farm.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'served_files'") == "0"
    assert farm.machine.sh("systemctl is-active piwheels-ctl").stdout.strip() == "active"
    assert farm.machine.sh("systemctl show -P MainPID piwheels-ctl").stdout.strip() != before  # started again
    assert (
        farm.machine.sh("test -d /opt/piwheels/venv -a ! -L /opt/piwheels/venv", check=False).returncode == 0
    )
    assert json.loads(farm.ctl("status --json").stdout)["builds"]["success"] == 2  # the old CLI works
    # ... with its own config: the new release's settings wait beside it until the new one runs.
    assert "ccache_remote_url" not in farm.machine.sh("cat /etc/piwheels/piwheels.toml").stdout
    farm.sql("ALTER TABLE projects DROP COLUMN dirty_generation")


def test_the_playbook_upgrades_the_farm_keeping_everything_and_reruns_unchanged(farm: Farm) -> None:
    # The old release's JSON pages carry "dist-info-metadata" objects, which Debian bookworm's
    # pip crashes on: the first publish of the new release rewrites every page once, no rebuild.
    old_form = farm.machine.sh(
        "grep -l dist-info-metadata /var/lib/piwheels/www/simple/*/index.json", check=False
    )
    assert "/c-ext/index.json" in old_form.stdout, old_form.stdout + old_form.stderr
    published = _published(farm)
    builds = farm.sql("SELECT id, status, builder_id FROM builds ORDER BY id")
    files = farm.sql("SELECT filename, sha256 FROM files ORDER BY filename")
    started = farm.machine.sh("systemctl show -P ExecMainStartTimestampMonotonic piwheels-ctl").stdout
    proc = _new(farm, "--limit", "master1,b1", "-v")
    assert proc.returncode == 0, proc.stdout[-6000:]
    inits = [out for out in _task_stdouts(proc.stdout) if f"(schema {HEAD_SCHEMA})" in out]
    task = proc.stdout.partition("TASK [master : Create or upgrade the database schema")[2][:3000]
    assert len(inits) == 1 and f"database upgraded (schema {HEAD_SCHEMA})" in inits[0], inits or task
    assert farm.sql("SELECT version_num FROM alembic_version") == HEAD_SCHEMA
    link = farm.machine.sh("readlink /opt/piwheels/venv").stdout.strip()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout
    assert link == f"/opt/piwheels/releases/{head[:12]}/venv"
    assert farm.machine.sh("systemctl is-active piwheels-ctl").stdout.strip() == "active"
    assert farm.machine.sh("systemctl show -P ExecMainStartTimestampMonotonic piwheels-ctl").stdout != started
    # Everything is still there: builds, files, every published page, wheel and metadata file;
    # the wheels and metadata files byte for byte.
    assert farm.sql("SELECT id, status, builder_id FROM builds ORDER BY id") == builds
    assert farm.sql("SELECT filename, sha256 FROM files ORDER BY filename") == files
    # The first publish of the new release rewrites every page once, no rebuild.
    farm.wait("the pages' rewrite", lambda: farm.machine.sh(
        "cat /var/lib/piwheels/www/piwheels-format", check=False).stdout.strip() == "2")  # fmt: skip
    after = _published(farm)
    pages = {path for path in published if path.startswith("./simple/")}
    assert pages <= set(after), pages - set(after)
    kept = {path: digest for path, digest in published.items() if path.endswith((".whl", ".metadata"))}
    assert kept and {path: after[path] for path in kept} == kept
    rewritten = farm.machine.sh(
        "grep -l dist-info-metadata /var/lib/piwheels/www/simple/*/index.json", check=False
    )
    assert rewritten.stdout == "", rewritten.stdout
    audit = farm.ctl("audit --deep")
    assert "no disagreement" in audit.stdout, audit.stdout + audit.stderr
    # The controller now logs in over TCP with the vaulted password, which no file shows to others.
    config = farm.machine.sh("stat -c '%a %U %G' /etc/piwheels/piwheels.toml /etc/piwheels/backup.env").stdout
    assert config.split("\n")[:2] == ["640 root piwheels-master"] * 2
    assert "@localhost:5432/piwheels" in farm.machine.sh("cat /etc/piwheels/piwheels.toml").stdout
    _check_shared_ccache(farm)
    again = _new(farm, "--limit", "master1,b1")
    assert again.returncode == 0, again.stdout[-6000:]
    recap = play_recap(again.stdout)
    assert set(recap) == {"master1", "b1"}
    assert all(counts["changed"] == 0 for counts in recap.values()), again.stdout[-6000:]


def _check_shared_ccache(farm: Farm) -> None:
    """The role's shared compiler cache: in the controller's config, served to the allowed
    addresses under the secret path only (PUT then GET), pruned by a timer."""
    url = f"http://{farm.machine.address}:{farm.ccache_port}/ccache/{CCACHE_SECRET}/"
    config = farm.machine.sh("cat /etc/piwheels/piwheels.toml").stdout
    assert f'ccache_remote_url = "{url}"' in config, config
    entry = f"{url}demo/ab/cdef0123R"
    put = urllib.request.Request(entry, data=b"object", method="PUT")
    with urllib.request.urlopen(put, timeout=30) as response:
        assert response.status in (201, 204), response.status
    with urllib.request.urlopen(entry, timeout=30) as response:
        assert response.read() == b"object"
    for path in ("ccache/demo/ab/cdef0123R", f"ccache/{CCACHE_SECRET}/"):  # no secret; a listing
        try:
            urllib.request.urlopen(f"http://{farm.machine.address}:{farm.ccache_port}/{path}", timeout=30)
            raise AssertionError(f"/{path} answered")
        except urllib.error.HTTPError as exc:
            assert exc.code in (403, 404), (path, exc.code)
    timer = farm.machine.sh("systemctl is-active piwheels-ccache-prune.timer").stdout.strip()
    assert timer == "active", timer


def test_a_builder_added_with_limit_builds_for_the_service(farm: Farm) -> None:
    proc = _new(farm, "--limit", "master1,b2")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "b1" not in play_recap(proc.stdout)
    names = sorted(b["name"] for b in json.loads(farm.ctl("builders list --json").stdout))
    assert names == ["b1", "b2"]
    success = farm.status()["success"]
    farm.ctl("builders remove b1")  # so that whatever is built next is built on b2
    farm.ctl("add abi3-ext")
    farm.wait("abi3-ext built", lambda: farm.status()["success"] > success and farm.idle())
    used = farm.sql("SELECT b.name FROM builds JOIN versions v ON v.id = version_id "
                    "JOIN projects p ON p.id = v.project_id JOIN builders b ON b.id = builder_id "
                    "WHERE p.name = 'abi3-ext'")  # fmt: skip
    assert used == "b2"


def test_systemctl_stop_lets_the_running_build_finish_and_start_carries_on(farm: Farm) -> None:
    success = farm.status()["success"]
    farm.ctl("add slow-ok")
    farm.wait("slow-ok building", lambda: farm.status()["building"] == 1)
    farm.machine.sh("systemctl stop piwheels-ctl", timeout=300)  # returns once the service has ended
    status = farm.status()
    assert status["building"] == 0 and status["success"] == success + 1, status
    result = farm.machine.sh("systemctl show -P Result,ExecMainStatus piwheels-ctl").stdout.split()
    assert result == ["success", "0"], result  # it ended by itself, not killed at the time limit
    farm.machine.sh("systemctl start piwheels-ctl")
    farm.ctl("add fails-header")
    farm.wait(
        "fails-header tried by the started service", lambda: farm.status()["failed"] >= 1 and farm.idle()
    )
    assert farm.status()["success"] == success + 1


def test_backups_are_kept_by_count_and_a_dump_restores(farm: Farm) -> None:
    sh = farm.machine.sh
    assert (
        sh("systemctl is-enabled piwheels-backup.timer piwheels-logs.timer").stdout.split() == ["enabled"] * 2
    )
    for _ in range(3):
        sh("systemctl start piwheels-backup.service")
    dumps = sh("ls /var/backups/piwheels").stdout.split()
    assert len(dumps) == 2, dumps
    # The restore of docs/farm.md: a fresh database owned by the controller's role, pg_restore into it.
    sh("runuser -u postgres -- createdb --owner piwheels-master piwheels_restored")
    sh(f"runuser -u piwheels-master -- pg_restore --exit-on-error --no-owner -d piwheels_restored "
       f"/var/backups/piwheels/{sorted(dumps)[-1]}")  # fmt: skip
    live = farm.ctl("status --json").stdout
    restored = sh("runuser -u piwheels-master -- env PIWHEELS_DATABASE_URL=postgresql:///piwheels_restored "
                  f"{CTL} status --json").stdout  # fmt: skip
    assert json.loads(restored) == json.loads(live)
    # Build logs older than master_build_log_days go; nginx's logs rotate.
    logs = sh("find /var/lib/piwheels/logs -name '*.log.gz'").stdout.split()
    sh(f"touch -d '3 days ago' {logs[0]}")
    sh("systemctl start piwheels-logs.service")
    assert sh("find /var/lib/piwheels/logs -name '*.log.gz'").stdout.split() == logs[1:]
    # A request first: the rotation leaves an empty log alone (notifempty).
    with contextlib.suppress(urllib.error.HTTPError):  # the redirect to HTTPS, logged all the same
        urllib.request.build_opener(_NoRedirect()).open(f"http://127.0.0.1:{farm.http_port}/", timeout=10)
    sh("logrotate --force /etc/logrotate.d/nginx")
    assert sh("test -f /var/log/nginx/access.log.1", check=False).returncode == 0


def test_pip_installs_from_nginx_over_https(farm: Farm, tmp_path: Path) -> None:
    url = f"https://localhost:{farm.https_port}/simple/"
    request = urllib.request.Request(f"http://127.0.0.1:{farm.http_port}/simple/c-ext/", method="HEAD")
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        opener.open(request, timeout=10)
        raise AssertionError("plain HTTP answered without a redirect")
    except urllib.error.HTTPError as exc:
        assert exc.code == 301 and exc.headers["Location"].startswith("https://127.0.0.1:")
    venv = tmp_path / "venv"
    python = debian_venv(venv)  # Debian bookworm's own pip, 23.0.1, on a farm upgraded from 0f4a855
    # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (set on some hosts) win over pip's --cert.
    env = {k: v for k, v in os.environ.items() if k not in {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"}}
    env["PIP_CONFIG_FILE"] = "/dev/null"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--cert", str(farm.ca_file), "--index-url", url,
         "pure-ok", "c-ext", "abi3-ext", "slow-ok"],
        check=False, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    subprocess.run([str(python), "-c", "import c_ext; assert c_ext.add(1, 1) == 2"], check=True)
    # It resolved through the PEP 658 metadata files (nginx gave it the HTML pages it reads right).
    log = farm.machine.sh("grep -h 'pip/23.0.1' /var/log/nginx/access.log", check=False).stdout
    assert ".whl.metadata HTTP" in log, log[-3000:]
    # Debian bullseye's own pip, 20.3.4 (Python 3.9: the pure wheel is the one that fits it).
    bullseye = pip_install_in_root(bullseye_pip_root(), url, ["pure-ok"], cert=farm.ca_file)
    assert "pip 20.3.4 " in bullseye.stdout, bullseye.stdout + bullseye.stderr
    assert bullseye.returncode == 0 and "Successfully installed pure-ok" in bullseye.stdout, (
        bullseye.stdout + bullseye.stderr
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
