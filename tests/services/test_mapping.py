"""imports/service.py, the mapping side: every Stripe format, statuses at the cutover, conflicts,
unknown customers, idempotency, and the report and export built on the result."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cardbridge.customers.reporting import (
    export_csv,
    needs_update_reason,
    refresh_statuses,
    status_report,
)
from cardbridge.extensions import db
from cardbridge.imports.service import ImportFileError, import_mapping, import_roster
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, MigratedCard, SavedPaymentMethod
from cardbridge.models.types import utcnow

DATA = Path(__file__).resolve().parent.parent / "data" / "imports"
CUTOVER = date(2026, 12, 31)


@pytest.fixture
def app(make_app):
    return make_app(CUTOVER_DATE=CUTOVER)


@pytest.fixture
def roster(ctx):
    import_roster(DATA / "roster.csv")
    db.session.commit()


def customer(legacy_id: str) -> Customer:
    return db.session.execute(select(Customer).where(Customer.legacy_id == legacy_id)).scalar_one()


def statuses() -> dict[str, str]:
    return dict(db.session.execute(select(Customer.legacy_id, Customer.status)).all())


def cards(legacy_id: str) -> dict[str, MigratedCard]:
    return {c.old_card_id: c for c in customer(legacy_id).migrated_cards}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


EXPECTED = {"1893": "ready", "3520": "ready", "4100": "needs_update", "4200": "needs_update"}


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("mapping.json", "stripe_json"), ("mapping_card.csv", "card_csv"),
     ("mapping_pm.csv", "pm_csv")],
)
def test_each_stripe_format_links_customers_and_settles_statuses(roster, name, fmt):
    result = import_mapping(DATA / name)
    db.session.commit()
    assert result.format == fmt
    assert statuses() == EXPECTED
    assert customer("1893").stripe_customer_id == "cus_abc123def456"
    assert customer("1893").mapped_at is not None and customer("4200").mapped_at is None
    ada = cards("1893")
    assert set(ada) == {"2600", "3520c"}
    assert (ada["2600"].exp_month, ada["2600"].exp_year, ada["2600"].last4) == (1, 2020, "4242")
    assert ada["3520c"].fingerprint == "nZnMWbJBurX3VHIN" and ada["3520c"].brand == "Mastercard"
    assert cards("3520")["3521"].stripe_id == "pm_4444444444"


def test_the_json_counts_per_bucket(roster):
    result = import_mapping(DATA / "mapping.json")
    c = result.counts
    assert (c["linked"], c["already_linked"], c["cards_new"]) == (2, 1, 3)
    assert (c["status_ready"], c["status_needs_update"]) == (2, 1)
    assert result.error_count == 1 and c["problems_unknown"] == 1


def test_an_entry_for_a_customer_not_in_the_roster_is_reported_not_applied(roster):
    result = import_mapping(DATA / "mapping.json")
    (problem,) = result.errors
    assert (problem.customer, problem.kind, problem.line) == ("9999", "unknown", None)
    assert db.session.execute(
        select(func.count()).select_from(Customer).where(Customer.legacy_id == "9999")
    ).scalar() == 0
    assert db.session.execute(
        select(func.count()).select_from(MigratedCard).where(MigratedCard.stripe_id == "card_9")
    ).scalar() == 0


def test_csv_unknown_customers_are_reported_with_their_line(roster):
    result = import_mapping(DATA / "mapping_card.csv")
    assert [(p.line, p.customer, p.kind) for p in result.errors] == [(6, "9999", "unknown")]


def test_the_format_is_told_by_content_not_by_name(roster, tmp_path):
    path = tmp_path / "stripe-export.txt"
    path.write_bytes((DATA / "mapping_pm.csv").read_bytes())
    assert import_mapping(path).format == "pm_csv"


def test_json_with_a_bom_and_crlf_is_read(roster, tmp_path):
    text = (DATA / "mapping.json").read_text().replace("\n", "\r\n")
    path = tmp_path / "m.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert import_mapping(path).counts["cards_new"] == 3


def test_stripe_to_stripe_copy_csv_maps_cards_without_expiry(ctx, tmp_path):
    import_roster(write(tmp_path, "r.csv", "legacy_customer_id,email\ncus_old1893,a@example.com\n"
                        "cus_old3520,g@example.com\ncus_old4100,t@example.com\n"))
    result = import_mapping(DATA / "mapping_copy.csv")
    db.session.commit()
    assert result.format == "copy_csv"
    assert customer("cus_old1893").stripe_customer_id == "cus_old1893"  # ids are preserved
    assert {c.stripe_id for c in customer("cus_old1893").migrated_cards} == {
        "card_new2600", "card_new3520"}
    assert cards("cus_old3520")["src_old3521"].stripe_id == "src_new3521"
    # No expiry in a copy: nothing says the card expires before cutover, so it counts.
    assert statuses() == {"cus_old1893": "ready", "cus_old3520": "ready",
                          "cus_old4100": "needs_update"}
    (problem,) = result.errors
    assert problem.line == 5 and "ba_… is not a card" in problem.problem
    assert status_report()["ready_on_cards_of_unknown_expiry"] == 2


def test_card_type_comes_from_the_id_prefix_and_bad_entries_are_named(roster):
    result = import_mapping(DATA / "mapping_bad_entries.json")
    db.session.commit()
    problems = {(p.customer, p.problem) for p in result.errors}
    assert ("1893", 'card "2600": ba_… is not a card (card_, pm_ or src_)') in problems
    assert ("3520", '"id" is not a Stripe customer id (cus_…)') in problems
    assert ("4100", "value is not an object") in problems
    assert ("4200", 'card "1": exp_month 13 is out of range') in problems
    ok = cards("1893")["2601"]
    assert (ok.exp_month, ok.brand) == (9, "VISA")  # "09" is the number 9
    assert statuses()["1893"] == "ready"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("mapping_bad.json",
         "bad JSON at line 3, column 17 (byte 69): object key and value must be separated"),
        ("mapping_truncated.json", "bad JSON at line 3, column 25 (byte 77): premature EOF"),
        ("mapping_list.json", "must be an object keyed by old customer id"),
        ("mapping_ach.csv", "this is Stripe's ACH bank-account mapping"),
        ("mapping_unknown_header.csv", "header matches no Stripe mapping format"),
        ("roster_empty.csv", "the file is empty"),
    ],
)
def test_file_level_errors_say_where_and_change_nothing(roster, name, message):
    with pytest.raises(ImportFileError) as err:
        import_mapping(DATA / name)
    assert message in str(err.value) and "\n" not in str(err.value)
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(MigratedCard)).scalar() == 0
    assert set(statuses().values()) == {"needs_update"}


def test_bad_json_late_in_the_file_rolls_back_what_came_before(roster, tmp_path):
    body = json.dumps({"1893": {"id": "cus_abc123def456", "cards": {}}})[:-1]
    with pytest.raises(ImportFileError, match="bad JSON at line 1"):
        import_mapping(write(tmp_path, "m.json", body + ', "3520": nope}'))
    db.session.rollback()
    assert customer("1893").stripe_customer_id is None


def test_a_legacy_id_mapped_to_another_customer_than_before_is_reported_not_applied(
        roster, tmp_path):
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    other = {"1893": {"id": "cus_somebodyelse", "cards": {
        "7": {"id": "card_7", "last4": "7777", "exp_month": 1, "exp_year": 2030}}}}
    result = import_mapping(write(tmp_path, "m2.json", json.dumps(other)))
    db.session.commit()
    (problem,) = result.errors
    assert problem.kind == "conflict"
    assert "already linked to cus_abc123def456; the file says cus_somebodyelse" in problem.problem
    assert customer("1893").stripe_customer_id == "cus_abc123def456"
    assert "7" not in cards("1893")


def test_a_stripe_customer_already_held_by_another_legacy_id_is_a_conflict(roster, tmp_path):
    text = json.dumps({"4200": {"id": "cus_existing4100", "cards": {}}})
    result = import_mapping(write(tmp_path, "m.json", text))
    assert result.errors[0].kind == "conflict"
    assert "cus_existing4100 already belongs to customer 4100" in result.errors[0].problem
    assert customer("4200").stripe_customer_id is None


def test_the_same_mapping_twice_says_so_and_changes_nothing(roster):
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    before = db.session.execute(select(func.count()).select_from(MigratedCard)).scalar()
    again = import_mapping(DATA / "mapping.json")
    assert again.skipped
    assert db.session.execute(select(func.count()).select_from(MigratedCard)).scalar() == before


def test_a_changed_mapping_updates_cards_and_duplicates_none(roster, tmp_path):
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    text = (DATA / "mapping.json").read_text().replace('"exp_year": 2031', '"exp_year": 2033')
    text = text.replace('"brand": "Visa"', '"brand": "VISA"')  # brands compare without case
    result = import_mapping(write(tmp_path, "m2.json", text))
    db.session.commit()
    c = result.counts
    assert (c.get("cards_new", 0), c["cards_changed"], c["cards_unchanged"]) == (0, 1, 2)
    assert cards("1893")["3520c"].exp_year == 2033
    assert db.session.execute(select(func.count()).select_from(MigratedCard)).scalar() == 3


def test_a_mapping_imported_before_the_roster_applies_when_run_again_after_it(ctx):
    early = import_mapping(DATA / "mapping.json")
    assert early.counts.get("linked", 0) == 0 and early.error_count == 4
    db.session.commit()
    import_roster(DATA / "roster.csv")
    db.session.commit()
    again = import_mapping(DATA / "mapping.json")
    assert not again.skipped and again.counts["linked"] == 2
    assert statuses() == EXPECTED


@pytest.mark.parametrize(
    ("cutover", "status", "reason"),
    [(date(2026, 12, 1), "ready", None), (date(2026, 12, 31), "ready", None),
     (date(2027, 1, 1), "needs_update", "cards_expired")],
)
def test_a_card_is_usable_through_the_last_day_of_its_expiry_month(
        make_app, tmp_path, cutover, status, reason):
    app = make_app(CUTOVER_DATE=cutover)
    with app.app_context():
        import_roster(DATA / "roster.csv")
        import_mapping(DATA / "mapping.json")  # 3520's only card expires 12/2026
        db.session.commit()
        grace = customer("3520")
        assert grace.status == status and needs_update_reason(grace) == reason


def test_without_a_cutover_date_today_decides(make_app):
    app = make_app(CUTOVER_DATE=None)
    with app.app_context():
        import_roster(DATA / "roster.csv")
        import_mapping(DATA / "mapping.json")
        db.session.commit()
        expected = "ready" if utcnow().date() <= date(2026, 12, 31) else "needs_update"
        assert customer("3520").status == expected


def test_needs_update_reasons_name_each_case(roster):
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    assert needs_update_reason(customer("4100")) == "no_cards"
    assert needs_update_reason(customer("4200")) == "not_in_mapping"
    assert needs_update_reason(customer("1893")) is None
    report = status_report()
    assert report["needs_update_reasons"] == {"not_in_mapping": 1, "no_cards": 1,
                                              "cards_expired": 0}


def test_an_invited_customer_without_a_usable_card_stays_invited(roster, tmp_path):
    issue_link(customer("4100"), created_by="test")
    db.session.commit()
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    assert customer("4100").status == "invited"


def test_an_invited_customer_whose_mapping_shows_a_usable_card_becomes_ready(roster):
    issued = issue_link(customer("1893"), created_by="test")
    db.session.commit()
    assert customer("1893").status == "invited"
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    assert customer("1893").status == "ready"
    assert issued.link.state(utcnow()) == "live"  # the email they got still works


def test_an_updated_customer_is_never_moved_by_an_import(roster, tmp_path):
    kj = customer("4200")
    kj.status = "updated"
    db.session.commit()
    text = json.dumps({"4200": {"id": "cus_kj0000000001", "cards": {
        "1": {"id": "card_old", "last4": "1111", "exp_month": 1, "exp_year": 2019}}}})
    import_mapping(write(tmp_path, "m.json", text))
    import_roster(DATA / "roster.csv")
    db.session.commit()
    assert customer("4200").status == "updated"
    assert customer("4200").stripe_customer_id == "cus_kj0000000001"


def test_a_later_file_keeps_cards_of_an_earlier_one_in_the_status(roster, tmp_path):
    import_mapping(DATA / "mapping.json")
    db.session.commit()
    extra = json.dumps({"1893": {"id": "cus_abc123def456", "cards": {
        "9000": {"id": "card_9000", "last4": "9000", "exp_month": 1, "exp_year": 2019}}}})
    import_mapping(write(tmp_path, "m2.json", extra))
    db.session.commit()
    assert customer("1893").status == "ready"  # 3520c from the first file still counts
    assert set(cards("1893")) == {"2600", "3520c", "9000"}


def test_the_report_counts_every_customer_once_and_sweeps_expired_links(roster):
    import_mapping(DATA / "mapping.json")
    issued = issue_link(customer("4200"), created_by="test")
    issued.link.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    report = status_report()
    db.session.commit()
    assert report["total"] == 4 == sum(report["by_status"].values())
    assert report["by_status"] == {"ready": 2, "needs_update": 2, "invited": 0, "updated": 0}
    assert customer("4200").status == "needs_update"
    assert report["cutover_date"] == "2026-12-31"
    assert report["last_imports"]["mapping"]["file_name"] == "mapping.json"


def test_refresh_moves_ready_customers_when_the_cutover_passes_their_cards(roster, app):
    import_mapping(DATA / "mapping.json")
    issue_link(customer("3520"), created_by="test")  # ready customers can hold a link too
    db.session.commit()
    app.config["CUTOVER_DATE"] = date(2027, 1, 1)
    moved = refresh_statuses()
    db.session.commit()
    assert moved["ready_to_invited"] == 1 and customer("3520").status == "invited"
    app.config["CUTOVER_DATE"] = date(2026, 6, 1)
    moved = refresh_statuses()
    assert moved["now_ready"] == 1 and customer("3520").status == "ready"


def test_export_writes_the_spec_columns_and_the_payment_method_to_charge(roster):
    import_mapping(DATA / "mapping.json")
    kj = customer("4200")
    kj.status, kj.stripe_customer_id = "updated", "cus_kj0000000001"
    db.session.flush()
    for n, (pm, age) in enumerate((("pm_older", 2), ("pm_newest", 1))):
        db.session.add(SavedPaymentMethod(
            customer_id=kj.id, stripe_payment_method_id=pm, setup_intent_id=f"seti_{n}",
            recorded_via="browser", created_at=utcnow() - timedelta(days=age)))
    db.session.commit()
    out = io.StringIO()
    assert export_csv(out) == 4
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(rows[0]) == ["legacy_customer_id", "stripe_customer_id", "status",
                             "payment_method_id", "updated_at"]
    by_id = {r["legacy_customer_id"]: r for r in rows}
    assert by_id["1893"]["payment_method_id"] == "card_3333333333"  # the usable one
    assert by_id["3520"]["payment_method_id"] == "pm_4444444444"
    assert by_id["4100"]["payment_method_id"] == "" and by_id["4100"]["status"] == "needs_update"
    assert by_id["4200"]["payment_method_id"] == "pm_newest"
    assert by_id["1893"]["updated_at"].endswith("Z")


def test_csv_rows_of_one_customer_may_be_apart_and_a_repeated_card_is_one_card(roster, tmp_path):
    header = (DATA / "mapping_card.csv").read_text().splitlines()[0]
    rows = [
        "1893,cus_abc123def456,2600,card_2222222222,fp,4242,01,2020,Visa",
        "3520,cus_grace0000001,3521,pm_4444444444,fp3521,1881,12,2026,visa",
        "1893,cus_abc123def456,3520c,card_3333333333,fp2,0341,06,2031,Mastercard",
        "1893,cus_abc123def456,3520c,card_3333333333,fp2,0341,06,2031,Mastercard",
    ]
    result = import_mapping(write(tmp_path, "m.csv", "\n".join([header, *rows]) + "\n"))
    db.session.commit()
    assert result.error_count == 0
    assert set(cards("1893")) == {"2600", "3520c"} and statuses()["1893"] == "ready"
    assert db.session.execute(select(func.count()).select_from(MigratedCard)).scalar() == 3


def test_one_customer_mapped_to_two_stripe_customers_in_one_file_keeps_the_first(
        roster, tmp_path):
    header = (DATA / "mapping_card.csv").read_text().splitlines()[0]
    rows = ["4200,cus_first0000001,1,card_1,fp,1111,01,2030,Visa",
            "4200,cus_second000002,2,card_2,fp,2222,01,2030,Visa"]
    result = import_mapping(write(tmp_path, "m.csv", "\n".join([header, *rows]) + "\n"))
    db.session.commit()
    assert [(p.line, p.kind) for p in result.errors] == [(3, "conflict")]
    assert customer("4200").stripe_customer_id == "cus_first0000001"
    assert set(cards("4200")) == {"1"}


def test_a_small_file_nested_200000_deep_fails_at_once_with_little_memory(roster, tmp_path):
    import tracemalloc

    path = write(tmp_path, "deep.json", '{"1893": ' + "[" * 200_000 + "]" * 200_000 + "}")
    tracemalloc.start()
    try:
        with pytest.raises(ImportFileError, match="nested deeper than 16 levels"):
            import_mapping(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024
    db.session.rollback()
    assert customer("1893").stripe_customer_id is None


def test_brackets_inside_strings_are_text_not_nesting(roster, tmp_path):
    odd = "[{" * 40 + '\\"' + "}" * 3
    body = json.dumps({"1893": {"id": "cus_abc123def456", "cards": {
        odd: {"id": "card_1A", "fingerprint": "fp" + "{" * 30, "brand": "visa", "last4": "4242",
              "exp_month": 12, "exp_year": 2030}}}})
    result = import_mapping(write(tmp_path, "odd.json", body))
    assert result.counts  # imported, not refused
    assert customer("1893").stripe_customer_id == "cus_abc123def456"


def test_one_entry_longer_than_any_mapping_fails_with_a_clear_message(roster, tmp_path):
    huge = "x" * (5 * 1024 * 1024)
    path = write(tmp_path, "huge.json",
                 json.dumps({"1893": {"id": "cus_abc123def456", "name": huge}}))
    with pytest.raises(ImportFileError, match="longer than 4 MB"):
        import_mapping(path)


def test_strings_holding_brackets_across_many_chunks_are_still_text(roster, tmp_path):
    # Enough entries that strings full of brackets straddle the reader's chunk boundaries,
    # with and without escaped quotes (the reader's two ways of skipping strings).
    card = {"id": "card_1A", "fingerprint": "fp", "brand": "visa", "last4": "4242",
            "exp_month": 12, "exp_year": 2030}
    body = {"1893": {"id": "cus_abc123def456",
                     "cards": {f"[[[[{{{{{n}" + ('\\"' if n % 7 == 0 else ""): card
                               for n in range(6000)}}}
    result = import_mapping(write(tmp_path, "many.json", json.dumps(body)))
    assert result.counts
    assert len(cards("1893")) == 6000
