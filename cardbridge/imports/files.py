"""Reading import files: open and hash a source, CSV records with line numbers, roster rows,
and the value checks every format shares (ids, expiry, last 4). File-level faults raise
ImportFileError (one line, nothing applied); row-level ones raise RowProblem.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

CUS_RE = re.compile(r"cus_[A-Za-z0-9]+")
EMAIL_RE = re.compile(r"[^@\s\"<>(),;:]{1,64}@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
                      r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+")  # matched after lower()
LOCALE_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
ROSTER_REQUIRED = ("legacy_customer_id", "email")
ROSTER_COLUMNS = {  # roster header -> Customer column
    "legacy_customer_id": "legacy_id", "email": "email", "name": "name", "locale": "locale",
    "stripe_customer_id": "stripe_customer_id", "card_brand": "card_brand",
    "card_last4": "card_last4", "card_exp_month": "card_exp_month",
    "card_exp_year": "card_exp_year",
}
MAX_ID = 255
FIELD_LIMIT = 128 * 1024  # csv's own default; a longer field is an unclosed quote, not data


class ImportFileError(Exception):
    """The file as a whole cannot be imported; nothing is applied. str() is one line."""


class RowProblem(ValueError):
    """One row or entry cannot be used; the message says why in a few words."""


@dataclass
class Source:
    name: str
    fh: BinaryIO
    size: int
    sha256: str


def open_source(source: str | os.PathLike | BinaryIO, name: str | None = None) -> Source:
    """Open a path, or take a binary stream (spooled to disk if it cannot seek); hash it."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            fh = open(path, "rb")  # the importer closes it
        except FileNotFoundError:
            raise ImportFileError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImportFileError(f"{path}: is a directory") from None
        except OSError as exc:
            raise ImportFileError(f"{path}: {exc.strerror}") from None
        label = name or os.path.basename(path)
    else:
        fh = source
        label = name or os.path.basename(getattr(source, "name", "") or "upload")
        if not (hasattr(fh, "seekable") and fh.seekable()):
            spool = tempfile.TemporaryFile()
            shutil.copyfileobj(fh, spool, 1 << 20)
            fh = spool
        fh.seek(0)
    digest, size = hashlib.sha256(), 0
    while block := fh.read(1 << 20):
        digest.update(block)
        size += len(block)
    fh.seek(0)
    return Source(label, fh, size, digest.hexdigest())


# -- values -------------------------------------------------------------------------------------
# C0 and C1 control characters (tab, CR, LF, NUL, DEL included): never part of an id, and
# a spreadsheet or a log line would read them as structure.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain_id(value: str, name: str) -> str:
    """`value` unless it holds a control character (then a row problem saying so)."""
    if CONTROL_RE.search(value):
        raise RowProblem(f"{name} holds a control character (tab, line break, …)")
    return value


def text(value, name: str, limit: int, *, required: bool = False) -> str | None:
    if value is None:
        value = ""
    elif not isinstance(value, str):
        raise RowProblem(f"{name} is not text")
    value = value.strip()
    if not value:
        if required:
            raise RowProblem(f"{name} is empty")
        return None
    if len(value) > limit:
        raise RowProblem(f"{name} is longer than {limit} characters")
    return value


def number(value, name: str, low: int, high: int) -> int | None:
    """A whole number from JSON or CSV text; zero-padded text ("09") is a number."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RowProblem(f"{name} is not a whole number")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if not value.isdigit() or not value.isascii():
            raise RowProblem(f"{name} is not a whole number")
        value = int(value)
    if not low <= value <= high:
        raise RowProblem(f"{name} {value} is out of range")
    return value


def expiry(month, year, prefix: str = "exp") -> tuple[int | None, int | None]:
    month = number(month, f"{prefix}_month", 1, 12)
    year = number(year, f"{prefix}_year", 0, 2199)
    if year is not None and year < 100:
        year += 2000  # a two-digit year: 27 means 2027
    if year is not None and year < 1990:
        raise RowProblem(f"{prefix}_year {year} is out of range")
    if (month is None) != (year is None):
        raise RowProblem(f"{prefix}_month and {prefix}_year must both be given or both be empty")
    return month, year


def last4(value, name: str = "last4") -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    value = text(value, name, 4)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii():
        raise RowProblem(f"{name} is not digits")
    return value.zfill(4)  # spreadsheets drop the leading zero of "0341"


def customer_id(value, name: str) -> str:
    if type(value) is str and CUS_RE.fullmatch(value) and len(value) <= MAX_ID:
        return value  # the common case, without the checks that only name a fault
    value = text(value, name, MAX_ID, required=True)
    if not CUS_RE.fullmatch(value):
        raise RowProblem(f"{name} is not a Stripe customer id (cus_…)")
    return value


# -- roster rows --------------------------------------------------------------------------------
def _name(raw: str) -> str:
    return " ".join(raw.split())[:255]  # quoted newlines and double spaces become one space


def _locale(raw: str) -> str:
    if len(raw) > 16 or not LOCALE_RE.fullmatch(raw):
        raise RowProblem("locale is not a language tag like en or fr-CA")
    return raw.replace("_", "-")


def _brand(raw: str) -> str:
    if len(raw) > 32:
        raise RowProblem("card_brand is longer than 32 characters")
    return raw


def _last4(raw: str) -> str:
    if len(raw) == 4 and raw.isdigit() and raw.isascii():
        return raw
    return last4(raw, "card_last4")


def _stripe_customer(raw: str) -> str:
    return customer_id(raw, "stripe_customer_id")


def _whole(raw: str) -> int | str:
    # "09" and "2027" are numbers; anything else goes to expiry(), which names the fault.
    return int(raw) if len(raw) <= 4 and raw.isdigit() and raw.isascii() else raw


CONVERTERS = {"name": _name, "locale": _locale, "stripe_customer_id": _stripe_customer,
              "card_brand": _brand, "card_last4": _last4, "card_exp_month": _whole,
              "card_exp_year": _whole}
# Columns with few distinct values: each raw value is checked once, then looked up.
FEW_VALUES = ("locale", "card_brand", "card_exp_month", "card_exp_year")
MEMO_LIMIT = 4096


class RosterRows:
    """Turns roster records into normalised Customer values; RowProblem says what is wrong.

    A row comes back as a list aligned with `columns`, the Customer columns this file speaks
    for (legacy_id and email first): plain values ready to bind, None where a field is empty.
    """

    def __init__(self, header: list[str]):
        missing = [name for name in ROSTER_REQUIRED if name not in header]
        if missing:
            raise ImportFileError(f"header lacks required column(s): {', '.join(missing)}"
                                  f" (found: {','.join(header)[:200]})")
        self.width = len(header)
        index = {name: header.index(name) for name in ROSTER_COLUMNS if name in header}
        self.legacy_at, self.email_at = index["legacy_customer_id"], index["email"]
        self.has_expiry = "card_exp_month" in index or "card_exp_year" in index
        # The Customer columns this file speaks for; the others are left as they are.
        self.columns = [ROSTER_COLUMNS[name] for name in index]
        if self.has_expiry:
            self.columns += [c for c in ("card_exp_month", "card_exp_year")
                             if c not in self.columns]
            self.month_at = self.columns.index("card_exp_month")
            self.year_at = self.columns.index("card_exp_year")
        # (where in the row, which field, how to check it, memo of checked values or None)
        self.plan = [(self.columns.index(ROSTER_COLUMNS[name]), i, CONVERTERS[name],
                      {} if name in FEW_VALUES else None)
                     for name, i in index.items() if name in CONVERTERS]
        self.blank = [None] * len(self.columns)

    def legacy_id(self, fields: list[str]) -> str | None:
        return fields[self.legacy_at].strip() or None if len(fields) > self.legacy_at else None

    def values(self, fields: list[str]) -> list:
        """The row's values in the order of `columns`, None where empty, ready to insert."""
        if len(fields) != self.width:
            raise RowProblem(f"expected {self.width} fields, found {len(fields)}")
        legacy = fields[self.legacy_at].strip()
        email = fields[self.email_at].strip().lower()
        if not legacy or len(legacy) > MAX_ID:
            text(legacy, "legacy_customer_id", MAX_ID, required=True)
        plain_id(legacy, "legacy_customer_id")
        if len(email) > 320 or not EMAIL_RE.fullmatch(email):
            raise RowProblem("email is empty" if not email else "email is not a valid address")
        values = self.blank.copy()
        values[0] = legacy
        values[1] = email
        for at, i, convert, memo in self.plan:
            raw = fields[i].strip()
            if not raw:
                continue
            if memo is None:
                values[at] = convert(raw)
            elif (value := memo.get(raw)) is not None:
                values[at] = value
            else:
                values[at] = value = convert(raw)
                if len(memo) < MEMO_LIMIT:
                    memo[raw] = value
        if self.has_expiry:
            month, year = values[self.month_at], values[self.year_at]
            if (type(month) is not int or type(year) is not int or not 1 <= month <= 12
                    or not 1990 <= year <= 2199):
                values[self.month_at], values[self.year_at] = expiry(month, year, "card_exp")
        return values


# -- CSV ----------------------------------------------------------------------------------------
class CsvRecords:
    """CSV records of a binary file with the line each starts on: UTF-8 with or without BOM,
    CRLF or LF, quoted fields with commas and newlines. File-level faults raise ImportFileError.
    Call detach() when done so the caller's file is left open."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self._text = io.TextIOWrapper(fh, encoding="utf-8-sig", newline="")
        self._reader = csv.reader(self._text, strict=False)
        self.count = 0  # records read after the header

    @property
    def lines(self) -> int:
        return self._reader.line_num

    @property
    def offset(self) -> int:
        return self.fh.tell()  # bytes read so far (to the read-ahead), for progress only

    def detach(self) -> None:
        if self._text is not None:
            self._text.detach()
            self._text = None

    def _fault(self, exc: Exception, first: int) -> ImportFileError:
        if isinstance(exc, UnicodeDecodeError):
            return ImportFileError(utf8_fault(self.fh))
        if "field larger" in str(exc):
            return ImportFileError(f"line {first}: a field runs past {FIELD_LIMIT:,} characters"
                                   " (a quote that is never closed?)")
        return ImportFileError(f"line {self.lines}: {exc}")

    def header(self) -> list[str]:
        try:
            record = next(self._reader, None)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self._fault(exc, 1) from None
        if record is None:
            raise ImportFileError("the file is empty (no header row)")
        names = [name.strip().lower() for name in record]
        repeated = sorted({n for n in names if n and names.count(n) > 1})
        if repeated:
            raise ImportFileError(f"header repeats column(s): {', '.join(repeated)}")
        return names

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        previous = csv.field_size_limit(FIELD_LIMIT)
        reader = self._reader
        first = reader.line_num + 1  # the line the next record starts on
        count = self.count
        try:
            for record in reader:
                if record:  # csv gives [] for a blank line
                    self.count = count = count + 1
                    yield first, record
                first = reader.line_num + 1
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self._fault(exc, first) from None
        finally:
            csv.field_size_limit(previous)


def utf8_fault(fh: BinaryIO) -> str:
    """Where the first byte that is not UTF-8 sits (only run once decoding has failed)."""
    fh.seek(0)
    offset = 0
    for number_, raw in enumerate(fh, 1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not UTF-8: line {number_}, byte {offset + exc.start}"
        offset += len(raw)
    return "not UTF-8"
