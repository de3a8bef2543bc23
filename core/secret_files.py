"""Secrets kept in local files readable by their owner only (0600), as ssh keeps a private key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import ConfigError

__all__ = ["owner_only_secret"]


def owner_only_secret(path: Path, size: int, what: str) -> bytes:
    """The ``size`` bytes in ``path``, created (random, mode 0600) if missing. A file any group
    or other permission bit opens, or of another size, is refused (:class:`ConfigError`, which
    names ``what``)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(size))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        msg = f"{what} {path} has mode {mode:04o}: it must be readable by its owner only (0600)"
        raise ConfigError(msg)
    secret = path.read_bytes()
    if len(secret) != size:
        msg = f"{what} {path} has {len(secret)} bytes, not {size}"
        raise ConfigError(msg)
    return secret
