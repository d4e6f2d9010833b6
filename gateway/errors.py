"""One exception hierarchy for the whole gateway; each message says what was wrong."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used; names the key and the file (and line when known)."""

    def __init__(self, key: str, problem: str, path: str | None = None, line: int | None = None):
        self.key = key
        self.problem = problem
        self.path = path
        self.line = line
        where = path or "built-in defaults"
        if line:
            where = f"{where}:{line}"
        super().__init__(f"config error in {where}: {key}: {problem}")


class InvalidAddress(GatewayError):
    """An email address or phone number that cannot be normalised; never stored."""

    def __init__(self, address: str, reason: str):
        self.address = address
        self.reason = reason
        super().__init__(f"invalid address {address!r}: {reason}")


class ValidationError(GatewayError):
    """A record with one or more bad fields; `fields` maps field name -> problem."""

    def __init__(self, fields: dict[str, str]):
        self.fields = dict(fields)
        detail = "; ".join(f"{k}: {v}" for k, v in self.fields.items())
        super().__init__(f"invalid record: {detail}")


class TokenError(GatewayError):
    """An unsubscribe token that is malformed, forged or unknown."""


class StoreUnavailable(GatewayError):
    """The ledger or spool cannot be written right now (locked, disk full); retry later."""
