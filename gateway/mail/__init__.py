"""Email channel: SMTP session, MIME rewriting, DKIM signing, delivery, inbound opt-out mail."""
