"""The final report as a board member opens it: a local file in chromium, laptop and phone
widths, axe, no request to anywhere (the file is complete in itself)."""

from __future__ import annotations

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.closeout.test_final_report import migration, run  # noqa: F401 (fixture)
from tests.e2e.conftest import shoot

pytestmark = pytest.mark.e2e


def test_the_final_report_reads_well_and_passes_axe(app, migration, tmp_path, browser):  # noqa: F811
    out = tmp_path / "final.html"
    run(app, "--final", str(out))
    requests: list[str] = []
    for label, size in (("laptop", {"width": 1280, "height": 900}),
                        ("phone", {"width": 390, "height": 844})):
        context = browser.new_context(viewport=size)
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        assert page.get_by_role("heading", name="Timeline").is_visible()
        shoot(page, f"final-report-{label}")
        results = Axe().run(page)
        assert results.violations_count == 0, results.generate_report()
        assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
        context.close()
    assert {u.split(":", 1)[0] for u in requests} == {"file"}
