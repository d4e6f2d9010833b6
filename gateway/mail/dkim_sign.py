"""DKIM signing of rewritten copies (RSA or Ed25519 keys, relaxed/relaxed, dkimpy).

Every DKIM-Signature already on the message is removed before signing. The rewrite changed
the body (footer) and headers (List-Unsubscribe, Reply-To, X-Gateway-* removed), so each of
those signatures now fails; a failing signature of the sender's own or its ESP's domain only
earns DMARC failure reports and spam-filter suspicion, and ours replaces it.
"""

from __future__ import annotations

import base64
import importlib.util
import re
from pathlib import Path

import dkim
import dkim.crypto

from gateway.errors import ConfigError, GatewayError

# Signed when present, in this order (RFC 6376 5.4.1; RFC 8058 requires the List-* pair).
SIGNED_HEADERS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
    b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type",
    b"content-transfer-encoding",
)
# Listed once more than present, so that a From added in transit breaks the signature.
OVERSIGNED_HEADERS = (b"from",)

_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----(.+?)-----END \1-----", re.DOTALL)
_ED25519_OID = bytes.fromhex("06032b6570")  # 1.3.101.112
_ED25519_SEED_TAG = bytes.fromhex("04220420")  # OCTET STRING { OCTET STRING (32) }
_RSA_OID = bytes.fromhex("06092a864886f70d010101")


class DkimKeyError(GatewayError):
    """The DKIM private key cannot be used; says what is wrong with it."""


class DkimSigningError(GatewayError):
    """dkimpy refused to sign a message (malformed header section)."""


class DkimSigner:
    """Signs outgoing copies for one domain and selector."""

    def __init__(self, domain: str, selector: str, private_key_pem: bytes):
        self.domain = domain
        self.selector = selector
        self._domain, self._selector = domain.encode("ascii"), selector.encode("ascii")
        self.algorithm, self._key = _load_key(private_key_pem)

    def sign(self, data: bytes) -> bytes:
        """Return `data` without any old DKIM-Signature and with a new one on top."""
        headers, body = _split(data)
        kept = [(name, value) for name, value in headers if name.lower() != b"dkim-signature"]
        message = b"".join(name + b":" + value for name, value in kept) + b"\r\n" + body
        present = {name.lower() for name, _ in kept}
        include = [h for h in SIGNED_HEADERS if h in present] + list(OVERSIGNED_HEADERS)
        try:
            signature = dkim.sign(
                message,
                self._selector,
                self._domain,
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.algorithm,
                include_headers=include,
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            raise DkimSigningError(f"cannot DKIM-sign message for d={self.domain}: {exc}") from exc
        return signature + message


def load_signer(domain: str, selector: str, private_key_file: str) -> DkimSigner | None:
    """Build the signer from the `[dkim]` settings; None when `domain` is empty."""
    if not domain:
        return None
    if not selector:
        raise ConfigError("dkim.selector", "is empty but dkim.domain is set")
    for key, value in (("dkim.domain", domain), ("dkim.selector", selector)):
        if not value.isascii():
            raise ConfigError(key, f"{value!r} must be ASCII (write a domain in its xn-- form)")
    if not private_key_file:
        raise ConfigError("dkim.private_key_file", "is empty but dkim.domain is set")
    try:
        pem = Path(private_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError("dkim.private_key_file", f"cannot read {private_key_file}: {exc}") from None
    try:
        return DkimSigner(domain, selector, pem)
    except DkimKeyError as exc:
        raise ConfigError("dkim.private_key_file", str(exc)) from exc


def _split(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Header fields (name, value with folding and CRLF) and body, CRLF throughout."""
    try:
        headers, body = dkim.rfc822_parse(data)
    except dkim.MessageFormatError as exc:
        raise DkimSigningError(f"cannot DKIM-sign a message with a broken header: {exc}") from exc
    return [(name, value) for name, value in headers], body


def _load_key(pem: bytes) -> tuple[bytes, bytes]:
    """Return (signature algorithm, key in the form dkimpy wants) for a PEM private key.

    RSA keys (PKCS#1 or PKCS#8 PEM) are passed as they are; Ed25519 keys (PKCS#8 PEM, or
    the base64 32-byte seed that dkimpy's dknewkey writes) become the base64 seed.
    """
    match = _PEM.search(pem)
    if match is None:
        return b"ed25519-sha256", _ed25519_seed(pem.strip())
    kind = match.group(1)
    if b"ENCRYPTED" in kind:
        raise DkimKeyError("the DKIM private key is encrypted; store it without a passphrase")
    try:
        der = base64.b64decode(b"".join(match.group(2).split()), validate=True)
    except ValueError as exc:
        raise DkimKeyError(f"the DKIM private key PEM is not valid base64: {exc}") from exc
    if _ED25519_OID in der[:16]:
        at = der.find(_ED25519_SEED_TAG)
        seed = der[at + len(_ED25519_SEED_TAG):][:32] if at >= 0 else b""
        return b"ed25519-sha256", _ed25519_seed(base64.b64encode(seed))
    if kind == b"RSA PRIVATE KEY" or _RSA_OID in der[:32]:
        try:
            dkim.crypto.parse_pem_private_key(pem)
        except dkim.crypto.UnparsableKeyError as exc:
            raise DkimKeyError(f"the DKIM RSA private key cannot be parsed: {exc}") from exc
        return b"rsa-sha256", pem
    raise DkimKeyError(f"the DKIM private key ({kind.decode()}) is neither RSA nor Ed25519")


def _ed25519_seed(seed_b64: bytes) -> bytes:
    """Check a base64 Ed25519 seed and that pynacl, which dkimpy needs for it, is there."""
    try:
        seed = base64.b64decode(seed_b64, validate=True)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise DkimKeyError("the DKIM private key is neither a PEM key nor an Ed25519 seed")
    if importlib.util.find_spec("nacl") is None:
        raise DkimKeyError("an Ed25519 DKIM key needs the pynacl package: pip install pynacl")
    return seed_b64
