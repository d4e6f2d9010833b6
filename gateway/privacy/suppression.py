"""The suppression key: an erased person is found again by a keyed hash (HMAC-SHA256) of
their normalised address and channel, never by the address itself. Without the key the
hash cannot be turned back into the address (an address book is not enough to try).

Where the key comes from: `[privacy] suppression_key`; when it is "", a random key
generated once in `data_dir/suppression.key` (mode 0600). The ledger keeps a fingerprint of
the key its entries were made with, and a gateway with another key (another data_dir's
generated key, a rotated key) stops at start-up: it would not find the erased people."""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from pathlib import Path

from ..errors import ConfigError

KEY_FILE = "suppression.key"
RECENT = 4096  # hashes remembered


class SuppressionKey:
    """Keys the hashes. `of` costs one HMAC of a few dozen bytes (about a microsecond)
    the first time for a person."""

    def __init__(self, key: bytes):
        # HMAC's two keyed SHA-256 states, made once (RFC 2104): copying them per hash
        # costs half of what hmac's own copy() does.
        block = hashlib.sha256(key).digest() if len(key) > 64 else key
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        # Remembered for people decided for lately (a decision per message asks).
        self._remembered = functools.lru_cache(maxsize=RECENT)(self._hash)

    def of(self, channel: str, address: str) -> str:
        """The suppression hash of a normalised `address` on `channel`: HMAC-SHA256
        truncated to 128 bits (RFC 2104 section 5), 32 hex digits. Half the index of the
        whole 256 bits, as quick to look up as an address; collisions stay out of reach."""
        return self._remembered(channel, address)

    def _hash(self, channel: str, address: str) -> str:
        inner = self._inner.copy()
        inner.update(f"{channel}\0{address}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:16].hex()

    @property
    def fingerprint(self) -> str:
        """What the ledger keeps to recognise the key (a hash of a fixed text under it)."""
        return self.of("fingerprint", "consent-gateway suppression key")


def key_bytes(configured: str, data_dir: Path, settings_path: str | None = None) -> bytes:
    """The configured key, or the one in data_dir (made now, 0600, if there is none)."""
    if configured:
        return configured.encode()
    path = Path(data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked: processes starting together
        # agree on one key (the second link fails and that process reads the first's).
        temp = path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            temp.unlink()
    key = path.read_text("ascii").strip()
    if len(key) < 32:
        raise ConfigError("privacy.suppression_key", f"{path} does not hold a key; restore "
                          "it from a backup (erased people are found by it) or set the key",
                          settings_path)
    return key.encode()


def load_key(settings, ledger) -> SuppressionKey:
    """This gateway's key, checked against the one the ledger's suppression entries were
    made with (recorded by the first gateway to use the ledger)."""
    path = str(settings.path) if settings.path else None
    key = SuppressionKey(key_bytes(settings.privacy.suppression_key,
                                   settings.gateway.data_dir, path))
    if ledger.suppression_fingerprint(key.fingerprint) != key.fingerprint:
        where = ("the configured key" if settings.privacy.suppression_key
                 else f"the key generated in {Path(settings.gateway.data_dir) / KEY_FILE}")
        raise ConfigError(
            "privacy.suppression_key",
            f"{where} is not the key this ledger's erasures were recorded with: erased "
            "people would not be found. Set it to that key on every gateway sharing the "
            "ledger (it must never change)", path)
    return key
