"""DKIM signing of rewritten copies, verified with dkimpy against a fake DNS."""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from gateway.errors import ConfigError
from gateway.mail.dkim_sign import DkimKeyError, DkimSigner, load_signer
from gateway.mail.rewrite import rewrite_for_recipient

CORPUS = Path(__file__).parent / "corpus"
DOMAIN = "northwind.example"
SELECTOR = "gw2024"

MESSAGE = (
    b"From: Northwind Offers <offers@northwind.example>\r\n"
    b"To: alice@customer.example\r\n"
    b"Subject: Spring sale\r\n"
    b"Date: Wed, 01 May 2024 09:30:00 +0100\r\n"
    b"Message-ID: <dkim-1@northwind.example>\r\n"
    b"List-Unsubscribe: <https://gw.example.test/u/T>, <mailto:unsubscribe+T@gw.example.test>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"20% off teapots.\r\n"
)
REQUIRED = {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post"}


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, bytes]]:
    """RSA-2048 and Ed25519 private key files, each with its DNS p= value."""
    folder = tmp_path_factory.mktemp("dkim")
    result = {}
    for kind, algorithm, options in (("rsa", "RSA", ["-pkeyopt", "rsa_keygen_bits:2048"]),
                                     ("ed25519", "ED25519", [])):
        key_file = folder / f"{kind}.pem"
        openssl("genpkey", "-algorithm", algorithm, *options, "-out", str(key_file))
        public_der = openssl("pkey", "-in", str(key_file), "-pubout", "-outform", "DER")
        # RSA publishes the SubjectPublicKeyInfo; Ed25519 only the raw 32-byte key (RFC 8463).
        public = public_der if kind == "rsa" else public_der[-32:]
        result[kind] = (key_file, base64.b64encode(public))
    return result


def dns_for(kind: str, public: bytes) -> Callable[..., bytes | None]:
    record = b"v=DKIM1; k=" + kind.encode() + b"; p=" + public

    def txt(name: bytes | str, timeout: int = 5) -> bytes | None:
        name = name.decode() if isinstance(name, bytes) else name
        return record if name.rstrip(".") == f"{SELECTOR}._domainkey.{DOMAIN}" else None

    return txt


def signer_for(keys: dict, kind: str) -> DkimSigner:
    if kind == "ed25519":
        pytest.importorskip("nacl", reason="dkimpy needs pynacl for Ed25519")
    return DkimSigner(DOMAIN, SELECTOR, keys[kind][0].read_bytes())


def tags(signed: bytes) -> dict[str, str]:
    header = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", signed, re.DOTALL)
    assert header, "the message must start with our DKIM-Signature"
    value = re.sub(r"\s+", "", header.group(1).decode())
    return dict(item.split("=", 1) for item in value.split(";") if item)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signed_message_verifies(keys: dict, kind: str) -> None:
    signed = signer_for(keys, kind).sign(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns_for(kind, keys[kind][1]))


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_key_type_is_detected(keys: dict, kind: str) -> None:
    signed = signer_for(keys, kind).sign(MESSAGE)
    assert tags(signed)["a"] == f"{kind}-sha256"


def test_signature_uses_relaxed_canonicalisation_and_our_domain(keys: dict) -> None:
    found = tags(signer_for(keys, "rsa").sign(MESSAGE))
    assert (found["c"], found["d"], found["s"]) == ("relaxed/relaxed", DOMAIN, SELECTOR)


def test_signature_covers_the_required_headers_and_oversigns_from(keys: dict) -> None:
    signed_headers = tags(signer_for(keys, "rsa").sign(MESSAGE))["h"].lower().split(":")
    assert set(signed_headers) >= REQUIRED
    assert {"mime-version", "content-type"} <= set(signed_headers)
    assert signed_headers.count("from") == 2


def test_headers_absent_from_the_message_are_not_signed(keys: dict) -> None:
    signed_headers = tags(signer_for(keys, "rsa").sign(MESSAGE))["h"].lower().split(":")
    assert "reply-to" not in signed_headers
    assert "cc" not in signed_headers


def test_body_changed_after_signing_fails_verification(keys: dict) -> None:
    signed = signer_for(keys, "rsa").sign(MESSAGE)
    assert not dkim.verify(signed.replace(b"20% off", b"90% off"),
                           dnsfunc=dns_for("rsa", keys["rsa"][1]))


def test_added_from_header_fails_verification(keys: dict) -> None:
    signed = signer_for(keys, "rsa").sign(MESSAGE)
    forged = signed.replace(b"\r\n\r\n", b"\r\nFrom: ceo@bank.example\r\n\r\n", 1)
    assert not dkim.verify(forged, dnsfunc=dns_for("rsa", keys["rsa"][1]))


def test_every_old_signature_is_replaced_by_ours(keys: dict) -> None:
    rewritten = rewrite_for_recipient(
        (CORPUS / "20-old-signature-and-list-headers.eml").read_bytes(),
        unsubscribe_url="https://gw.example.test/u/T", mailto_url="mailto:u+T@gw.example.test",
        reply_to=None, footer_text="Unsubscribe\n", footer_html="<p>Unsubscribe</p>",
    ).data
    signed = signer_for(keys, "rsa").sign(rewritten)
    assert signed.count(b"DKIM-Signature:") == 1
    assert b"s=old" not in signed and b"d=esp.example" not in signed
    assert dkim.verify(signed, dnsfunc=dns_for("rsa", keys["rsa"][1]))


@pytest.mark.parametrize("name", ["04-mixed-attachments.eml", "08-rfc2047-headers.eml",
                                  "11-signed-crlf.eml", "16-attachment-only.eml"])
def test_rewritten_corpus_messages_verify(keys: dict, name: str) -> None:
    rewritten = rewrite_for_recipient(
        (CORPUS / name).read_bytes(), unsubscribe_url="https://gw.example.test/u/T",
        mailto_url="mailto:u+T@gw.example.test", reply_to="reply+T@gw.example.test",
        footer_text="Unsubscribe →\n", footer_html="<p>Unsubscribe</p>",
    ).data
    signed = signer_for(keys, "rsa").sign(rewritten)
    assert dkim.verify(signed, dnsfunc=dns_for("rsa", keys["rsa"][1]))
    assert "reply-to" in tags(signed)["h"].lower().split(":")


def test_load_signer_returns_none_without_a_domain() -> None:
    assert load_signer("", "", "") is None


def test_load_signer_reads_the_key_file(keys: dict) -> None:
    signer = load_signer(DOMAIN, SELECTOR, str(keys["rsa"][0]))
    assert signer is not None and signer.algorithm == b"rsa-sha256"


def test_load_signer_names_the_setting_when_the_key_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dkim.private_key_file"):
        load_signer(DOMAIN, SELECTOR, str(tmp_path / "missing.pem"))


def test_load_signer_requires_a_selector(keys: dict) -> None:
    with pytest.raises(ConfigError, match="dkim.selector"):
        load_signer(DOMAIN, "", str(keys["rsa"][0]))


def test_garbage_key_is_refused() -> None:
    with pytest.raises(DkimKeyError):
        DkimSigner(DOMAIN, SELECTOR, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_encrypted_key_is_refused_with_advice() -> None:
    pem = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    with pytest.raises(DkimKeyError, match="passphrase"):
        DkimSigner(DOMAIN, SELECTOR, pem)


def test_pkcs1_rsa_key_is_accepted(keys: dict, tmp_path: Path) -> None:
    pkcs1 = openssl("pkey", "-in", str(keys["rsa"][0]), "-traditional")
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    signed = DkimSigner(DOMAIN, SELECTOR, pkcs1).sign(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns_for("rsa", keys["rsa"][1]))


def test_ed25519_seed_as_written_by_dknewkey_is_accepted(keys: dict) -> None:
    pytest.importorskip("nacl", reason="dkimpy needs pynacl for Ed25519")
    seed = openssl("pkey", "-in", str(keys["ed25519"][0]), "-outform", "DER")[-32:]
    signed = DkimSigner(DOMAIN, SELECTOR, base64.b64encode(seed) + b"\n").sign(MESSAGE)
    assert dkim.verify(signed, dnsfunc=dns_for("ed25519", keys["ed25519"][1]))


def test_load_signer_wants_an_ascii_domain(keys: dict) -> None:
    with pytest.raises(ConfigError, match="xn--"):
        load_signer("bücher.example", SELECTOR, str(keys["rsa"][0]))
