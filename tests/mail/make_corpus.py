"""Write the .eml corpus that tests/mail/test_rewrite.py rewrites.

Run `python tests/mail/make_corpus.py` from the checkout; the output is deterministic
(seeded bytes, fixed dates and ids) and committed, so a diff shows any change.
Files use LF line endings as stored mail usually does, except those named *-crlf.eml,
which are written as they arrive over SMTP.
"""

from __future__ import annotations

import base64
import random
import struct
import zlib
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
RNG = random.Random(20240501)

HEAD = """\
From: Northwind Offers <offers@northwind.example>
To: Alice Example <alice@customer.example>
Date: Wed, 01 May 2024 09:30:00 +0100
"""


def b64(data: bytes) -> str:
    """Base64 in 76-character lines, as mail clients write it."""
    return base64.encodebytes(data).decode("ascii")


def tiny_png() -> bytes:
    """A real 8x8 red PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 8 for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def fake_pdf() -> bytes:
    """PDF-looking bytes with a binary body, including CR, LF and NUL bytes."""
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + RNG.randbytes(3000) + b"\n%%EOF\n"


CSV = "sku,name,price\r\nA-1,Teapot,19.99\r\nB-2,\"Cups, set of 4\",12.50\r\n"
HTML_PAGE = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n"
             "<body>\n<h1>Spring sale</h1>\n<p>{body}</p>\n</body>\n</html>\n")

MESSAGES: dict[str, str] = {}

MESSAGES["01-plain.eml"] = HEAD + """\
Subject: Spring sale starts today
Message-ID: <plain-01@northwind.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Hello Alice,

Our spring sale starts today: 20% off all teapots.

Northwind
"""

MESSAGES["02-html-only.eml"] = HEAD + """\
Subject: Spring sale (HTML)
Message-ID: <html-02@northwind.example>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><head><title>Sale</title></head>
<BODY>
<p>Caf=C3=A9 cups =E2=80=93 20% off.</p>
</BODY>
</html>
"""

MESSAGES["03-alternative.eml"] = HEAD + """\
Subject: Spring sale
Message-ID: <alt-03@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="alt-03"

This is a multi-part message in MIME format.
--alt-03
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9 cups =E2=80=93 20% off this week.
--alt-03
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Caf=C3=A9 cups =E2=80=93 <b>20% off</b> this week.</p></body></html>
--alt-03--
"""

MESSAGES["04-mixed-attachments.eml"] = HEAD + f"""\
Subject: Your catalogue and price list
Message-ID: <mixed-04@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mix-04"

--mix-04
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Please find our catalogue and price list attached.
--mix-04
Content-Type: application/pdf; name="catalogue.pdf"
Content-Disposition: attachment; filename="catalogue.pdf"
Content-Transfer-Encoding: base64

{b64(fake_pdf())}
--mix-04
Content-Type: text/csv; charset=us-ascii; name="prices.csv"
Content-Disposition: attachment; filename="prices.csv"
Content-Transfer-Encoding: 7bit

{CSV.replace(chr(13), "")}
--mix-04
Content-Type: text/plain; charset=us-ascii; name="terms.txt"
Content-Disposition: attachment; filename="terms.txt"
Content-Transfer-Encoding: 7bit

Terms: offer ends Sunday.
--mix-04--
"""

MESSAGES["05-related-inline-png.eml"] = HEAD + f"""\
Subject: See our new teapot
Message-ID: <related-05@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/related; boundary="rel-05"; type="text/html"

--rel-05
Content-Type: text/html; charset=us-ascii
Content-Transfer-Encoding: 7bit

<html><body><img src="cid:teapot@northwind.example" alt="Teapot"></body></html>
--rel-05
Content-Type: image/png; name="teapot.png"
Content-ID: <teapot@northwind.example>
Content-Disposition: inline; filename="teapot.png"
Content-Transfer-Encoding: base64

{b64(tiny_png())}
--rel-05--
"""

MESSAGES["06-qp-latin1.eml"] = HEAD + """\
Subject: =?iso-8859-1?Q?Soldes_d'=E9t=E9?=
Message-ID: <latin1-06@northwind.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Ch=E8re Alice,

Les soldes d'=E9t=E9 commencent : th=E9i=E8res =E0 -20 %.
"""

GERMAN = "Liebe Alice,\r\n\r\nÜber 300 Teekannen – jetzt 20 % günstiger.\r\n"
MESSAGES["07-base64-utf8.eml"] = HEAD + f"""\
Subject: =?utf-8?B?w5xiZXIgdW5zZXJlIFRlZWthbm5lbg==?=
Message-ID: <b64-07@northwind.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{b64(GERMAN.encode())}"""

MESSAGES["08-rfc2047-headers.eml"] = """\
From: =?utf-8?Q?Caf=C3=A9_Nordwind?= <offers@northwind.example>
To: =?iso-8859-1?Q?Ren=E9e_Dupont?= <renee@customer.example>
Date: Wed, 01 May 2024 09:30:00 +0100
Subject: =?utf-8?B?8J+Nte+4jyBUZWEgdGltZQ==?=
 =?utf-8?Q?_=E2=80=93_spring_offers?=
Message-ID: <rfc2047-08@northwind.example>
Organization: Caf\u00e9 Nordwind Ltd
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Tea time – spring offers inside.
"""

LONG_LINE = "".join(f'<td class="c{i}">Teapot {i}</td>' for i in range(150))
MESSAGES["09-long-lines-html.eml"] = HEAD + f"""\
Subject: Full price table
Message-ID: <long-09@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="long-09"

--long-09
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

{"price table " * 120}
--long-09
Content-Type: text/html; charset=us-ascii
Content-Transfer-Encoding: 7bit

<html><body><table><tr>{LONG_LINE}</tr></table></body></html>
--long-09--
"""

MESSAGES["10-placeholder-both.eml"] = HEAD + """\
Subject: Spring sale (own unsubscribe link)
Message-ID: <placeholder-10@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="ph-10"

--ph-10
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

20% off teapots.
Unsubscribe: {{unsubscribe_url}}
--ph-10
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>20% off teapots.</p>
<p><a href=3D"{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>
--ph-10--
"""

SIGNED_BODY = """\
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

This message is signed; not one byte of it may change.
"""
MESSAGES["11-signed-crlf.eml"] = HEAD + f"""\
Subject: Signed offer
Message-ID: <signed-11@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/signed; protocol="application/pkcs7-signature";
 micalg=sha-256; boundary="sig-11"

This is an S/MIME signed message
--sig-11
{SIGNED_BODY}
--sig-11
Content-Type: application/pkcs7-signature; name="smime.p7s"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7s"

{b64(RNG.randbytes(600))}
--sig-11--
"""

MESSAGES["12-malformed-boundary.eml"] = HEAD + """\
Subject: Broken MIME
Message-ID: <broken-12@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="declared-boundary"

--other-boundary
Content-Type: text/plain; charset=us-ascii

The delimiter lines do not match the declared boundary.
--other-boundary--
"""

MESSAGES["13-nested-alternative-in-mixed.eml"] = HEAD + f"""\
Subject: Catalogue inside
Message-ID: <nested-13@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer-13"

--outer-13
Content-Type: multipart/alternative; boundary="inner-13"

--inner-13
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Our catalogue – attached.
--inner-13
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: 8bit

{HTML_PAGE.format(body="Our catalogue – attached.")}
--inner-13--

--outer-13
Content-Type: application/pdf; name="catalogue.pdf"
Content-Disposition: attachment; filename="catalogue.pdf"
Content-Transfer-Encoding: base64

{b64(fake_pdf())}
--outer-13--
"""

MESSAGES["14-no-message-id.eml"] = HEAD + """\
Subject: No Message-ID here
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Mailers sometimes leave the Message-ID to the relay.
"""

MESSAGES["15-reply-to-and-gateway-headers.eml"] = HEAD + """\
Subject: Tell us what you think
Message-ID: <reply-15@northwind.example>
Reply-To: Northwind Support <support@northwind.example>
X-Gateway-Category: offers
x-gateway-purpose: marketing
X-GATEWAY-NATURE: solicited
X-Mailer: Northwind Mailer 2.1
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Reply to this message to reach our support team.
"""

MESSAGES["16-attachment-only.eml"] = HEAD + f"""\
Subject: Catalogue
Message-ID: <attonly-16@northwind.example>
MIME-Version: 1.0
Content-Type: application/pdf; name="catalogue.pdf"
Content-Disposition: attachment; filename="catalogue.pdf"
Content-Transfer-Encoding: base64

{b64(fake_pdf())}"""

MESSAGES["17-no-boundary-parameter.eml"] = HEAD + """\
Subject: Multipart without boundary
Message-ID: <noboundary-17@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/alternative

--abc
Content-Type: text/plain

Hello
--abc--
"""

MESSAGES["18-smime-encrypted.eml"] = HEAD + f"""\
Subject: Encrypted offer
Message-ID: <enc-18@northwind.example>
MIME-Version: 1.0
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="smime.p7m"

{b64(RNG.randbytes(900))}"""

MESSAGES["19-placeholder-html-only.eml"] = HEAD + """\
Subject: Link only in HTML
Message-ID: <ph-html-19@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="ph-19"

--ph-19
Content-Type: text/plain; charset=us-ascii

20% off teapots.
--ph-19
Content-Type: text/html; charset=us-ascii

<html><body><a href="%7B%7Bunsubscribe_url%7D%7D">Unsubscribe</a></body></html>
--ph-19--
"""

MESSAGES["20-old-signature-and-list-headers.eml"] = """\
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=northwind.example; s=old;
 h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
 b=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=esp.example; s=esp;
 h=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;
 b=YW5vdGhlciBmYWtlIHNpZ25hdHVyZQ==
""" + HEAD + """\
Subject: Old headers to replace
Message-ID: <old-20@northwind.example>
List-Unsubscribe: <https://northwind.example/old-unsubscribe>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

The gateway replaces the old opt-out headers and signature.
"""

MESSAGES["21-8bit-no-charset.eml"] = HEAD + """\
Subject: 8-bit body, no charset
Message-ID: <8bit-21@northwind.example>
MIME-Version: 1.0
Content-Type: text/plain
Content-Transfer-Encoding: 8bit

Teekannen für Sie – jetzt günstiger.
"""

MESSAGES["22-forwarded-message.eml"] = HEAD + """\
Subject: Fwd: what our customers say
Message-ID: <fwd-22@northwind.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="fwd-22"

--fwd-22
Content-Type: text/plain; charset=us-ascii

See the review below.
--fwd-22
Content-Type: message/rfc822

From: Bob <bob@reviewer.example>
Subject: Review
Content-Type: text/plain; charset=us-ascii

Great teapots.
--fwd-22--
"""


def main() -> None:
    """(Re)write every corpus file."""
    CORPUS.mkdir(exist_ok=True)
    for name, text in MESSAGES.items():
        data = text.encode("utf-8")
        if name.endswith("-crlf.eml"):
            data = data.replace(b"\n", b"\r\n")
        (CORPUS / name).write_bytes(data)
    print(f"wrote {len(MESSAGES)} messages to {CORPUS}")


if __name__ == "__main__":
    main()
