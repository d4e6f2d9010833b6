"""Consent gateway: decides, per recipient, whether marketing may be sent (UK PECR),
inserts the opt-out every marketing message must carry, and records opt-outs."""

__version__ = "0.3.0"
