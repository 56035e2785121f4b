"""What console forms and lists read from a request: the staff member's reason, the page."""

from __future__ import annotations

from flask import request

MAX_REASON = 500


def form_reason() -> str | None:
    """The form's `reason`, whitespace collapsed and cut to MAX_REASON; None under 3 letters."""
    reason = " ".join(request.form.get("reason", "").split())
    return reason[:MAX_REASON] if len(reason) >= 3 else None


def page_number(last: int = 10_000) -> int:
    """`?page=`, from 1 to `last`; anything else is page 1."""
    try:
        return max(1, min(int(request.args.get("page", 1)), last))
    except ValueError:
        return 1
