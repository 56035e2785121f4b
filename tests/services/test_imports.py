"""imports/service.py, the roster side: formats, normalising, row errors, idempotency, safety."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from cardbridge.extensions import db
from cardbridge.imports.service import ImportFileError, failed_run, import_roster
from cardbridge.models import Customer, ImportRun

DATA = Path(__file__).resolve().parent.parent / "data" / "imports"


@pytest.fixture
def app(make_app):
    return make_app(CUTOVER_DATE=date(2026, 12, 31))


def customers() -> dict[str, Customer]:
    return {c.legacy_id: c for c in db.session.execute(select(Customer)).scalars()}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_roster_loads_every_spec_column_and_ignores_unknown_ones(ctx):
    result = import_roster(DATA / "roster.csv")
    db.session.commit()
    assert result.counts["new"] == 4 and result.error_count == 0
    ada, grace, alan, kj = (customers()[k] for k in ("1893", "3520", "4100", "4200"))
    assert (ada.email, ada.name, ada.locale, ada.status) == (
        "ada@example.com", "Ada Lovelace", "en", "needs_update")
    assert (ada.card_brand, ada.card_last4, ada.card_exp_month, ada.card_exp_year) == (
        "Visa", "4242", 1, 2020)
    assert grace.card_last4 == "0341" and grace.card_exp_month == 6
    assert alan.stripe_customer_id == "cus_existing4100" and alan.locale == "en-GB"
    assert kj.locale is None and kj.card_last4 is None and kj.mapped_at is None


def test_bom_crlf_and_quoted_commas_and_newlines_are_read(ctx):
    import_roster(DATA / "roster_bom_crlf.csv")
    found = customers()
    assert set(found) == {"1893", "3520", "4100"}  # the BOM did not stick to the first header
    assert found["1893"].email == "ada@example.com"  # whitespace and case normalised
    assert found["1893"].name == "Lovelace, Ada"
    assert found["3520"].name == "Grace Brewster Hopper"  # a quoted newline becomes a space
    assert found["4100"].name == 'Turing, Alan "Prof"'


def test_lf_and_crlf_versions_of_one_file_give_the_same_customers(ctx, tmp_path):
    text = (DATA / "roster.csv").read_text()
    import_roster(write(tmp_path, "lf.csv", text))
    before = {k: (c.email, c.name, c.card_exp_year) for k, c in customers().items()}
    result = import_roster(write(tmp_path, "crlf.csv", text.replace("\n", "\r\n")))
    assert result.counts["unchanged"] == 4 and result.counts.get("changed", 0) == 0
    assert {k: (c.email, c.name, c.card_exp_year) for k, c in customers().items()} == before


def test_row_errors_are_reported_with_line_numbers_and_good_rows_import(ctx):
    result = import_roster(DATA / "roster_row_errors.csv")
    db.session.commit()
    assert set(customers()) == {"5001", "5006"}
    problems = {p.line: p.problem for p in result.errors}
    assert problems[3] == "email is not a valid address"
    assert "card_last4" in problems[4]
    assert "repeats line 2" in problems[5]
    assert problems[6].startswith("expected 6 fields, found 2")
    assert "card_exp_month 13" in problems[7]
    assert result.error_count == 5 and result.counts["new"] == 2
    with open(result.report_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["line"]) for r in rows] == [3, 4, 5, 6, 7]
    assert rows[0]["customer"] == "5002" and rows[0]["kind"] == "error"
    assert Path(result.report_path).parent == Path(ctx.instance_path) / "import-reports"


def test_a_duplicate_id_in_a_later_batch_is_caught(ctx, tmp_path, monkeypatch):
    monkeypatch.setattr("cardbridge.bulk.BATCH_SIZE", 2)
    lines = ["legacy_customer_id,email"] + [f"{i},c{i}@example.com" for i in range(6)]
    lines.append("1,late-duplicate@example.com")
    result = import_roster(write(tmp_path, "r.csv", "\n".join(lines) + "\n"))
    assert result.counts["new"] == 6
    assert [(p.line, p.customer) for p in result.errors] == [(8, "1")]
    assert customers()["1"].email == "c1@example.com"  # the first one stays


def test_a_duplicate_of_an_existing_customer_in_one_file_is_caught(ctx, tmp_path):
    import_roster(write(tmp_path, "a.csv", "legacy_customer_id,email\n1,a@example.com\n"))
    db.session.commit()
    result = import_roster(write(tmp_path, "b.csv", "legacy_customer_id,email\n"
                                 "1,new@example.com\n2,b@example.com\n1,other@example.com\n"))
    assert [(p.line, p.kind) for p in result.errors] == [(4, "error")]
    assert customers()["1"].email == "new@example.com"


def test_the_same_file_twice_says_so_and_changes_nothing(ctx):
    first = import_roster(DATA / "roster.csv")
    db.session.commit()
    stamps = {k: c.updated_at for k, c in customers().items()}
    second = import_roster(DATA / "roster.csv")
    db.session.commit()
    assert second.skipped and second.identical_to == first.run_id
    assert second.status == "skipped" and "identical to run" in second.message
    assert {k: c.updated_at for k, c in customers().items()} == stamps
    runs = db.session.execute(select(ImportRun.status).order_by(ImportRun.id)).scalars().all()
    assert runs == ["succeeded", "skipped"]


def test_a_changed_file_updates_changed_rows_and_duplicates_nothing(ctx, tmp_path):
    import_roster(DATA / "roster.csv")
    db.session.commit()
    stamps = {k: c.updated_at for k, c in customers().items()}
    text = (DATA / "roster.csv").read_text().replace("grace@example.com", "GRACE@navy.mil")
    text += "4300,new@example.com,,,,,,,,\n"
    result = import_roster(write(tmp_path, "roster-v2.csv", text))
    db.session.commit()
    assert (result.counts["new"], result.counts["changed"], result.counts["unchanged"]) == (1, 1, 3)
    found = customers()
    assert len(found) == 5 and found["3520"].email == "grace@navy.mil"
    assert found["3520"].updated_at > stamps["3520"]
    assert found["1893"].updated_at == stamps["1893"]


def test_a_file_without_optional_columns_leaves_those_columns_alone(ctx, tmp_path):
    import_roster(DATA / "roster.csv")
    db.session.commit()
    result = import_roster(write(tmp_path, "slim.csv", "email,legacy_customer_id\n"
                                 "ada@example.com,1893\n"))
    assert result.counts["unchanged"] == 1
    ada = customers()["1893"]
    assert ada.name == "Ada Lovelace" and ada.card_last4 == "4242"


def test_a_blank_stripe_id_never_unlinks_and_a_different_one_is_a_conflict(ctx, tmp_path):
    import_roster(DATA / "roster.csv")
    db.session.commit()
    header = "legacy_customer_id,email,stripe_customer_id\n"
    result = import_roster(write(tmp_path, "r.csv", header + "4100,alan@example.com,\n"
                                 "1893,ada@example.com,cus_other\n"
                                 "3520,grace@example.com,cus_existing4100\n"))
    assert customers()["4100"].stripe_customer_id == "cus_existing4100"
    kinds = {p.customer: (p.kind, p.problem) for p in result.errors}
    assert kinds["3520"][0] == "conflict" and "belongs to customer 4100" in kinds["3520"][1]
    assert customers()["1893"].stripe_customer_id == "cus_other"  # it had none: now linked
    again = import_roster(write(tmp_path, "r2.csv", header + "1893,ada@example.com,cus_new\n"))
    assert again.errors[0].kind == "conflict" and "already linked to cus_other" in (
        again.errors[0].problem)
    assert customers()["1893"].stripe_customer_id == "cus_other"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("roster_missing_email.csv", "header lacks required column(s): email"),
        ("roster_latin1.csv", "not UTF-8: line 3, byte 69"),
        ("roster_empty.csv", "the file is empty"),
        ("no-such-file.csv", "no such file"),
    ],
)
def test_file_level_errors_are_one_line_and_change_nothing(ctx, name, message):
    with pytest.raises(ImportFileError) as err:
        import_roster(DATA / name)
    assert message in str(err.value) and "\n" not in str(err.value)
    db.session.rollback()
    assert db.session.execute(select(func.count()).select_from(Customer)).scalar() == 0


def test_an_unclosed_quote_that_swallows_the_file_is_a_file_error(ctx, tmp_path):
    body = 'legacy_customer_id,email,name\n1,a@example.com,"never closed\n' + (
        "2,b@example.com,x\n" * 20000)
    with pytest.raises(ImportFileError, match=r"line 2: a field runs past"):
        import_roster(write(tmp_path, "quote.csv", body))


def test_strict_aborts_the_whole_file_and_the_attempt_is_recorded(ctx):
    with pytest.raises(ImportFileError) as err:
        import_roster(DATA / "roster_row_errors.csv", strict=True)
    assert "5 row(s) could not be applied and --strict is set" in str(err.value)
    db.session.rollback()
    db.session.add(failed_run(err.value))
    db.session.commit()
    assert db.session.execute(select(func.count()).select_from(Customer)).scalar() == 0
    run = db.session.execute(select(ImportRun)).scalar_one()
    assert (run.status, run.kind, run.error_count, run.strict) == ("failed", "roster", 5, True)
    assert len(run.sha256) == 64 and run.errors[0]["line"] == 3


def test_a_failed_run_does_not_count_as_the_file_already_imported(ctx):
    with pytest.raises(ImportFileError):
        import_roster(DATA / "roster_row_errors.csv", strict=True)
    db.session.rollback()
    result = import_roster(DATA / "roster_row_errors.csv")
    assert not result.skipped and result.counts["new"] == 2


def test_a_stream_can_be_imported_with_a_name(ctx):
    stream = io.BytesIO((DATA / "roster.csv").read_bytes())
    result = import_roster(stream, name="upload.csv")
    assert result.file_name == "upload.csv" and result.counts["new"] == 4
    assert not stream.closed  # the caller's stream is the caller's to close


def test_progress_reports_rows_and_bytes(ctx, tmp_path, monkeypatch):
    monkeypatch.setattr("cardbridge.bulk.BATCH_SIZE", 10)
    lines = ["legacy_customer_id,email"] + [f"{i},c{i}@example.com" for i in range(25)]
    path = write(tmp_path, "r.csv", "\n".join(lines) + "\n")
    seen = []
    import_roster(path, progress=lambda rows, done, total: seen.append((rows, done, total)))
    assert [rows for rows, _, _ in seen] == [10, 20, 25]
    assert seen[-1][2] == path.stat().st_size and seen[-1][1] <= seen[-1][2]


def test_nothing_is_visible_to_other_connections_until_the_caller_commits(ctx):
    import_roster(DATA / "roster.csv")
    with db.engine.connect() as other:
        assert other.execute(select(func.count()).select_from(Customer)).scalar() == 0
    db.session.commit()
    with db.engine.connect() as other:
        assert other.execute(select(func.count()).select_from(Customer)).scalar() == 4


class _Pipe(io.RawIOBase):
    """A stream that cannot seek, like an upload read straight off a socket."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_stream_that_cannot_seek_is_spooled_and_imported(ctx):
    result = import_roster(_Pipe((DATA / "roster.csv").read_bytes()), name="pipe.csv")
    assert result.counts["new"] == 4 and result.file_name == "pipe.csv"


def test_a_directory_is_refused_in_one_line(ctx, tmp_path):
    with pytest.raises(ImportFileError, match="is a directory"):
        import_roster(tmp_path)


def test_the_result_is_plain_data_for_the_console(ctx):
    import json

    result = import_roster(DATA / "roster_row_errors.csv")
    data = json.loads(json.dumps(result.as_dict()))
    assert data["counts"]["new"] == 2 and data["error_count"] == 5
    assert data["errors"][0] == {"line": 3, "customer": "5002", "kind": "error",
                                 "problem": "email is not a valid address"}


def test_ids_holding_control_characters_are_refused_and_the_rest_imported(ctx, tmp_path):
    odd = ["a\x1fb", "c\x1ed", "e\x1e\x1ff"]
    body = "legacy_customer_id,email\n" + "".join(
        f"{legacy},o{i}@example.com\n" for i, legacy in enumerate(odd)) + "plain,p@example.com\n"
    result = import_roster(write(tmp_path, "odd.csv", body))
    db.session.commit()
    assert result.counts["new"] == 1 and set(customers()) == {"plain"}
    assert [e.problem for e in result.errors] == [
        "legacy_customer_id holds a control character (tab, line break, …)"] * 3
