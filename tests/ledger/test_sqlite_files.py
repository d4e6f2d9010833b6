"""Worker processes starting together open the data_dir's shared SQLite files at the same
moment: none of them may fail with "database is locked" (a worker that cannot start
stops the whole gateway)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.ledger.deferred import DeferredTexts
from gateway.ledger.pending import PendingOptOuts


def open_at_once(kind, data_dir: Path, count: int = 8) -> list[Exception]:
    """`count` threads (each its own connection, as a process would have) open `kind` on
    a new `data_dir` at the same moment; the errors they met."""
    start = threading.Barrier(count)
    opened, failed = [], []

    def open_it():
        start.wait()
        try:
            opened.append(kind(data_dir))
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            failed.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for store in opened:
        store.close()
    return failed


@pytest.mark.parametrize("kind", [PendingOptOuts, DeferredTexts])
def test_files_opened_by_many_at_once_open_for_every_one(tmp_path, kind):
    for round_ in range(15):
        failed = open_at_once(kind, tmp_path / f"round-{round_}")
        assert not failed, failed[0]
