"""Behaviour of the per-recipient MIME rewrite, over the corpus in tests/mail/corpus/."""

from __future__ import annotations

import binascii
import os
import random
import re
from collections.abc import Iterator
from email import policy, quoprimime
from email.message import Message
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.mail.rewrite import (
    RewriteResult,
    UnrewritableMessage,
    _encode_body,
    _quoted_printable,
    rewrite_for_recipient,
)

CORPUS = Path(__file__).parent / "corpus"
URL = "https://gw.example.test/u/TOKEN123"
MAILTO = "mailto:unsubscribe+TOKEN123@unsubscribe.gw.example.test"
REPLY = "reply+TOKEN123@unsubscribe.gw.example.test"
FOOTER_TEXT = f"You get this as a Northwind customer. Unsubscribe: {URL}\n"
FOOTER_HTML = f'<p style="font-size:small"><a href="{URL}">Unsubscribe</a></p>\n'
FOOTER_MARK = "You get this as a Northwind customer."
HTML_MARK = '<p style="font-size:small">'
UNREWRITABLE = {"12-malformed-boundary.eml", "17-no-boundary-parameter.eml"}
REWRITABLE = sorted(p.name for p in CORPUS.glob("*.eml") if p.name not in UNREWRITABLE)


def raw(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def rewrite(data: bytes, **overrides: object) -> RewriteResult:
    args: dict = {"unsubscribe_url": URL, "mailto_url": MAILTO, "reply_to": REPLY,
                  "footer_text": FOOTER_TEXT, "footer_html": FOOTER_HTML}
    args.update(overrides)
    return rewrite_for_recipient(data, **args)


def parse(data: bytes) -> Message:
    return BytesParser(policy=policy.default).parsebytes(data)


def leaves(part: Message, inside_message: bool = False) -> Iterator[tuple[Message, bool]]:
    """Every leaf part with whether it is meant for display (gets footer or link)."""
    if part.is_multipart():
        nested = inside_message or part.get_content_maintype() == "message"
        opaque = part.get_content_type() == "multipart/signed"
        for sub in part.get_payload():
            yield from leaves(sub, nested or opaque)
        return
    display = (part.get_content_type() in ("text/plain", "text/html")
               and not part.is_attachment() and not inside_message)
    yield part, display


def content(part: Message) -> str:
    """A text part's decoded text, line endings made LF."""
    return part.get_content().replace("\r\n", "\n")


def display_texts(data: bytes) -> list[str]:
    return [content(p) for p, shown in leaves(parse(data)) if shown]


def encoded(part: Message) -> str:
    """A part's body as transmitted, line endings made LF."""
    return part.get_payload().replace("\r\n", "\n")


def decoded(part: Message) -> bytes:
    """A part's decoded bytes; line endings made LF unless base64 carried them."""
    data = part.get_payload(decode=True)
    return data if part["Content-Transfer-Encoding"] == "base64" else data.replace(b"\r\n", b"\n")


def content_headers(part: Message) -> list[tuple[str, str]]:
    return [(k, v) for k, v in part.items() if k.lower().startswith("content-")]


# --- every message in the corpus -------------------------------------------------------------


@pytest.mark.parametrize("name", REWRITABLE)
def test_output_uses_crlf_line_endings_only(name: str) -> None:
    data = rewrite(raw(name)).data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")


@pytest.mark.parametrize("name", REWRITABLE)
def test_no_line_exceeds_998_octets(name: str) -> None:
    assert max(len(line) for line in rewrite(raw(name)).data.split(b"\r\n")) <= 998


@pytest.mark.parametrize("name", REWRITABLE)
def test_list_unsubscribe_headers_are_set_once(name: str) -> None:
    msg = parse(rewrite(raw(name)).data)
    assert msg.get_all("List-Unsubscribe") == [f"<{URL}>, <{MAILTO}>"]
    assert msg.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]


@pytest.mark.parametrize("name", REWRITABLE)
def test_gateway_headers_are_removed(name: str) -> None:
    data = rewrite(raw(name)).data
    assert not re.search(rb"(?im)^x-gateway-", data)


@pytest.mark.parametrize("name", REWRITABLE)
def test_output_parses_without_structural_defects(name: str) -> None:
    msg = parse(rewrite(raw(name)).data)
    for part in msg.walk():
        assert not [d for d in part.defects if "Boundary" in type(d).__name__]
    assert msg["Message-ID"]


@pytest.mark.parametrize("name", sorted(set(REWRITABLE) - {"16-attachment-only.eml"}))
def test_parts_not_meant_for_display_are_byte_identical(name: str) -> None:
    before = list(leaves(parse(raw(name))))
    output = rewrite(raw(name)).data
    after = list(leaves(parse(output)))
    assert len(before) == len(after)
    for (old, shown), (new, _) in zip(before, after):
        if shown:
            continue
        assert encoded(new) == encoded(old)
        assert decoded(new) == decoded(old)
        assert content_headers(new) == content_headers(old)
        on_the_wire = encoded(old).replace("\n", "\r\n").encode("ascii", "surrogateescape")
        assert on_the_wire in output


@pytest.mark.parametrize("name", sorted(set(REWRITABLE) - {"19-placeholder-html-only.eml"}))
def test_unsubscribe_url_is_in_every_display_part(name: str) -> None:
    result = rewrite(raw(name))
    if result.headers_only:
        return
    texts = display_texts(result.data)
    assert texts
    assert all(URL in text for text in texts)


# --- footer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "01-plain.eml", "02-html-only.eml", "03-alternative.eml", "04-mixed-attachments.eml",
    "05-related-inline-png.eml", "07-base64-utf8.eml", "09-long-lines-html.eml",
    "13-nested-alternative-in-mixed.eml", "22-forwarded-message.eml",
])
def test_footer_is_added_to_every_display_part(name: str) -> None:
    msg = parse(rewrite(raw(name)).data)
    for part, shown in leaves(msg):
        text = content(part) if part.get_content_maintype() == "text" else ""
        marks = text.count(HTML_MARK) + text.count(FOOTER_MARK)
        assert marks == (1 if shown else 0), (part.get_content_type(), shown)


def test_plain_footer_follows_the_text_after_a_blank_line() -> None:
    text = display_texts(rewrite(raw("01-plain.eml")).data)[0]
    assert text.endswith("Northwind\n\n" + FOOTER_TEXT)


def test_html_footer_goes_before_the_last_body_close_tag_in_any_case() -> None:
    text = display_texts(rewrite(raw("02-html-only.eml")).data)[0]
    assert text.index(HTML_MARK) < text.index("</BODY>")
    assert "Café cups – 20% off." in text


def test_html_footer_is_appended_when_there_is_no_body_tag() -> None:
    message = b"Content-Type: text/html; charset=us-ascii\r\n\r\n<p>Hi</p>"
    assert display_texts(rewrite(message).data)[0] == "<p>Hi</p>" + FOOTER_HTML


def test_latin1_part_keeps_its_charset_when_the_footer_fits() -> None:
    msg = parse(rewrite(raw("06-qp-latin1.eml"), footer_text="Se désabonner : lien\n").data)
    assert msg.get_content_charset() == "iso-8859-1"
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert "Se d=E9sabonner" in msg.get_payload()
    assert content(msg).startswith("Chère Alice,")


def test_part_switches_to_utf8_when_the_footer_does_not_fit_its_charset() -> None:
    msg = parse(rewrite(raw("06-qp-latin1.eml"), footer_text="Abmelden → hier\n").data)
    assert msg.get_content_charset() == "utf-8"
    assert "Chère Alice," in content(msg)
    assert content(msg).endswith("Abmelden → hier\n")


def test_base64_part_stays_base64_in_its_charset() -> None:
    msg = parse(rewrite(raw("07-base64-utf8.eml")).data)
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert msg.get_content_charset() == "utf-8"
    assert "Über 300 Teekannen" in content(msg)
    assert FOOTER_MARK in content(msg)


def test_seven_bit_parts_with_overlong_lines_become_quoted_printable() -> None:
    msg = parse(rewrite(raw("09-long-lines-html.eml")).data)
    plain, html = msg.get_payload()
    assert plain["Content-Transfer-Encoding"] == html["Content-Transfer-Encoding"]
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert '<td class="c149">Teapot 149</td></tr></table>' + FOOTER_HTML in content(html)


def test_seven_bit_part_with_non_ascii_footer_becomes_quoted_printable_utf8() -> None:
    msg = parse(rewrite(raw("01-plain.eml"), footer_text="Désabonner\n").data)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content_charset() == "utf-8"
    assert content(msg).endswith("Désabonner\n")


def test_eight_bit_part_without_charset_keeps_its_bytes_with_an_ascii_footer() -> None:
    data = rewrite(raw("21-8bit-no-charset.eml")).data
    assert "Teekannen für Sie – jetzt günstiger.\r\n".encode() in data
    assert parse(data)["Content-Transfer-Encoding"] == "8bit"


def test_text_attachment_gets_no_footer() -> None:
    msg = parse(rewrite(raw("04-mixed-attachments.eml")).data)
    terms = next(p for p in msg.walk() if p.get_filename() == "terms.txt")
    assert content(terms) == "Terms: offer ends Sunday."


def test_forwarded_message_inside_gets_no_footer() -> None:
    msg = parse(rewrite(raw("22-forwarded-message.eml")).data)
    forwarded = msg.get_payload()[1].get_payload()[0]
    assert content(forwarded) == "Great teapots."


def test_message_with_only_an_attachment_gets_a_footer_part() -> None:
    before = parse(raw("16-attachment-only.eml"))
    after = parse(rewrite(raw("16-attachment-only.eml")).data)
    assert after.get_content_type() == "multipart/mixed"
    pdf, footer = after.get_payload()
    assert encoded(pdf) == encoded(before)
    assert decoded(pdf) == decoded(before)
    assert pdf.get_filename() == "catalogue.pdf"
    assert content(footer) == FOOTER_TEXT
    assert after["Subject"] == "Catalogue"


def test_mixed_message_without_display_text_gets_a_footer_part_appended() -> None:
    message = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
               b"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"iVBORw0KGgo=\r\n--b--\r\n")
    parts = parse(rewrite(message).data).get_payload()
    assert [p.get_content_type() for p in parts] == ["image/png", "text/plain"]
    assert content(parts[1]) == FOOTER_TEXT


# --- placeholder -----------------------------------------------------------------------------


def test_placeholder_is_replaced_in_both_parts_and_no_footer_is_added() -> None:
    texts = display_texts(rewrite(raw("10-placeholder-both.eml")).data)
    assert texts[0].endswith(f"Unsubscribe: {URL}")
    assert f'<a href="{URL}">Unsubscribe</a>' in texts[1]
    for text in texts:
        assert "unsubscribe_url" not in text
        assert FOOTER_MARK not in text and HTML_MARK not in text


def test_placeholder_in_one_part_means_no_footer_in_any_part() -> None:
    before = parse(raw("19-placeholder-html-only.eml")).get_payload()[0]
    plain, html = parse(rewrite(raw("19-placeholder-html-only.eml")).data).get_payload()
    assert encoded(plain) == encoded(before)
    assert f'<a href="{URL}">Unsubscribe</a>' in content(html)
    assert HTML_MARK not in content(html)


def test_url_replacing_a_placeholder_in_html_is_escaped() -> None:
    message = b'Content-Type: text/html\r\n\r\n<a href="{{unsubscribe_url}}">x</a>\r\n'
    url = "https://gw.example.test/u/T?a=1&b=2"
    text = display_texts(rewrite(message, unsubscribe_url=url).data)[0]
    assert '<a href="https://gw.example.test/u/T?a=1&amp;b=2">x</a>' in text


# --- headers ---------------------------------------------------------------------------------


def test_reply_to_is_replaced_and_the_original_returned() -> None:
    result = rewrite(raw("15-reply-to-and-gateway-headers.eml"))
    assert result.original_reply_to == "Northwind Support <support@northwind.example>"
    assert parse(result.data).get_all("Reply-To") == [REPLY]


def test_from_is_the_original_reply_address_when_there_is_no_reply_to() -> None:
    result = rewrite(raw("01-plain.eml"))
    assert result.original_reply_to == "Northwind Offers <offers@northwind.example>"


def test_reply_to_is_left_alone_when_not_asked_to_rewrite_it() -> None:
    result = rewrite(raw("15-reply-to-and-gateway-headers.eml"), reply_to=None)
    assert result.original_reply_to is None
    assert parse(result.data)["Reply-To"] == "Northwind Support <support@northwind.example>"


def test_other_headers_stay_and_gateway_headers_go_in_any_case() -> None:
    msg = parse(rewrite(raw("15-reply-to-and-gateway-headers.eml")).data)
    assert msg["X-Mailer"] == "Northwind Mailer 2.1"
    assert not [k for k in msg if k.lower().startswith("x-gateway-")]


def test_header_prefix_to_remove_can_be_changed() -> None:
    msg = parse(rewrite(raw("15-reply-to-and-gateway-headers.eml"),
                        remove_headers_prefix="X-Mailer").data)
    assert msg["X-Mailer"] is None
    assert msg["X-Gateway-Category"] == "offers"


def test_existing_message_id_is_kept() -> None:
    result = rewrite(raw("01-plain.eml"))
    assert result.message_id == "<plain-01@northwind.example>"
    assert parse(result.data).get_all("Message-ID") == ["<plain-01@northwind.example>"]


def test_missing_message_id_is_added_in_the_sender_domain() -> None:
    result = rewrite(raw("14-no-message-id.eml"))
    assert re.fullmatch(r"<[^<>@]+@northwind\.example>", result.message_id)
    assert parse(result.data)["Message-ID"] == result.message_id


def test_old_list_unsubscribe_headers_are_replaced() -> None:
    data = rewrite(raw("20-old-signature-and-list-headers.eml")).data
    assert b"old-unsubscribe" not in data
    assert data.count(b"List-Unsubscribe-Post:") == 1


def test_encoded_and_raw_utf8_headers_pass_through_unchanged() -> None:
    data = rewrite(raw("08-rfc2047-headers.eml")).data
    assert (b"Subject: =?utf-8?B?8J+Nte+4jyBUZWEgdGltZQ==?=\r\n"
            b" =?utf-8?Q?_=E2=80=93_spring_offers?=\r\n") in data
    assert b"From: =?utf-8?Q?Caf=C3=A9_Nordwind?= <offers@northwind.example>\r\n" in data
    assert "Organization: Café Nordwind Ltd\r\n".encode() in data


def test_header_values_with_line_breaks_are_refused() -> None:
    with pytest.raises(ValueError):
        rewrite(raw("01-plain.eml"), unsubscribe_url=URL + "\r\nBcc: x@evil.example")


def test_lf_and_crlf_input_give_the_same_copy() -> None:
    lf = raw("04-mixed-attachments.eml")
    assert rewrite(lf).data == rewrite(lf.replace(b"\n", b"\r\n")).data


# --- signed, encrypted and broken messages ---------------------------------------------------


def test_signed_message_gets_headers_only_and_an_identical_body() -> None:
    original = raw("11-signed-crlf.eml")
    result = rewrite(original)
    assert result.headers_only
    assert result.data.split(b"\r\n\r\n", 1)[1] == original.split(b"\r\n\r\n", 1)[1]
    assert parse(result.data)["Reply-To"] == REPLY
    assert FOOTER_MARK.encode() not in result.data


def test_encrypted_message_gets_headers_only() -> None:
    original = raw("18-smime-encrypted.eml")
    result = rewrite(original)
    assert result.headers_only
    body = original.split(b"\n\n", 1)[1].replace(b"\n", b"\r\n")
    assert result.data.endswith(b"\r\n\r\n" + body)


@pytest.mark.parametrize("name", sorted(UNREWRITABLE))
def test_multipart_with_a_lost_boundary_is_unrewritable(name: str) -> None:
    with pytest.raises(UnrewritableMessage, match="boundary"):
        rewrite(raw(name))


def test_unrewritable_message_is_a_gateway_error() -> None:
    assert issubclass(UnrewritableMessage, GatewayError)


def test_text_part_with_broken_base64_is_unrewritable() -> None:
    message = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"SGVsbG8gd29ybGQ*\r\n")
    with pytest.raises(UnrewritableMessage, match="base64"):
        rewrite(message)


def test_text_part_in_an_unknown_charset_is_unrewritable() -> None:
    message = b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\nHello\r\n"
    with pytest.raises(UnrewritableMessage, match="x-no-such-charset"):
        rewrite(message)


def test_text_part_in_utf16_is_unrewritable() -> None:
    message = b"Content-Type: text/plain; charset=utf-16\r\n\r\n\xff\xfeH\x00i\x00\r\n"
    with pytest.raises(UnrewritableMessage, match="utf-16"):
        rewrite(message)


def test_control_characters_in_a_header_do_not_break_the_header_block() -> None:
    message = b"Subject: sale\x0cnow\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
    data = rewrite(message).data
    assert data.startswith(b"Subject: sale\x0cnow\r\nContent-Type: text/plain\r\n")
    assert parse(data)["List-Unsubscribe"] == f"<{URL}>, <{MAILTO}>"


def test_message_id_the_stdlib_parser_chokes_on_is_kept_as_written() -> None:
    message = b"From: a@northwind.example\r\nMessage-ID: <>\r\n\r\nHello\r\n"
    assert rewrite(message).message_id == "<>"


def test_mangled_messages_are_rewritten_safely_or_refused() -> None:
    """Random damage to corpus messages: a parseable copy with the opt-out, or a refusal."""
    rng = random.Random(2024)
    corpus = [raw(name) for name in REWRITABLE]
    junk = [b"\n--", b"boundary=", b"charset=", b"\n\n", b"=?utf-8?q?", b"base64", b"\x0c",
            b"\xff", b"\x00", b"{{unsubscribe_url}}", b"</body>", b"multipart/", b'"', b";"]
    for _ in range(400):
        data = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            if rng.random() < 0.4:
                del data[at:at + rng.randint(1, 40)]
            else:
                data[at:at] = rng.choice(junk)
        try:
            result = rewrite(bytes(data))
        except UnrewritableMessage:
            continue
        assert b"\n" not in result.data.replace(b"\r\n", b"")
        msg = parse(result.data)
        assert msg.get_all("List-Unsubscribe") == [f"<{URL}>, <{MAILTO}>"]
        if not result.headers_only:
            texts = [p.get_payload(decode=True) for p, shown in leaves(msg) if shown]
            assert any(URL.encode() in t for t in texts)


def test_signed_message_with_a_stray_line_in_its_header_is_unrewritable() -> None:
    end_of_type = b'boundary="sig-11"\r\n'
    message = raw("11-signed-crlf.eml").replace(end_of_type, end_of_type + b"not a header\r\n")
    assert parse(message).get_content_type() == "multipart/signed"
    with pytest.raises(UnrewritableMessage, match="header block"):
        rewrite(message)


def test_base64_text_without_padding_is_rewritten() -> None:
    message = (b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64"
               b"\r\n\r\nSGVsbG8gd29ybGQ\r\n")
    assert display_texts(rewrite(message).data)[0].startswith("Hello world\n\n" + FOOTER_MARK)


def test_a_footer_from_the_stand_in_is_the_footer_rendered_for_the_token(tmp_path):
    from gwtest import make_settings

    from gateway.mail.copies import footer
    from gateway.runtime import Runtime
    from gateway.templating import render
    from gateway.tokens import make_token

    rt = Runtime.open(make_settings(tmp_path))
    try:
        for org_name in ("Acme Garden Ltd", "Fish & <Chips>", "x7" * 16):  # last: no shortcut
            for _ in range(5):
                token, _ = make_token("s")
                for name in ("email_footer.txt.j2", "email_footer.html.j2"):
                    expected = render(name, org_name=org_name,
                                      unsubscribe_url=rt.unsubscribe_url(token),
                                      mailto=rt.unsubscribe_mailto(token))
                    assert footer(rt, name, org_name, token) == expected
    finally:
        rt.close()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=3000) | st.lists(
    st.sampled_from([b"a", b" ", b"\t", b".", b"=", b"\r", b"\n", b"\r\n", b"\xe9", b"From ",
                     b"x" * 80]), max_size=200).map(b"".join))
def test_quoted_printable_bodies_decode_to_the_same_bytes_with_short_lines(data: bytes) -> None:
    encoded = _quoted_printable(data).encode("ascii")
    lines = re.split(rb"\r\n|\r|\n", encoded)
    assert all(len(line) <= 76 for line in lines)
    assert all(not line.endswith((b" ", b"\t")) for line in lines)
    # Line breaks (a lone CR counts as one, as the generator writes it) are the text's own
    # hard breaks; everything else decodes to the same bytes.
    def breaks(b: bytes) -> bytes:
        return re.sub(rb"\r\n|\r|\n", b"\n", b)
    assert breaks(binascii.a2b_qp(breaks(encoded))) == breaks(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500), st.data())
def test_a_quoted_printable_body_keeps_its_lines_before_the_change_and_decodes_right(
        old: bytes, data) -> None:
    encoder = data.draw(st.sampled_from(["binascii", "email"]))
    old = re.sub(rb"\r\n|\r|\n", b"\r\n", old)
    if encoder == "binascii":
        encoded = _quoted_printable(old).encode("ascii")
    else:
        encoded = quoprimime.body_encode(old.decode("latin-1"), eol="\r\n").encode("ascii")
    at = data.draw(st.integers(0, len(old)))
    if old[at - 1:at + 1] == b"\r\n":
        at -= 1  # the footer goes at a line break, never inside one
    insert = data.draw(st.sampled_from([b"", b"footer\r\n", b"<p>x=y</p>", b"caf\xc3\xa9 "]))
    new = old[:at] + insert + old[at:]
    payload, cte = _encode_body(new, "quoted-printable", (encoded, old))
    out = payload.encode("ascii")
    assert cte == "quoted-printable"
    assert binascii.a2b_qp(out).replace(b"\r\n", b"\n") == new.replace(b"\r\n", b"\n")
    kept = len(os.path.commonprefix([out, encoded]))
    # The lines before the change stay as they came; those after it are freshly encoded.
    assert all(len(line) <= 77 for line in out[kept:].split(b"\n"))
    if at == len(old) and old.endswith(b"\r\n") and insert:
        assert kept >= len(encoded.rstrip(b"\r\n")) - 1  # a footer re-encodes no old line
