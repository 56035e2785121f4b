"""Finding customers for staff and tools, and everything we know about one of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import case, or_, select

from cardbridge.extensions import db
from cardbridge.models import (
    AuditEvent,
    Customer,
    CustomerEvent,
    InvoicePayment,
    LegacySubscription,
    Link,
    SavedPaymentMethod,
)
from cardbridge.models.emails import Email
from cardbridge.models.types import utcnow

MAX_QUERY_LENGTH = 320


def _storable(text: str) -> bool:
    """False for text no stored id can equal and a database would refuse to compare: NUL, or
    a lone surrogate (JSON can carry one)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_by_ref(ref: str) -> Customer | None:
    """One customer by legacy id or Stripe customer id (the SPEC's "customer" reference)."""
    ref = (ref or "").strip()
    if not ref or len(ref) > 255 or not _storable(ref):
        return None
    column = Customer.stripe_customer_id if ref.startswith("cus_") else Customer.legacy_id
    found = db.session.execute(select(Customer).where(column == ref)).scalar_one_or_none()
    if found is None and ref.startswith("cus_"):
        # A legacy system may itself have used cus_… ids.
        found = db.session.execute(
            select(Customer).where(Customer.legacy_id == ref)
        ).scalar_one_or_none()
    return found


def search(q: str, page: int = 1, per_page: int = 25) -> tuple[list[Customer], bool]:
    """Customers whose legacy id, email (any case) or Stripe id is `q`, or starts with it.

    Returns one page and whether there is another. An empty query lists the most recently
    changed customers. Exact matches sort first.
    """
    q = (q or "").replace("\x00", "").strip()[:MAX_QUERY_LENGTH]
    if not _storable(q):
        q = q.encode("utf-8", "replace").decode("utf-8")
    stmt = select(Customer)
    if q:
        lowered = q.lower()
        stmt = stmt.where(or_(
            Customer.legacy_id == q,
            Customer.stripe_customer_id == q,
            Customer.email == lowered,  # emails are stored lower-cased
            Customer.legacy_id.startswith(q, autoescape=True),
            Customer.email.startswith(lowered, autoescape=True),
        ))
        exact = or_(Customer.legacy_id == q, Customer.stripe_customer_id == q,
                    Customer.email == lowered)
        # CASE, not the bare OR: a NULL stripe id makes the OR NULL, which sorts first on PG.
        stmt = stmt.order_by(case((exact, 0), else_=1), Customer.legacy_id)
    else:
        stmt = stmt.order_by(Customer.updated_at.desc(), Customer.id.desc())
    page = max(page, 1)
    rows = db.session.execute(
        stmt.offset((page - 1) * per_page).limit(per_page + 1)
    ).scalars().all()
    return list(rows[:per_page]), len(rows) > per_page


@dataclass
class LinkRow:
    link: Link
    state: str


@dataclass
class CustomerFile:
    """What the customer page and the API show about one customer."""

    customer: Customer
    links: list[LinkRow] = field(default_factory=list)
    payment_methods: list[SavedPaymentMethod] = field(default_factory=list)
    events: list[CustomerEvent] = field(default_factory=list)
    audit: list[AuditEvent] = field(default_factory=list)
    emails: list | None = None  # None: this build keeps no email history
    subscriptions: list[LegacySubscription] = field(default_factory=list)
    invoices: list[InvoicePayment] = field(default_factory=list)

    @property
    def live_links(self) -> int:
        return sum(1 for row in self.links if row.state == "live")

    @property
    def same_card_labels(self) -> dict[int, str]:
        """Saved card id → "same card as the migrated one" / "… as one saved on <date>"."""
        return {pm.id: text for pm in self.payment_methods
                if (text := same_card_label(pm, self.payment_methods))}


def same_card_label(pm: SavedPaymentMethod, saved: list[SavedPaymentMethod]) -> str | None:
    """What the console says about a saved card that was a card already on file."""
    if pm.same_card_as == "migrated":
        return "same card as the migrated one"
    if pm.same_card_as == "saved":
        first = next((p for p in saved if p.stripe_payment_method_id == pm.same_card_of), None)
        return ("same card as one saved on " + first.created_at.strftime("%Y-%m-%d")
                if first else "same card as one saved before")
    return None


def email_history(customer: Customer, limit: int = 50) -> list:
    """Emails to this customer from the outbox, newest first."""
    return list(db.session.execute(
        select(Email).where(Email.customer_id == customer.id)
        .order_by(Email.created_at.desc()).limit(limit)
    ).scalars())


def customer_file(customer: Customer, *, event_limit: int = 100) -> CustomerFile:
    now = utcnow()
    links = db.session.execute(
        select(Link).where(Link.customer_id == customer.id)
        .order_by(Link.created_at.desc(), Link.id.desc())
    ).scalars().all()
    payment_methods = db.session.execute(
        select(SavedPaymentMethod).where(SavedPaymentMethod.customer_id == customer.id)
        .order_by(SavedPaymentMethod.created_at.desc())
    ).scalars().all()
    events = db.session.execute(
        select(CustomerEvent).where(CustomerEvent.customer_id == customer.id)
        .order_by(CustomerEvent.at.desc(), CustomerEvent.id.desc()).limit(event_limit)
    ).scalars().all()
    audit_rows = db.session.execute(
        select(AuditEvent).where(AuditEvent.target == customer.legacy_id)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(event_limit)
    ).scalars().all()
    return CustomerFile(
        customer=customer,
        links=[LinkRow(link, link.state(now)) for link in links],
        payment_methods=list(payment_methods),
        events=list(events),
        audit=list(audit_rows),
        emails=email_history(customer),
        subscriptions=list(db.session.execute(
            select(LegacySubscription).where(LegacySubscription.customer_id == customer.id)
            .order_by(LegacySubscription.id).limit(event_limit)).scalars()),
        invoices=list(db.session.execute(
            select(InvoicePayment).where(InvoicePayment.customer_id == customer.id)
            .order_by(InvoicePayment.at.desc(), InvoicePayment.id.desc())
            .limit(event_limit)).scalars()),
    )
