"""Headless Chromium for the browser tests, through Debian's chromium and chromedriver.

Without them a test is skipped, unless CONVEYOR_REQUIRE_BROWSER=1, which turns the skip into
a failure (for CI images that are meant to have a browser).
"""

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1400,900",
)
TIMEOUT = 30.0


def missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


def skip_without_browser() -> None:
    """Skip the test when there is no browser, or fail it if CI requires one."""
    missing = missing_browser()
    if missing is not None:
        if os.environ.get("CONVEYOR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CONVEYOR_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(f"no headless browser: {missing}")


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile) driven by selenium, quit on exit."""
    skip_without_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = tempfile.mkdtemp(prefix="conveyor-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    try:
        browser = webdriver.Chrome(
            service=Service(executable_path=str(CHROMEDRIVER)), options=options
        )
    except BaseException:
        shutil.rmtree(profile, ignore_errors=True)
        raise
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(
    browser: Any, script: str, what: str, timeout: float = TIMEOUT, explain: str | None = None
) -> Any:
    """Poll `script` (a JavaScript function body) until it returns something truthy.

    On a timeout the error says what the page showed: the value of `explain` (a JavaScript
    function body), the live indicator, and the browser console's last lines."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}; "
                + page_state(browser, explain)
            )
        time.sleep(0.1)


def page_state(browser: Any, explain: str | None) -> str:
    """What a failed wait saw: `explain`'s value, the live indicator, console lines."""
    shown = browser.execute_script(explain) if explain else None
    live = browser.execute_script(
        "return document.querySelector('.live')?.textContent ?? 'no live indicator'"
    )
    console = [entry["message"] for entry in browser.get_log("browser")][-10:]
    return f"page: {shown!r}, live: {live!r}, console: {console!r}"


def requested_urls(browser: Any) -> list[str]:
    """Every URL the page has loaded something from (scripts, styles, fetches, sockets)."""
    urls: list[str] = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name);"
    )
    return urls
