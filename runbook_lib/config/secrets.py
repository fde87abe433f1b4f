"""Secret references (env:, file:, docker-secret:) and the values they resolve to.

Parameters never carry secret values. A `SecretRef` names where a value lives;
it is resolved lazily, inside the kernel, only when a connection needs it. The
resolved `Secret` never shows its value in repr, str, JSON or a DataFrame, and
every resolved value is registered with the redactor so that no displayed
object, log line or journal entry can carry it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from runbook_lib.config import redact
from runbook_lib.errors import RunbookError

SCHEMES = ("env", "file", "docker-secret")
_REF_RE = re.compile(r"^(env|file|docker-secret):(.+)$")
_NAME_RE = {"env": re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$"), "docker-secret": re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")}
# pseudo-files that hand out a process's or the kernel's state: never a secret's home, whatever is allowed
NEVER_READ = (Path("/proc"), Path("/sys"), Path("/dev"))
EXPECTED = "a secret reference: env:NAME, file:PATH or docker-secret:NAME (never a literal value)"


class SecretError(RunbookError):
    """A secret reference that cannot be resolved; names the reference, never a value."""


class Secret:
    """A resolved secret value that refuses to print itself."""

    __slots__ = ("_value", "ref")

    def __init__(self, value: str, ref: str) -> None:
        self._value = value
        self.ref = ref
        redact.register(value)

    def reveal(self) -> str:
        """The value itself, for handing to a client library, never for display."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.ref!r})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret cannot be pickled or serialised")


class SecretRef(str):
    """A validated `scheme:name` reference; equal to its text, safe to show and store."""

    @property
    def scheme(self) -> str:
        return self.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.split(":", 1)[1]

    @classmethod
    def parse(cls, value: object) -> SecretRef:
        match = _REF_RE.match(value) if isinstance(value, str) else None
        if not match:
            raise PydanticCustomError("secret_reference", "expected " + EXPECTED)
        scheme, name = match[1], match[2]
        if scheme in _NAME_RE and not _NAME_RE[scheme].match(name):
            what = "an environment variable's name" if scheme == "env" else "a Docker secret's name (no path)"
            raise PydanticCustomError("secret_reference", f"expected {what} after {scheme}:")
        return cls(value)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
            json_schema_input_schema=core_schema.str_schema(),
        )

    def absolute(self, base_dir: Path) -> SecretRef:
        """The same reference with a relative file: path anchored at base_dir."""
        if self.scheme == "file" and not Path(self.name).is_absolute():
            return SecretRef(f"file:{(base_dir / self.name).resolve()}")
        return self

    def outside(self, allowed: list[Path]) -> str | None:
        """Why this (anchored) file: reference may not be read, or None: a secret file must sit in one of the
        allowed folders (the parameters' own, and those the parameters list), never in a pseudo-filesystem,
        so that a parameters file cannot make a run read (and send to a server) any file of the host."""
        if self.scheme != "file":
            return None
        path = Path(self.name).resolve()
        if any(path.is_relative_to(root) for root in NEVER_READ):
            return f"{path} is in a pseudo-filesystem ({', '.join(map(str, NEVER_READ))}); not a secret's file"
        if not any(path.is_relative_to(folder.resolve()) for folder in allowed):
            return (f"{path} is outside the parameters' folder and the folders listed in secret_dirs; move the "
                    "file there or list its folder")
        return None

    def resolve(self) -> Secret:
        """Read the value now; errors name the reference, not the value."""
        scheme, name = self.scheme, self.name
        if scheme == "env":
            if name not in os.environ:
                raise SecretError(f"{self}: environment variable {name} is not set")
            value = os.environ[name]
        else:
            secrets_dir = Path(os.environ.get("RUNBOOK_DOCKER_SECRETS_DIR", "/run/secrets"))
            path = Path(name) if scheme == "file" else secrets_dir / name
            try:
                value = path.read_text().rstrip("\n")
            except OSError as exc:
                raise SecretError(f"{self}: cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise SecretError(f"{self}: {path} is not UTF-8 text") from None
        if len(value) < 8:
            raise SecretError(f"{self}: the secret is shorter than 8 characters; too short to use, or to mask "
                              "reliably in outputs")
        return Secret(value, str(self))
