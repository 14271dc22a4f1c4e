"""Run inside a private network namespace by ``test_buildnet.py``: this machine's own
public-looking addresses, ``serve`` listening on all of them, and real sandboxed builds of a
hostile sdist whose ``setup.py`` asks the build's proxy for them.

    python netns_attack.py CONFIG.json

CONFIG names the sdist, the folder of build requirements (served as the build index on
loopback), the port ``serve`` listens on, a work folder, and the cases: each a name and the
``build_network_allow`` of its build. The answer, one JSON line: what the agent answered to
each build, its log, the failure the controller would record, and what this machine itself
got from ``serve`` at each own address (the attack's target is real).
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from piwheels_ctl.agent import buildstep
from piwheels_ctl.agent.jobspec import request
from piwheels_ctl.failures.classify import classify
from piwheels_ctl.publish.server import make_server

from indexserver import IndexServer


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    work = Path(config["work"])
    www = work / "www"
    (www / "simple").mkdir(parents=True)
    (www / "simple" / "index.html").write_text("<html><body>the farm's own index</body></html>\n")
    serve = make_server(www, "0.0.0.0", config["port"])
    threading.Thread(target=serve.serve_forever, daemon=True).start()
    direct = {}
    for address in config["own"]:
        with urllib.request.urlopen(f"http://{address}:{config['port']}/simple/", timeout=30) as answer:
            direct[address] = answer.read().decode()
    sdist = Path(config["sdist"])
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    answers: dict[str, Any] = {"direct": direct}
    with IndexServer(Path(config["index"])) as index:
        for name, allow in config["cases"].items():
            place = work / name
            result = buildstep.build(
                request(
                    sys.executable, "hostile", "1.0", str(place / "outbox"), str(place / "build.log"),
                    str(place / "builds"), timeout=600.0, index_url=index.url, sdist_url=sdist.as_uri(),
                    sdist_sha256=digest, network_allow=allow,
                )
            )  # fmt: skip
            log = (place / "build.log").read_text(errors="replace")
            failure = classify(log, network=[str(n) for n in result.get("network") or ()])
            answers[name] = {"result": result, "log": log, "failure": [failure.reason, failure.detail]}
    serve.shutdown()
    print(json.dumps(answers))


if __name__ == "__main__":
    main(sys.argv[1])
