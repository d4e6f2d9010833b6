"""Webhook signatures of the SMS providers: Twilio's ``X-Twilio-Signature`` and Vonage's ``sig``.

Twilio (HMAC-SHA1 with the account auth token)::

    data = url + "".join(key + value for key in sorted(keys) for value in sorted(values(key)))
    signature = base64(HMAC-SHA1(auth_token, data))

``url`` is the full URL Twilio requested, query string included; form parameters are sorted
by name, and a name that occurs more than once contributes each distinct value, sorted
(as Twilio's ``RequestValidator`` does with multi-dicts). Twilio's back end is not
consistent about default ports, so, like ``RequestValidator``, `verify_twilio` accepts a
signature over the URL as given, over the URL with its port removed, and over the URL
with the scheme's default port added (443 for https, else 80) when it has none.

Vonage (signed SMS webhooks, ``signature_secret`` from the dashboard)::

    data = "".join("&" + key + "=" + clean(value) for key in sorted(params) if key != "sig")
    md5hash (legacy, the dashboard default): sig = hex(MD5(data + secret))
    md5 | sha1 | sha256 | sha512:            sig = hex(HMAC-<method>(secret, data))

``clean`` replaces every ``&`` and ``=`` in a value with ``_``. ``timestamp`` (Unix
seconds, UTC) is one of the signed parameters; `verify_vonage` also rejects a timestamp
more than ``max_skew_seconds`` away from now, so a captured request cannot be replayed
later. Hex digests are compared without regard to case.

Both verifiers compare in constant time (`hmac.compare_digest`). A missing, malformed or
wrong signature, or a stale timestamp, gives False. An empty secret or an unknown method
is a configuration mistake on our side and raises `SignatureError` instead, so that it
shows up as a server error rather than as every webhook being quietly refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import GatewayError

Params = Mapping[str, str] | Iterable[tuple[str, str]]

VONAGE_METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")


class SignatureError(GatewayError):
    """A signature cannot be computed: the secret is empty or the method is unknown."""


def twilio_signature(url: str, params: Params, auth_token: str) -> str:
    """Twilio's ``X-Twilio-Signature`` for a request to `url` with form `params`."""
    if not auth_token:
        raise SignatureError(
            "the Twilio auth token is empty; set sms.twilio.auth_token (or the stream api_key)"
        )
    values: dict[str, set[str]] = {}
    for key, value in _pairs(params):
        values.setdefault(key, set()).add(value)
    data = url + "".join(key + value for key in sorted(values) for value in sorted(values[key]))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(url: str, params: Params, signature: str | None, auth_token: str) -> bool:
    """True when `signature` is Twilio's signature of `url` (or a port variant) and `params`."""
    pairs = list(_pairs(params))
    if not auth_token:
        twilio_signature(url, pairs, auth_token)  # raises SignatureError
    if not signature:
        return False
    given = signature.encode()
    matches = [
        hmac.compare_digest(twilio_signature(candidate, pairs, auth_token).encode(), given)
        for candidate in _twilio_url_variants(url)
    ]
    return any(matches)


def _twilio_url_variants(url: str) -> list[str]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number: only the URL as given can match
        return [url]
    if port is not None:
        other = parts._replace(netloc=parts.netloc[: parts.netloc.rfind(":")])
    else:
        default = 443 if parts.scheme == "https" else 80
        other = parts._replace(netloc=f"{parts.netloc}:{default}")
    return list(dict.fromkeys((url, urlunsplit(parts), urlunsplit(other))))


def vonage_signature(params: Params, secret: str, method: str = "md5hash") -> str:
    """Vonage's ``sig`` (lower-case hex) over `params`; any ``sig`` among them is left out."""
    if not secret:
        raise SignatureError(
            "the Vonage signature secret is empty; set sms.vonage.signature_secret"
        )
    data = "".join(
        f"&{key}={_vonage_clean(value)}" for key, value in sorted(_pairs(params)) if key != "sig"
    ).encode()
    if method == "md5hash":
        return hashlib.md5(data + secret.encode()).hexdigest()
    if method in VONAGE_METHODS:
        return hmac.new(secret.encode(), data, method).hexdigest()
    raise SignatureError(
        f"unknown Vonage signature method {method!r}; use one of {', '.join(VONAGE_METHODS)}"
    )


def verify_vonage(
    params: Params,
    secret: str,
    method: str = "sha256",
    max_skew_seconds: float = 300,
    now: float | None = None,
) -> bool:
    """True when `params` carry a valid ``sig`` and a ``timestamp`` within the allowed skew.

    `method` must match the signing method chosen in the Vonage dashboard (whose default
    is "md5hash"); `now` is Unix seconds, defaulting to the current time.
    """
    fields = dict(_pairs(params))
    expected = vonage_signature(fields, secret, method)  # raises on bad configuration
    signature = fields.get("sig")
    if not signature:
        return False
    try:
        timestamp = int(fields.get("timestamp", ""))
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > max_skew_seconds:
        return False
    return hmac.compare_digest(expected.encode(), signature.lower().encode())


def _vonage_clean(value: object) -> str:
    return str(value).replace("&", "_").replace("=", "_")


def _pairs(params: Params) -> Iterable[tuple[str, str]]:
    # Mapping.items() of an aiohttp/multidict MultiDict yields repeated keys too.
    return params.items() if isinstance(params, Mapping) else params
