#!/usr/bin/python3
"""Entry point of every sandbox service, run INSIDE the image (python3 stdlib only).

Why: Docker secrets arrive as root-owned 0444 files, but PostgreSQL wants its key 0600 and owned by
postgres, and config files need passwords in them. This script copies secrets into a private
directory, renders `{{secret:NAME}}` (and `{{env:NAME}}`, a variable of the task) placeholders,
prepares volume directories, optionally exports a
secret as an environment variable of the final process only (never in the service spec), then drops
privileges and execs the server.

usage: entry.py [--user U] [--dir PATH]... [--install SRC:DST:MODE]... [--render SRC:DST]...
                [--env VAR=SECRET]... -- command args...
"""

import grp
import os
import pwd
import re
import sys

SECRETS = "/run/secrets"
_PLACEHOLDER = re.compile(r"\{\{(secret|env):([A-Za-z0-9_.-]+)\}\}")


def secret(name):
    with open(os.path.join(SECRETS, name)) as fh:
        return fh.read().strip()


def write(path, data, mode, uid, gid):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
        os.chown(parent, uid, gid)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def chown_tree(top, uid, gid):
    """Own a volume directory; recurse only when a rebuilt image moved the user's uid."""
    first = [top] + [os.path.join(top, n) for n in os.listdir(top)]
    if all((os.lstat(p).st_uid, os.lstat(p).st_gid) == (uid, gid) for p in first):
        return
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
    os.chown(top, uid, gid)


def main(argv):
    if "--" not in argv:
        sys.exit("entry.py: missing '-- command'")
    split = argv.index("--")
    opts, command = argv[:split], argv[split + 1:]
    user = None
    actions = []
    i = 0
    while i < len(opts):
        key, val = opts[i], opts[i + 1]
        if key == "--user":
            user = val
        else:
            actions.append((key, val))
        i += 2
    uid, gid = (0, 0)
    if user:
        pw = pwd.getpwnam(user)
        uid, gid = pw.pw_uid, pw.pw_gid
    for key, val in actions:
        if key == "--dir":
            os.makedirs(val, exist_ok=True)
            chown_tree(val, uid, gid)
            os.chmod(val, 0o700)
        elif key == "--install":
            src, dst, mode = val.split(":")
            with open(src, "rb") as fh:
                write(dst, fh.read(), int(mode, 8), uid, gid)
        elif key == "--render":
            src, dst = val.split(":")
            with open(src) as fh:
                text = _PLACEHOLDER.sub(lambda m: secret(m.group(2)) if m.group(1) == "secret"
                                        else os.environ[m.group(2)], fh.read())
            write(dst, text.encode(), 0o600, uid, gid)
        elif key == "--env":
            var, name = val.split("=", 1)
            os.environ[var] = secret(name)
        else:
            sys.exit("entry.py: unknown option " + key)
    if user:
        os.environ["HOME"] = pwd.getpwnam(user).pw_dir
        os.environ["USER"] = user
        os.setgroups([g.gr_gid for g in grp.getgrall() if user in g.gr_mem] + [gid])
        os.setgid(gid)
        os.setuid(uid)
    sys.stdout.flush()
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
