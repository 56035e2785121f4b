"""Import runs: the one-transaction driver every import goes through, its result, the report
of rows not applied, and the run history (ImportRun) that makes a repeated file a no-op.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from cardbridge import csv_safe, metrics
from cardbridge.bulk import batch_plans, roomy_sqlite_cache
from cardbridge.extensions import db
from cardbridge.imports.files import ImportFileError, open_source
from cardbridge.models import ImportRun
from cardbridge.models.types import utcnow

log = logging.getLogger(__name__)

KEEP_ERRORS = 100  # kept on the ImportRun row and in the result; the report file has them all

Progress = Callable[[int, int, int], None]  # (rows read, bytes read, file size)


@dataclass
class Problem:
    line: int | None
    customer: str | None
    kind: str  # error | conflict | unknown
    problem: str

    def as_dict(self) -> dict:
        return {"line": self.line, "customer": self.customer, "kind": self.kind,
                "problem": self.problem}


@dataclass
class ImportResult:
    """What a run did, as plain values (the console stores it as JSON)."""

    run_id: int
    kind: str  # roster | mapping
    file_name: str
    format: str | None
    status: str  # succeeded | skipped
    message: str | None
    counts: dict
    errors: list[Problem] = field(default_factory=list)  # rows not applied: the first 100
    error_count: int = 0
    report_path: str | None = None
    identical_to: int | None = None  # the earlier run, when this file was not applied again
    rows: int = 0
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.identical_to is not None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, run: ImportRun, **fields) -> ImportResult:
        return cls(run.id, run.kind, run.file_name, run.format, run.status, run.message,
                   **fields)


class FileImportFailed(ImportFileError):
    """ImportFileError carrying what failed_run() needs to record the attempt."""

    def __init__(self, message: str, *, run: ImportRun, problems: ProblemLog):
        super().__init__(message)
        self.run, self.problems = run, problems


def _count_run(kind: str, rows: int, not_applied: int) -> None:
    session = db.session()
    metrics.count_after_commit(session, metrics.IMPORT_RUNS.labels(kind, "succeeded"))
    metrics.count_after_commit(session, metrics.IMPORT_ROWS.labels(kind), rows)
    metrics.count_after_commit(session, metrics.IMPORT_PROBLEMS.labels(kind), not_applied)


def failed_run(exc: ImportFileError) -> ImportRun | None:
    """An ImportRun recording a failed attempt: add it after the rollback, then commit."""
    run, problems = getattr(exc, "run", None), getattr(exc, "problems", None)
    if run is None or problems is None:
        return None  # the file could not even be opened: there is nothing to name
    metrics.count_after_commit(db.session(), metrics.IMPORT_RUNS.labels(run.kind, "failed"))
    return ImportRun(
        kind=run.kind, file_name=run.file_name, sha256=run.sha256, size_bytes=run.size_bytes,
        format=run.format, status="failed", strict=run.strict, started_at=run.started_at,
        finished_at=utcnow(), message=str(exc)[:500], counts={},
        errors=[p.as_dict() for p in problems.kept], error_count=problems.count,
        report_path=problems.path,
    )


class ProblemLog:
    """Rows not applied: counted by kind, the first few kept, all streamed to a CSV report.

    Problems of one batch are held until flush() and written in line order: parsing finds
    some while the batch fills, the database checks find the rest after.
    """

    def __init__(self, directory: Path, stem: str):
        self.directory, self.stem = directory, stem
        self.count = 0
        self.by_kind: Counter[str] = Counter()
        self.kept: list[Problem] = []
        self.path: str | None = None
        self._pending: list[Problem] = []
        self._fh = self._writer = None

    def add(self, line: int | None, customer: str | None, kind: str, problem: str) -> None:
        self.count += 1
        self.by_kind[kind] += 1
        self._pending.append(Problem(line, customer, kind, problem))

    def flush(self) -> None:
        if not self._pending:
            return
        self._pending.sort(key=lambda p: p.line or 0)  # stable: JSON entries keep file order
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self.directory / f"{self.stem}.csv"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # names customers
            self._fh = open(fd, "w", newline="", encoding="utf-8")
            self._writer = csv_safe.Writer(self._fh)
            self._writer.writerow(("line", "customer", "kind", "problem"))
            self.path = str(path)
        self._writer.writerows((p.line or "", p.customer or "", p.kind, p.problem)
                               for p in self._pending)
        self.kept.extend(self._pending[: KEEP_ERRORS - len(self.kept)])
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@contextmanager
def _app_heap_frozen() -> Iterator[None]:
    """Keep the objects that exist before the run out of the cyclic collector's passes.

    A file of millions allocates millions of short-lived tuples, and every full pass of the
    collector would walk all of Flask's, SQLAlchemy's and the app's objects again: a third of an
    import's time. The run's own garbage is freed by reference counting as before.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def identical_to(kind: str, sha256: str) -> ImportRun | None:
    """The last applied run, if it loaded this very file (any other import since re-arms it)."""
    last = db.session.execute(
        select(ImportRun).where(ImportRun.status == "succeeded")
        .order_by(ImportRun.id.desc()).limit(1)
    ).scalar_one_or_none()
    if last is not None and last.kind == kind and last.sha256 == sha256:
        return last
    return None


def run_import(kind: str, source, *, name: str | None, strict: bool,
               progress: Progress | None, report_dir, now: datetime | None,
               apply) -> ImportResult:
    """Hash the file, skip it if it is the last one applied, else apply it and record the run.

    `apply(source, run, problems, progress, now) -> counts` does the work in the session's
    transaction; a file-level ImportFileError (or --strict with rows not applied) comes back
    as FileImportFailed so the caller can roll back and record the attempt with failed_run().
    """
    clock = time.perf_counter()
    now = now or utcnow()
    src = open_source(source, name)
    try:
        run = ImportRun(kind=kind, file_name=src.name[:255], sha256=src.sha256,
                        size_bytes=src.size, strict=strict, started_at=now, counts={}, errors=[])
        earlier = identical_to(kind, src.sha256)
        if earlier is not None:
            run.status, run.format, run.finished_at = "skipped", earlier.format, utcnow()
            run.message = (f"identical to run #{earlier.id} "
                           f"({earlier.finished_at:%Y-%m-%d %H:%M} UTC); nothing changed")
            db.session.add(run)
            db.session.flush()
            metrics.count_after_commit(db.session(), metrics.IMPORT_RUNS.labels(kind, "skipped"))
            return ImportResult.of(run, counts={}, identical_to=earlier.id,
                                   seconds=time.perf_counter() - clock)
        directory = Path(report_dir or Path(current_app.instance_path) / "import-reports")
        stamp = f"{utcnow():%Y%m%d-%H%M%S-%f}"  # two runs in one second get two reports
        problems = ProblemLog(directory, f"{stamp}-{kind}-{src.sha256[:8]}")
        try:
            with roomy_sqlite_cache(), batch_plans(), _app_heap_frozen():
                counts = apply(src, run, problems, progress, now)
        except ImportFileError as exc:
            raise FileImportFailed(f"{src.name}: {exc}", run=run, problems=problems) from None
        finally:
            problems.close()
        if strict and problems.count:
            raise FileImportFailed(
                f"{src.name}: {problems.count:,} row(s) could not be applied and --strict is set;"
                f" nothing imported (see {problems.path})", run=run, problems=problems)
        counts.update({f"problems_{k}": n for k, n in problems.by_kind.items()})
        run.status, run.counts, run.finished_at = "succeeded", dict(counts), utcnow()
        run.errors = [p.as_dict() for p in problems.kept]
        run.error_count, run.report_path = problems.count, problems.path
        db.session.add(run)
        db.session.flush()
        db.session.expire_all()  # rows changed underneath any loaded Customer objects
        _count_run(kind, counts.get("rows", 0), problems.count)
        # Counts and ids only: row contents (emails, card details) never reach the log.
        log.info("import run %s: %s %s (%s) %s", run.id, kind, run.file_name, run.format,
                 run.counts)
        return ImportResult.of(run, counts=run.counts, errors=problems.kept,
                               error_count=problems.count, report_path=problems.path,
                               rows=counts.get("rows", 0), seconds=time.perf_counter() - clock)
    finally:
        if src.fh is not source:
            src.fh.close()
