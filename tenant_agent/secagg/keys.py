"""The tenant's long-term X25519 masking key, kept in ``state_dir/secagg/masking.key`` (0600)."""

from __future__ import annotations

import os
from pathlib import Path

from aggregation.secagg import (
    generate_keypair,
)
from aggregation.secagg.crypto import public_key_of
from tenant_agent.secagg.errors import SecAggClientError

KEY_FILE = "secagg/masking.key"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_masking_key(state_dir: Path) -> tuple[bytes, bytes]:
    """(private, public) raw X25519 keys of this tenant, created on first use (0600)."""
    path = state_dir / KEY_FILE
    if path.exists():
        private = path.read_bytes()
        if len(private) != 32:
            raise SecAggClientError(f"{path} is not a 32-byte X25519 private key")
        return private, public_key_of(private)
    private, public = generate_keypair()
    _write_private(path, private)
    return private, public
