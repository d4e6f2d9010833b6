"""TOML -> typed, validated settings. A bad config stops start-up with one message that
names the key, the file and (when it can be found) the line."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .policy import NATURES, ORG_TYPES, PURPOSES, RULESETS, OrgPolicy
from .policy.regions import COUNTRIES, country_code

EXAMPLE_SECRETS = {"change-me", "change-me-too", "secret"}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The widest trusted network (prefix length by IP version) accepted without
# `smtp.allow_wide_trusted_networks`: "0.0.0.0/0" there would make an open relay.
WIDEST_TRUSTED_PREFIX = {4: 8, 6: 32}


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


AUTO_PROCESSES = 8


@dataclass(frozen=True)
class GatewaySettings:
    data_dir: Path
    ruleset: str
    mode: str
    processes: int = 1  # worker processes of `gateway run` (each can use one core)
    event_loop: str = "asyncio"  # or "uvloop" (gateway/eventloop.py)

    @property
    def monitor(self) -> bool:
        return self.mode == "monitor"


@dataclass(frozen=True)
class SmtpSettings:
    listen: Listen
    hostname: str
    max_message_size: int
    max_recipients: int
    timeout: int
    tls_cert: str
    tls_key: str
    trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


@dataclass(frozen=True)
class HttpSettings:
    listen: Listen
    public_url: str
    admin_token: str


@dataclass(frozen=True)
class UnsubscribeSettings:
    secrets: tuple[str, ...]
    mailto_domain: str
    reply_handling: str


@dataclass(frozen=True)
class SubscriptionSettings:
    """[subscriptions]: the double opt-in's confirmation messages (seconds)."""

    resend_after: int = 600
    max_per_hour: int = 3
    confirm_within: int = 7 * 86400
    mail_from: str = ""  # "" is confirm@ the unsubscribe mailto_domain


@dataclass(frozen=True)
class DeliverySettings:
    upstream: str
    max_age: int
    retry_initial: int
    retry_max: int
    workers: int
    timeout: int = 60  # seconds an SMTP upstream may take to answer one step


@dataclass(frozen=True)
class DkimSettings:
    domain: str
    selector: str
    private_key_file: str

    @property
    def enabled(self) -> bool:
        return bool(self.domain)


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    api_base: str


@dataclass(frozen=True)
class VonageSettings:
    api_key: str
    api_secret: str
    signature_secret: str
    api_base: str
    signature_method: str = "md5hash"


@dataclass(frozen=True)
class SmsSettings:
    provider: str
    stop_text: str
    inbound_forward_url: str
    outbox: Path
    twilio: TwilioSettings
    vonage: VonageSettings


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    type: str
    similar: tuple[tuple[str, ...], ...]
    soft_opt_in_max_age_days: int
    indirect_consent_max_age_days: int
    default_region: str
    # Rule sets per recipient (docs/rulesets.md): region key -> rule set; empty: the
    # [gateway] ruleset for everyone. Identification the footers and texts carry.
    rulesets: dict[str, str] = field(default_factory=dict)
    postal_address: str = ""
    contact: str = ""
    brand: str = ""
    # People-friendly names of `similar` groups, keyed by any category of the group.
    category_names: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Stream:
    id: str
    org: str
    purpose: str
    nature: str
    category: str
    smtp_username: str
    smtp_password: str = field(repr=False)
    api_key: str = field(repr=False)
    sms_from: tuple[str, ...]
    allow_headers: bool


@dataclass(frozen=True)
class LedgerSettings:
    """Where the ledger lives: `url` "" (SQLite in data_dir), sqlite:///PATH (resolved to
    an absolute path) or a libpq URL (postgresql://…; PG* environment variables apply)."""

    url: str = field(default="", repr=False)  # may hold a password
    # PostgreSQL: keep people's records read lately, forgotten on change (ledger/cache.py)
    cache: bool = True

    @property
    def postgres(self) -> bool:
        return self.url.startswith(("postgresql:", "postgres:"))


# -- opt-outs that arrive from elsewhere: ESP webhooks and ARF reports (docs/decisions.md) --

ESP_NAMES = ("sendgrid", "mailgun", "postmark")


@dataclass(frozen=True)
class EspSettings:
    """One `[esp.NAME]`: the credential its webhook is checked with, and `org`, the org
    whose mail that ESP sends (for events that carry no gateway token)."""

    name: str
    org: str = ""
    public_key: str = field(default="", repr=False)  # sendgrid: base64 DER (or PEM)
    signing_key: str = field(default="", repr=False)  # mailgun
    username: str = ""  # postmark (basic auth)
    password: str = field(default="", repr=False)

    @property
    def configured(self) -> bool:
        """Its webhook can be checked: the credential is set."""
        if self.name == "sendgrid":
            return bool(self.public_key)
        if self.name == "mailgun":
            return bool(self.signing_key)
        return bool(self.username and self.password)


@dataclass(frozen=True)
class FeedbackSettings:
    """Where ARF reports arrive besides abuse+reports@mailto_domain (lower case)."""

    report_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class PrivacySettings:
    """[privacy]: the key of the erasures' suppression hashes ("" = one generated and kept
    in data_dir, see gateway/privacy/suppression.py) and how long decisions are kept
    (seconds; 0 = forever)."""

    suppression_key: str = field(default="", repr=False)
    decisions_retention: int = 730 * 86400


@dataclass(frozen=True)
class Settings:
    """The whole validated configuration."""

    path: Path | None
    gateway: GatewaySettings
    smtp: SmtpSettings
    http: HttpSettings
    unsubscribe: UnsubscribeSettings
    delivery: DeliverySettings
    dkim: DkimSettings
    sms: SmsSettings
    orgs: dict[str, Org]
    streams: tuple[Stream, ...]
    ledger: LedgerSettings = LedgerSettings()
    esp: dict[str, EspSettings] = field(default_factory=dict)  # configured ones only
    feedback: FeedbackSettings = FeedbackSettings()
    privacy: PrivacySettings = PrivacySettings()
    subscriptions: SubscriptionSettings = SubscriptionSettings()

    def org_policy(self, org_id: str) -> OrgPolicy | None:
        """The rules' view of an org (None for an unknown org: callers fail closed)."""
        return self._org_policies.get(org_id)

    @functools.cached_property
    def _org_policies(self) -> dict[str, OrgPolicy]:
        """Made once: settings never change while the gateway runs."""
        return {org.id: OrgPolicy(
            id=org.id,
            name=org.name,
            type=org.type,
            similar=tuple(frozenset(g) for g in org.similar),
            known_categories=frozenset(s.category for s in self.streams if s.org == org.id),
            soft_opt_in_max_age_days=org.soft_opt_in_max_age_days,
            indirect_consent_max_age_days=org.indirect_consent_max_age_days,
        ) for org in self.orgs.values()}

    @functools.cached_property
    def reachable_rulesets(self) -> dict[str, frozenset[str]]:
        """Per org, every rule set a recipient of it can be decided under."""
        found = {}
        for org in self.orgs.values():
            names = set(org.rulesets.values())
            if "default" not in org.rulesets:
                names.add(self.gateway.ruleset)
            found[org.id] = frozenset(names)
        return found

    def stream(self, stream_id: str) -> Stream | None:
        return next((s for s in self.streams if s.id == stream_id), None)

    def stream_for_smtp_user(self, username: str) -> Stream | None:
        return next((s for s in self.streams if s.smtp_username == username), None)

    def org_for_sms_number(self, number: str) -> Org | None:
        for s in self.streams:
            if number in s.sms_from:
                return self.orgs.get(s.org)
        return None


def example_text() -> str:
    """The shipped config.example.toml: the built-in defaults."""
    return resources.files("gateway").joinpath("config.example.toml").read_text("utf-8")


def load(path: str | Path | None = None) -> Settings:
    """Load `path`; with None, ./config.toml if present, else the built-in defaults."""
    if path is None and Path("config.toml").exists():
        path = "config.toml"
    if path is None:
        return parse(example_text(), None, Path.cwd())
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise ConfigError("--config", f"cannot read the file: {exc.strerror}", str(p)) from None
    return parse(text, p, p.resolve().parent)


def parse(text: str, path: Path | None, base: Path) -> Settings:
    """Validate TOML text into Settings; relative paths resolve against `base`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("(syntax)", str(exc), str(path) if path else None) from None
    return _Reader(raw, text, path, base).settings()


_TOML_TYPES = {str: "a string", int: "an integer", float: "a float", bool: "a boolean",
               list: "an array", dict: "a table"}


def _toml_type(kind: type) -> str:
    """The TOML name of a parsed value's type, as a user wrote it."""
    return _TOML_TYPES.get(kind, kind.__name__)


def _has_control(text: str) -> bool:
    """A line break or other control character (which would break a header or footer)."""
    return any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in text)


class _Reader:
    """Walks the raw TOML once, checking each key's presence, type and value."""

    def __init__(self, raw: dict, text: str, path: Path | None, base: Path):
        self.raw, self.text, self.path, self.base = raw, text, path, base

    # -- errors -------------------------------------------------------------------------

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(key, problem, str(self.path) if self.path else None, self.line_of(key))

    def line_of(self, dotted: str) -> int | None:
        """Best-effort line of a dotted key like `stream[1].org` or `smtp.listen`."""
        m = re.match(r"^(\w+)\[(\d+)\]\.?(.*)$", dotted)
        lines = self.text.splitlines()
        if m:
            table, index, key = m.group(1), int(m.group(2)), m.group(3)
            headers = [i for i, ln in enumerate(lines) if ln.strip() == f"[[{table}]]"]
            if index >= len(headers):
                return None
            start = headers[index]
        else:
            section, _, key = dotted.rpartition(".")
            start = next((i for i, ln in enumerate(lines) if ln.strip() == f"[{section}]"), 0)
        if not key:
            return start + 1
        key = key.split(".")[-1]
        for i in range(start, len(lines)):
            if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
        return start + 1 if m or start else None

    # -- typed getters ------------------------------------------------------------------

    def table(self, section: dict, name: str, known: set[str]) -> dict:
        unknown = sorted(set(section) - known)
        if unknown:
            raise self.fail(f"{name}.{unknown[0]}" if name else unknown[0], "unknown key")
        return section

    def get(self, section: dict, name: str, key: str, kind: type | tuple, default: Any) -> Any:
        value = section.get(key, default)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        dotted = f"{name}.{key}" if name else key
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(dotted, f"expected {_toml_type(kinds[0])}, got a boolean")
        if not isinstance(value, kinds):
            want = " or ".join(_toml_type(k) for k in kinds)
            raise self.fail(dotted, f"expected {want}, got {_toml_type(type(value))}")
        return value

    def choice(self, section: dict, name: str, key: str, options, default: str) -> str:
        value = self.get(section, name, key, str, default)
        if value not in options:
            raise self.fail(f"{name}.{key}", f"{value!r} is not one of {', '.join(options)}")
        return value

    def listen(self, section: dict, name: str, default: str) -> Listen:
        value = self.get(section, name, "listen", str, default)
        m = re.match(r"^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.\-]+)):(\d{1,5})$", value)
        if not m or not 0 < int(m.group(3)) < 65536:
            raise self.fail(f"{name}.listen", f"{value!r} is not HOST:PORT (port 1-65535)")
        host = m.group(1) or m.group(2)
        if m.group(1):
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise self.fail(f"{name}.listen", f"{host!r} is not an IPv6 address") from None
        return Listen(host, int(m.group(3)))

    def duration(self, section: dict, name: str, key: str, default: str) -> int:
        value = self.get(section, name, key, (str, int), default)
        m = _DURATION.match(str(value))
        if not m:
            raise self.fail(f"{name}.{key}", f"{value!r} is not a duration like 30s, 10m, 1h, 5d")
        return int(m.group(1)) * _UNITS[m.group(2)]

    def path_of(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.base / p

    def str_list(self, section: dict, name: str, key: str) -> tuple[str, ...]:
        value = self.get(section, name, key, list, [])
        if not all(isinstance(v, str) for v in value):
            raise self.fail(f"{name}.{key}", "expected a list of strings")
        return tuple(value)

    def count(self, section: dict, name: str, key: str, default: int, minimum: int = 0) -> int:
        value = self.get(section, name, key, int, default)
        if value < minimum:
            raise self.fail(f"{name}.{key}", f"must be at least {minimum}")
        return value

    # -- sections -----------------------------------------------------------------------

    def settings(self) -> Settings:
        known = {"gateway", "smtp", "http", "unsubscribe", "delivery", "dkim", "sms",
                 "org", "stream", "ledger", "esp", "feedback", "privacy",
                 "subscriptions"}
        self.table(self.raw, "", known)
        for name in known - {"org", "stream"}:
            self.get(self.raw, "", name, dict, {})
        orgs = self.orgs()
        streams = self.streams(orgs)
        settings = Settings(
            path=self.path,
            gateway=self.gateway_section(),
            smtp=self.smtp_section(),
            http=self.http_section(),
            unsubscribe=self.unsubscribe_section(),
            delivery=self.delivery_section(),
            dkim=self.dkim_section(),
            sms=self.sms_section(),
            orgs=orgs,
            streams=streams,
            ledger=self.ledger_section(),
            esp=self.esp_section(orgs),
            feedback=self.feedback_section(),
            privacy=self.privacy_section(),
            subscriptions=self.subscriptions_section(),
        )
        self.check_exposure(settings)
        self.check_identification(settings)
        return settings

    def gateway_section(self) -> GatewaySettings:
        s = self.table(self.raw.get("gateway", {}), "gateway",
                       {"data_dir", "ruleset", "mode", "processes", "event_loop"})
        return GatewaySettings(
            data_dir=self.path_of(self.get(s, "gateway", "data_dir", str, "var")),
            ruleset=self.choice(s, "gateway", "ruleset", tuple(RULESETS), "uk-pecr"),
            mode=self.choice(s, "gateway", "mode", ("enforce", "monitor"), "enforce"),
            processes=self.processes(s),
            event_loop=self.choice(s, "gateway", "event_loop", ("asyncio", "uvloop"),
                                   "asyncio"),
        )

    def subscriptions_section(self) -> SubscriptionSettings:
        n = "subscriptions"
        s = self.table(self.raw.get(n, {}), n,
                       {"resend_after", "max_per_hour", "confirm_within", "mail_from"})
        mail_from = self.get(s, n, "mail_from", str, "").strip()
        if mail_from and not re.match(r"^[^@\s<>\"]+@[A-Za-z0-9.\-]+$", mail_from):
            raise self.fail(f"{n}.mail_from", f"{mail_from!r} is not an email address")
        return SubscriptionSettings(
            resend_after=self.duration(s, n, "resend_after", "10m"),
            max_per_hour=self.count(s, n, "max_per_hour", 3, minimum=1),
            confirm_within=self.duration(s, n, "confirm_within", "7d"),
            mail_from=mail_from,
        )

    def ledger_section(self) -> LedgerSettings:
        s = self.table(self.raw.get("ledger", {}), "ledger", {"url", "cache"})
        url = self.get(s, "ledger", "url", str, "").strip()
        cache = self.get(s, "ledger", "cache", bool, True)
        if not url:
            return LedgerSettings()
        if url.startswith("sqlite:"):
            rest = url.removeprefix("sqlite:")
            if not rest.startswith("///") or len(rest) <= 3:
                raise self.fail("ledger.url", "expected sqlite:///relative/path.db or "
                                "sqlite:////absolute/path.db")
            return LedgerSettings(f"sqlite:///{self.path_of(rest[3:])}")
        if url.startswith(("postgresql://", "postgres://")) or url.startswith("postgresql:"):
            from psycopg.conninfo import conninfo_to_dict  # only PostgreSQL users need it
            try:
                conninfo_to_dict(url)
            except Exception as exc:  # noqa: BLE001 - libpq's parser: any failure is a bad URL
                raise self.fail("ledger.url", f"not a valid libpq URL: {type(exc).__name__}"
                                ) from None
            return LedgerSettings(url, cache)
        raise self.fail("ledger.url", "expected sqlite:///PATH or postgresql://…")

    def esp_section(self, orgs: dict[str, Org]) -> dict[str, EspSettings]:
        """`[esp.sendgrid]`, `[esp.mailgun]`, `[esp.postmark]`: only those whose credential
        is set are returned (the others' webhooks answer 404)."""
        raw = self.table(self.raw.get("esp", {}), "esp", set(ESP_NAMES))
        keys = {"sendgrid": {"public_key", "org"}, "mailgun": {"signing_key", "org"},
                "postmark": {"username", "password", "org"}}
        found: dict[str, EspSettings] = {}
        for name in ESP_NAMES:
            n = f"esp.{name}"
            s = self.table(self.get(raw, "esp", name, dict, {}), n, keys[name])
            values = {k: self.get(s, n, k, str, "").strip() for k in keys[name]}
            if values["org"] and values["org"] not in orgs:
                raise self.fail(f"{n}.org", f"names no [[org]]: {values['org']!r}")
            if name == "postmark" and bool(values["username"]) != bool(values["password"]):
                raise self.fail(f"{n}.password" if values["username"] else f"{n}.username",
                                "username and password must be set together")
            if name == "sendgrid" and values["public_key"]:
                from .esp.signatures import load_sendgrid_key  # cryptography: its users only
                try:
                    load_sendgrid_key(values["public_key"])
                except ValueError as exc:
                    raise self.fail(f"{n}.public_key", str(exc)) from None
            esp = EspSettings(name, **values)
            if esp.configured:
                found[name] = esp
        return found

    def feedback_section(self) -> FeedbackSettings:
        n = "feedback"
        s = self.table(self.raw.get(n, {}), n, {"report_addresses"})
        addresses = []
        for address in self.str_list(s, n, "report_addresses"):
            local, at, domain = address.strip().rpartition("@")
            if not at or not local or not re.match(
                    r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$", domain) \
                    or _has_control(local) or " " in local:
                raise self.fail(f"{n}.report_addresses", f"{address!r} is not an email address")
            addresses.append(address.strip().lower())
        return FeedbackSettings(tuple(addresses))

    def privacy_section(self) -> PrivacySettings:
        s = self.table(self.raw.get("privacy", {}), "privacy",
                       {"suppression_key", "decisions_retention"})
        key = self.get(s, "privacy", "suppression_key", str, "")
        if key and len(key) < 8:
            raise self.fail("privacy.suppression_key", "too short: use a long random value "
                            "(or leave it out: one is generated in data_dir)")
        retention = self.duration(s, "privacy", "decisions_retention", "730d")
        if 0 < retention < 86400:
            raise self.fail("privacy.decisions_retention", 'at least "1d" (the 24-hour '
                            'window of /status must stay whole), or "0" to keep decisions')
        return PrivacySettings(suppression_key=key, decisions_retention=retention)

    def processes(self, section: dict) -> int:
        """`processes`: a count (1 to 64), or "auto": one per CPU core, at most
        AUTO_PROCESSES (the ledger takes one write at a time: more add little)."""
        value = section.get("processes", 1)  # the contract: one process by default
        if value == "auto":
            return max(1, min(AUTO_PROCESSES, len(os.sched_getaffinity(0))))
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
            raise self.fail("gateway.processes", 'expected a number from 1 to 64, or "auto"')
        return value

    def smtp_section(self) -> SmtpSettings:
        n = "smtp"
        s = self.table(self.raw.get(n, {}), n, {
            "listen", "hostname", "max_message_size", "max_recipients", "timeout",
            "tls_cert", "tls_key", "trusted_networks", "allow_wide_trusted_networks"})
        allow_wide = self.get(s, n, "allow_wide_trusted_networks", bool, False)
        nets = []
        for cidr in self.str_list(s, n, "trusted_networks"):
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise self.fail(f"{n}.trusted_networks", f"{cidr!r} is not a CIDR") from None
            if net.prefixlen < WIDEST_TRUSTED_PREFIX[net.version] and not allow_wide:
                raise self.fail(f"{n}.trusted_networks", (
                    f"{cidr!r} is wider than /{WIDEST_TRUSTED_PREFIX[net.version]} and would "
                    "let a large part of the internet relay without AUTH; list narrower "
                    "networks, or set smtp.allow_wide_trusted_networks = true"))
            nets.append(net)
        cert = self.get(s, n, "tls_cert", str, "")
        key = self.get(s, n, "tls_key", str, "")
        if bool(cert) != bool(key):
            raise self.fail(f"{n}.tls_key" if cert else f"{n}.tls_cert",
                            "tls_cert and tls_key must be set together")
        for k, v in (("tls_cert", cert), ("tls_key", key)):
            if v and not self.path_of(v).is_file():
                raise self.fail(f"{n}.{k}", f"file {v!r} not found")
        return SmtpSettings(
            listen=self.listen(s, n, "127.0.0.1:2525"),
            hostname=self.get(s, n, "hostname", str, "gateway.example.test"),
            max_message_size=self.count(s, n, "max_message_size", 26214400, 1024),
            max_recipients=self.count(s, n, "max_recipients", 100, 1),
            timeout=self.count(s, n, "timeout", 300, 1),
            tls_cert=str(self.path_of(cert)) if cert else "",
            tls_key=str(self.path_of(key)) if key else "",
            trusted_networks=tuple(nets),
        )

    def http_section(self) -> HttpSettings:
        n = "http"
        s = self.table(self.raw.get(n, {}), n, {"listen", "public_url", "admin_token"})
        public_url = self.get(s, n, "public_url", str, "http://127.0.0.1:8025").rstrip("/")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc \
                or _has_control(public_url) or " " in public_url:
            raise self.fail(f"{n}.public_url", f"{public_url!r} is not an http(s) URL")
        token = self.get(s, n, "admin_token", str, "change-me")
        if not token:
            raise self.fail(f"{n}.admin_token", "must not be empty")
        return HttpSettings(self.listen(s, n, "127.0.0.1:8025"), public_url, token)

    def unsubscribe_section(self) -> UnsubscribeSettings:
        n = "unsubscribe"
        s = self.table(self.raw.get(n, {}), n, {"secret", "mailto_domain", "reply_handling"})
        secret = self.get(s, n, "secret", (str, list), "change-me-too")
        secrets = (secret,) if isinstance(secret, str) else tuple(secret)
        if not secrets or not all(isinstance(x, str) and x for x in secrets):
            raise self.fail(f"{n}.secret", "expected a non-empty string or list of strings")
        domain = self.get(s, n, "mailto_domain", str, "unsubscribe.gateway.example.test")
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?$", domain):
            raise self.fail(f"{n}.mailto_domain", f"{domain!r} is not a domain name")
        return UnsubscribeSettings(
            secrets=secrets,
            mailto_domain=domain.lower(),
            reply_handling=self.choice(s, n, "reply_handling", ("rewrite", "off"), "rewrite"),
        )

    def delivery_section(self) -> DeliverySettings:
        n = "delivery"
        s = self.table(self.raw.get(n, {}), n,
                       {"upstream", "max_age", "retry_initial", "retry_max", "workers",
                        "timeout"})
        upstream = self.get(s, n, "upstream", str, "maildir:var/outbox")
        if upstream.startswith("maildir:"):
            upstream = "maildir:" + str(self.path_of(upstream.removeprefix("maildir:")))
        else:
            parts = urlsplit(upstream)
            query = parts.query.removeprefix("tls=")
            if parts.scheme != "smtp" or not parts.hostname or query not in (
                "", "starttls", "implicit", "none"
            ):
                raise self.fail(f"{n}.upstream", f"{upstream!r} is not maildir:PATH or "
                                "smtp://[user:pass@]host:port[?tls=starttls|implicit|none]")
            try:
                _ = parts.port
            except ValueError:
                raise self.fail(f"{n}.upstream", "port is not a number") from None
        return DeliverySettings(
            upstream=upstream,
            max_age=self.duration(s, n, "max_age", "5d"),
            retry_initial=self.duration(s, n, "retry_initial", "30s"),
            retry_max=self.duration(s, n, "retry_max", "1h"),
            workers=self.count(s, n, "workers", 50, 1),
            timeout=max(1, self.duration(s, n, "timeout", "60s")),
        )

    def dkim_section(self) -> DkimSettings:
        n = "dkim"
        s = self.table(self.raw.get(n, {}), n, {"domain", "selector", "private_key_file"})
        d = DkimSettings(
            self.get(s, n, "domain", str, ""),
            self.get(s, n, "selector", str, ""),
            self.get(s, n, "private_key_file", str, ""),
        )
        if d.domain:
            if not d.selector:
                raise self.fail(f"{n}.selector", "required when dkim.domain is set")
            key = self.path_of(d.private_key_file) if d.private_key_file else None
            if key is None or not key.is_file():
                raise self.fail(f"{n}.private_key_file", "required, and must be a readable file")
            d = DkimSettings(d.domain, d.selector, str(key))
        return d

    def sms_section(self) -> SmsSettings:
        n = "sms"
        s = self.table(self.raw.get(n, {}), n, {
            "provider", "stop_text", "inbound_forward_url", "outbox", "twilio", "vonage"})
        tw = self.table(self.get(s, n, "twilio", dict, {}), "sms.twilio",
                        {"account_sid", "auth_token", "api_base"})
        vo = self.table(self.get(s, n, "vonage", dict, {}), "sms.vonage",
                        {"api_key", "api_secret", "signature_secret", "api_base",
                         "signature_method"})
        provider = self.choice(s, n, "provider", ("twilio", "vonage", "outbox"), "outbox")
        twilio = TwilioSettings(
            self.get(tw, "sms.twilio", "account_sid", str, ""),
            self.get(tw, "sms.twilio", "auth_token", str, ""),
            self.get(tw, "sms.twilio", "api_base", str, "https://api.twilio.com").rstrip("/"),
        )
        vonage = VonageSettings(
            self.get(vo, "sms.vonage", "api_key", str, ""),
            self.get(vo, "sms.vonage", "api_secret", str, ""),
            self.get(vo, "sms.vonage", "signature_secret", str, ""),
            self.get(vo, "sms.vonage", "api_base", str, "https://rest.nexmo.com").rstrip("/"),
            self.choice(vo, "sms.vonage", "signature_method",
                        ("md5hash", "md5", "sha1", "sha256", "sha512"), "md5hash"),
        )
        if provider == "twilio" and not (twilio.account_sid and twilio.auth_token):
            raise self.fail("sms.twilio.account_sid", "required when sms.provider = \"twilio\"")
        if provider == "vonage" and not (vonage.api_key and vonage.api_secret):
            raise self.fail("sms.vonage.api_key", "required when sms.provider = \"vonage\"")
        forward = self.get(s, n, "inbound_forward_url", str, "")
        if forward and urlsplit(forward).scheme not in ("http", "https"):
            raise self.fail(f"{n}.inbound_forward_url", f"{forward!r} is not an http(s) URL")
        return SmsSettings(
            provider=provider,
            stop_text=self.get(s, n, "stop_text", str, "Reply STOP to opt out"),
            inbound_forward_url=forward,
            outbox=self.path_of(self.get(s, n, "outbox", str, "var/sms-outbox.jsonl")),
            twilio=twilio,
            vonage=vonage,
        )

    def orgs(self) -> dict[str, Org]:
        orgs: dict[str, Org] = {}
        raw = self.raw.get("org", [])
        if not isinstance(raw, list):
            raise self.fail("org", "must be an array of tables: [[org]]")
        for i, s in enumerate(raw):
            n = f"org[{i}]"
            self.table(s, n, {"id", "name", "type", "similar", "soft_opt_in_max_age_days",
                              "indirect_consent_max_age_days", "default_region",
                              "rulesets", "postal_address", "contact", "brand",
                              "category_names"})
            org_id = self.get(s, n, "id", str, "")
            if not org_id:
                raise self.fail(f"{n}.id", "required")
            if org_id in orgs or org_id == "*":
                raise self.fail(f"{n}.id", f"duplicate or reserved org id {org_id!r}")
            similar = self.get(s, n, "similar", list, [])
            if not all(isinstance(g, list) and all(isinstance(c, str) for c in g)
                       for g in similar):
                raise self.fail(f"{n}.similar", "expected a list of lists of category names")
            try:
                region = country_code(self.get(s, n, "default_region", str, "GB"))
            except ValueError as exc:
                raise self.fail(f"{n}.default_region", str(exc)) from None
            name = self.get(s, n, "name", str, org_id)
            if _has_control(name):  # it goes into footers, headers and pages
                raise self.fail(f"{n}.name", "must be one line of printable text (no line "
                                "breaks or control characters)")
            orgs[org_id] = Org(
                id=org_id,
                name=name,
                type=self.choice(s, n, "type", ORG_TYPES, "commercial"),
                similar=tuple(tuple(g) for g in similar),
                soft_opt_in_max_age_days=self.count(s, n, "soft_opt_in_max_age_days", 0),
                indirect_consent_max_age_days=self.count(
                    s, n, "indirect_consent_max_age_days", 0),
                default_region=region,
                category_names=self.category_names(s, n),
                **self.org_rulesets(s, n, name),
            )
        return orgs

    def org_rulesets(self, s: dict, n: str, name: str) -> dict:
        """`rulesets`, `postal_address`, `contact`, `brand` of one [[org]]."""
        mapping = self.get(s, n, "rulesets", dict, {})
        for key, value in mapping.items():
            if not (key in ("EU", "default") or key in COUNTRIES):
                raise self.fail(f"{n}.rulesets", f"key {key!r} is not an ISO 3166-1 alpha-2 "
                                "country code (upper case, GB for the UK), EU or default")
            if value not in RULESETS:
                raise self.fail(f"{n}.rulesets", f"{key} = {value!r} is not one of "
                                f"{', '.join(RULESETS)}")
        found = {}
        for key in ("postal_address", "contact", "brand"):
            found[key] = self.get(s, n, key, str, "").strip()
            if _has_control(found[key]):
                raise self.fail(f"{n}.{key}", "must be one line of printable text")
        return {"rulesets": dict(mapping), **found, "brand": found["brand"] or name}

    def check_identification(self, st: Settings) -> None:
        """An org that can reach a rule set asking for its postal address and a contact
        must have them (docs/rulesets.md, "New org keys")."""
        for i, org in enumerate(st.orgs.values()):
            needing = sorted(st.reachable_rulesets[org.id] & {"ca-casl", "us", "au-spam"})
            for key in ("postal_address", "contact"):
                if needing and not getattr(org, key):
                    raise self.fail(f"org[{i}].{key}", f"required: org {org.id!r} can reach "
                                    f"{', '.join(needing)}, whose messages must carry it")

    def category_names(self, section: dict, name: str) -> dict[str, str]:
        """`category_names = { lawnmowers = "Garden machinery" }`: one line each."""
        names = self.get(section, name, "category_names", dict, {})
        for key, value in names.items():
            if not isinstance(value, str) or not value.strip() or _has_control(value):
                raise self.fail(f"{name}.category_names.{key}",
                                "expected one line of printable text")
        return {str(k): v.strip() for k, v in names.items()}

    def streams(self, orgs: dict[str, Org]) -> tuple[Stream, ...]:
        streams: list[Stream] = []
        raw = self.raw.get("stream", [])
        if not isinstance(raw, list):
            raise self.fail("stream", "must be an array of tables: [[stream]]")
        for i, s in enumerate(raw):
            n = f"stream[{i}]"
            self.table(s, n, {"id", "org", "purpose", "nature", "category", "smtp_username",
                              "smtp_password", "api_key", "sms_from", "allow_headers"})
            stream_id = self.get(s, n, "id", str, "")
            if not stream_id:
                raise self.fail(f"{n}.id", "required")
            org = self.get(s, n, "org", str, "")
            if org not in orgs:
                raise self.fail(f"{n}.org", f"names no [[org]]: {org!r}")
            user = self.get(s, n, "smtp_username", str, "")
            if any(x.id == stream_id for x in streams):
                raise self.fail(f"{n}.id", f"duplicate stream id {stream_id!r}")
            if user and any(x.smtp_username == user for x in streams):
                raise self.fail(f"{n}.smtp_username", f"duplicate SMTP username {user!r}")
            streams.append(Stream(
                id=stream_id,
                org=org,
                purpose=self.choice(s, n, "purpose", PURPOSES, "marketing"),
                nature=self.choice(s, n, "nature", NATURES, "commercial"),
                category=self.get(s, n, "category", str, ""),
                smtp_username=user,
                smtp_password=self.get(s, n, "smtp_password", str, ""),
                api_key=self.get(s, n, "api_key", str, ""),
                sms_from=self.str_list(s, n, "sms_from"),
                allow_headers=self.get(s, n, "allow_headers", bool, True),
            ))
        return tuple(streams)

    def check_exposure(self, st: Settings) -> None:
        """Refuse example secrets on a listener other people can reach."""
        if st.smtp.listen.is_loopback and st.http.listen.is_loopback:
            return
        if st.http.admin_token in EXAMPLE_SECRETS:
            raise self.fail("http.admin_token", "still the example value on a non-loopback "
                            "listener; set a long random token")
        if any(s in EXAMPLE_SECRETS for s in st.unsubscribe.secrets):
            raise self.fail("unsubscribe.secret", "still the example value on a non-loopback "
                            "listener; set a long random secret")
        if st.privacy.suppression_key in EXAMPLE_SECRETS | {"change-me-three"}:
            raise self.fail("privacy.suppression_key", "still the example value on a "
                            "non-loopback listener; set a long random key (never rotate it)")
        for i, stream in enumerate(st.streams):
            if stream.smtp_password in EXAMPLE_SECRETS or stream.api_key == "sk_acme_news":
                raise self.fail(f"stream[{i}].smtp_password", "still the example value on a "
                                "non-loopback listener")
