"""Every CSV cardbridge writes goes through here: cells a spreadsheet would run as a formula
(`=HYPERLINK(…)` as a legacy id) are written as text instead.

A text cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`,
which spreadsheets read as "this is text" (OWASP's advice for CSV injection). Numbers are written
as numbers: only text cells can carry a formula, and none of ours is a signed number.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import TextIO

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Writer:
    """csv.writer whose text cells are neutralised."""

    def __init__(self, fh: TextIO, **options) -> None:
        self._writer = csv.writer(fh, lineterminator="\n", **options)

    def writerow(self, row: Iterable) -> None:
        self._writer.writerow([cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable]) -> None:
        for row in rows:
            self.writerow(row)
