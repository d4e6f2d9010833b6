"""The log line format: `event=name k=v ...`, values quoted only when they must be."""

import logging

import pytest

from gateway.logs import event


@pytest.fixture
def lines():
    captured: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record.getMessage())

    logger = logging.getLogger("gateway.test_logs")
    handler = Capture()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, captured
    logger.removeHandler(handler)


def test_plain_values_stand_as_they_are(lines):
    logger, captured = lines
    event(logger, "sms_sent", segments=2, encoding="GSM-7", to="+44*******123", gone=None)
    assert captured == ["event=sms_sent segments=2 encoding=GSM-7 to=+44*******123 gone=None"]


@pytest.mark.parametrize(("value", "shown"), [
    ("", '""'),
    ("two words", '"two words"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("a=b", '"a=b"'),
    ("line\nbreak", '"line\\nbreak"'),
    ("cr\rhere", '"cr\\rhere"'),
    ("tab\there", '"tab\there"'),
    ("back\\slash", "back\\slash"),
    ('back\\slash "quoted"', '"back\\\\slash \\"quoted\\""'),
])
def test_values_that_would_break_the_line_are_quoted(lines, value, shown):
    logger, captured = lines
    event(logger, "x", v=value)
    assert captured == [f"event=x v={shown}"]


def test_nothing_is_formatted_below_the_level(lines):
    logger, captured = lines

    class Loud:
        def __str__(self) -> str:
            raise AssertionError("formatted although not logged")

    event(logger, "quiet", level=logging.DEBUG, v=Loud())
    assert captured == []
