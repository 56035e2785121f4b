"""No CSV cardbridge writes can carry a spreadsheet formula, and ids with control characters are
refused at import."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from cardbridge.csv_safe import cell
from cardbridge.customers.reporting import export_csv
from cardbridge.extensions import db
from cardbridge.imports.service import import_mapping, import_roster
from cardbridge.models import Customer

FORMULA = '=HYPERLINK("http://evil.example","click")'


@pytest.fixture
def ctx(make_app):
    app = make_app()
    with app.app_context():
        yield app


@pytest.mark.parametrize("value", [FORMULA, "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_text_that_a_spreadsheet_would_run_is_written_as_text(value):
    assert cell(value) == "'" + value


def test_plain_text_and_numbers_are_untouched():
    assert [cell(v) for v in ("L-1", "cus_1", "", None, 42, -3)] == ["L-1", "cus_1", "", None,
                                                                       42, -3]


def _roster(tmp_path: Path, rows: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text("legacy_customer_id,email\n" + rows, encoding="utf-8")
    return path


def test_the_export_neutralises_a_formula_legacy_id(ctx, tmp_path):
    import_roster(_roster(tmp_path, f'"{FORMULA.replace(chr(34), chr(34) * 2)}",a@example.com\n'))
    db.session.commit()
    out = io.StringIO()
    export_csv(out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[1][0] == "'" + FORMULA


def test_the_import_report_neutralises_formula_cells(ctx, tmp_path):
    result = import_roster(_roster(tmp_path, f'"{FORMULA.replace(chr(34), chr(34) * 2)}",nope\n'),
                           report_dir=tmp_path / "reports")
    assert result.report_path
    with open(result.report_path, encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[1][1] == "'" + FORMULA
    assert all(not c.startswith(("=", "+", "-", "@")) for row in rows for c in row)


@pytest.mark.parametrize("legacy", ["L\t1", "L\r1", "L\x00", "L\x7f1", "L\x851"])
def test_roster_ids_with_control_characters_are_refused(ctx, tmp_path, legacy):
    path = tmp_path / "roster.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("legacy_customer_id", "email"), (legacy, "a@example.com"),
                                  ("L-ok", "b@example.com")])
    result = import_roster(path)
    assert any("control character" in e.problem for e in result.errors)
    assert list(db.session.execute(select(Customer.legacy_id)).scalars()) == ["L-ok"]


def test_mapping_ids_with_control_characters_are_refused(ctx, tmp_path):
    import_roster(_roster(tmp_path, "L-1,a@example.com\n"))
    card = {"id": "card_1A", "fingerprint": "fp", "brand": "visa", "last4": "4242",
            "exp_month": 12, "exp_year": 2030}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"L-1": {"id": "cus_abc123def456",
                                        "cards": {"old\ncard": card, "old-ok": card}},
                                "L\t2": {"id": "cus_abc123def457", "cards": {}}}))
    result = import_mapping(path)
    problems = [e.problem for e in result.errors]
    assert sum("control character" in p for p in problems) == 2
