"""Stripe's post-import mapping formats: detection by content, CSV and streamed JSON readers.

Stripe's post-import mapping comes as JSON keyed by old customer id (read with ijson, never
loaded whole) or as one of three CSV header sets; the format is told by the content, not the
file name. Every reader yields plain `Entry` values and hands rows it cannot use to `report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import BinaryIO, NamedTuple

import ijson

from cardbridge.imports.files import (
    CONTROL_RE,
    CUS_RE,
    MAX_ID,
    CsvRecords,
    ImportFileError,
    RowProblem,
    customer_id,
    expiry,
    last4,
    plain_id,
    text,
)
from cardbridge.imports.json_guard import CountingReader

CARD_PREFIXES = ("card_", "pm_", "src_")

# The id columns that tell each CSV apart: (old customer, new customer, old card, new card).
CSV_FORMATS = {
    "card_csv": ("old_customer_id", "customer_id", "old_card_id", "card_id"),
    "pm_csv": ("old_id", "created_customer", "source_old_id", "source_new_id"),
    "copy_csv": ("customer_id_old", "customer_id_new", "source_id_old", "source_id_new"),
}
DETAIL_COLUMNS = ("card_fingerprint", "card_brand", "card_last4", "card_exp_month",
                  "card_exp_year")
# Stripe's non-card mapping files share id columns with the card ones: name them, don't guess.
NON_CARD_COLUMNS = {
    "old_bank_account_id": "ACH bank-account",
    "bank_account_id": "ACH bank-account",
    "mandate_id": "Bacs or SEPA",
    "mandate_reference": "SEPA",
    "old_source_id": "SEPA",
}
FORMAT_LABELS = {
    "stripe_json": "Stripe JSON",
    "card_csv": "card_ CSV",
    "pm_csv": "pm_ CSV",
    "copy_csv": "Stripe-to-Stripe copy CSV",
    "roster": "roster CSV",
}

Report = Callable[[int | None, str | None, str, str], None]  # (line, customer, kind, problem)


# A card is a plain tuple, in the order of the migrated_cards columns after customer_id:
# (old_id, stripe_id, fingerprint, brand, last4, exp_month, exp_year). Tuples because a file of
# millions makes millions of them, and (customer_id,) + card is then a row ready to insert.
Card = tuple
OLD_ID, STRIPE_ID, FINGERPRINT, BRAND, LAST4, EXP_MONTH, EXP_YEAR = range(7)


class Entry(NamedTuple):
    """One customer as the mapping names them (a CSV customer may span several rows)."""

    line: int | None
    legacy_id: str
    stripe_customer_id: str
    cards: list[Card]


# -- cards ---------------------------------------------------------------------------------------
def make_card(old_id, stripe_id, fingerprint=None, brand=None, last_four=None,
              exp_month=None, exp_year=None) -> Card:
    if _plain_card(old_id, stripe_id, fingerprint, brand, last_four, exp_month, exp_year):
        return (old_id, stripe_id, fingerprint or None, brand or None, last_four, exp_month,
                exp_year)
    # Anything but the shapes Stripe sends takes the checks below, which name the fault.
    old_id = plain_id(text(old_id, "old card id", MAX_ID, required=True), "old card id")
    stripe_id = text(stripe_id, "card id", MAX_ID, required=True)
    if not stripe_id.startswith(CARD_PREFIXES):
        prefix = stripe_id.split("_", 1)[0] + "_" if "_" in stripe_id else stripe_id[:8]
        raise RowProblem(f"{prefix}… is not a card (card_, pm_ or src_)")
    month, year = expiry(exp_month, exp_year)
    return (old_id, stripe_id, text(fingerprint, "fingerprint", 64), text(brand, "brand", 32),
            last4(last_four), month, year)


def _plain_card(old_id, stripe_id, fingerprint, brand, last_four, exp_month, exp_year) -> bool:
    """The shape Stripe sends (no stray spaces, int expiry, four-digit last4): no more checks."""
    return (type(stripe_id) is str and stripe_id.startswith(CARD_PREFIXES)
            and len(stripe_id) <= MAX_ID and type(old_id) is str and 0 < len(old_id) <= MAX_ID
            and old_id[0] > " " and old_id[-1] > " " and not CONTROL_RE.search(old_id)
            and type(exp_month) is int and 0 < exp_month < 13
            and type(exp_year) is int and 1989 < exp_year < 2200
            and type(last_four) is str and len(last_four) == 4 and last_four.isdigit()
            and last_four.isascii()
            and (fingerprint is None or (type(fingerprint) is str and len(fingerprint) <= 64))
            and (brand is None or (type(brand) is str and len(brand) <= 32)))


# -- format detection ---------------------------------------------------------------------------
def _first_byte(fh: BinaryIO) -> tuple[bytes, int]:
    """The first non-blank byte and where the content starts (after a UTF-8 BOM)."""
    head = fh.read(4096)
    start = 3 if head.startswith(b"\xef\xbb\xbf") else 0
    stripped = head[start:].lstrip(b" \t\r\n")
    fh.seek(start)
    return stripped[:1], start


def open_mapping(fh: BinaryIO, report: Report) -> tuple[str, Iterator[Entry], Callable[[], int]]:
    """Detect the mapping's format; return (format, entries, bytes-read-so-far)."""
    first, start = _first_byte(fh)
    if not first:
        raise ImportFileError("the file is empty")
    if first == b"{":
        reader = CountingReader(fh, start)
        return "stripe_json", _json_entries(reader, fh, report), lambda: reader.offset
    if first == b"[":
        raise ImportFileError("mapping JSON must be an object keyed by old customer id, "
                              "not a list")
    fh.seek(0)
    records = CsvRecords(fh)
    header = records.header()
    for column, label in NON_CARD_COLUMNS.items():
        if column in header:
            records.detach()
            raise ImportFileError(f"this is Stripe's {label} mapping ({column} column); "
                                  "cardbridge imports card mappings")
    for fmt, ids in CSV_FORMATS.items():
        if all(name in header for name in ids):
            return fmt, _csv_entries(records, header, ids, report), lambda: records.offset
    records.detach()
    raise ImportFileError(
        "header matches no Stripe mapping format (expected old_customer_id,customer_id,"
        "old_card_id,card_id,… or old_id,source_old_id,created_customer,source_new_id,… or "
        f"customer_id_old,source_id_old,customer_id_new,source_id_new); found: "
        f"{','.join(header)[:200]}"
    )


def _csv_entries(records: CsvRecords, header: list[str], ids: tuple[str, ...],
                 report: Report) -> Iterator[Entry]:
    width = len(header)
    old_cus, new_cus, old_card, new_card = (header.index(name) for name in ids)
    details = [header.index(n) if n in header else None for n in DETAIL_COLUMNS]
    try:
        yield from _grouped(records, width, ids, (old_cus, new_cus, old_card, new_card), details,
                            report)
    finally:
        records.detach()


def _grouped(records, width, ids, at, details, report) -> Iterator[Entry]:
    """Consecutive rows of one customer become one Entry (one row per card in the CSVs)."""
    old_cus, new_cus, old_card, new_card = at
    current: Entry | None = None
    for line, fields in records:
        legacy = fields[old_cus].strip() if len(fields) > old_cus else None
        try:
            if len(fields) != width:
                raise RowProblem(f"expected {width} fields, found {len(fields)}")
            legacy = plain_id(text(fields[old_cus], ids[0], MAX_ID, required=True), ids[0])
            stripe_customer = customer_id(fields[new_cus], ids[1])
            card = None
            if fields[old_card].strip() or fields[new_card].strip():
                fp, brand, l4, month, year = (fields[i] if i is not None else None
                                              for i in details)
                card = make_card(fields[old_card], fields[new_card], fp, brand, l4, month, year)
        except RowProblem as exc:
            report(line, legacy or None, "error", str(exc))
            continue
        if (current is not None and current.legacy_id == legacy
                and current.stripe_customer_id == stripe_customer):
            if card is not None:
                current.cards.append(card)
            continue
        if current is not None:
            yield current
        current = Entry(line, legacy, stripe_customer, [card] if card else [])
    if current is not None:
        yield current


def _json_entries(reader: CountingReader, fh: BinaryIO, report: Report) -> Iterator[Entry]:
    items = ijson.kvitems(reader, "", use_float=True)
    while True:
        try:
            key, value = next(items)
        except StopIteration:
            return
        except ijson.JSONError as exc:
            raise ImportFileError(json_error_message(exc, reader, fh)) from None
        reader.entry_start = reader.chunk_start
        try:
            entry = _json_entry(key, value, report)
        except RowProblem as exc:
            report(None, key.strip() or None, "error", str(exc))
            continue
        yield entry


def _json_entry(key: str, value, report: Report) -> Entry:
    legacy = plain_id(key if key and len(key) <= MAX_ID and key[0] > " " and key[-1] > " "
                      else text(key, "old customer id", MAX_ID, required=True), "old customer id")
    if type(value) is not dict:
        raise RowProblem("value is not an object")
    stripe_customer = value.get("id")
    if not (type(stripe_customer) is str and len(stripe_customer) <= MAX_ID
            and _is_customer(stripe_customer)):
        stripe_customer = customer_id(stripe_customer, '"id"')
    raw_cards = value.get("cards") or {}
    if not isinstance(raw_cards, dict):
        raise RowProblem('"cards" is not an object keyed by old card id')
    cards: list[Card] = []
    for old_id, card in raw_cards.items():
        if type(card) is not dict:
            report(None, legacy, "error", f'card "{old_id[:40]}": is not an object')
            continue
        try:
            stripe_id, fingerprint, brand, last_four, month, year = _card_fields(card)
        except KeyError:  # a field left out reads as null
            get = card.get
            stripe_id, fingerprint, brand, last_four, month, year = (
                get("id"), get("fingerprint"), get("brand"), get("last4"), get("exp_month"),
                get("exp_year"))
        if _plain_card(old_id, stripe_id, fingerprint, brand, last_four, month, year):
            cards.append((old_id, stripe_id, fingerprint or None, brand or None, last_four,
                          month, year))
            continue
        try:
            cards.append(make_card(old_id, stripe_id, fingerprint, brand, last_four, month,
                                   year))
        except RowProblem as exc:
            report(None, legacy, "error", f'card "{old_id[:40]}": {exc}')
    return _new_entry(Entry, (None, legacy, stripe_customer, cards))


_is_customer = CUS_RE.fullmatch
_card_fields = itemgetter("id", "fingerprint", "brand", "last4", "exp_month", "exp_year")
_new_entry = tuple.__new__  # Entry(...) without the Python-level __new__ a NamedTuple has


def json_error_message(exc: Exception, reader: CountingReader, fh: BinaryIO) -> str:
    """'bad JSON at line L, column C (byte B): reason', placed from yajl's error window."""
    message = exc.args[0] if exc.args else str(exc)
    if isinstance(message, str):
        message = message.encode("utf-8")
    parts = message.split(b"\n")
    reason = parts[0].decode("utf-8", "replace").split(": ", 1)[-1].strip() or "invalid JSON"
    offset = _yajl_offset(parts, reader)
    if offset is None:
        return f"bad JSON near byte {reader.chunk_start}: {reason}"
    line, column = _line_column(fh, offset)
    return f"bad JSON at line {line}, column {column} (byte {offset}): {reason}"


def _yajl_offset(parts: list[bytes], reader: CountingReader) -> int | None:
    # yajl shows the chunk it was parsing from 30 bytes before the fault to 30 after, newlines
    # blanked, padded so the fault sits in column 40 (10 spaces, or more near the chunk start).
    if not reader.chunk:
        return reader.chunk_start  # premature end: the fault is where the file stops
    if len(parts) < 2:
        return None
    window = parts[1]
    spaces = len(window) - len(window.lstrip(b" "))
    chunk = reader.chunk.replace(b"\r", b" ").replace(b"\n", b" ")
    offset = None
    for pad in range(min(spaces, 40), 10, -1):  # fault in the first 30 bytes of the chunk
        if window[pad:] and chunk.startswith(window[pad:]):
            offset = 40 - pad
            break
    if offset is None and spaces >= 10:
        needle = window[10:]
        at = chunk.find(needle)
        if at < 0 or chunk.find(needle, at + 1) >= 0:
            return None  # not found, or found twice: say "near" rather than guess
        offset = at + 30
    if offset is None:
        return None
    if parts[0].startswith(b"lexical error"):
        offset -= 1  # the lexer points just past the byte it refused
    else:
        offset = _token_start(reader.chunk, offset)  # the parser, just past a whole token
    return reader.chunk_start + max(offset, 0)


def _token_start(chunk: bytes, end: int) -> int:
    """Where the JSON token that ends at `end` begins (a string, a word or number, or one
    punctuation byte); `end` itself when there is nothing to walk back over."""
    if end <= 0 or end > len(chunk):
        return end
    last = chunk[end - 1:end]
    if last == b'"':
        start = end - 2
        while start >= 0 and not (chunk[start:start + 1] == b'"'
                                  and chunk[start - 1:start] != b"\\"):
            start -= 1
        return max(start, 0)
    if last.isalnum() or last in b"+-.":
        start = end - 1
        while start > 0 and (chunk[start - 1:start].isalnum() or chunk[start - 1:start] in b"+-."):
            start -= 1
        return start
    return end - 1


def _line_column(fh: BinaryIO, offset: int) -> tuple[int, int]:
    fh.seek(0)
    line, line_start, done = 1, 0, 0
    while done < offset:
        block = fh.read(min(1 << 20, offset - done))
        if not block:
            break
        newlines = block.count(b"\n")
        if newlines:
            line += newlines
            line_start = done + block.rindex(b"\n") + 1
        done += len(block)
    return line, offset - line_start + 1
