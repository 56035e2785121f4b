"""The migration's end: the final report (and, beside it, what closing it out needs)."""
