"""`flask import-customers`, `import-mapping`, `report` and `export`: output, exit codes, safety."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cardbridge.extensions import db
from cardbridge.imports.service import import_mapping, import_roster
from cardbridge.models import STATUSES, Customer, ImportRun, MigratedCard

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "imports"


@pytest.fixture
def app(make_app):
    return make_app(CUTOVER_DATE=date(2026, 12, 31))


def count(model) -> int:
    db.session.rollback()  # a fresh snapshot: the command committed on another session
    return db.session.execute(select(func.count()).select_from(model)).scalar()


def test_import_customers_prints_counts_and_records_the_run(runner, ctx):
    result = runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("roster.csv (roster CSV): 4 rows in ")
    assert "customers: 4 new, 0 changed, 0 unchanged" in result.output
    run = db.session.execute(select(ImportRun)).scalar_one()
    assert (run.kind, run.status, run.file_name, run.counts["new"]) == (
        "roster", "succeeded", "roster.csv", 4)
    assert run.finished_at >= run.started_at


def test_the_same_file_again_says_so(runner, ctx):
    runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    result = runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    assert result.exit_code == 0
    assert "identical to run #1" in result.output and "nothing changed" in result.output


def test_row_errors_are_summarised_with_lines_and_the_report_path(runner, ctx):
    result = runner.invoke(args=["import-customers", str(DATA / "roster_row_errors.csv")])
    assert result.exit_code == 0, result.output
    assert "not applied: 5 row(s) (5 error); all listed in " in result.output
    assert "line 3: error: email is not a valid address" in result.output
    report = result.output.split("all listed in ")[1].split()[0]
    assert Path(report).is_file() and Path(report).parent.name == "import-reports"
    assert count(Customer) == 2


def test_strict_exits_non_zero_and_imports_nothing(runner, ctx):
    result = runner.invoke(args=["import-customers", "--strict",
                                 str(DATA / "roster_row_errors.csv")])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "--strict is set; nothing imported" in result.output
    assert count(Customer) == 0
    run = db.session.execute(select(ImportRun)).scalar_one()
    assert run.status == "failed" and run.error_count == 5


@pytest.mark.parametrize(
    ("command", "name", "reason"),
    [
        ("import-customers", "missing.csv", "missing.csv: no such file"),
        ("import-customers", "roster_missing_email.csv",
         "header lacks required column(s): email"),
        ("import-customers", "roster_latin1.csv", "not UTF-8: line 3, byte 69"),
        ("import-mapping", "mapping_bad.json", "bad JSON at line 3, column 17 (byte 69)"),
        ("import-mapping", "mapping_ach.csv", "ACH bank-account mapping"),
    ],
)
def test_bad_input_exits_non_zero_with_a_one_line_reason(runner, ctx, command, name, reason):
    result = runner.invoke(args=[command, str(DATA / name)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and reason in result.output
    assert result.output.count("\n") == 1
    assert count(Customer) == 0


def test_import_mapping_prints_counts_per_bucket(runner, ctx):
    runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    result = runner.invoke(args=["import-mapping", str(DATA / "mapping.json")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "mapping.json (Stripe JSON): 4 rows" in out
    assert "customers: 2 linked to Stripe, 1 already linked" in out
    assert "cards: 3 new, 0 changed, 0 unchanged" in out
    assert "2 ready, 1 needs_update, 0 invited, 0 updated" in out
    assert "customer '9999': unknown: not in the roster" in out


def test_report_json_is_the_spec_object(runner, ctx):
    runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    runner.invoke(args=["import-mapping", str(DATA / "mapping.json")])
    result = runner.invoke(args=["report", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["total"] == 4 == sum(data["by_status"].values())
    assert set(data["by_status"]) == set(STATUSES)
    assert data["by_status"]["ready"] == 2
    assert data["needs_update_reasons"] == {"not_in_mapping": 1, "no_cards": 1,
                                            "cards_expired": 0}


def test_report_table_shows_counts_shares_and_reasons(runner, ctx):
    runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    runner.invoke(args=["import-mapping", str(DATA / "mapping.json")])
    out = runner.invoke(args=["report"]).output
    assert "cutover 2026-12-31" in out
    assert [line.split() for line in out.splitlines() if line.strip().startswith("ready")] == [
        ["ready", "2", "50.0%"]]
    assert "mapped without cards" in out and "not in the mapping file" in out
    assert "last mapping import: mapping.json" in out


def test_report_on_an_empty_database(runner, ctx):
    result = runner.invoke(args=["report", "--json"])
    assert json.loads(result.output)["total"] == 0
    assert runner.invoke(args=["report"]).exit_code == 0


def test_export_writes_the_file_the_business_loads(runner, ctx, tmp_path):
    runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    runner.invoke(args=["import-mapping", str(DATA / "mapping.json")])
    target = tmp_path / "export.csv"
    result = runner.invoke(args=["export", str(target)])
    assert result.exit_code == 0 and f"exported 4 customers to {target}" in result.output
    with open(target, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["legacy_customer_id"] for r in rows] == ["1893", "3520", "4100", "4200"]
    assert rows[0]["stripe_customer_id"] == "cus_abc123def456"
    assert rows[0]["payment_method_id"] == "card_3333333333"
    assert not (tmp_path / "export.csv.partial").exists()


def test_export_into_a_missing_folder_fails_cleanly(runner, ctx, tmp_path):
    result = runner.invoke(args=["export", str(tmp_path / "nope" / "export.csv")])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert result.output.count("\n") == 1


def test_no_progress_bar_when_output_is_not_a_terminal(runner, ctx):
    result = runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    assert "rows/s" in result.output.splitlines()[0]  # the summary line, once
    assert "%|" not in result.output


# -- kill -9 part way --------------------------------------------------------------------------
def _writer_active(app) -> bool:
    """True while another connection holds an open write transaction on the import's tables."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        probe = sqlite3.connect(url.split("///", 1)[1], timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()
    with app.app_context(), db.engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname IN ('customers', 'migrated_cards') AND l.mode = 'RowExclusiveLock' "
            "AND l.pid <> pg_backend_pid()")).scalar())


def _file_position(pid: int, path: Path) -> int | None:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    return int(info.readline().split()[1])
        except OSError:
            continue
    return None


def _kill_part_way(app, command: str, path: Path) -> None:
    config = {"TESTING": True, "SECRET_KEY": "test", "INSTANCE_PATH": app.instance_path,
              "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", f"app:create_app({config!r})", command,
         str(path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    size, deadline = path.stat().st_size, time.time() + 120
    try:
        # Wait for the second pass over the file (the first one hashes it) to be well under
        # way with its writes, then kill without a chance to clean up.
        while True:
            assert proc.poll() is None, "the import finished before it could be killed: " + (
                proc.stderr.read().decode()[-500:])
            assert time.time() < deadline
            position = _file_position(proc.pid, path)
            if position and size * 0.3 < position < size * 0.9 and _writer_active(app):
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()


def _big_files(tmp_path: Path, n: int) -> tuple[Path, Path]:
    roster, mapping = tmp_path / "big-roster.csv", tmp_path / "big-mapping.json"
    with open(roster, "w") as fh:
        fh.write("legacy_customer_id,email,name\n")
        fh.writelines(f"B{i},b{i}@example.com,Customer {i}\n" for i in range(n))
    with open(mapping, "w") as fh:
        fh.write("{" + ",\n".join(
            f'"B{i}": {{"cards": {{"c{i}": {{"id": "card_{i}", "fingerprint": "f{i}", '
            f'"last4": "4242", "exp_month": 1, "exp_year": 2030, "brand": "Visa"}}}}, '
            f'"id": "cus_{i}"}}' for i in range(n)) + "}")
    return roster, mapping


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="needs Linux /proc")
def test_a_roster_import_killed_part_way_changes_nothing_and_a_rerun_completes(app, tmp_path):
    roster, _ = _big_files(tmp_path, 80_000)
    _kill_part_way(app, "import-customers", roster)
    with app.app_context():
        assert count(Customer) == 0 and count(ImportRun) == 0
        if db.engine.dialect.name == "sqlite":
            assert db.session.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        result = import_roster(roster)
        db.session.commit()
        assert result.counts["new"] == 80_000 and count(Customer) == 80_000


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="needs Linux /proc")
def test_a_mapping_import_killed_part_way_changes_nothing_and_a_rerun_completes(app, tmp_path):
    roster, mapping = _big_files(tmp_path, 60_000)
    with app.app_context():
        import_roster(roster)
        db.session.commit()
    _kill_part_way(app, "import-mapping", mapping)
    with app.app_context():
        assert count(MigratedCard) == 0
        assert db.session.execute(
            select(Customer.status, func.count()).group_by(Customer.status)).all() == [
                ("needs_update", 60_000)]
        assert db.session.execute(
            select(func.count()).select_from(Customer).where(Customer.mapped_at.is_not(None))
        ).scalar() == 0
        result = import_mapping(mapping)
        db.session.commit()
        assert result.counts["cards_new"] == 60_000 and count(MigratedCard) == 60_000
        assert db.session.execute(
            select(func.count()).select_from(Customer).where(Customer.status == "ready")
        ).scalar() == 60_000


@pytest.mark.postgres
def test_on_postgresql_an_open_import_does_not_block_other_customers(app, tmp_path, ctx):
    """Row locks only: the web app keeps writing to customers the file does not name."""
    other = Customer(legacy_id="web-1", email="web@example.com", status="needs_update")
    db.session.add(other)
    db.session.commit()
    import_roster(DATA / "roster.csv")  # open transaction, not committed
    with db.engine.connect() as conn:
        conn.execute(text("SET lock_timeout = '2s'"))
        conn.execute(text("UPDATE customers SET status = 'invited' WHERE legacy_id = 'web-1'"))
        conn.commit()
    db.session.commit()
    assert count(Customer) == 5


def test_strict_mapping_refuses_a_file_naming_unknown_customers(runner, ctx):
    runner.invoke(args=["import-customers", str(DATA / "roster.csv")])
    result = runner.invoke(args=["import-mapping", "--strict", str(DATA / "mapping.json")])
    assert result.exit_code == 1 and "1 row(s) could not be applied" in result.output
    assert count(MigratedCard) == 0
    assert db.session.execute(
        select(func.count()).select_from(Customer).where(Customer.stripe_customer_id.is_not(None))
    ).scalar() == 1  # only the roster's own link
