"""Bulk CSV import of evidence records: good rows stored, each bad row reported."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ValidationError
from .evidence import FIELDS, parse_evidence
from .ledger import Ledger
from .policy import Evidence

BATCH = 20_000


@dataclass
class ImportReport:
    stored: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    @property
    def rejected(self) -> int:
        return len(self.bad)


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (no header, unknown columns)."""


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ImportFileError(f"{path}: empty file, expected a header row")
        unknown = [c for c in reader.fieldnames if c not in FIELDS]
        if unknown:
            raise ImportFileError(f"{path}: unknown column(s) {', '.join(unknown)}; "
                                  f"known: {', '.join(FIELDS)}")
        for row in reader:
            if None in row:  # more cells than header columns
                yield reader.line_num, {"__extra__": row.pop(None)}
                continue
            yield reader.line_num, {k: v for k, v in row.items() if v not in ("", None)}


def import_csv(
    path: Path, ledger: Ledger, regions: dict[str, str], *, org: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate every row, store the good ones in batches; `org` fills a missing org column."""
    report = ImportReport()
    batch: list[Evidence] = []
    for line, row in _rows(Path(path)):
        if "__extra__" in row:
            report.bad.append((line, "more cells than header columns"))
            continue
        if org and "org" not in row:
            row["org"] = org
        try:
            batch.append(parse_evidence(row, regions, from_csv=True))
        except ValidationError as exc:
            report.bad.append((line, "; ".join(f"{k}: {v}" for k, v in exc.fields.items())))
        if len(batch) >= BATCH:
            report.stored += ledger.record_evidence_many(batch, via=f"csv:{Path(path).name}")
            batch.clear()
        if on_progress and line % 5000 == 0:
            on_progress(line)
    if batch:
        report.stored += ledger.record_evidence_many(batch, via=f"csv:{Path(path).name}")
    return report


def count_lines(path: Path) -> int:
    """Lines in the file (for the progress bar's total), read in 1 MiB blocks."""
    with Path(path).open("rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
