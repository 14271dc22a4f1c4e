"""A CA of its own, as a proxy that inspects TLS has: its certificate (a store a test points
SSL_CERT_FILE at) and a server context with a certificate it signed for one loopback address."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(root: Path, host: str) -> tuple[Path, ssl.SSLContext]:
    """In ``root``: the CA's certificate (readable by anyone), and the server context of ``host``."""
    ca_key, ca, key, csr, cert = (
        root / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *curve, "-days", "2", "-subj", "/CN=inspecting proxy CA", "-keyout", str(ca_key),
             "-out", str(ca))  # fmt: skip
    _openssl("req", "-new", *curve, "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr))
    (root / "ext").write_text(f"subjectAltName=IP:{host}\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "2", "-extfile", str(root / "ext"), "-out", str(cert))  # fmt: skip
    ca.chmod(0o644)
    root.chmod(0o755)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return ca, context
