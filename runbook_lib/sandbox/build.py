"""The sandbox image: one root filesystem from Debian packages (mmdebstrap) imported into Docker.

No registry is reachable on these machines, so the image is built from the Debian mirror that the
host's own apt sources name (read at run time, never written into the repository). The tag is a
hash of the package list, so a changed list builds a new image.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from runbook_lib.config.sandbox_spec import packages
from runbook_lib.sandbox import docker_cli, dockerd, progress
from runbook_lib.sandbox.context import Sandbox, SandboxError

IMAGE_ENV = {
    "PATH": "/usr/lib/postgresql/17/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PGDATA": "/var/lib/postgresql/data/pg",
}
# Trim docs and the Debian-created default cluster: the services create their own data directories.
_DPKG_OPTS = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
              "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*"]
_CUSTOMIZE = ('rm -rf "$1"/var/lib/postgresql/17 "$1"/etc/postgresql/17 "$1"/var/cache/apt/archives/*.deb '
              '"$1"/var/lib/apt/lists/*; mkdir -p "$1"/var/run/postgresql && chown 0:0 "$1"/var/run/postgresql '
              '&& chmod 1777 "$1"/var/run/postgresql')


def tag(sb: Sandbox) -> str:
    return sb.spec.image_tag()


def exists(sb: Sandbox) -> bool:
    return docker_cli.run("image", "inspect", tag(sb), check=False).returncode == 0


def host_debian_mirror() -> str:
    """The Debian archive URI the host's apt sources name (deb822 .sources or one-line .list)."""
    for uri in _apt_uris():
        if not re.search(r"security|updates|backports", uri) and re.search(r"/debian/?$", uri):
            return uri.rstrip("/")
    raise SandboxError(
        "found no Debian mirror in the host's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d); "
        "add one, or build with the Dockerfile where a registry is reachable"
    )


def _apt_uris() -> list[str]:
    uris: list[str] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        if not f.is_file():
            continue
        text = f.read_text(errors="replace")
        if f.suffix == ".sources":
            for block in re.split(r"\n\s*\n", text):
                if re.search(r"^Enabled:\s*no", block, re.M | re.I):
                    continue
                if not re.search(r"^Types:.*\bdeb\b", block, re.M):
                    continue
                m = re.search(r"^URIs:\s*(.+)$", block, re.M)
                if m:
                    uris += m.group(1).split()
        elif f.suffix == ".list":
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if parts and parts[0] == "deb":
                    rest = [p for p in parts[1:] if not p.startswith("[")]
                    if rest:
                        uris.append(rest[0])
    return uris


def _apt_proxy_opts() -> list[str]:
    """Carry the host's apt proxy setting (if any) into mmdebstrap, read at run time."""
    proc = subprocess.run(["apt-config", "dump", "Acquire"], capture_output=True, text=True)
    return [f"--aptopt={line}" for line in proc.stdout.splitlines() if re.match(r"Acquire::https?::Proxy", line)]


def build_image(sb: Sandbox, force: bool = False) -> tuple[str, float]:
    """Build and import the image if missing; return (tag, seconds spent, 0 when it existed)."""
    name = tag(sb)
    if exists(sb) and not force:
        progress.info(f"image {name} present")
        return name, 0.0
    dockerd.ensure_tool("mmdebstrap", "mmdebstrap")
    start = time.monotonic()
    sb.build_dir.mkdir(parents=True, exist_ok=True)
    tarball = sb.build_dir / f"rootfs-{name.split(':')[1]}.tar"
    mirror = host_debian_mirror()
    with progress.step(f"mmdebstrap {sb.spec.suite} root filesystem ({len(packages())} packages, host's mirror)"):
        cmd = ["mmdebstrap", "--variant=apt", "--include=" + ",".join(packages()),
               '--aptopt=Acquire::Check-Valid-Until "false"', *_apt_proxy_opts(),
               *[f"--dpkgopt={o}" for o in _DPKG_OPTS], f"--customize-hook={_CUSTOMIZE}",
               sb.spec.suite, str(tarball), f"deb {mirror} {sb.spec.suite} main"]
        log = sb.build_dir / "mmdebstrap.log"
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tarball.unlink(missing_ok=True)
            tail = "\n".join(log.read_text().splitlines()[-8:])
            raise SandboxError(f"mmdebstrap failed (full log: {log}):\n{tail}")
    with progress.step(f"docker import as {name}"):
        changes = [f"ENV {k}={v}" for k, v in IMAGE_ENV.items()] + ['CMD ["/bin/bash"]', "WORKDIR /"]
        args = ["import"]
        for c in changes:
            args += ["--change", c]
        docker_cli.run(*args, str(tarball), name, timeout=900)
        tarball.unlink(missing_ok=True)
    return name, time.monotonic() - start
