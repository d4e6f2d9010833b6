"""Texts: segment counting, inbound keywords, webhook signatures and provider adapters."""
