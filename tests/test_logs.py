"""The log line format: `event=name k=v ...`, values quoted only when they must be."""

import logging
import re

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


@pytest.fixture
def gateway_log():
    """`setup` as `gateway run` does it, its stream captured; the loggers put back after."""
    import io

    from gateway import logs

    root = logging.getLogger("gateway")
    saved = (root.handlers[:], root.level, root.propagate)
    logs.setup("INFO")
    stream = io.StringIO()
    root.handlers[0].stream = stream
    yield stream
    root.handlers[:], root.level, root.propagate = saved


LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} level=(\w+) (.*)")


def test_a_line_written_directly_is_what_the_handler_would_format(gateway_log):
    from gateway.logs import _Formatter

    formatter = _Formatter(worker=2)
    record = logging.makeLogRecord({"msg": "event=x v=1", "levelname": "INFO",
                                    "levelno": logging.INFO})
    for created in (1_780_000_000.0, 1_780_000_000.9995, 1_780_000_001.25):
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        assert formatter.line(created, "INFO", "event=x v=1") == formatter.format(record)


def test_events_reach_the_gateway_handler_once_each(gateway_log):
    logger = logging.getLogger("gateway.sms.outbound")
    event(logger, "sms_sent", to="+44*******123", segments=1)
    event(logger, "sms_provider_error", level=logging.WARNING, code=None)
    event(logger, "quiet", level=logging.DEBUG)
    lines = [LINE.fullmatch(line).groups() for line in gateway_log.getvalue().splitlines()]
    assert lines == [("INFO", "event=sms_sent to=+44*******123 segments=1"),
                     ("WARNING", "event=sms_provider_error code=None")]


def test_a_handler_added_below_still_gets_every_event(gateway_log, lines):
    """Another handler on the way (an operator's, a test's): events go through logging,
    to it and to the gateway's handler, once each."""
    logger, captured = lines  # a handler on "gateway.test_logs"
    event(logger, "seen", v=1)
    assert captured == ["event=seen v=1"]
    assert [LINE.fullmatch(line).group(2) for line in gateway_log.getvalue().splitlines()] \
        == ["event=seen v=1"]


def test_a_filter_on_the_way_is_honoured(gateway_log):
    logger = logging.getLogger("gateway.filtered")

    def drop_secret(record: logging.LogRecord) -> bool:
        return "secret" not in record.getMessage()

    logger.addFilter(drop_secret)
    try:
        event(logger, "secret_thing")
        event(logger, "plain_thing")
    finally:
        logger.removeFilter(drop_secret)
    assert "secret_thing" not in gateway_log.getvalue()
    assert "plain_thing" in gateway_log.getvalue()


def test_a_worker_names_itself_on_every_line(gateway_log):
    from gateway.logs import tag_worker

    tag_worker(3)
    event(logging.getLogger("gateway.smtp"), "smtp_listening", listen="127.0.0.1:2525")
    assert LINE.fullmatch(gateway_log.getvalue().strip()).group(2) \
        == "worker=3 event=smtp_listening listen=127.0.0.1:2525"
