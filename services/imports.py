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

from extensions import db
from models import Customer, ImportRun, Link, MigratedCard
from models.types import UTCDateTime
from services import import_files as files
from services import mapping_formats as fmt
from services.bulk import BulkInsert, BulkUpdate, KeyedSelect, batches
from services.import_files import ImportFileError, RowProblem, Source
from services.import_runs import ImportResult, ProblemLog, Progress, failed_run, run_import
from services.reporting import (  # the console imports these from here too
    card_usable,
    cutover_date,
    export_csv,
    refresh_statuses,
    status_report,
)

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
    compared: list[str]  # the columns this file speaks for, stripe_customer_id aside
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
        compared = [c for c in parser.columns if c != "stripe_customer_id"]
        settable = [c for c in parser.columns if c != "legacy_id"]
        # A legacy id repeated anywhere in a file of millions costs one bit per existing
        # customer to catch, and nothing for new ones: their ids are above the watermark.
        state = _RosterState(
            parser, watermark, bytearray(watermark // 8 + 1),
            KeyedSelect([table.c.id, table.c.stripe_customer_id,
                         *(table.c[c] for c in compared)], table.c.legacy_id),
            compared,
            KeyedSelect([table.c.stripe_customer_id, table.c.legacy_id],
                        table.c.stripe_customer_id),
            BulkInsert(table, files.ROSTER_COLUMNS.values(),
                       {"status": "needs_update", "created_at": now, "updated_at": now}),
            BulkUpdate(table, settable, {"updated_at": now}),
        )
        counts: Counter[str] = Counter()

        def rows() -> Iterator[tuple[int, dict]]:
            for line, fields in records:
                counts["rows"] += 1
                try:
                    yield line, parser.values(fields)
                except RowProblem as exc:
                    spans = f" (the record runs to line {records.lines})" if (
                        records.lines > line and len(fields) != parser.width) else ""
                    problems.add(line, parser.legacy_id(fields), "error", f"{exc}{spans}")

        for batch in batches(rows()):
            _roster_batch(batch, state, problems, counts)
            problems.flush()
            if progress:
                progress(counts["rows"], records.offset, src.size)
    finally:
        records.detach()
    return counts


def _roster_batch(batch: list[tuple[int, dict]], state: _RosterState, problems: ProblemLog,
                  counts: Counter) -> None:
    compared, seen, watermark = state.compared, state.seen, state.watermark
    speaks_for_stripe = "stripe_customer_id" in state.parser.columns
    at_legacy = 2 + compared.index("legacy_id")
    existing = {row[at_legacy]: row for row in state.existing(v["legacy_id"] for _, v in batch)}
    wanted = {v["stripe_customer_id"] for _, v in batch if v["stripe_customer_id"]}
    owners = dict(state.owners(wanted)) if wanted else {}
    in_batch: dict[str, int] = {}
    inserts, updates = [], []
    for line, values in batch:
        legacy = values["legacy_id"]
        row = existing.get(legacy)
        if legacy in in_batch or (row is not None and (
                row[0] > watermark or seen[row[0] >> 3] & (1 << (row[0] & 7)))):
            where = f"line {in_batch[legacy]}" if legacy in in_batch else "an earlier line"
            problems.add(line, legacy, "error", f"legacy_customer_id repeats {where}; "
                         "this row not applied")
            continue
        stripe_id = values["stripe_customer_id"]
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
            counts["new"] += 1
            continue
        customer_id = row[0]
        seen[customer_id >> 3] |= 1 << (customer_id & 7)
        if not stripe_id:
            values["stripe_customer_id"] = row[1]  # a blank never unlinks a Stripe customer
        if (any(row[2 + i] != values[c] for i, c in enumerate(compared))
                or (speaks_for_stripe and row[1] != values["stripe_customer_id"])):
            updates.append({c: values[c] for c in state.parser.columns if c != "legacy_id"}
                           | {"b_id": customer_id})
            counts["changed"] += 1
        else:
            counts["unchanged"] += 1
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
    customers: KeyedSelect  # (id, legacy_id, stripe_customer_id, status, mapped_at) by legacy id
    owners: KeyedSelect  # (stripe_customer_id, legacy_id) by stripe id
    cards: KeyedSelect  # (id, customer_id, old_card_id, *CARD_FIELDS) by customer id


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
                     customers.c.status, customers.c.mapped_at], customers.c.legacy_id),
        KeyedSelect([customers.c.stripe_customer_id, customers.c.legacy_id],
                    customers.c.stripe_customer_id),
        KeyedSelect([cards.c.id, cards.c.customer_id, cards.c.old_card_id,
                     *(cards.c[name] for name in CARD_FIELDS)], cards.c.customer_id),
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
    applied = _match_customers(batch, state, problems)
    if not applied:
        return
    stored: dict[int, list] = {}
    for card in state.cards(applied):
        stored.setdefault(card[1], []).append(card)
    inserts, card_updates, usable = _merge_cards(applied, stored, state, counts)
    waiting = [cid for cid, (row, _) in applied.items()
               if row[3] != "updated" and cid not in usable]
    live = set(db.session.execute(
        select(Link.customer_id).where(Link.customer_id.in_(waiting), Link.used_at.is_(None),
                                       Link.revoked_at.is_(None), Link.expires_at > state.now)
        .distinct()
    ).scalars()) if waiting else set()
    customer_updates = []
    for customer_id, (row, entries) in applied.items():
        _id, _legacy, held, current, mapped_at = row
        if current == "updated":
            status = "updated"  # never moved by an import
        elif customer_id in usable:
            status = "ready"
        else:
            status = "invited" if customer_id in live else "needs_update"
        counts[f"status_{status}"] += 1
        counts["linked" if held is None else "already_linked"] += 1
        stripe_id = entries[-1].stripe_customer_id
        if held != stripe_id or current != status or mapped_at is None:
            customer_updates.append({"b_id": customer_id, "stripe_customer_id": stripe_id,
                                     "status": status})
    state.insert_cards.run(inserts)
    state.update_cards.run(card_updates)
    state.update_customers.run(customer_updates)


def _match_customers(batch: list[fmt.Entry], state: _MappingState,
                     problems: ProblemLog) -> dict[int, tuple]:
    """customer id -> (row, entries) for the entries that may be applied; the rest reported."""
    found = {row[1]: row for row in state.customers({e.legacy_id for e in batch})}
    owners = dict(state.owners({e.stripe_customer_id for e in batch}))
    applied: dict[int, tuple] = {}
    for entry in batch:
        row = found.get(entry.legacy_id)
        if row is None:
            problems.add(entry.line, entry.legacy_id, "unknown",
                         "not in the roster: not applied (import the roster, then this file)")
            continue
        previous = applied.get(row[0])
        held = previous[1][-1].stripe_customer_id if previous else row[2]
        wanted = entry.stripe_customer_id
        if held is not None and held != wanted:
            problems.add(entry.line, entry.legacy_id, "conflict",
                         f"already linked to {held}; the file says {wanted}: not applied")
            continue
        owner = owners.get(wanted)
        if owner is not None and owner != entry.legacy_id:
            problems.add(entry.line, entry.legacy_id, "conflict",
                         f"{wanted} already belongs to customer {owner}: not applied")
            continue
        owners[wanted] = entry.legacy_id
        if previous:
            previous[1].append(entry)
        else:
            applied[row[0]] = (row, [entry])
    return applied


def _merge_cards(applied: dict[int, tuple], stored: dict[int, list], state: _MappingState,
                 counts: Counter) -> tuple[list[dict], list[dict], set[int]]:
    """New and changed card rows, and the customers left with a card usable at cutover."""
    cut = state.cutover.year * 12 + state.cutover.month
    inserts: dict[tuple[int, str], dict] = {}
    updates: list[dict] = []
    usable: set[int] = set()
    unchanged = repeated = 0
    for customer_id, (_row, entries) in applied.items():
        earlier = stored.get(customer_id)
        known = {card[2]: card for card in earlier} if earlier else None
        mentioned = set()
        for entry in entries:
            for card in entry.cards:
                month, year = card.exp_month, card.exp_year
                if month is None or year is None or year * 12 + month >= cut:
                    usable.add(customer_id)
                values = {"stripe_id": card.stripe_id, "fingerprint": card.fingerprint,
                          "brand": card.brand, "last4": card.last4, "exp_month": month,
                          "exp_year": year}
                old = None
                if known:
                    old = known.get(card.old_id)
                    mentioned.add(card.old_id)
                if old is None:
                    key = (customer_id, card.old_id)
                    if key in inserts:  # one card twice in a batch: the last one wins
                        repeated += 1
                    values["customer_id"], values["old_card_id"] = key
                    inserts[key] = values
                elif _card_changed(old, card):
                    values["b_id"] = old[0]
                    updates.append(values)
                else:
                    unchanged += 1
        for old_id, old in (known or {}).items():  # cards of earlier files not named here
            if old_id not in mentioned and card_usable(old[7], old[8], state.cutover):
                usable.add(customer_id)
    counts["cards_new"] += len(inserts)
    counts["cards_repeated"] += repeated
    counts["cards_changed"] += len(updates)
    counts["cards_unchanged"] += unchanged
    return list(inserts.values()), updates, usable


def _card_changed(old: tuple, card: fmt.Card) -> bool:
    """Brands compare without case: "Visa" in one file and "visa" in the next is no change."""
    _id, _customer, _old_id, stripe_id, fingerprint, brand, last4, month, year = old
    return (stripe_id != card.stripe_id or fingerprint != card.fingerprint
            or (brand or "").lower() != (card.brand or "").lower() or last4 != card.last4
            or month != card.exp_month or year != card.exp_year)
