"""Import runs: one row per roster or mapping file an operator (or the console) loaded."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from cardbridge.extensions import db
from cardbridge.models.types import UTCDateTime, utcnow

IMPORT_KINDS = ("roster", "mapping", "prices", "subscriptions")
# succeeded: applied (maybe with rows listed as not applied) · skipped: identical to the last
# applied file · failed: a file-level error or --strict abort, nothing applied
IMPORT_STATUSES = ("succeeded", "skipped", "failed")


class ImportRun(db.Model):
    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # roster | mapping
    file_name: Mapped[str] = mapped_column(String(255))  # base name only, never a full path
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(default=0)
    # roster | stripe_json | card_csv | pm_csv | copy_csv (None when the file was unreadable)
    format: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    strict: Mapped[bool] = mapped_column(default=False)
    counts: Mapped[dict] = mapped_column(JSON, default=dict)
    # The first rows not applied ({"line", "customer", "kind", "problem"}); all are in the report.
    errors: Mapped[list] = mapped_column(JSON, default=list)
    error_count: Mapped[int] = mapped_column(default=0)
    message: Mapped[str | None] = mapped_column(String(500))
    report_path: Mapped[str | None] = mapped_column(String(1000))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<ImportRun {self.id} {self.kind} {self.status} {self.file_name}>"
