"""Reviewer key files: an Ed25519 private key encrypted with a passphrase, and its public half.

``<name>.key``       PKCS#8 PEM, encrypted (BestAvailableEncryption) with the reviewer's passphrase
``<name>.pub.json``  ``{"keyid": ..., "key": {keytype, scheme, keyval}}`` (what a trust root lists)

The passphrase comes from ``--passphrase-file``, else ``FEDSIGNAL_KEY_PASSPHRASE``, else a prompt.
Private keys never leave the reviewer's machine: only signatures are sent.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey

from aggregation.errors import FedsignalError
from aggregation.trust_root_build import key_from_public_json, public_key_json

PASSPHRASE_ENV = "FEDSIGNAL_KEY_PASSPHRASE"


class ReviewerKeyError(FedsignalError):
    pass


def passphrase(passphrase_file: Path | None, *, confirm: bool = False) -> bytes:
    if passphrase_file is not None:
        try:
            value = Path(passphrase_file).expanduser().read_text().rstrip("\n")
        except OSError as exc:
            raise ReviewerKeyError(f"cannot read the passphrase file {passphrase_file}: {exc.strerror}") from None
    elif os.environ.get(PASSPHRASE_ENV):
        value = os.environ[PASSPHRASE_ENV]
    elif not sys.stdin.isatty():
        raise ReviewerKeyError(
            f"no key passphrase: pass --passphrase-file FILE or set {PASSPHRASE_ENV} (there is no terminal to ask on)"
        )
    else:
        try:
            value = getpass.getpass("key passphrase: ")
            if confirm and getpass.getpass("repeat passphrase: ") != value:
                raise ReviewerKeyError("the passphrases differ")
        except EOFError:
            raise ReviewerKeyError(f"no key passphrase given (pass --passphrase-file FILE or set {PASSPHRASE_ENV})") from None
    if len(value) < 8:
        raise ReviewerKeyError("the key passphrase must have at least 8 characters")
    return value.encode("utf-8")


def generate(out_dir: Path, name: str, secret: bytes) -> SSlibKey:
    """Write ``<name>.key`` (encrypted, 0600) and ``<name>.pub.json``; return the public key."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / f"{name}.key", out_dir / f"{name}.pub.json"
    if key_path.exists():
        raise ReviewerKeyError(f"{key_path} exists; choose another --name or directory")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(secret)
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = SSlibKey.from_crypto(private.public_key())
    pub_path.write_text(json.dumps(public_key_json(public), indent=2, sort_keys=True) + "\n")
    return public


def load_signer(key_path: Path, secret: bytes) -> CryptoSigner:
    try:
        private = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=secret)
    except FileNotFoundError as exc:
        raise ReviewerKeyError(f"no key file {key_path}") from exc
    except (ValueError, TypeError) as exc:
        raise ReviewerKeyError(f"cannot decrypt {key_path}: wrong passphrase or not a reviewer key") from exc
    if not isinstance(private, Ed25519PrivateKey):
        raise ReviewerKeyError(f"{key_path} is not an Ed25519 key")
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def load_public(path: Path) -> SSlibKey:
    try:
        return key_from_public_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise ReviewerKeyError(f"{path} is not a reviewer public key file (<name>.pub.json): {exc}") from exc
