"""A CA per sandbox, a server certificate for 127.0.0.1/localhost and client certificates, signed by it (openssl).

Why a CA and not a self-signed leaf: the readiness checks verify the chain and refuse self-signed leaves. Why
client certificates: etcd runs with client-certificate auth (CLIENTS below).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runbook_lib.sandbox import placement
from runbook_lib.sandbox.context import Sandbox, SandboxError

DAYS_CA = 3650
DAYS_LEAF = 825


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SandboxError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


# client certificates the sandbox issues: file stem -> subject. etcdctl (gRPC) takes a certificate's common name as
# its user (root). etcd 3.5's JSON gateway, which Patroni and the runbooks speak, refuses any request whose
# certificate has a common name once auth is on ("CommonName of client sending a request against gateway will be
# ignored"): its clients' certificates carry none, and they log in with a password.
CLIENTS = {"client-root": "/CN=root", "client-patroni": "/O=runbook sandbox/OU=patroni",
           "client-runbook": "/O=runbook sandbox/OU=runbook", "client-monitor": "/CN=monitor"}


def _leaf(d: Path, stem: str, subject: str, ext: str) -> None:
    """A key and a certificate signed by the sandbox CA (files <stem>.key, <stem>.crt)."""
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{stem}.key", "-out", f"{stem}.csr", "-subj", subject, cwd=d)
    (d / f"{stem}.ext").write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}\n")
    _openssl("x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{stem}.crt", "-days", str(DAYS_LEAF), "-extfile", f"{stem}.ext", cwd=d)
    for tmp in (f"{stem}.csr", f"{stem}.ext", "ca.srl"):
        (d / tmp).unlink(missing_ok=True)


def server_names(sb: Sandbox) -> str:
    """The server certificate's subjectAltName: loopback, and on several nodes every node's address (clients
    that check the host name reach each service on its node's)."""
    nodes = placement.Layout(sb.spec.nodes).addresses()
    return ",".join(["DNS:localhost", "IP:127.0.0.1", *(f"IP:{a}" for a in nodes)])


def ensure(sb: Sandbox) -> dict[str, Path]:
    """Create the CA, the server certificate (server_names) and the client certificates once (keys 0600);
    return file name -> path. A new CA reissues every leaf."""
    d = sb.tls_dir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    # the server certificate names its hosts in subjectAltName only (etcd's gateway dials etcd with it)
    stems = {"server": "/O=runbook sandbox/OU=server", **CLIENTS}
    files = {"ca.crt": d / "ca.crt", "ca.key": d / "ca.key"}
    files.update({f"{stem}.{kind}": d / f"{stem}.{kind}" for stem in stems for kind in ("crt", "key")})
    if not (files["ca.crt"].exists() and files["ca.key"].exists()):
        _openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", "ca.key", "-out", "ca.crt", "-days", str(DAYS_CA),
                 "-subj", f"/CN=runbook sandbox CA {sb.params.target.name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
        for stem in stems:
            (d / f"{stem}.crt").unlink(missing_ok=True)
    names = server_names(sb)
    if (d / "server.names").exists() and (d / "server.names").read_text() != names:
        (d / "server.crt").unlink(missing_ok=True)  # the nodes changed: a certificate for their addresses
    for stem, subject in stems.items():
        if not ((d / f"{stem}.crt").exists() and (d / f"{stem}.key").exists()):
            # the server certificate is a client's too: etcd's gateway dials its own gRPC port with it, and
            # with client-certificate auth on that port wants clientAuth
            ext = (f"extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={names}"
                   if stem == "server" else "extendedKeyUsage=clientAuth")
            _leaf(d, stem, subject, ext)
    (d / "server.names").write_text(names)
    for name, path in files.items():
        os.chmod(path, 0o600 if name.endswith(".key") else 0o644)
    return files
