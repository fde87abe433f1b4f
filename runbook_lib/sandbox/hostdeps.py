"""Install the system programs the runbooks drive and the tests use, where missing (Debian, as root).

Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

# program that must exist -> Debian package that provides it
NEEDED = {
    "dockerd": "docker.io",
    "mmdebstrap": "mmdebstrap",
    "chromium": "chromium",
    "initdb": "postgresql",
    "git": "git",  # the archive's anchor: chain heads committed to a records repository
    "ip": "iproute2",  # the multi-node sandbox: a network namespace, veth and address per node
    "nsenter": "util-linux",  # ... its engines entered into their namespaces (with unshare)
    "iptables": "iptables",  # ... traffic within its bridge accepted past the host's FORWARD policy
}


def present(program: str) -> bool:
    if program == "initdb":
        return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return shutil.which(program) is not None


def main() -> int:
    missing = sorted({pkg for prog, pkg in NEEDED.items() if not present(prog)})
    if not missing:
        print("host: every system program is present")
        return 0
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"host: missing {', '.join(missing)}; install them with your package manager "
              f"(as root on Debian: apt-get install {' '.join(missing)})", file=sys.stderr)
        return 1
    print(f"host: installing {', '.join(missing)} with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    print("host: installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
