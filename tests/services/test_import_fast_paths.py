"""The importer's fast paths against its full checks: a value Stripe or a spreadsheet sends in the
usual shape skips the checks that only name a fault, and these tests hold each shortcut to the
answer (value or message) the full checks give, on inputs chosen to sit on their edges."""

from __future__ import annotations

import pytest

from cardbridge.imports import files as files
from cardbridge.imports import mapping_formats as fmt
from cardbridge.imports.files import RowProblem

TRICKY_CARDS = [
    {"id": "card_1", "fingerprint": "fp", "brand": "Visa", "last4": "4242", "exp_month": 12,
     "exp_year": 2030},
    {"id": "pm_1", "last4": "0341", "exp_month": 1, "exp_year": 1990},  # no fingerprint, brand
    {"id": "src_1", "fingerprint": "", "brand": "", "last4": "0341", "exp_month": 1,
     "exp_year": 2199},
    {"id": "card_1", "last4": "4242", "exp_month": 12, "exp_year": 1989},
    {"id": "card_1", "last4": "4242", "exp_month": 12, "exp_year": 2200},
    {"id": "card_1", "last4": "4242", "exp_month": 13, "exp_year": 2030},
    {"id": "card_1", "last4": "4242", "exp_month": 0, "exp_year": 2030},
    {"id": "card_1", "last4": "4242", "exp_month": True, "exp_year": 2030},
    {"id": "card_1", "last4": "4242", "exp_month": 12.0, "exp_year": 2030},
    {"id": "card_1", "last4": "4242", "exp_month": "12", "exp_year": "30"},
    {"id": "card_1", "last4": "4242", "exp_month": None, "exp_year": None},
    {"id": "card_1", "last4": "4242", "exp_month": 3, "exp_year": None},
    {"id": "card_1", "last4": "42", "exp_month": 3, "exp_year": 2030},
    {"id": "card_1", "last4": 42, "exp_month": 3, "exp_year": 2030},
    {"id": "card_1", "last4": "٤٢٤٢", "exp_month": 3, "exp_year": 2030},  # Arabic-Indic digits
    {"id": "card_1", "last4": " 4242", "exp_month": 3, "exp_year": 2030},
    {"id": "card_1", "last4": "42424", "exp_month": 3, "exp_year": 2030},
    {"id": " card_1 ", "last4": "4242", "exp_month": 3, "exp_year": 2030},
    {"id": "ba_1", "last4": "4242", "exp_month": 3, "exp_year": 2030},
    {"id": "card_" + "x" * 300, "last4": "4242", "exp_month": 3, "exp_year": 2030},
    {"id": None, "last4": "4242", "exp_month": 3, "exp_year": 2030},
    {"id": "card_1", "fingerprint": "f" * 65, "last4": "4242", "exp_month": 3, "exp_year": 2030},
    {"id": "card_1", "brand": "b" * 33, "last4": "4242", "exp_month": 3, "exp_year": 2030},
    {"id": "card_1", "brand": 7, "last4": "4242", "exp_month": 3, "exp_year": 2030},
]
OLD_IDS = ["src_old", " src_old", "src_old\t", "x" * 255, "x" * 256, ""]


def full_checks(old_id, card: dict):
    """make_card with its shortcut turned off: the card tuple, or the fault it names."""
    original, fmt._plain_card = fmt._plain_card, lambda *args: False
    try:
        return fmt.make_card(old_id, card.get("id"), card.get("fingerprint"), card.get("brand"),
                             card.get("last4"), card.get("exp_month"), card.get("exp_year"))
    except RowProblem as exc:
        return str(exc)
    finally:
        fmt._plain_card = original


@pytest.mark.parametrize("old_id", OLD_IDS)
@pytest.mark.parametrize("card", TRICKY_CARDS, ids=range(len(TRICKY_CARDS)))
def test_a_json_card_reads_as_the_full_checks_read_it(card, old_id):
    reported = []
    entry = fmt._json_entry("L1", {"id": "cus_1", "cards": {old_id: card}},
                            lambda *problem: reported.append(problem))
    expected = full_checks(old_id, card)
    if isinstance(expected, str):
        assert entry.cards == []
        assert reported == [(None, "L1", "error", f'card "{old_id[:40]}": {expected}')]
    else:
        assert reported == []
        assert entry.cards == [expected]
        assert [type(v) for v in entry.cards[0]] == [type(v) for v in expected]


@pytest.mark.parametrize("old_id", OLD_IDS)
@pytest.mark.parametrize("card", TRICKY_CARDS, ids=range(len(TRICKY_CARDS)))
def test_make_card_shortcut_agrees_with_its_full_checks(card, old_id):
    try:
        got = fmt.make_card(old_id, card.get("id"), card.get("fingerprint"), card.get("brand"),
                            card.get("last4"), card.get("exp_month"), card.get("exp_year"))
    except RowProblem as exc:
        got = str(exc)
    assert got == full_checks(old_id, card)


HEADER = ["legacy_customer_id", "email", "name", "locale", "stripe_customer_id", "card_brand",
          "card_last4", "card_exp_month", "card_exp_year"]
TRICKY_FIELDS = {
    "legacy_customer_id": ["L1", " L1 ", "", "   ", "x" * 255, "x" * 256, "L 1"],
    "email": ["a@example.com", " A@Example.COM ", "", "a@b", "a@-b.com", "a@b-.com", "a b@c.com",
              "a@b.c", "x" * 64 + "@example.com", "x" * 65 + "@example.com",
              "a@" + "b" * 320 + ".com", "a@@b.com", "é@exämple.com", "a@EXAMPLE.com"],
    "name": ["Ann Lee", "  Ann   Lee ", "Ann\nLee", "", "n" * 300],
    "locale": ["en", "fr-CA", "fr_CA", "e", "english-language-tag", ""],
    "stripe_customer_id": ["cus_1", " cus_1 ", "cus_", "acct_1", "cus_" + "a" * 252, ""],
    "card_brand": ["Visa", " visa ", "b" * 33, ""],
    "card_last4": ["4242", "341", "0341", "٤٢٤٢", "42424", "42a4", ""],
    "card_exp_month": ["12", "09", "9", "0", "13", "", "１２", "12.0"],
    "card_exp_year": ["2030", "30", "1989", "1990", "2199", "2200", "", "99"],
}
BASE = {"legacy_customer_id": "L1", "email": "a@example.com", "name": "Ann",
        "locale": "en", "stripe_customer_id": "cus_1", "card_brand": "Visa",
        "card_last4": "4242", "card_exp_month": "12", "card_exp_year": "2030"}


def reference_row(fields: dict) -> list | str:
    """What SPEC asks of a roster row, with only the full checks; the fault's text if any."""
    try:
        legacy = files.text(fields["legacy_customer_id"], "legacy_customer_id", files.MAX_ID,
                            required=True)
        email = fields["email"].strip().lower()
        if len(email) > 320 or not files.EMAIL_RE.fullmatch(email):
            raise RowProblem("email is empty" if not email else "email is not a valid address")
        name = fields["name"].strip()
        locale = fields["locale"].strip()
        stripe = fields["stripe_customer_id"].strip()
        brand = fields["card_brand"].strip()
        l4 = fields["card_last4"].strip()
        values = [legacy, email, " ".join(name.split())[:255] if name else None,
                  files._locale(locale) if locale else None,
                  files.customer_id(stripe, "stripe_customer_id") if stripe else None,
                  files._brand(brand) if brand else None,
                  files.last4(l4, "card_last4") if l4 else None]
        month, year = files.expiry(fields["card_exp_month"].strip() or None,
                                   fields["card_exp_year"].strip() or None, "card_exp")
        return [*values, month, year]
    except RowProblem as exc:
        return str(exc)


@pytest.mark.parametrize(("column", "value"),
                         [(c, v) for c, values in TRICKY_FIELDS.items() for v in values])
def test_a_roster_row_reads_as_the_full_checks_read_it(column, value):
    rows = files.RosterRows(HEADER)
    assert rows.columns == ["legacy_id", "email", "name", "locale", "stripe_customer_id",
                            "card_brand", "card_last4", "card_exp_month", "card_exp_year"]
    fields = dict(BASE, **{column: value})
    expected = reference_row(fields)
    for _ in range(2):  # the second time, from the memo of values already checked
        try:
            got = rows.values([fields[name] for name in HEADER])
        except RowProblem as exc:
            got = str(exc)
        assert got == expected
        if not isinstance(got, str):
            assert [type(v) for v in got] == [type(v) for v in expected]
