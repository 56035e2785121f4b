"""The purge's files: what cardbridge wrote under instance/ that names or addresses customers.

- `outbox/`: every `.eml` the outbox transport wrote (whole emails: address, name, link, card
  ending) and any half-written `.tmp`;
- `import-reports/`: the CSV of rows an import did not apply (customer ids, addresses, the
  offending values), and any report an operator had written elsewhere (the run names it);
- `uploads/`: files uploaded in the console and not yet (or never) imported;
- `import-jobs/`: the progress files of console imports that ended (file names, messages);
  a queued or running job's file is left to its worker.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from flask import current_app

LIVE_JOB_STATES = ("queued", "running")


def _instance() -> Path:
    return Path(current_app.instance_path)


def remove(path: str | Path, dry_run: bool) -> int:
    """1 if the file was there (and, unless dry, is gone now), else 0."""
    target = Path(path)
    if not target.is_file():
        return 0
    if not dry_run:
        target.unlink(missing_ok=True)
    return 1


def in_instance(path: str | Path, folder: str) -> bool:
    return Path(path).resolve().parent == (_instance() / folder).resolve()


def _job_is_live(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("state") in LIVE_JOB_STATES
    except (OSError, ValueError, AttributeError):
        return False


def purge_files(dry_run: bool) -> Counter:
    counts: Counter = Counter()
    instance = _instance()
    for folder, key, patterns in (("outbox", "files.outbox", ("*.eml", "*.tmp")),
                                  ("import-reports", "files.import_reports", ("*",)),
                                  ("uploads", "files.uploads", ("*",)),
                                  ("import-jobs", "files.import_jobs", ("*.json", "*.tmp"))):
        directory = instance / folder
        if not directory.is_dir():
            continue
        for pattern in patterns:
            for path in sorted(directory.glob(pattern)):
                if folder == "import-jobs" and path.suffix == ".json" and _job_is_live(path):
                    continue
                counts[key] += remove(path, dry_run)
    return counts
