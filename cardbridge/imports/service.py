"""Streaming import of the legacy roster and Stripe's mapping file, reconciled into statuses.

One file is one transaction. Rows are read as a stream and written in batches through
SQLAlchemy Core; nothing here commits. The caller commits once at the end, so a file-level
error, a --strict abort or a `kill -9` part way leaves the database as it was, and running the
file again applies it whole. Rows that cannot be applied (row errors, conflicts, unknown
customers) are counted, written to a CSV report under instance/import-reports/, and skipped.
Every run is an ImportRun row; a file identical to the last one applied is not applied again.

An `invited` customer whose mapping now shows a usable card becomes `ready` (SPEC: invited
means "needs a card"); their live link keeps working, and a card saved through it makes them
`updated`. An `updated` customer is never moved by an import. Imports never delete customers
or cards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import bindparam, func, select

from cardbridge.bulk import BulkInsert, BulkUpdate, KeyedSelect, batches
from cardbridge.customers.reporting import (
    card_usable,
    cutover_date,
    export_csv,
    refresh_statuses,
    status_report,
)
from cardbridge.extensions import db
from cardbridge.imports import files as files
from cardbridge.imports import mapping_formats as fmt
from cardbridge.imports.files import ImportFileError, RowProblem, Source
from cardbridge.imports.runs import ImportResult, ProblemLog, Progress, failed_run, run_import
from cardbridge.models import Customer, ImportRun, Link, MigratedCard
from cardbridge.models.links import is_live
from cardbridge.models.types import UTCDateTime

__all__ = ["ImportFileError", "ImportResult", "export_csv", "failed_run", "import_mapping",
           "import_roster", "refresh_statuses", "status_report"]

CARD_FIELDS = ("stripe_id", "fingerprint", "brand", "last4", "exp_month", "exp_year")


# -- roster -------------------------------------------------------------------------------------
def import_roster(source, *, name: str | None = None, strict: bool = False,
                  progress: Progress | None = None, report_dir=None,
                  now: datetime | None = None) -> ImportResult:
    """Load the legacy roster CSV: new customers are added, changed ones updated, none doubled.

    `source` is a path or a binary stream; `name` labels it in the run history.
    """
    return run_import("roster", source, name=name, strict=strict, progress=progress,
                      report_dir=report_dir, now=now, apply=_apply_roster)


@dataclass
class _RosterState:
    parser: files.RosterRows
    watermark: int  # the highest customer id before this run
    seen: bytearray  # a bit per pre-existing customer id this file has named already
    existing: KeyedSelect  # (id, stripe_customer_id, *compared) by legacy id
    compared: list[int]  # where in a row the columns sit that this file speaks for, stripe aside
    stripe_at: int | None  # where stripe_customer_id sits in a row, if the file has it
    owners: KeyedSelect  # (stripe_customer_id, legacy_id) by stripe id
    insert: BulkInsert
    update: BulkUpdate


def _apply_roster(src: Source, run: ImportRun, problems: ProblemLog,
                  progress: Progress | None, now: datetime) -> Counter:
    run.format = "roster"
    records = files.CsvRecords(src.fh)
    try:
        parser = files.RosterRows(records.header())
        table = Customer.__table__
        watermark = db.session.execute(select(func.max(Customer.id))).scalar() or 0
        columns = parser.columns  # legacy_id first
        stripe_at = columns.index("stripe_customer_id") if (
            "stripe_customer_id" in columns) else None
        compared = [at for at in range(len(columns)) if at != stripe_at]
        # A legacy id repeated anywhere in a file of millions costs one bit per existing
        # customer to catch, and nothing for new ones: their ids are above the watermark.
        state = _RosterState(
            parser, watermark, bytearray(watermark // 8 + 1),
            KeyedSelect([table.c.id, table.c.stripe_customer_id,
                         *(table.c[columns[at]] for at in compared)], table.c.legacy_id),
            compared, stripe_at,
            KeyedSelect([table.c.stripe_customer_id, table.c.legacy_id],
                        table.c.stripe_customer_id),
            BulkInsert(table, columns,
                       {"status": "needs_update", "created_at": now, "updated_at": now}),
            BulkUpdate(table, columns[1:], {"updated_at": now}),
        )
        counts: Counter[str] = Counter()
        values = parser.values

        def rows() -> Iterator[tuple[int, list]]:
            for line, fields in records:
                try:
                    yield line, values(fields)
                except RowProblem as exc:
                    spans = f" (the record runs to line {records.lines})" if (
                        records.lines > line and len(fields) != parser.width) else ""
                    problems.add(line, parser.legacy_id(fields), "error", f"{exc}{spans}")

        for batch in batches(rows()):
            _roster_batch(batch, state, problems, counts)
            problems.flush()
            if progress:
                progress(records.count, records.offset, src.size)
        if records.count:
            counts["rows"] = records.count
    finally:
        records.detach()
    return counts


def _roster_batch(batch: list[tuple[int, list]], state: _RosterState, problems: ProblemLog,
                  counts: Counter) -> None:
    seen, watermark, stripe_at = state.seen, state.watermark, state.stripe_at
    existing = {row[2]: row for row in state.existing([v[0] for _, v in batch])}
    owners = {}
    if stripe_at is not None:
        wanted = {v[stripe_at] for _, v in batch if v[stripe_at]}
        owners = dict(state.owners(wanted)) if wanted else {}
    in_batch: dict[str, int] = {}
    inserts, updates = [], []
    for line, values in batch:
        legacy = values[0]
        row = existing.get(legacy) if existing else None
        if legacy in in_batch or (row is not None and (
                row[0] > watermark or seen[row[0] >> 3] & (1 << (row[0] & 7)))):
            where = f"line {in_batch[legacy]}" if legacy in in_batch else "an earlier line"
            problems.add(line, legacy, "error", f"legacy_customer_id repeats {where}; "
                         "this row not applied")
            continue
        stripe_id = values[stripe_at] if stripe_at is not None else None
        if stripe_id:
            held = row[1] if row is not None else None
            owner = owners.get(stripe_id)
            if held and held != stripe_id:
                problems.add(line, legacy, "conflict", f"already linked to {held}; the file says"
                             f" {stripe_id}: row not applied")
                continue
            if owner is not None and owner != legacy:
                problems.add(line, legacy, "conflict", f"{stripe_id} already belongs to customer"
                             f" {owner}: row not applied")
                continue
            owners[stripe_id] = legacy
        in_batch[legacy] = line
        if row is None:
            inserts.append(values)
            continue
        customer_id = row[0]
        seen[customer_id >> 3] |= 1 << (customer_id & 7)
        if stripe_at is not None and not stripe_id:
            values[stripe_at] = row[1]  # a blank never unlinks a Stripe customer
        if (any(row[2 + i] != values[at] for i, at in enumerate(state.compared))
                or (stripe_at is not None and row[1] != values[stripe_at])):
            updates.append(values[1:] + [customer_id])
            counts["changed"] += 1
        else:
            counts["unchanged"] += 1
    if inserts:
        counts["new"] += len(inserts)
    state.insert.run(inserts)
    state.update.run(updates)


# -- mapping ------------------------------------------------------------------------------------
def import_mapping(source, *, name: str | None = None, strict: bool = False,
                   progress: Progress | None = None, report_dir=None,
                   now: datetime | None = None) -> ImportResult:
    """Load Stripe's post-import mapping (JSON or any of its CSVs) and settle statuses."""
    return run_import("mapping", source, name=name, strict=strict, progress=progress,
                      report_dir=report_dir, now=now, apply=_apply_mapping)


@dataclass
class _MappingState:
    now: datetime
    cutover: date
    insert_cards: BulkInsert
    update_cards: BulkUpdate
    update_customers: BulkUpdate
    # By legacy id, each customer with each card stored for them, in one statement:
    # (id, legacy_id, stripe_customer_id, status, mapped_at, card id, customer_id, old_card_id,
    # *CARD_FIELDS), the card's part None for a customer with no card stored.
    customers: KeyedSelect
    owners: KeyedSelect  # (stripe_customer_id, legacy_id) by stripe id


def _apply_mapping(src: Source, run: ImportRun, problems: ProblemLog,
                   progress: Progress | None, now: datetime) -> Counter:
    run.format, entries, position = fmt.open_mapping(src.fh, problems.add)
    customers, cards = Customer.__table__, MigratedCard.__table__
    state = _MappingState(
        now, cutover_date(now),
        BulkInsert(cards, ["customer_id", "old_card_id", *CARD_FIELDS]),
        BulkUpdate(cards, CARD_FIELDS),
        # mapped_at keeps the first mapping's time: only a customer never mapped gets it now.
        BulkUpdate(customers, ["stripe_customer_id", "status"],
                   {"updated_at": now, "first_mapped": now},
                   {"mapped_at": func.coalesce(customers.c.mapped_at, bindparam(
                       "first_mapped", type_=UTCDateTime()))}),
        KeyedSelect([customers.c.id, customers.c.legacy_id, customers.c.stripe_customer_id,
                     customers.c.status, customers.c.mapped_at, cards.c.id, cards.c.customer_id,
                     cards.c.old_card_id, *(cards.c[name] for name in CARD_FIELDS)],
                    customers.c.legacy_id,
                    customers.outerjoin(cards, cards.c.customer_id == customers.c.id)),
        KeyedSelect([customers.c.stripe_customer_id, customers.c.legacy_id],
                    customers.c.stripe_customer_id),
    )
    counts: Counter[str] = Counter()
    for batch in batches(entries):
        counts["rows"] += len(batch)
        _mapping_batch(batch, state, problems, counts)
        problems.flush()
        if progress:
            progress(counts["rows"], position(), src.size)
    return counts


def _mapping_batch(batch: list[fmt.Entry], state: _MappingState, problems: ProblemLog,
                   counts: Counter) -> None:
    found: dict[str, tuple] = {}
    stored: dict[int, list] = {}  # customer id -> the cards stored for them
    for row in state.customers({e[1] for e in batch}):
        if row[1] not in found:
            found[row[1]] = row[:5]
        if row[5] is not None:
            stored.setdefault(row[0], []).append(row[5:])
    applied = _match_customers(batch, found, state, problems)
    if not applied:
        return
    inserts, card_updates, usable = _merge_cards(applied, stored, state, counts)
    waiting = [cid for cid, (row, _) in applied.items()
               if cid not in usable and row[3] != "updated"]
    live = set(db.session.execute(
        select(Link.customer_id).where(Link.customer_id.in_(waiting), is_live(state.now))
        .distinct()
    ).scalars()) if waiting else set()
    customer_updates = []
    statuses: Counter[str] = Counter()
    linked = 0
    for customer_id, (row, entries) in applied.items():
        _id, _legacy, held, current, mapped_at = row
        if current == "updated":
            status = "updated"  # never moved by an import
        elif customer_id in usable:
            status = "ready"
        else:
            status = "invited" if customer_id in live else "needs_update"
        statuses[status] += 1
        if held is None:
            linked += 1
        stripe_id = entries[-1][2]
        if held != stripe_id or current != status or mapped_at is None:
            customer_updates.append((stripe_id, status, customer_id))
    counts.update({f"status_{status}": n for status, n in statuses.items()})
    if linked:
        counts["linked"] += linked
    if linked < len(applied):
        counts["already_linked"] += len(applied) - linked
    state.insert_cards.run(inserts)
    state.update_cards.run(card_updates)
    state.update_customers.run(customer_updates)


def _match_customers(batch: list[fmt.Entry], found: dict[str, tuple], state: _MappingState,
                     problems: ProblemLog) -> dict[int, tuple]:
    """customer id -> (row, entries) for the entries that may be applied; the rest reported.
    `found` is the batch's customers by legacy id."""
    owners = dict(state.owners({e[2] for e in batch}))
    applied: dict[int, tuple] = {}
    for entry in batch:
        line, legacy, wanted, _cards = entry
        row = found.get(legacy)
        if row is None:
            problems.add(line, legacy, "unknown",
                         "not in the roster: not applied (import the roster, then this file)")
            continue
        previous = applied.get(row[0])
        held = previous[1][-1][2] if previous else row[2]
        if held is not None and held != wanted:
            problems.add(line, legacy, "conflict",
                         f"already linked to {held}; the file says {wanted}: not applied")
            continue
        owner = owners.get(wanted)
        if owner is not None and owner != legacy:
            problems.add(line, legacy, "conflict",
                         f"{wanted} already belongs to customer {owner}: not applied")
            continue
        owners[wanted] = legacy
        if previous:
            previous[1].append(entry)
        else:
            applied[row[0]] = (row, [entry])
    return applied


def _merge_cards(applied: dict[int, tuple], stored: dict[int, list], state: _MappingState,
                 counts: Counter) -> tuple[list[tuple], list[tuple], set[int]]:
    """New and changed card rows, and the customers left with a card usable at cutover.

    New rows are (customer_id, *card); changed ones (*CARD_FIELDS, card row id).
    """
    cut = state.cutover.year * 12 + state.cutover.month
    inserts: dict[tuple[int, str], tuple] = {}
    updates: list[tuple] = []
    usable: set[int] = set()
    unchanged = repeated = 0
    for customer_id, (_row, entries) in applied.items():
        earlier = stored.get(customer_id)
        if earlier is None:  # the common case: no card of this customer stored yet
            repeated += _all_new(customer_id, entries, cut, inserts, usable)
            continue
        known = {card[2]: card for card in earlier}
        mentioned = set()
        for entry in entries:
            for card in entry[3]:
                month, year = card[5], card[6]
                if month is None or year is None or year * 12 + month >= cut:
                    usable.add(customer_id)
                old = known.get(card[0])
                mentioned.add(card[0])
                if old is None:
                    key = (customer_id, card[0])
                    if key in inserts:
                        repeated += 1
                    inserts[key] = (customer_id, *card)
                elif _card_changed(old, card):
                    updates.append((*card[1:], old[0]))
                else:
                    unchanged += 1
        for old_id, old in known.items():  # cards of earlier files not named here
            if old_id not in mentioned and card_usable(old[7], old[8], state.cutover):
                usable.add(customer_id)
    counts["cards_new"] += len(inserts)
    counts["cards_repeated"] += repeated
    counts["cards_changed"] += len(updates)
    counts["cards_unchanged"] += unchanged
    return list(inserts.values()), updates, usable


def _all_new(customer_id: int, entries: list, cut: int, inserts: dict, usable: set) -> int:
    """Every card of a customer with none stored yet goes in; returns how many repeated."""
    repeated = 0
    for entry in entries:
        for card in entry[3]:
            month, year = card[5], card[6]
            if month is None or year is None or year * 12 + month >= cut:
                usable.add(customer_id)
            key = (customer_id, card[0])
            if key in inserts:  # one card twice in a batch: the last one wins
                repeated += 1
            inserts[key] = (customer_id, *card)
    return repeated


def _card_changed(old: tuple, card: fmt.Card) -> bool:
    """Brands compare without case: "Visa" in one file and "visa" in the next is no change."""
    _id, _customer, _old_id, stripe_id, fingerprint, brand, last4, month, year = old
    _old, new_id, new_fingerprint, new_brand, new_last4, new_month, new_year = card
    return (stripe_id != new_id or fingerprint != new_fingerprint
            or (brand or "").lower() != (new_brand or "").lower() or last4 != new_last4
            or month != new_month or year != new_year)
