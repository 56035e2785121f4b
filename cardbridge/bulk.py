"""Batch reads and writes through SQLAlchemy Core at the driver's speed, for any engine.

The importer says what to write (a table, the columns each row carries, values shared by every
row); this module has SQLAlchemy compile the statement once and runs it with driver-ready
parameters, skipping the per-row parameter processing that would cost more than parsing the
file. On PostgreSQL a batch is COPYed into a temporary stage table (no WAL, no index, the
cheapest way into the server) and merged with one set-based statement
(`INSERT … SELECT … ON CONFLICT DO NOTHING`, `UPDATE … FROM`); reads are `= ANY(array)`.
Elsewhere (SQLite) it is the driver's executemany of one compiled single-row statement, a loop
in C.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import count, islice
from operator import itemgetter

from sqlalchemy import Column, Integer, MetaData, Table, any_, bindparam, select, update
from sqlalchemy import insert as plain_insert
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable

from cardbridge.extensions import db

BATCH_SIZE = 4000  # rows read, checked against the database and written together
SQLITE_CACHE_MIB = 16
_stage_numbers = count(1)  # stage tables live until commit; each writer gets its own


def _driver_ready(dialect, type_, value):
    if value is None:
        return None
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process else value


def _on_postgresql(conn) -> bool:
    return conn.dialect.name == "postgresql"


class _Bulk:
    """Shared by inserts and updates: the compiled SQL and how to turn rows into parameters.

    Rows are tuples or lists holding the values of `order` (whose SQL types are `types`), in
    that order; the constants are the same for every row and are added here. `build(rows)`
    makes the statement: `rows` is the stage table on PostgreSQL, None elsewhere.
    """

    def __init__(self, build, order: list[str], types: list, constants: dict):
        self.conn = db.session.connection()
        dialect = self.conn.dialect
        self.order = order
        self.staged = _on_postgresql(self.conn)
        stage = None
        if self.staged:
            stage = Table(f"bulk_stage_{next(_stage_numbers)}", MetaData(),
                          *(Column(name, type_) for name, type_ in zip(order, types,
                                                                        strict=True)),
                          prefixes=["TEMPORARY"], postgresql_on_commit="drop")
            self.conn.execute(CreateTable(stage))
            quote = dialect.identifier_preparer.quote
            self.copy_sql = (f"COPY {quote(stage.name)} ({', '.join(map(quote, order))})"
                             " FROM STDIN")
            self.clear_sql = f"TRUNCATE {quote(stage.name)}"
        compiled = build(stage).compile(dialect=dialect, for_executemany=not self.staged)
        self.sql = str(compiled)
        names = list(compiled.positiontup if compiled.positional else compiled.params)
        self.constants = {name: _driver_ready(dialect, compiled.binds[name].type,
                                              constants[name])
                          for name in names if name in constants}
        if self.staged:
            return
        # One sequence per row in the statement's parameter order: the row, then the
        # constants, rearranged only when the statement wants another order.
        self.tail = tuple(self.constants.values())
        slots = {name: at for at, name in enumerate([*order, *self.constants])}
        where = [slots[name] for name in names]
        if not compiled.positional:
            raise NotImplementedError("bulk writes expect a positional DBAPI (sqlite3)")
        self.getter = None if where == list(range(len(where))) else itemgetter(*where)

    def run(self, rows: list) -> None:
        if not rows:
            return
        if self.staged:
            self._run_staged(rows)
            return
        tail = self.tail
        params = [tuple(row) + tail for row in rows] if tail else list(map(tuple, rows))
        if self.getter is not None:  # never for one parameter: that is always in order
            params = list(map(self.getter, params))
        self.conn.exec_driver_sql(self.sql, params)

    def _run_staged(self, rows: list) -> None:
        raw = self.conn.connection.driver_connection
        try:
            with raw.cursor() as cursor, cursor.copy(self.copy_sql) as copy:
                write = copy.write_row
                for row in rows:
                    write(row)
        except raw.Error as exc:  # as SQLAlchemy would raise it, so callers catch one family
            raise DBAPIError.instance(self.copy_sql, None, exc, type(raw).Error,
                                      dialect=self.conn.dialect) from exc
        self.conn.exec_driver_sql(self.sql, self.constants)
        self.conn.exec_driver_sql(self.clear_sql)


def _defaults(table, given: set[str]) -> dict:
    """Python-side column defaults, which SQL run by the driver would otherwise skip."""
    found = {}
    for col in table.c:
        if col.name not in given and col.default is not None and not col.primary_key:
            arg = col.default.arg
            found[col.name] = arg(None) if col.default.is_callable else arg
    return found


class BulkInsert(_Bulk):
    """INSERT … ON CONFLICT DO NOTHING (where the engine has it): a row another writer added
    meanwhile is left alone instead of failing the whole file. `constants` fill the same
    columns of every row; other columns with a Python default get it."""

    def __init__(self, table, columns: Iterable[str], constants: dict | None = None):
        columns = list(columns)
        fixed = dict(constants or {})
        fixed |= _defaults(table, {*columns, *fixed})
        binds = {f"k_{key}": value for key, value in fixed.items()}
        constant_binds = {k: bindparam(f"k_{k}", type_=table.c[k].type) for k in fixed}

        def build(stage):
            if stage is None:
                return _insert_ignoring_conflicts(table).values(
                    {c: bindparam(c, type_=table.c[c].type) for c in columns} | constant_binds)
            rows = select(*(stage.c[c] for c in columns), *constant_binds.values())
            return _insert_ignoring_conflicts(table).from_select([*columns, *fixed], rows)

        super().__init__(build, columns, [table.c[c].type for c in columns], binds)


class BulkUpdate(_Bulk):
    """UPDATE by primary key: rows carry `columns` then the id; `constants` set the same value
    on every row (a column name, or a bind named in `expressions`); `expressions` are SET
    as given, e.g. mapped_at = coalesce(mapped_at, :first_mapped)."""

    def __init__(self, table, columns: Iterable[str], constants: dict | None = None,
                 expressions: dict | None = None):
        columns = list(columns)
        constants = dict(constants or {})
        on_columns = [k for k in constants if k in table.c]
        sets = {k: bindparam(f"k_{k}", type_=table.c[k].type) for k in on_columns}
        sets |= dict(expressions or {})
        binds = {(f"k_{k}" if k in on_columns else k): v for k, v in constants.items()}

        def build(stage):
            if stage is None:
                return update(table).where(table.c.id == bindparam("b_id")).values(
                    {c: bindparam(c, type_=table.c[c].type) for c in columns} | sets)
            return update(table).where(table.c.id == stage.c.b_id).values(
                {c: stage.c[c] for c in columns} | sets)

        super().__init__(build, [*columns, "b_id"],
                         [*(table.c[c].type for c in columns), Integer()], binds)


class KeyedSelect:
    """SELECT columns WHERE key is one of a batch of keys, run by the driver; rows come back as
    plain tuples in the order of `columns` (no type processing: select str and int columns,
    or only test datetimes for None). `from_` names the FROM clause when the columns span a
    join (one statement where two lookups would each cost a round trip)."""

    def __init__(self, columns, key_column, from_=None):
        self.columns, self.key = list(columns), key_column
        self.from_ = from_
        self.conn = db.session.connection()
        self._compiled: dict[int, tuple[str, list | None]] = {}
        if _on_postgresql(self.conn):  # one array parameter, whatever the batch size
            stmt = self._select().where(
                key_column == any_(bindparam("keys", type_=ARRAY(key_column.type))))
            self._array_sql = str(stmt.compile(dialect=self.conn.dialect))

    def _select(self):
        stmt = select(*self.columns)
        return stmt.select_from(self.from_) if self.from_ is not None else stmt

    def __call__(self, keys: Iterable) -> list[tuple]:
        keys = list(keys)
        if not keys:
            return []
        if _on_postgresql(self.conn):
            return self.conn.exec_driver_sql(self._array_sql, {"keys": keys}).all()
        entry = self._compiled.get(len(keys))
        if entry is None:
            marker = bindparam("keys", value=keys, expanding=True)
            compiled = self._select().where(self.key.in_(marker)).compile(
                dialect=self.conn.dialect, compile_kwargs={"render_postcompile": True})
            names = None if compiled.positional else list(compiled.params)
            entry = self._compiled[len(keys)] = (str(compiled), names)
        sql, names = entry
        params = tuple(keys) if names is None else dict(zip(names, keys, strict=True))
        return self.conn.exec_driver_sql(sql, params).all()


def _insert_ignoring_conflicts(table):
    name = db.session.get_bind().dialect.name
    if name == "postgresql":
        insert = postgresql_insert
    elif name == "sqlite":
        insert = sqlite_insert
    else:
        return plain_insert(table)
    return insert(table).on_conflict_do_nothing()


def batches(items: Iterable, size: int | None = None) -> Iterator[list]:
    size = size or BATCH_SIZE
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


@contextmanager
def roomy_sqlite_cache(mebibytes: int = SQLITE_CACHE_MIB):
    """A bigger SQLite page cache for the length of one import, then the old size again.

    With the default 2 MB, index pages of a big table fall out of the cache mid-transaction and
    are written to the WAL and read back, which doubles an import's time. PostgreSQL: no-op.
    """
    conn = db.session.connection()
    if conn.dialect.name != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{int(mebibytes) * 1024}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


# What an import sets for its own transaction on PostgreSQL (see batch_plans).
IMPORT_PLANNER_SETTINGS = {"enable_seqscan": "off", "jit": "off"}


@contextmanager
def batch_plans():
    """PostgreSQL: plan the importer's statements for what they are, batch lookups and merges
    by key, for the length of one import; the previous settings come back afterwards.

    The planner knows nothing of the rows this transaction wrote (autovacuum cannot see them
    until commit), so a table the roster just filled, or migrated_cards filling up during the
    mapping, looks small or unknown, and every batch's `key = ANY(…)` became a sequential scan
    of the whole table: a cost that grows with the table, per batch. So sequential scans are
    discouraged (`enable_seqscan = off` is a cost penalty, not a ban: stage tables are still
    scanned), and JIT is off: that penalty, or a big table's estimate, would otherwise buy
    ~40 ms of compiling for statements that each take a few milliseconds. SQLite: no-op.
    """
    conn = db.session.connection()
    if not _on_postgresql(conn):
        yield
        return
    names = list(IMPORT_PLANNER_SETTINGS)
    before = dict(zip(names, conn.exec_driver_sql(
        "SELECT " + ", ".join(f"current_setting('{name}')" for name in names)).one(),
        strict=True))
    _set_local(conn, IMPORT_PLANNER_SETTINGS)
    try:
        yield
    except BaseException:
        try:  # a failed statement aborted the transaction: its rollback restores them
            _set_local(conn, before)
        except DBAPIError:
            pass
        raise
    _set_local(conn, before)


def _set_local(conn, settings: dict[str, str]) -> None:
    conn.exec_driver_sql(
        "SELECT " + ", ".join(f"set_config('{name}', %({name})s, true)" for name in settings),
        settings)
