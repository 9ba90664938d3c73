"""Open a generated report in a real headless browser (Debian's chromium via chromedriver).

The browser comes from ``scripts/install_browser.sh`` (``make test`` runs it); the fixture
below runs it too when chromium is missing, so this test never silently skips.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certify.report import ReportOptions, make_report
from tests.report_fixtures import EVIL, write_fixture_results

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def ensure_browser() -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], check=True)
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "install_browser.sh did not install chromium"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    ensure_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,2000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def test_report_renders_in_chromium(driver: Any, tmp_path: Path) -> None:
    results = write_fixture_results(tmp_path / "results")
    written = make_report(results, tmp_path / "report", ReportOptions(title=f"browser check {EVIL}"))
    driver.get(written.html.as_uri())

    # the title is the user's text, shown literally (the <script> in it did not run)
    assert driver.title == f"browser check {EVIL}"
    assert driver.execute_script("return window.__pwned === undefined && document.scripts.length === 0")
    assert driver.execute_script("return document.querySelector('h1').textContent") == f"browser check {EVIL}"

    # the summary table: a header row and one row per result, with the escaped property name as text
    rows = driver.execute_script("return document.querySelectorAll('#summary tbody tr').length")
    assert rows == 8
    cell = driver.execute_script("return document.querySelector('#summary tbody tr td:nth-child(2)').textContent")
    assert cell == EVIL

    # every image decoded: plots and the counterexample picture
    sizes = driver.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
    assert len(sizes) >= 4
    assert all(complete and w > 0 and h > 0 for complete, w, h in sizes)

    # no console errors (a failed image or a blocked resource would log one)
    errors = [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
    assert errors == []

    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000


def test_dump_dom_without_webdriver(tmp_path: Path) -> None:
    """The plain `chromium --headless --dump-dom` path: the page parses into the same DOM."""
    ensure_browser()
    results = write_fixture_results(tmp_path / "results")
    written = make_report(results, tmp_path / "report", ReportOptions(title=EVIL))
    profile = tmp_path / "profile"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--dump-dom", written.html.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert '<table id="summary">' in dom and "&lt;script&gt;" in dom and "<script" not in dom
    assert dom.count("<img src=\"data:image/png;base64,") >= 4
