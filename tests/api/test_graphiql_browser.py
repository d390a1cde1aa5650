"""GraphiQL at /graphql works in a real browser without touching the internet.

Drives Debian's headless Chromium through chromedriver. Skipped when either is missing,
unless CONVEYOR_REQUIRE_BROWSER=1, which turns the skip into a failure (for CI images that
are meant to have a browser). CONVEYOR_BROWSER_SCREENSHOT=path saves a screenshot there.
"""

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
#: The vendored files the page must load from our server, relative to the assets mount.
ASSETS = (
    "react@18.2.0/umd/react.production.min.js",
    "react-dom@18.2.0/umd/react-dom.production.min.js",
    "js-cookie@3.0.5/dist/js.cookie.min.js",
    "graphiql@3.8.3/graphiql.min.css",
    "graphiql@3.8.3/graphiql.min.js",
    "@graphiql/plugin-explorer@1.0.2/dist/style.css",
    "@graphiql/plugin-explorer@1.0.2/dist/index.umd.js",
)
QUERY = "{ __typename }"
TIMEOUT = 30.0

pytestmark = pytest.mark.browser


def _missing_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def driver() -> Iterator[Any]:
    missing = _missing_browser()
    if missing is not None:
        if os.environ.get("CONVEYOR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CONVEYOR_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(f"no headless browser: {missing}")

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


def _wait_for(browser: Any, script: str, what: str, timeout: float = TIMEOUT) -> Any:
    """Poll `script` (a JavaScript expression's body) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def test_graphiql_runs_a_query_offline(driver: Any, request: pytest.FixtureRequest) -> None:
    # Only now, with a browser at hand, start the (possibly expensive) live server.
    base_url: str = request.getfixturevalue("live_server_url")
    base_url = base_url.rstrip("/")

    # strawberry's page reads the initial query from `q` (a `query` parameter would make
    # the GraphQL view execute it and answer JSON instead of the page).
    driver.get(f"{base_url}/graphql?q={quote(QUERY)}")
    try:
        _wait_for(
            driver,
            "const cm = document.querySelector('.graphiql-query-editor .CodeMirror');"
            "return cm && cm.CodeMirror && cm.CodeMirror.getValue();",
            "the GraphiQL query editor",
        )
        editor_text = driver.execute_script(
            "return document.querySelector('.graphiql-query-editor .CodeMirror')"
            ".CodeMirror.getValue();"
        )
        assert editor_text == QUERY

        driver.find_element("css selector", "button.graphiql-execute-button").click()
        response_text = _wait_for(
            driver,
            "const cm = document.querySelector('.graphiql-response .CodeMirror');"
            "return cm && cm.CodeMirror && cm.CodeMirror.getValue();",
            "the response pane",
        )
        assert '"__typename":' in response_text, response_text
        assert '"data"' in response_text, response_text
        assert '"errors"' not in response_text, response_text
        # The text is also what the user sees on screen.
        shown = driver.find_element("css selector", ".graphiql-response").text
        assert "__typename" in shown, shown

        resources: list[str] = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);"
        )
        foreign = [url for url in resources if not url.startswith(base_url + "/")]
        assert not foreign, f"the page reached beyond {base_url}: {foreign}"
        for asset in ASSETS:
            assert f"{base_url}/graphiql-assets/{asset}" in resources, (asset, resources)

        # A failed integrity check or a script error would be logged as SEVERE.
        errors = [
            entry["message"]
            for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"
        ]
        assert not errors, errors
    finally:
        screenshot = os.environ.get("CONVEYOR_BROWSER_SCREENSHOT")
        if screenshot:
            driver.save_screenshot(screenshot)
