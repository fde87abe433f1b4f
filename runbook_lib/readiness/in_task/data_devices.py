"""Run in a PostgreSQL task: the running postmaster's data directory and the device of it and of each path
given (relative paths are taken from the data directory, as an in-place tablespace's location is).

Why from the postmaster: each member may keep its data elsewhere, and only its process knows which. Its cwd is
the data directory; reading it needs the postmaster's own user, so root (the exec's default) becomes that user.
Prints, one per line: the data directory, its device, the device of each path.
"""
import os
import sys


def read(path):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


procs = {pid: read(f"/proc/{pid}/stat") for pid in os.listdir("/proc") if pid.isdigit()}
postgres = {pid for pid, stat in procs.items() if "(postgres)" in stat or "(postmaster)" in stat}
postmasters = [pid for pid in postgres if procs[pid].rsplit(")", 1)[1].split()[1] not in postgres]
if len(postmasters) != 1:
    sys.exit(f"expected one running postmaster in this task, found {len(postmasters)}")
owner = next(line.split()[1] for line in read(f"/proc/{postmasters[0]}/status").splitlines()
             if line.startswith("Uid:"))
if os.getuid() == 0 and owner != "0":
    os.setgid(os.stat(f"/proc/{postmasters[0]}").st_gid)
    os.setuid(int(owner))
data = os.readlink(f"/proc/{postmasters[0]}/cwd")
print(data, *(os.stat(os.path.join(data, path)).st_dev for path in [".", *sys.argv[1:]]), sep="\n")
