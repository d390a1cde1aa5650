"""GraphiQL at /graphql works in a real browser without touching the internet, with the API
token a person pastes into its "API token" field.

Drives Debian's headless Chromium through chromedriver (see tests/browser.py).
CONVEYOR_BROWSER_SCREENSHOT=path saves a screenshot there.
"""

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser import chromium, requested_urls, wait_for
from tests.conftest import ConveyorProcess

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
#: Refused for its missing argument, which shows that the server accepted the socket.
SUBSCRIPTION = "subscription { taskStatusChanged { sequence } }"
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESPONSE_PANE = ".graphiql-response .CodeMirror"
HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"
TOKEN_FIELD = "#conveyor-api-token"

pytestmark = pytest.mark.browser


@pytest.fixture
def driver() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def _editor_text(selector: str) -> str:
    """A script returning the text of the CodeMirror editor at `selector`, if it is there."""
    return (
        f"const cm = document.querySelector({json.dumps(selector)});"
        "return cm && cm.CodeMirror && cm.CodeMirror.getValue();"
    )


def _open_graphiql(browser: Any, base_url: str, query: str) -> None:
    # strawberry's page reads the initial query from `q` (a `query` parameter would make
    # the GraphQL view execute it and answer JSON instead of the page).
    browser.get(f"{base_url}/graphql?q={quote(query)}")
    editor_text = wait_for(browser, _editor_text(QUERY_EDITOR), "the GraphiQL query editor")
    assert editor_text == query


def _set_editor_text(browser: Any, selector: str, text: str) -> None:
    browser.execute_script(
        "document.querySelector(arguments[0]).CodeMirror.setValue(arguments[1]);", selector, text
    )


def _run(browser: Any) -> str:
    """Run the editor's operation; the response pane's text once it shows one."""
    # Emptied first, so that the text waited for is this run's answer and not, say, the
    # error of the schema fetch that GraphiQL shows there too.
    _set_editor_text(browser, RESPONSE_PANE, "")
    browser.find_element("css selector", "button.graphiql-execute-button").click()
    text: str = wait_for(browser, _editor_text(RESPONSE_PANE), "the response pane")
    return text


def _show_documentation(browser: Any) -> str:
    """The documentation explorer's text, once it shows the schema's root types."""
    browser.find_element("css selector", 'button[aria-label="Show Documentation Explorer"]').click()
    text: str = wait_for(
        browser,
        "const docs = document.querySelector('.graphiql-doc-explorer');"
        "return docs && docs.innerText.includes('Root Types') && docs.innerText;",
        "the documentation explorer to show the schema",
    )
    return text


def test_graphiql_runs_a_query_offline_with_the_pasted_token(
    driver: Any, request: pytest.FixtureRequest
) -> None:
    from selenium.webdriver.common.keys import Keys

    # Only now, with a browser at hand, start the (possibly expensive) live server.
    server: ConveyorProcess = request.getfixturevalue("live_server")
    base_url = server.url.rstrip("/")
    assert server.token, "the live server wrote no admin token"

    try:
        _open_graphiql(driver, base_url, QUERY)
        # Without a token the server refuses the schema fetch, and GraphiQL says why.
        schema_refusal = wait_for(
            driver, _editor_text(RESPONSE_PANE), "the schema fetch to be refused"
        )
        assert "UNAUTHENTICATED" in schema_refusal, schema_refusal
        refused = _run(driver)
        assert "UNAUTHENTICATED" in refused, refused
        assert '"data"' not in refused, refused

        # What a person does: paste the token, then press the run button.
        driver.find_element("css selector", TOKEN_FIELD).send_keys(server.token)
        answered = _run(driver)
        assert '"__typename": "Query"' in answered, answered
        assert '"errors"' not in answered, answered
        # The text is also what the user sees on screen.
        shown = driver.find_element("css selector", ".graphiql-response").text
        assert "__typename" in shown, shown
        # The schema was fetched again, with the token.
        assert "Query" in _show_documentation(driver)

        # A reload keeps the token within the tab; it never reaches localStorage.
        driver.refresh()
        wait_for(driver, _editor_text(QUERY_EDITOR), "the GraphiQL query editor")
        kept = driver.execute_script(
            "return document.querySelector(arguments[0]).value;", TOKEN_FIELD
        )
        assert kept == server.token
        assert server.token not in driver.execute_script("return JSON.stringify(localStorage);")
        assert '"__typename": "Query"' in _run(driver)

        # An Authorization header typed into GraphiQL's Headers editor wins over the field,
        # whatever its letter case: with a wrong token in the field, the header's one works.
        driver.find_element("xpath", "//button[normalize-space()='Headers']").click()
        _set_editor_text(
            driver, HEADERS_EDITOR, json.dumps({"authorization": f"Bearer {server.token}"})
        )
        field = driver.find_element("css selector", TOKEN_FIELD)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys("cvy_not-a-token")
        overridden = _run(driver)
        assert '"__typename": "Query"' in overridden, overridden

        resources = requested_urls(driver)
        foreign = [url for url in resources if not url.startswith(base_url + "/")]
        assert not foreign, f"the page reached beyond {base_url}: {foreign}"
        for asset in ASSETS:
            assert f"{base_url}/graphiql-assets/{asset}" in resources, (asset, resources)

        # A failed integrity check or a script error would be logged as SEVERE; so is each
        # request the server refused, which this test made on purpose.
        refusal = (
            f"{base_url}/graphql - Failed to load resource: "
            "the server responded with a status of 401"
        )
        errors = [
            entry["message"]
            for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE" and not entry["message"].startswith(refusal)
        ]
        assert not errors, errors
    finally:
        screenshot = os.environ.get("CONVEYOR_BROWSER_SCREENSHOT")
        if screenshot:
            driver.save_screenshot(screenshot)


def test_graphiql_subscribes_with_the_pasted_token(
    driver: Any, request: pytest.FixtureRequest
) -> None:
    # Token-less, the server closes the WebSocket (4403), and the page's graphql-ws client
    # retries that for about 40 s before it shows the error: the API tests pin the refusal.
    from selenium.webdriver.common.keys import Keys

    server: ConveyorProcess = request.getfixturevalue("live_server")
    _open_graphiql(driver, server.url.rstrip("/"), SUBSCRIPTION)
    driver.find_element("css selector", TOKEN_FIELD).send_keys(server.token, Keys.ENTER)
    answered = _run(driver)
    # Past connection_init: the subscription itself refuses its missing argument.
    assert "give exactly one of" in answered, answered
