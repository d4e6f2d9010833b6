"""The SQLite store: evidence, opt-outs, decisions, tokens and the spool."""

from .addresses import guess_channel, mask, normalise, normalise_email, normalise_phone
from .records import FIELDS, parse_evidence, parse_time
from .store import DecisionRecord, Ledger, TokenRecord, now_iso

__all__ = [
    "FIELDS", "DecisionRecord", "Ledger", "TokenRecord", "guess_channel", "mask", "normalise",
    "normalise_email", "normalise_phone", "now_iso", "parse_evidence", "parse_time",
]
