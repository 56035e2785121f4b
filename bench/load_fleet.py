"""The database side of bench/load.py, run in its own process (the load process is Locust's,
monkey-patched by gevent): seed the fleet's database before a run, check it after.

    python -m bench.load_fleet seed OUT.json --customers N --wave M
    python -m bench.load_fleet verify FINISHED.json

`seed` adds N customers who need a card, each with a fresh link (their URLs go to OUT.json),
M more who need a card for the email wave, and one admin for the console searches.
`verify` checks every customer the load says finished: `updated`, exactly one card saved
through cardbridge, and that card the default of their customer on the fake Stripe.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import func, insert, select

STAFF_EMAIL, STAFF_PASSWORD = "load-admin@example.com", "load-admin-password-1234"


def _app():
    from app import create_app

    return create_app()


def seed(out: str, customers: int, wave: int) -> None:
    from cardbridge.extensions import db
    from cardbridge.links.service import issue_links, token_for, url_for_token
    from cardbridge.models import Customer, Link
    from cardbridge.staff import accounts

    app = _app()
    with app.app_context():
        rows = [{"legacy_id": f"LOAD-{n:06d}", "email": f"load{n}@example.com",
                 "name": f"Load Customer {n}", "status": "needs_update", "locale": "en",
                 "card_brand": "visa", "card_last4": "0019", "card_exp_month": 4,
                 "card_exp_year": 2025} for n in range(customers + wave)]
        db.session.execute(insert(Customer), rows)
        ids = dict(db.session.execute(select(Customer.legacy_id, Customer.id)).all())
        chosen = {ids[f"LOAD-{n:06d}"]: "load" for n in range(customers)}
        urls = []
        batch = list(chosen.items())
        for start in range(0, len(batch), 1000):
            public = issue_links(dict(batch[start:start + 1000]), channel="generated")
            legacy = {v: k for k, v in ids.items()}
            links = db.session.execute(select(Link).where(Link.public_id.in_(public.values())))
            urls += [(url_for_token(token_for(link)), legacy[link.customer_id])
                     for link in links.scalars()]
        accounts.create_staff(STAFF_EMAIL, "admin", STAFF_PASSWORD)
        db.session.commit()
    with open(out, "w") as fh:
        json.dump({"urls": urls, "staff": [STAFF_EMAIL, STAFF_PASSWORD]}, fh)
    print(f"seeded {customers} customers with links, {wave} for the email wave")


def verify(finished_file: str) -> int:
    """Prints one JSON object; exit status 1 when any finished customer is not exact."""
    from cardbridge.extensions import db
    from cardbridge.models import Customer, Email, SavedPaymentMethod

    with open(finished_file) as fh:
        finished = json.load(fh)
    app = _app()
    problems: list[str] = []
    with app.app_context():
        base, key = app.config["STRIPE_API_BASE"], app.config["STRIPE_SECRET_KEY"]
        rows = db.session.execute(
            select(Customer.legacy_id, Customer.status, Customer.stripe_customer_id,
                   func.count(SavedPaymentMethod.id), func.min(
                       SavedPaymentMethod.stripe_payment_method_id))
            .outerjoin(SavedPaymentMethod, SavedPaymentMethod.customer_id == Customer.id)
            .where(Customer.legacy_id.in_(finished))
            .group_by(Customer.id)).all()
        emails = dict(db.session.execute(select(Email.status, func.count())
                                         .group_by(Email.status)).all())

    def check(row) -> str | None:
        legacy, status, cus, saved, pm = row
        if status != "updated" or saved != 1:
            return f"{legacy}: status {status}, {saved} saved cards"
        got = requests.get(f"{base}/v1/customers/{cus}", timeout=30,
                           headers={"Authorization": f"Bearer {key}"}).json()
        default = (got.get("invoice_settings") or {}).get("default_payment_method")
        return None if default == pm else f"{legacy}: default on Stripe {default}, saved {pm}"

    with ThreadPoolExecutor(32) as pool:
        problems = [p for p in pool.map(check, rows) if p]
    missing = len(finished) - len(rows)
    if missing:
        problems.append(f"{missing} finished customers not found")
    print(json.dumps({"finished": len(finished), "exact": len(rows) - len(problems),
                      "problems": problems[:20], "emails": emails}))
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("FLASK_APP", "app:create_app")
    if sys.argv[1] == "seed":
        args = dict(zip(sys.argv[3::2], sys.argv[4::2], strict=False))
        seed(sys.argv[2], int(args.get("--customers", 200)), int(args.get("--wave", 0)))
    else:
        sys.exit(verify(sys.argv[2]))
