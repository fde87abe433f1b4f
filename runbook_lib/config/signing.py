"""Ed25519 signatures for the archive: who sealed a run, who approved, and that nobody rewrote it since.

A hash chain holds only against careless edits: anyone who can write the archive can recompute every hash.
A signature needs the signer's private key, which never enters the archive. Each operator and approver has
a key (`runbook keys init NAME`); a team lists its members' public keys in a keys file, one line each:

    ed25519 <base64 of the 32-byte public key> <name>

A signature is kept beside what it signs with the signing key's id (a short fingerprint), so a verifier
learns the signer's name from its own keys file, never from the archive.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runbook_lib.config.params import Params
from runbook_lib.errors import RunbookError

KEY_TYPE = "ed25519"


class SigningError(RunbookError):
    """A key that cannot be made, read or used; names the file or line."""


def keys_dir() -> Path:
    return Path(os.environ.get("RUNBOOK_KEYS_DIR") or Path.home() / ".config" / "runbook" / "keys")


def payload(fields: dict[str, Any]) -> bytes:
    """The exact bytes a signature covers: the fields as canonical JSON."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


@dataclass(frozen=True)
class Signer:
    """An operator's or approver's private key, loaded for signing; never shown."""

    _key: Ed25519PrivateKey

    @classmethod
    def from_pem(cls, text: str, where: str) -> Signer:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise SigningError(f"{where}: not an unencrypted PEM private key (make one with `runbook keys init`)") \
                from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"{where}: not an Ed25519 key")
        return cls(key)

    @property
    def key_id(self) -> str:
        return key_id(self._key.public_key())

    def sign(self, fields: dict[str, Any]) -> dict[str, str]:
        """{"key_id", "signature"} over the canonical JSON of fields."""
        return {"key_id": self.key_id, "signature": base64.b64encode(self._key.sign(payload(fields))).decode()}

    def public_line(self, name: str) -> str:
        return f"{KEY_TYPE} {base64.b64encode(_raw(self._key.public_key())).decode()} {name}"

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id})"


class TrustedKeys:
    """A team's public keys by id, each with the name of its holder."""

    def __init__(self, keys: dict[str, tuple[str, Ed25519PublicKey]], source: str) -> None:
        self.keys, self.source = keys, source

    @classmethod
    def read(cls, path: Path) -> TrustedKeys:
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SigningError(f"{path}: cannot read the keys file ({getattr(exc, 'strerror', None) or exc})") \
                from None
        keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split(maxsplit=2)
            try:
                if len(parts) != 3 or parts[0] != KEY_TYPE:
                    raise ValueError
                public = Ed25519PublicKey.from_public_bytes(base64.b64decode(parts[1], validate=True))
            except ValueError:
                raise SigningError(f"{path}:{n}: expected `{KEY_TYPE} <base64 public key> <name>`") from None
            keys[key_id(public)] = (parts[2].strip(), public)
        return cls(keys, str(path))

    def signer_of(self, fields: dict[str, Any], signed: dict[str, Any]) -> str | None:
        """The name of the trusted key that made this signature over fields, or None."""
        known = self.keys.get(str(signed.get("key_id")))
        if not known:
            return None
        try:
            known[1].verify(base64.b64decode(str(signed.get("signature", ""))), payload(fields))
        except (InvalidSignature, ValueError):
            return None
        return known[0]


def init(name: str, folder: Path | None = None) -> tuple[Path, str]:
    """Make a key pair: <folder>/<name>.key (0600, never shared) and <name>.pub (its line for the keys file)."""
    if not name or not all(c.isalnum() or c in "._-" for c in name):
        raise SigningError(f"key name {name!r}: use letters, digits, '.', '_' or '-'")
    folder = folder or keys_dir()
    private = folder / f"{name}.key"
    if private.exists():
        raise SigningError(f"{private} exists; a key is never overwritten (remove it first if it is truly unused)")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    line = Signer(key).public_line(name)
    (folder / f"{name}.pub").write_text(line + "\n")
    return private, line


def signer_for(params: Params) -> Signer | None:
    """The operator's signer named by signing.key, or None when the parameters name no key."""
    if params.signing.key is None:
        return None
    ref = params.signing.key
    return Signer.from_pem(params.resolve(ref).reveal(), f"signing.key ({ref})")


def trusted_for(params: Params) -> TrustedKeys | None:
    return TrustedKeys.read(params.path(params.signing.trusted_keys)) if params.signing.trusted_keys else None


def anchor_for(params: Params) -> Path | None:
    return params.path(params.signing.anchor_repo) if params.signing.anchor_repo else None
