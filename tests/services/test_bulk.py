"""imports/bulk.py: batch writes from plain rows, on SQLite (executemany) and PostgreSQL (COPY
into a stage table, then one merge)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from cardbridge.bulk import BulkInsert, BulkUpdate, KeyedSelect, batch_plans
from cardbridge.extensions import db
from cardbridge.models import Customer

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def rows_by_legacy() -> dict[str, tuple]:
    return {r.legacy_id: r for r in db.session.execute(
        select(Customer.legacy_id, Customer.email, Customer.name, Customer.card_exp_month,
               Customer.status, Customer.created_at, Customer.id))}


def test_insert_and_update_take_tuples_or_lists_with_constants_and_nulls(ctx):
    table = Customer.__table__
    insert = BulkInsert(table, ["legacy_id", "email", "name", "card_exp_month"],
                        {"status": "needs_update", "created_at": NOW, "updated_at": NOW})
    insert.run([("a", "a@example.com", None, 7), ["b", "b@example.com", "Bé, \"B\"\t\\", None]])
    insert.run([])
    got = rows_by_legacy()
    assert got["a"][1:5] == ("a@example.com", None, 7, "needs_update")
    assert got["b"][2:4] == ("Bé, \"B\"\t\\", None)  # COPY's special characters survive
    assert got["a"].created_at == NOW
    update = BulkUpdate(table, ["name", "status"], {"updated_at": NOW})
    update.run([("Ann", "ready", got["a"].id), ["Bea\nline", "invited", got["b"].id]])
    got = rows_by_legacy()
    assert (got["a"].name, got["a"].status, got["b"].name, got["b"].status) == (
        "Ann", "ready", "Bea\nline", "invited")


def test_insert_leaves_a_row_another_writer_added_alone(ctx):
    table = Customer.__table__
    insert = BulkInsert(table, ["legacy_id", "email"],
                        {"status": "needs_update", "created_at": NOW, "updated_at": NOW})
    insert.run([("a", "first@example.com")])
    insert.run([("a", "second@example.com"), ("c", "c@example.com")])
    got = rows_by_legacy()
    assert (got["a"].email, got["c"].email) == ("first@example.com", "c@example.com")


@pytest.mark.postgres
def test_on_postgresql_each_writer_stages_in_its_own_table_dropped_at_commit(ctx):
    table = Customer.__table__
    constants = {"status": "needs_update", "created_at": NOW, "updated_at": NOW}
    first = BulkInsert(table, ["legacy_id", "email"], constants)
    second = BulkInsert(table, ["legacy_id", "email", "name"], constants)  # same table, in one
    first.run([("a", "a@example.com")])                                    # transaction
    second.run([("b", "b@example.com", "B")])
    first.run([("c", "c@example.com")])  # its stage was emptied after the last batch
    assert db.session.execute(select(func.count()).select_from(table)).scalar() == 3

    def stages() -> list[str]:
        return db.session.execute(text(
            "SELECT relname FROM pg_class WHERE relname LIKE 'bulk_stage_%' "
            "AND relpersistence = 't' AND pg_table_is_visible(oid)")).scalars().all()

    assert len(stages()) == 2
    assert [db.session.execute(text(f'SELECT count(*) FROM "{name}"')).scalar()
            for name in stages()] == [0, 0]  # nothing left over to be merged twice
    db.session.commit()
    assert stages() == []


@pytest.mark.postgres
def test_on_postgresql_a_value_copy_refuses_raises_sqlalchemys_error(ctx):
    insert = BulkInsert(Customer.__table__, ["legacy_id", "email"],
                        {"status": "needs_update", "created_at": NOW, "updated_at": NOW})
    with pytest.raises(DBAPIError):  # what the CLI turns into "database error, nothing imported"
        insert.run([("x" * 300, "x@example.com")])  # longer than VARCHAR(255)
    db.session.rollback()


@pytest.mark.postgres
def test_on_postgresql_batch_lookups_use_an_index_on_tables_filled_in_this_transaction(ctx):
    table = Customer.__table__
    insert = BulkInsert(table, ["legacy_id", "email"],
                        {"status": "needs_update", "created_at": NOW, "updated_at": NOW})
    for start in range(0, 20000, 4000):
        insert.run([(f"L{i:06d}", f"c{i}@example.com") for i in range(start, start + 4000)])
    lookup = KeyedSelect([table.c.id, table.c.legacy_id], table.c.legacy_id)

    def plan() -> str:
        return "\n".join(db.session.connection().exec_driver_sql(
            f"EXPLAIN {lookup._array_sql}",
            {"keys": [f"L{i:06d}" for i in range(0, 20000, 5)]}).scalars())

    def settings() -> tuple:
        return db.session.execute(text(
            "SELECT current_setting('enable_seqscan'), current_setting('jit')")).one()

    before = settings()
    assert "Seq Scan on customers" in plan()  # no statistics yet: the planner guesses
    with batch_plans():
        assert "Seq Scan" not in plan()
        assert tuple(settings()) == ("off", "off")
    assert settings() == before
    assert len(lookup([f"L{i:06d}" for i in range(0, 20000, 5)])) == 4000
    db.session.rollback()
