"""Reading the price map and the legacy subscriptions CSV (SPEC "Subscriptions"): the header
checks (file-level, nothing applied) and one row at a time into plain values (a RowProblem says
what is wrong in a few words). Column names shared with Stripe's subscription migration toolkit
keep its meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cardbridge.imports.files import ImportFileError, RowProblem, plain_id
from cardbridge.models.subscriptions import LEGACY_STATUSES

PRICE_MAP_COLUMNS = ("legacy_plan_id", "currency", "stripe_price_id")
PRICE_RE = re.compile(r"price_[A-Za-z0-9_]{1,200}")
CURRENCY_RE = re.compile(r"[a-z]{3}")
INTERVALS = ("day", "week", "month", "year")
COLLECTION_METHODS = ("charge_automatically", "send_invoice")
MAX_ITEMS = 20  # Stripe: "a list of up to 20 subscription items"
MAX_METADATA = 40  # Stripe allows 50 keys; cardbridge adds its own
ID_LIMIT = 255

SUBSCRIPTION_REQUIRED = ("legacy_subscription_id", "legacy_customer_id", "status",
                         "next_billing_at")
SUBSCRIPTION_SINGLE = ("legacy_plan_id", "price", "quantity", "unit_amount")
SUBSCRIPTION_OPTIONAL = ("currency", "interval", "interval_count", "current_period_start",
                         "anchor_day_of_month", "trial_end", "coupon", "collection_method",
                         "days_until_due", "automatic_tax", "default_tax_rate", "past_due_amount",
                         "resume_at")
ITEM_COLUMN = re.compile(r"items\.(\d{1,2})\.(legacy_plan_id|price|quantity|unit_amount)")
METADATA_COLUMN = re.compile(r"metadata\.([A-Za-z0-9_\-]{1,40})")
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


# -- price map ----------------------------------------------------------------------------------
def price_map_columns(header: list[str]) -> None:
    missing = [c for c in PRICE_MAP_COLUMNS if c not in header]
    if missing:
        raise ImportFileError("the price map needs the columns "
                              f"{','.join(PRICE_MAP_COLUMNS)} (missing: {', '.join(missing)})")
    extra = [c for c in header if c not in PRICE_MAP_COLUMNS]
    if extra:
        raise ImportFileError(f"unknown column(s) in the price map: {', '.join(extra)}")


def price_map_row(header: list[str], fields: list[str]) -> tuple[str, str, str]:
    if len(fields) != len(header):
        raise RowProblem(f"{len(fields)} fields where the header has {len(header)}")
    row = dict(zip(header, fields, strict=True))
    plan = _id(row["legacy_plan_id"], "legacy_plan_id")
    return plan, currency(row["currency"]), price_id(row["stripe_price_id"])


def price_id(value: str) -> str:
    value = value.strip()
    if not PRICE_RE.fullmatch(value):
        raise RowProblem(f"stripe_price_id {value[:40]!r} is not a Stripe price id (price_…)")
    return value


def currency(value: str) -> str:
    value = value.strip().lower()
    if not CURRENCY_RE.fullmatch(value):
        raise RowProblem(f"currency {value[:10]!r} is not a three-letter ISO code")
    return value


# -- legacy subscriptions -----------------------------------------------------------------------
@dataclass
class LegacyRow:
    legacy_id: str
    legacy_customer_id: str
    status: str
    next_billing_at: datetime | None
    items: list[dict]
    values: dict = field(default_factory=dict)  # the optional columns, parsed
    metadata: dict = field(default_factory=dict)


class SubscriptionColumns:
    """The header of a legacy subscriptions file, checked once; `row()` parses one record."""

    def __init__(self, header: list[str], zone: str | None, charge_hour: int):
        missing = [c for c in SUBSCRIPTION_REQUIRED if c not in header]
        if missing:
            raise ImportFileError(f"missing required column(s): {', '.join(missing)}")
        self.header = header
        self.item_numbers = sorted({int(m.group(1)) for c in header
                                    if (m := ITEM_COLUMN.fullmatch(c))})
        single = [c for c in ("legacy_plan_id", "price") if c in header]
        if not single and not self.item_numbers:
            raise ImportFileError("name the plan: a legacy_plan_id or price column, or "
                                  "items.0.legacy_plan_id / items.0.price")
        if single and self.item_numbers:
            raise ImportFileError("use either legacy_plan_id/price or items.N.* columns, not both")
        if self.item_numbers and self.item_numbers != list(range(len(self.item_numbers))):
            raise ImportFileError("items.N columns must be numbered 0, 1, 2, … without gaps")
        if len(self.item_numbers) > MAX_ITEMS:
            raise ImportFileError(f"at most {MAX_ITEMS} items per subscription (Stripe's limit)")
        known = set(SUBSCRIPTION_REQUIRED) | set(SUBSCRIPTION_SINGLE) | set(SUBSCRIPTION_OPTIONAL)
        unknown = [c for c in header if c not in known and not ITEM_COLUMN.fullmatch(c)
                   and not METADATA_COLUMN.fullmatch(c)]
        if unknown:
            raise ImportFileError(f"unknown column(s): {', '.join(unknown[:8])} (SPEC lists "
                                  "the columns; metadata.* passes anything through)")
        if len([c for c in header if c.startswith("metadata.")]) > MAX_METADATA:
            raise ImportFileError(f"at most {MAX_METADATA} metadata.* columns")
        try:
            self.zone = ZoneInfo(zone) if zone else None
        except (ZoneInfoNotFoundError, ValueError):
            raise ImportFileError(f"--timezone {zone!r} is not an IANA time zone "
                                  "(such as Europe/Paris)") from None
        self.zone_name = zone
        self.charge_hour = charge_hour

    def legacy_id(self, fields: list[str]) -> str | None:
        at = self.header.index("legacy_subscription_id")
        return fields[at][:80] if at < len(fields) else None

    def row(self, fields: list[str]) -> LegacyRow:
        if len(fields) != len(self.header):
            raise RowProblem(f"{len(fields)} fields where the header has {len(self.header)}")
        row = dict(zip(self.header, fields, strict=True))
        status = row["status"].strip().lower()
        if status not in LEGACY_STATUSES:
            raise RowProblem(f"status {status[:20]!r} is not one of {', '.join(LEGACY_STATUSES)}")
        ends = status in ("canceled", "non_renewing")
        next_at = self.moment(row["next_billing_at"], "next_billing_at", required=not ends)
        values = {name: self._optional(name, row[name])
                  for name in SUBSCRIPTION_OPTIONAL if name in row}
        if values.get("collection_method") == "send_invoice" and not values.get("days_until_due"):
            raise RowProblem("collection_method send_invoice needs days_until_due")
        if values.get("automatic_tax") and values.get("default_tax_rate"):
            raise RowProblem("automatic_tax and default_tax_rate cannot both be set (Stripe)")
        metadata = {m.group(1): plain_id(v.strip(), name)[:500]
                    for name, v in row.items() if (m := METADATA_COLUMN.fullmatch(name))
                    and v.strip()}
        return LegacyRow(_id(row["legacy_subscription_id"], "legacy_subscription_id"),
                         _id(row["legacy_customer_id"], "legacy_customer_id"), status,
                         next_at, self._items(row), values, metadata)

    def _items(self, row: dict) -> list[dict]:
        prefixes = [f"items.{n}." for n in self.item_numbers] or [""]
        items = []
        for prefix in prefixes:
            plan, price = row.get(prefix + "legacy_plan_id", "").strip(), \
                row.get(prefix + "price", "").strip()
            if not plan and not price:
                if prefix and prefix != "items.0.":
                    continue  # a shorter subscription leaves the later items empty
                raise RowProblem(f"{prefix or ''}legacy_plan_id or {prefix}price is empty")
            if plan and price:
                raise RowProblem(f"give {prefix}legacy_plan_id or {prefix}price, not both")
            item = {"legacy_plan_id": _id(plan, prefix + "legacy_plan_id")} if plan else \
                {"price": price_id(price)}
            item["quantity"] = _whole(row.get(prefix + "quantity", ""), prefix + "quantity",
                                      1, 1_000_000) or 1
            amount = _whole(row.get(prefix + "unit_amount", ""), prefix + "unit_amount", 0,
                            10 ** 12)
            if amount is not None:
                item["unit_amount"] = amount
            items.append(item)
        return items

    def _optional(self, name: str, value: str):
        value = value.strip()
        if not value:
            return None
        if name in ("current_period_start", "trial_end", "resume_at"):
            return self.moment(value, name)
        parsers = {
            "currency": currency,
            "interval": lambda v: _choice(v.lower(), name, INTERVALS),
            "interval_count": lambda v: _whole(v, name, 1, 365),
            "anchor_day_of_month": lambda v: _whole(v, name, 1, 31),
            "days_until_due": lambda v: _whole(v, name, 0, 365),
            "past_due_amount": lambda v: _whole(v, name, 0, 10 ** 12),
            "collection_method": lambda v: _choice(v.lower(), name, COLLECTION_METHODS),
            "automatic_tax": lambda v: _flag(v, name),
            "default_tax_rate": lambda v: _stripe_id(v, name, "txr_"),
            "coupon": lambda v: _id(v, name),
        }
        return parsers[name](value)

    def moment(self, value: str, name: str, *, required: bool = True) -> datetime | None:
        """A point in time: epoch seconds, or ISO 8601 with an offset; without one only when
        --timezone names the zone (a bare date then means `charge_hour` o'clock there)."""
        value = value.strip()
        if not value:
            if required:
                raise RowProblem(f"{name} is empty")
            return None
        if value.isdigit():
            return datetime.fromtimestamp(int(value), UTC)
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise RowProblem(f"{name} {value[:40]!r} is not ISO 8601 or epoch seconds") from None
        if len(value) == 10:  # a date alone
            if self.zone is None:
                raise RowProblem(f"{name} {value} is a bare date: give the time with its offset "
                                 "(2026-12-15T14:00:00-05:00) or import with --timezone")
            return _local(datetime.combine(moment.date(), time(self.charge_hour)), self.zone,
                          name)
        if moment.tzinfo is None:
            if self.zone is None:
                raise RowProblem(f"{name} {value} has no offset: add one (…-05:00, Z) or "
                                 "import with --timezone")
            return _local(moment, self.zone, name)
        return moment.astimezone(UTC)


def _local(naive: datetime, zone: ZoneInfo, name: str) -> datetime:
    """A wall-clock time in `zone`, refused when daylight saving skips or repeats it."""
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        raise RowProblem(f"{name} {naive:%Y-%m-%d %H:%M} happens twice or never in {zone.key} "
                         "(a daylight-saving change): give its offset")
    return first.astimezone(UTC)


def _id(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise RowProblem(f"{name} is empty")
    if len(value) > ID_LIMIT:
        raise RowProblem(f"{name} is longer than {ID_LIMIT} characters")
    return plain_id(value, name)


def _stripe_id(value: str, name: str, prefix: str) -> str:
    if not re.fullmatch(re.escape(prefix) + r"[A-Za-z0-9_]{1,200}", value):
        raise RowProblem(f"{name} {value[:40]!r} is not a Stripe id ({prefix}…)")
    return value


def _whole(value: str, name: str, low: int, high: int) -> int | None:
    value = (value or "").strip()
    if not value:
        return None
    if not value.isdigit() or not low <= int(value) <= high:
        raise RowProblem(f"{name} {value[:20]!r} is not a whole number from {low} to {high:,}")
    return int(value)


def _choice(value: str, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RowProblem(f"{name} {value[:30]!r} is not one of {', '.join(allowed)}")
    return value


def _flag(value: str, name: str) -> bool:
    value = value.lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise RowProblem(f"{name} {value[:10]!r} is not true or false")
