"""A CA per sandbox and one server certificate for 127.0.0.1/localhost signed by it (openssl CLI).

Why a CA and not a self-signed leaf: the readiness checks verify the chain and refuse self-signed leaves.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runbook_lib.sandbox.context import Sandbox, SandboxError

DAYS_CA = 3650
DAYS_LEAF = 825


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def ensure(sb: Sandbox) -> dict[str, Path]:
    """Create ca.crt/ca.key and server.crt/server.key once (keys 0600); return name -> path."""
    d = sb.tls_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    files = {n: d / n for n in ("ca.crt", "ca.key", "server.crt", "server.key")}
    if not (files["ca.crt"].exists() and files["ca.key"].exists()):
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", str(DAYS_CA),
                 "-subj", f"/CN=runbook sandbox CA {sb.params.target.name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        files["server.crt"].unlink(missing_ok=True)
    if not (files["server.crt"].exists() and files["server.key"].exists()):
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
        ext = d / "server.ext"
        ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                       "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "server.crt", "-days", str(DAYS_LEAF), "-extfile", "server.ext", cwd=d)
        for tmp in ("server.csr", "server.ext", "ca.srl"):
            (d / tmp).unlink(missing_ok=True)
    for name in ("ca.key", "server.key"):
        os.chmod(files[name], 0o600)
    return files
