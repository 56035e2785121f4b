"""The two app imports (roster CSV, Stripe JSON mapping) against a floor measured in the same run.

    .venv/bin/python bench/import.py [--customers 200000] [--postgres [URL]]
                                     [--scratch-prefix NAME] [--keep DIR]

Generates a synthetic roster and a mapping of N customers in Stripe's documented shape (about
10% missing from the mapping, 10% with only expired cards, 20% with two cards). The floor is the
least any importer must do: parse the same files with csv and orjson and write them with
sqlite3 `executemany` into two plain tables (with --postgres: psycopg COPY). A second floor,
"+idx", loads the same way into tables that carry the unique keys and indexes the app's tables
need, to show how much of the gap is index work any real schema pays. On SQLite a third run,
"writes", puts the rows the app must write into the app's own schema with raw sqlite3 and no
checks at all: the most any importer of this schema could reach. Every step runs in its
own process under /usr/bin/time -v for its peak memory; the time compared is the work inside
the process (wall and CPU), the same clocks for floor and app. Aim: app ≤ 1.5× floor, peak
≤ 150 MB. The app's statuses are checked against what the generator made.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ heads sys.path, and bench/email.py would shadow the standard library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
CUTOVER = date(2026, 12, 31)
ROSTER_HEADER = ("legacy_customer_id", "email", "name", "locale", "card_brand", "card_last4",
                 "card_exp_month", "card_exp_year")
BRANDS = ("Visa", "Mastercard", "American Express", "Discover")


# -- data -----------------------------------------------------------------------------------------
def generate(n: int, folder: Path) -> tuple[Path, Path, dict]:
    """Write roster.csv and mapping.json for n customers; return the statuses they imply."""
    import orjson

    rnd = random.Random(20261231)
    roster, mapping = folder / "roster.csv", folder / "mapping.json"
    expect = {"ready": 0, "needs_update": 0}
    with open(roster, "w", newline="", encoding="utf-8") as r, open(mapping, "wb") as m:
        writer = csv.writer(r)
        writer.writerow(ROSTER_HEADER)
        m.write(b"{")
        first = True
        for i in range(n):
            legacy = f"L{i:09d}"
            brand = BRANDS[i % 4]
            writer.writerow((legacy, f"Customer.{i}@Example.com", f"Customer {i}, Jr",
                             "en-US" if i % 3 else "fr-CA", brand, f"{i % 10000:04d}",
                             f"{i % 12 + 1:02d}", 2025 + i % 6))
            bucket = rnd.random()
            if bucket < 0.10:  # Stripe could not migrate this one
                expect["needs_update"] += 1
                continue
            expired = bucket < 0.20
            count = 2 if rnd.random() < 0.20 else 1
            cards = {}
            for j in range(count):
                year = rnd.randint(2019, 2025) if expired else rnd.randint(2027, 2032)
                cards[f"src{i}-{j}"] = {
                    "id": f"card_{i:010d}{j}", "fingerprint": f"fp{rnd.getrandbits(48):012x}",
                    "last4": f"{rnd.randint(0, 9999):04d}", "exp_month": rnd.randint(1, 12),
                    "exp_year": year, "brand": brand,
                }
            expect["needs_update" if expired else "ready"] += 1
            entry = orjson.dumps({"cards": cards, "id": f"cus_{i:014d}"})
            m.write((b"" if first else b",\n") + orjson.dumps(legacy) + b": " + entry)
            first = False
        m.write(b"}\n")
    return roster, mapping, expect


# -- children: each step in its own process -------------------------------------------------------
# The "indexed floor": the same plain loads into tables carrying the unique constraints and
# indexes the app's tables need, to show how much of the gap is the database's index work.
FLOOR_INDEXES = {
    "roster": ("CREATE UNIQUE INDEX roster_legacy ON roster (legacy_customer_id)",
               "CREATE INDEX roster_email ON roster (email)"),
    "cards": ("CREATE UNIQUE INDEX cards_old ON cards (legacy_id, old_card_id)",
              "CREATE INDEX cards_card ON cards (card_id)"),
}


def child(step: str, roster: str, mapping: str, db: str) -> None:
    step, indexed = step.removesuffix("+idx"), step.endswith("+idx")

    def indexes(conn, table: str) -> None:
        for sql in FLOOR_INDEXES[table] if indexed else ():
            conn.execute(sql)

    started, cpu = time.perf_counter(), time.process_time()
    if step == "floor-roster":
        conn = sqlite3.connect(db)
        conn.execute(f"CREATE TABLE roster ({', '.join(ROSTER_HEADER)})")
        indexes(conn, "roster")
        with open(roster, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            next(rows)
            conn.executemany(f"INSERT INTO roster VALUES ({', '.join('?' * 8)})", rows)
        conn.commit()
    elif step == "floor-mapping":
        import orjson

        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE cards (legacy_id, customer_id, old_card_id, card_id, "
                     "fingerprint, last4, exp_month, exp_year, brand)")
        indexes(conn, "cards")
        with open(mapping, "rb") as fh:
            data = orjson.loads(fh.read())
        conn.executemany("INSERT INTO cards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            (legacy, entry["id"], old, c["id"], c["fingerprint"], c["last4"], c["exp_month"],
             c["exp_year"], c["brand"])
            for legacy, entry in data.items() for old, c in entry["cards"].items()))
        conn.commit()
    elif step == "copy-roster":
        import psycopg

        with psycopg.connect(db) as conn, open(roster, "rb") as fh:
            conn.execute(f"CREATE TABLE roster ({', '.join(c + ' text' for c in ROSTER_HEADER)})")
            indexes(conn, "roster")
            with conn.cursor().copy("COPY roster FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while block := fh.read(1 << 20):
                    copy.write(block)
    elif step == "copy-mapping":
        import orjson
        import psycopg

        with psycopg.connect(db) as conn:
            conn.execute("CREATE TABLE cards (legacy_id text, customer_id text, old_card_id text,"
                         " card_id text, fingerprint text, last4 text, exp_month int,"
                         " exp_year int, brand text)")
            indexes(conn, "cards")
            with open(mapping, "rb") as fh:
                data = orjson.loads(fh.read())
            with conn.cursor().copy("COPY cards FROM STDIN") as copy:
                for legacy, entry in data.items():
                    for old, c in entry["cards"].items():
                        copy.write_row((legacy, entry["id"], old, c["id"], c["fingerprint"],
                                        c["last4"], c["exp_month"], c["exp_year"], c["brand"]))
    elif step in ("writes-roster", "writes-mapping"):
        _writes(step, roster, mapping, db)
        return
    else:  # app-schema, app-roster, app-mapping
        sys.path.insert(0, str(ROOT))
        from app import create_app
        from cardbridge.extensions import db as sa_db
        from cardbridge.imports import service as imports

        app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db,
                          "INSTANCE_PATH": str(Path(roster).parent / "instance"),
                          "CUTOVER_DATE": CUTOVER})
        with app.app_context():
            started, cpu = time.perf_counter(), time.process_time()
            if step == "app-schema":
                sa_db.create_all()
            else:
                service = imports.import_roster if step == "app-roster" else imports.import_mapping
                result = service(roster if step == "app-roster" else mapping)
                sa_db.session.commit()
                extra = {"counts": result.counts}
            # The clocks stop at the import's commit: the status check below is the bench's,
            # not work `flask import-mapping` does.
            timing = {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}
            if step == "app-mapping":
                extra["by_status"] = imports.status_report(refresh=False)["by_status"]
            print(json.dumps({**timing, **(extra if step != "app-schema" else {})}))
            return
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))


def _writes(step: str, roster: str, mapping: str, db: str) -> None:
    """The rows an import must write, into the app's own schema, and nothing else.

    Raw sqlite3 with the app's pragmas (WAL, foreign keys) into the tables `create_app` makes:
    each roster row inserted as it is in the file (no checks, no normalising, no duplicate
    or re-run handling); then each mapped customer's cards inserted and the customer given
    its Stripe id, status and times (the status from the cards' expiry, no other check). Its
    ratio to the floor is the most any importer writing this schema can reach.
    """
    import orjson

    path = db.removeprefix("sqlite:///")
    if step == "writes-roster":  # the app's schema, made before the clocks start
        sys.path.insert(0, str(ROOT))
        from app import create_app
        from cardbridge.extensions import db as sa_db

        app = create_app({"TESTING": True, "SECRET_KEY": "bench", "SQLALCHEMY_DATABASE_URI": db,
                          "INSTANCE_PATH": str(Path(roster).parent / "instance")})
        with app.app_context():
            sa_db.create_all()
            sa_db.engine.dispose()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    now = "2026-11-25 00:00:00.000000"
    started, cpu = time.perf_counter(), time.process_time()
    if step == "writes-roster":
        with open(roster, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            next(rows)
            conn.executemany(
                "INSERT INTO customers (legacy_id, email, name, locale, card_brand, card_last4,"
                " card_exp_month, card_exp_year, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'needs_update', ?, ?)",
                ((*row, now, now) for row in rows))
    else:
        cut = CUTOVER.year * 12 + CUTOVER.month
        with open(mapping, "rb") as fh:
            data = orjson.loads(fh.read())
        ids = dict(conn.execute("SELECT legacy_id, id FROM customers"))
        cards, customers = [], []
        for legacy, entry in data.items():
            customer = ids[legacy]
            usable = False
            for old, c in entry["cards"].items():
                cards.append((customer, old, c["id"], c["fingerprint"], c["brand"], c["last4"],
                              c["exp_month"], c["exp_year"]))
                usable = usable or c["exp_year"] * 12 + c["exp_month"] >= cut
            customers.append((entry["id"], "ready" if usable else "needs_update", now, now,
                              customer))
        conn.executemany(
            "INSERT INTO migrated_cards (customer_id, old_card_id, stripe_id, fingerprint, brand,"
            " last4, exp_month, exp_year) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", cards)
        conn.executemany(
            "UPDATE customers SET stripe_customer_id = ?, status = ?, mapped_at = ?,"
            " updated_at = ? WHERE id = ?", customers)
    conn.commit()
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}))


def measure(step: str, roster: Path, mapping: Path, db: str) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--child", step, str(roster),
           str(mapping), db]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{step} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    result["peak_mb"] = int(peak.group(1)) / 1024 if peak else float("nan")
    result["wall"] = wall
    return result


# -- PostgreSQL scratch databases -----------------------------------------------------------------
def pg_database(server_url: str, name: str, create: bool) -> str:
    import psycopg

    plain = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
    return plain.rsplit("/", 1)[0] + f"/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--postgres", nargs="?", const=os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"), default=None,
        help="compare on PostgreSQL (server URL; scratch databases are created and dropped)")
    parser.add_argument("--scratch-prefix", default="cardbridge_bench", metavar="NAME",
                        help="name prefix of the PostgreSQL scratch databases (default: "
                             "%(default)s); give your own when others bench on the same server")
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this folder")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not os.path.exists("/usr/bin/time"):
        raise SystemExit("needs /usr/bin/time (Debian package `time`: apt-get install time)")

    folder = args.keep or Path(tempfile.mkdtemp(prefix="cardbridge-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        roster, mapping, expect = generate(args.customers, folder)
        print(f"{args.customers:,} customers · roster {roster.stat().st_size / 1e6:.1f} MB · "
              f"mapping {mapping.stat().st_size / 1e6:.1f} MB "
              f"(generated in {time.perf_counter() - started:.1f} s)")
        if args.postgres:
            engine = "PostgreSQL"
            floor_db, indexed_db, app_db = (
                pg_database(args.postgres, f"{args.scratch_prefix}_{name}", True)
                for name in ("floor", "floor_idx", "app"))
            app_db = app_db.replace("postgresql://", "postgresql+psycopg://")
            floor_steps = ("copy-roster", "copy-mapping")
        else:
            engine = "SQLite"
            floor_db, indexed_db = str(folder / "floor.db"), str(folder / "floor_idx.db")
            app_db = f"sqlite:///{folder / 'app.db'}"
            floor_steps = ("floor-roster", "floor-mapping")
        measure("app-schema", roster, mapping, app_db)
        rows, writes = [], []
        for name, floor_step, app_step in zip(("roster CSV", "mapping JSON"), floor_steps,
                                              ("app-roster", "app-mapping"), strict=True):
            floor = measure(floor_step, roster, mapping, floor_db)
            indexed = measure(floor_step + "+idx", roster, mapping, indexed_db)
            app = measure(app_step, roster, mapping, app_db)
            rows.append((name, floor, indexed, app))
            if not args.postgres:
                writes.append(measure(app_step.replace("app-", "writes-"), roster, mapping,
                                      f"sqlite:///{folder / 'writes.db'}"))
        by_status = rows[1][3]["by_status"]
        if args.postgres:
            for name in ("floor", "floor_idx", "app"):
                pg_database(args.postgres, f"{args.scratch_prefix}_{name}", False)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    floor_name = "psycopg COPY" if args.postgres else "csv/orjson + sqlite3 executemany"
    print(f"\nengine: {engine} · floor: {floor_name} into plain tables · +idx: the same into "
          f"tables with the app's unique keys and indexes · cutover {CUTOVER} · "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'step':<14}{'floor s':>9}{'+idx s':>9}{'app s':>9}{'app/floor':>11}{'app/+idx':>10}"
          f"{'app cpu/floor cpu':>19}{'floor MB':>10}{'app MB':>8}")
    for name, floor, indexed, app in rows:
        print(f"{name:<14}{floor['seconds']:>9.2f}{indexed['seconds']:>9.2f}"
              f"{app['seconds']:>9.2f}{app['seconds'] / floor['seconds']:>10.2f}×"
              f"{app['seconds'] / indexed['seconds']:>9.2f}×"
              f"{app['cpu'] / floor['cpu']:>18.2f}×{floor['peak_mb']:>10.0f}{app['peak_mb']:>8.0f}")
    total = {key: [sum(step[i][key] for step in rows) for i in (1, 2, 3)]
             for key in ("seconds", "cpu")}
    (floor_total, indexed_total, app_total), (floor_cpu, _, app_cpu) = (
        total["seconds"], total["cpu"])
    peak = max(step[3]["peak_mb"] for step in rows)
    print(f"{'total':<14}{floor_total:>9.2f}{indexed_total:>9.2f}{app_total:>9.2f}"
          f"{app_total / floor_total:>10.2f}×{app_total / indexed_total:>9.2f}×"
          f"{app_cpu / floor_cpu:>18.2f}×{'':>10}{peak:>8.0f}")
    if writes:
        seconds = [w["seconds"] for w in writes]
        print(f"writes: the rows the app must write, into its own schema with raw sqlite3 and "
              f"no checks: roster {seconds[0]:.2f} s, mapping {seconds[1]:.2f} s, total "
              f"{sum(seconds):.2f} s = {sum(seconds) / floor_total:.2f}× floor (the most any "
              f"importer of this schema reaches); app/writes {app_total / sum(seconds):.2f}×")
    print(f"statuses: {by_status} (expected ready {expect['ready']:,}, "
          f"needs_update {expect['needs_update']:,})")
    ok = by_status.get("ready") == expect["ready"] and by_status.get(
        "needs_update") == expect["needs_update"]
    print(f"aim: total ≤ 1.5× floor ({'met' if app_total <= 1.5 * floor_total else 'missed'}), "
          f"peak ≤ 150 MB ({'met' if peak <= 150 else 'missed'}), statuses "
          f"{'as expected' if ok else 'WRONG'}")


if __name__ == "__main__":
    main()
