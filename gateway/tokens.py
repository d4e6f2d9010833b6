"""Unsubscribe tokens: unguessable, no address inside, case-insensitive (base32), short
enough that `unsubscribe+TOKEN@domain` keeps its local part within 64 octets.

A token is base32(random id ‖ HMAC-SHA256(secret, id) truncated). Who it stands for lives
in the ledger's `tokens` table, so an address never travels in a link. Verification
tries every configured secret (key rotation: the first signs, all verify)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from .errors import StoreUnavailable, TokenError
from .ledger import Ledger, TokenRecord

ID_BYTES = 10
MAC_BYTES = 10
TOKEN_LENGTH = 32  # base32 of 20 bytes, no padding


UNSUBSCRIBE = b"unsubscribe-token:"
CONFIRM = b"confirm-token:"  # a double opt-in's link (/c/TOKEN): never valid as the other


def _mac(secret: str, token_id: bytes, purpose: bytes = UNSUBSCRIBE) -> bytes:
    return hmac.digest(secret.encode(), purpose + token_id, hashlib.sha256)[:MAC_BYTES]


def make_token(secret: str, purpose: bytes = UNSUBSCRIBE) -> tuple[str, str]:
    """A new (token, id-hex) pair signed with `secret` for `purpose`."""
    token_id = secrets.token_bytes(ID_BYTES)
    raw = token_id + _mac(secret, token_id, purpose)
    return base64.b32encode(raw).decode().lower(), token_id.hex()


def token_id_of(token: str, secrets_: tuple[str, ...], purpose: bytes = UNSUBSCRIBE) -> str:
    """The id inside a well-formed token whose MAC matches one of `secrets_`;
    TokenError otherwise. Every secret is checked, in constant time each."""
    text = token.strip().upper()
    if len(text) != TOKEN_LENGTH or not text.isalnum():
        raise TokenError("malformed token")
    try:
        raw = base64.b32decode(text)
    except (binascii.Error, ValueError):
        raise TokenError("malformed token") from None
    token_id, mac = raw[:ID_BYTES], raw[ID_BYTES:]
    valid = False
    for secret in secrets_:
        valid |= hmac.compare_digest(mac, _mac(secret, token_id, purpose))
    if not valid:
        raise TokenError("token signature does not match")
    return token_id.hex()


class TokenBook:
    """Issues tokens for recipients and resolves them back, via the ledger."""

    def __init__(self, ledger: Ledger, secrets_: tuple[str, ...]):
        self.ledger = ledger
        self.secrets = secrets_

    def issue(self, *, org: str, channel: str, address: str, stream: str | None,
              message_id: str | None, reply_to: str | None = None) -> tuple[str, TokenRecord]:
        """A fresh token and its record (not yet stored: the caller stores it with the
        message so both land in one durable step)."""
        token, token_id = make_token(self.secrets[0])
        return token, TokenRecord(token_id, org, channel, address, stream, message_id, reply_to)

    def resolve_or_unresolved(self, token: str, channel: str) -> TokenRecord:
        """`resolve`; but while the ledger cannot be read, a correctly signed token gives
        an unresolved record (its id and `channel` only: who it stands for is in the
        ledger). An opt-out made with it is kept and completed once the ledger is back."""
        try:
            return self.resolve(token)
        except StoreUnavailable:
            return TokenRecord(token_id_of(token, self.secrets), "", channel, "", None, None,
                               None)

    def resolve(self, token: str) -> TokenRecord:
        """The record of a valid, known token; TokenError for forged or unknown ones."""
        record = self.ledger.token(token_id_of(token, self.secrets))
        if record is None:
            raise TokenError("unknown token")
        return record
