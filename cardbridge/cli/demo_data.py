"""Demo data for `make demo`: a handful of customers in every status, no Stripe calls needed."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, MigratedCard, SavedPaymentMethod
from cardbridge.models.types import utcnow
from cardbridge.staff.accounts import ensure_demo_admin

PEOPLE = [
    # legacy id, name, email, status, card on file (brand, last4, month, year); locale "en"
    # unless a sixth field says otherwise
    ("demo-1001", "Ada Lovelace", "ada@example.com", "needs_update", ("Visa", "4242", 1, 2025)),
    ("demo-1002", "Grace Hopper", "grace@example.com", "needs_update", None),
    ("demo-1003", "Alan Turing", "alan@example.com", "needs_update",
     ("Mastercard", "4444", 3, 2025)),
    ("demo-1004", "Katherine Johnson", "katherine@example.com", "ready", ("Visa", "1881", 8, 2030)),
    ("demo-1005", "Edsger Dijkstra", "edsger@example.com", "ready", ("Amex", "0005", 12, 2029)),
    ("demo-1006", "Barbara Liskov", "barbara@example.com", "updated", ("Visa", "4242", 11, 2031)),
    ("demo-1007", "Donald Knuth", "don@example.com", "needs_update", ("Discover", "1117", 6, 2024)),
    ("demo-1008", "Émilie du Châtelet", "emilie@example.com", "needs_update",
     ("Visa", "0019", 2, 2025), "fr"),
]


def seed(link_count: int = 2) -> list[str]:
    """Create the demo customers (once) and return the lines to print."""
    lines: list[str] = []
    now = utcnow()
    created = 0
    for legacy_id, name, email, status, card, *locale in PEOPLE:
        if db.session.execute(
            select(Customer.id).where(Customer.legacy_id == legacy_id)
        ).scalar_one_or_none():
            continue
        customer = Customer(legacy_id=legacy_id, name=name, email=email,
                            locale=locale[0] if locale else "en",
                            status="needs_update" if status != "ready" else "ready")
        if card:
            customer.card_brand, customer.card_last4 = card[0], card[1]
            customer.card_exp_month, customer.card_exp_year = card[2], card[3]
        db.session.add(customer)
        db.session.flush()
        if status == "ready":
            customer.stripe_customer_id = f"cus_demo{legacy_id[-4:]}"
            db.session.add(MigratedCard(customer_id=customer.id, old_card_id=f"old-{legacy_id}",
                                        stripe_id=f"card_demo{legacy_id[-4:]}", brand=card[0],
                                        last4=card[1], exp_month=card[2], exp_year=card[3]))
        if status == "updated":
            customer.status = "updated"
            db.session.add(SavedPaymentMethod(
                customer_id=customer.id, stripe_payment_method_id=f"pm_demo{legacy_id[-4:]}",
                setup_intent_id=f"seti_demo{legacy_id[-4:]}", brand="visa", last4="4242",
                exp_month=11, exp_year=2031, recorded_via="cli",
                created_at=now - timedelta(days=1)))
        created += 1
    lines.append(f"demo customers: {created} created, {len(PEOPLE) - created} already there")
    needing = db.session.execute(
        select(Customer).where(Customer.legacy_id.like("demo-%"),
                               Customer.status.in_(("needs_update", "invited")))
        .order_by(Customer.legacy_id)
    ).scalars().all()
    # One link in English and one in French (the pages speak the customer's language).
    french = [c for c in needing if c.locale == "fr"][:1]
    chosen = ([c for c in needing if c.locale != "fr"][:link_count - len(french)] + french
              if link_count > 1 else needing[:link_count])
    for customer in chosen:
        issued = issue_link(customer, created_by="demo")
        language = " (en français)" if customer.locale == "fr" else ""
        lines.append(f"link for {customer.name} <{customer.email}>{language}: {issued.url}")

    admin, password = ensure_demo_admin()
    lines.append(f"staff login: {admin.email} / {password}  "
                 f"(console: {current_app.config['PUBLIC_BASE_URL']}/support/login)")
    db.session.commit()
    return lines
