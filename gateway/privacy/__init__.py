"""Privacy of the people in the ledger (docs/privacy.md): the suppression key that keeps an
erased person suppressed without keeping their address, erasure, and retention."""
