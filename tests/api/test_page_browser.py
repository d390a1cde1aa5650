"""The pipeline page at / in a real browser: it shows the demo's pipeline, follows changes
made anywhere within a second, lets a DBA approve prod by clicking, opens issues through its
form with the API's problems on the fields, and reaches nothing but the server.

One `conveyor serve --demo` and one browser serve the whole module (tests act on different
tasks); see tests/browser.py for the browser. CONVEYOR_PAGE_SCREENSHOT=path saves a
screenshot of the demo's pipeline there (the README's picture).
"""

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from conveyor.settings import Settings
from tests.browser import chromium, requested_urls, wait_for
from tests.conftest import ConveyorProcess, conveyor_env, run_conveyor, start_server

pytestmark = pytest.mark.browser

DEMO_ISSUE = "Add the orders table"
TOKEN_FIELD = "#conveyor-api-token"
#: What a person may act with on the page: every one must be reachable by keyboard.
FOCUSABLE = "a[href], button:not([disabled]), input, select, textarea"

PIPELINE_QUERY = """
query { issues(first: 100) { edges { node { id title pipeline { id stages {
  id environment { name } tasks { id name status version } } } } } } }
"""
CREATE_ISSUE = "mutation ($input: CreateIssueInput!) { createIssue(input: $input) { id } }"
IDS_QUERY = """
query { environments { edges { node { id name } } } instances { edges { node { id } } }
        databases { edges { node { id name } } } }
"""


@pytest.fixture(scope="module")
def env(module_database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    settings = Settings(
        database_url=module_database_url,
        data_dir=tmp_path_factory.mktemp("page") / "data",
        secret_key=Fernet.generate_key().decode(),
    )
    return conveyor_env(settings)


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[ConveyorProcess]:
    process = start_server(env, Path(env["CONVEYOR_DATA_DIR"]).parent / "server.log", "--demo")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dba_token(server: ConveyorProcess, env: dict[str, str]) -> str:
    """A DBA's token: not the creator of the demo's issue, so it may approve prod."""
    created = run_conveyor(["token", "create", "--actor", "dba", "--role", "DBA"], env)
    created.check_returncode()
    return created.stdout.strip()


@pytest.fixture(scope="module")
def browser(server: ConveyorProcess) -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def api(
    server: ConveyorProcess,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> Any:
    """The data of an operation that must succeed, sent as the first admin or `token`."""
    answer = httpx.post(
        f"{server.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {token or server.token}"},
        timeout=60,
    ).json()
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def demo_tasks(server: ConveyorProcess) -> tuple[str, dict[tuple[str, str], dict[str, Any]]]:
    """The demo issue's id and its tasks by (environment, task name)."""
    edges = api(server, PIPELINE_QUERY)["issues"]["edges"]
    issue = next(edge["node"] for edge in edges if edge["node"]["title"] == DEMO_ISSUE)
    tasks = {
        (stage["environment"]["name"], task["name"]): task
        for stage in issue["pipeline"]["stages"]
        for task in stage["tasks"]
    }
    return issue["id"], tasks


def issue_stages(server: ConveyorProcess, issue_id: str) -> list[dict[str, Any]]:
    """The issue's stages as {"id", "tasks": [task ids]}."""
    node = api(
        server,
        "query ($id: ID!) { node(id: $id) { ... on Issue {"
        " pipeline { stages { id tasks { id } } } } } }",
        {"id": issue_id},
    )["node"]
    return [
        {"id": stage["id"], "tasks": [task["id"] for task in stage["tasks"]]}
        for stage in node["pipeline"]["stages"]
    ]


def issue_task_ids(server: ConveyorProcess, issue_id: str) -> list[str]:
    return [task for stage in issue_stages(server, issue_id) for task in stage["tasks"]]


def sign_in(browser: Any, server: ConveyorProcess, token: str, actor: str = "admin") -> None:
    """Open the page and paste `token` into its API token field, as a person does; return
    once the page says it acts as `actor`."""
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server.url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    field = wait_for(
        browser, f"return document.querySelector('{TOKEN_FIELD}')", "the API token field"
    )
    field.send_keys(token, Keys.ENTER)
    wait_for(
        browser,
        "const actor = document.querySelector('[data-actor]');"
        f"return actor && actor.textContent === {actor!r};",
        f"the page to say it acts as {actor}",
    )


def open_pipeline(browser: Any, server: ConveyorProcess, issue_id: str) -> None:
    browser.execute_script(
        "location.hash = '#/issues/' + encodeURIComponent(arguments[0])", issue_id
    )
    wait_for(
        browser,
        "return document.querySelector('.live-live')",
        "the pipeline, live",
    )


def task_status(browser: Any, task_id: str) -> str | None:
    status: str | None = browser.execute_script(
        "const chip = document.querySelector(`li.task[data-task-id='${arguments[0]}']`);"
        "return chip && chip.querySelector('[data-status]').dataset.status;",
        task_id,
    )
    return status


def seconds_until_changed(browser: Any, task_id: str, shown: str, timeout: float = 5) -> float:
    """Seconds until the task's chip shows another status than `shown`."""
    started = time.monotonic()
    while task_status(browser, task_id) == shown:
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the page still shows {shown} after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def prod_ids(server: ConveyorProcess) -> tuple[str, str, str]:
    """The ids of the demo's prod environment, its instance and demo_prod."""
    ids = api(server, IDS_QUERY)
    prod = next(
        e["node"]["id"] for e in ids["environments"]["edges"] if e["node"]["name"] == "prod"
    )
    instance = ids["instances"]["edges"][0]["node"]["id"]
    database = next(
        e["node"]["id"] for e in ids["databases"]["edges"] if e["node"]["name"] == "demo_prod"
    )
    return prod, instance, database


def create_prod_issue(
    server: ConveyorProcess, title: str, stages: int, tasks: int, statement: str = "SELECT 1"
) -> str:
    """A new issue whose tasks all wait for approval in prod (none runs); its id."""
    prod, instance, database = prod_ids(server)
    task = {
        "type": "DATA_UPDATE",
        "instanceId": instance,
        "databaseId": database,
        "statement": statement,
    }
    plan = [{"environmentId": prod, "tasks": [task] * tasks} for _ in range(stages)]
    created = api(server, CREATE_ISSUE, {"input": {"title": title, "stages": plan}})
    issue_id: str = created["createIssue"]["id"]
    return issue_id


def test_the_page_shows_the_demo_pipeline_and_follows_a_change_within_a_second(
    server: ConveyorProcess, browser: Any
) -> None:
    sign_in(browser, server, server.token)
    assert browser.find_element("css selector", "[data-role]").text == "ADMIN"
    _, tasks = demo_tasks(server)
    link = wait_for(
        browser,
        f"return [...document.querySelectorAll('.issue-table a')]"
        f".find(a => a.textContent === {DEMO_ISSUE!r})",
        "the demo's issue in the list",
    )
    link.click()
    wait_for(browser, "return document.querySelector('.live-live')", "the pipeline, live")
    headings = [h.text.lower() for h in browser.find_elements("css selector", ".stage-head h3")]
    assert headings == ["dev", "test", "prod"], headings
    prod_seed = tasks[("prod", "seed orders")]
    assert task_status(browser, prod_seed["id"]) == "PENDING_APPROVAL"
    chip = browser.find_element("css selector", f"li.task[data-task-id='{prod_seed['id']}']")
    # Readable without colour: the status in words, and a glyph of its own.
    assert "waiting for approval" in chip.text
    assert "waits: waiting for approval" in chip.text
    assert "demo_prod on local" in chip.text

    screenshot = os.environ.get("CONVEYOR_PAGE_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)

    # A change made elsewhere, through the API: the page shows it within a second.
    api(
        server,
        "mutation ($input: SkipTaskInput!) { skipTask(input: $input) { id } }",
        {"input": {"taskId": prod_seed["id"], "reason": "seeded by hand"}},
    )
    seconds = seconds_until_changed(browser, prod_seed["id"], "PENDING_APPROVAL")
    assert task_status(browser, prod_seed["id"]) == "SKIPPED"
    assert "seeded by hand" in chip.text
    assert seconds < 1.0, f"the change took {seconds:.2f} s to show"

    foreign = [url for url in requested_urls(browser) if not url.startswith(server.url + "/")]
    assert not foreign, f"the page reached beyond {server.url}: {foreign}"
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry.get("level") == "SEVERE"
        # The page's first reads, before a token was pasted, are refused on purpose.
        and "the server responded with a status of 401" not in entry["message"]
    ]
    assert not errors, errors
    # Nor could it: its content security policy lets it reach its own server only.
    violated = browser.execute_async_script(
        "const done = arguments[0];"
        "document.addEventListener('securitypolicyviolation',"
        "  event => done(event.effectiveDirective), {once: true});"
        "fetch('http://127.0.0.2:9/').catch(() => {});"
    )
    assert violated == "connect-src"


def assert_tab_reaches_every_control(browser: Any, view: str) -> None:
    """Tab, from nothing focused, reaches every control of the page, each with an outline."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    wanted: int = browser.execute_script(
        "const all = [...document.querySelectorAll(arguments[0])];"
        "all.forEach((element, index) => element.dataset.kb = index);"
        "document.activeElement.blur(); return all.length;",
        FOCUSABLE,
    )
    reached: set[str] = set()
    without_outline = []
    for _ in range(wanted + 5):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        index, outline = browser.execute_script(
            "const element = document.activeElement;"
            "return [element.dataset.kb, getComputedStyle(element).outlineStyle];"
        )
        if index is not None:
            reached.add(index)
            if outline == "none":
                without_outline.append(index)
    assert reached == {str(index) for index in range(wanted)}, (
        f"on {view}, Tab reached {len(reached)} of {wanted} controls"
    )
    assert not without_outline, f"on {view}, a focused control shows no outline"


def test_keyboard_alone_reaches_every_action_with_a_visible_focus(
    server: ConveyorProcess, browser: Any
) -> None:
    sign_in(browser, server, server.token)
    wait_for(browser, "return document.querySelector('.issue-table a')", "the issue list")
    assert_tab_reaches_every_control(browser, "the issue list")

    issue_id, _ = demo_tasks(server)
    open_pipeline(browser, server, issue_id)
    assert browser.find_elements("css selector", "button[data-action='APPROVE']")
    assert browser.find_elements("css selector", "button[data-action='APPROVE_STAGE']")
    assert_tab_reaches_every_control(browser, "the pipeline")

    browser.execute_script("location.hash = '#/new'")
    wait_for(browser, "return document.querySelector('#field-title')", "the form")
    assert_tab_reaches_every_control(browser, "the form")


def test_a_dba_approves_prod_by_clicking_and_a_second_browser_sees_it(
    server: ConveyorProcess, browser: Any, dba_token: str
) -> None:
    issue_id, tasks = demo_tasks(server)
    prod_schema = tasks[("prod", "create orders")]
    sign_in(browser, server, dba_token, actor="dba")
    open_pipeline(browser, server, issue_id)
    with chromium() as second:
        sign_in(second, server, server.token)
        open_pipeline(second, server, issue_id)
        assert task_status(second, prod_schema["id"]) == "PENDING_APPROVAL"

        browser.find_element(
            "css selector", f"button[data-action='APPROVE'][data-task-id='{prod_schema['id']}']"
        ).click()
        seconds_until_changed(browser, prod_schema["id"], "PENDING_APPROVAL")
        # Approved, it waits for the earlier stages, or runs if they are done already.
        seconds = seconds_until_changed(second, prod_schema["id"], "PENDING_APPROVAL")
        assert seconds < 1.0, f"the second browser saw the approval after {seconds:.2f} s"
    _, after = demo_tasks(server)
    assert after[("prod", "create orders")]["status"] != "PENDING_APPROVAL"


def test_an_edit_made_meanwhile_is_refused_inline(server: ConveyorProcess, browser: Any) -> None:
    issue_id = create_prod_issue(server, "Edited twice", stages=1, tasks=1)
    task_id = issue_task_ids(server, issue_id)[0]
    sign_in(browser, server, server.token)
    open_pipeline(browser, server, issue_id)
    browser.find_element(
        "css selector", f"button[data-action='EDIT'][data-task-id='{task_id}']"
    ).click()
    editor = wait_for(
        browser,
        f"return document.querySelector(\"li[data-task-id='{task_id}'] textarea\")",
        "the statement editor",
    )
    # Someone else edits the task meanwhile: saving the page's copy must not overwrite it.
    api(
        server,
        "mutation ($input: UpdateTaskStatementInput!) {"
        " updateTaskStatement(input: $input) { id } }",
        {"input": {"taskId": task_id, "statement": "SELECT 2"}},
    )
    editor.send_keys(" -- mine")
    browser.find_element("css selector", "button[data-action='EDIT-SAVE']").click()
    refusal = wait_for(
        browser,
        f"const r = document.querySelector(\"[data-refusal-for='{task_id}']\");"
        "return r && r.textContent;",
        "the refusal",
    )
    assert "version" in refusal, refusal


def test_the_form_shows_a_refused_field_then_opens_the_issue(
    server: ConveyorProcess, browser: Any
) -> None:
    from selenium.webdriver.support.ui import Select

    sign_in(browser, server, server.token)
    browser.execute_script("location.hash = '#/new'")
    title = wait_for(browser, "return document.querySelector('#field-title')", "the form")
    title.send_keys("Add the invoices table")
    Select(
        browser.find_element("css selector", "#field-stages-0-tasks-0-databaseId")
    ).select_by_visible_text("demo_dev")
    statement = browser.find_element("css selector", "#field-stages-0-tasks-0-statement")
    statement.send_keys("BEGIN; CREATE TABLE invoices (id bigint); COMMIT")
    browser.find_element("css selector", "button[type='submit']").click()
    problem = wait_for(
        browser,
        "const p = document.querySelector(\"[data-field='stages.0.tasks.0.statement'] .problem\");"
        "return p && p.textContent;",
        "the statement's problem",
    )
    assert "transaction" in problem.lower(), problem
    assert statement.get_attribute("aria-invalid") == "true"
    assert browser.current_url.endswith("#/new")

    statement.clear()
    statement.send_keys("CREATE TABLE IF NOT EXISTS invoices (id bigint PRIMARY KEY)")
    browser.find_element("css selector", "button[type='submit']").click()
    wait_for(
        browser,
        "const h = document.querySelector('.pipeline-head h2');"
        "return h && h.textContent === 'Add the invoices table';",
        "the new issue's pipeline",
    )
    titles = [edge["node"]["title"] for edge in api(server, PIPELINE_QUERY)["issues"]["edges"]]
    assert "Add the invoices table" in titles


def test_a_5000_task_pipeline_renders_quickly(
    server: ConveyorProcess, browser: Any, dba_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    issue_id = create_prod_issue(server, "Five thousand", stages=5, tasks=1000)
    sign_in(browser, server, server.token)
    browser.execute_script("window.conveyorRenders = [];")
    open_pipeline(browser, server, issue_id)
    render = wait_for(
        browser,
        "return window.conveyorRenders.find(r => r.total === 5000)",
        "the 5,000-task pipeline to render",
        timeout=60,
    )
    # Read and drawn a page at a time: scrolling down, 400 px a frame for 2 s, brings more
    # chips; the longest frame says how smoothly.
    shown = len(browser.find_elements("css selector", "li.task"))
    scroll = browser.execute_async_script(
        "const done = arguments[0];"
        "let last = performance.now(), longest = 0, frames = 0;"
        "function step(now) {"
        "  longest = Math.max(longest, now - last); last = now; frames += 1;"
        "  window.scrollBy(0, 400);"
        "  if (frames < 120) requestAnimationFrame(step);"
        "  else done({longest, chips: document.querySelectorAll('li.task').length});"
        "}"
        "requestAnimationFrame(step);"
    )
    wait_for(
        browser,
        f"return document.querySelectorAll('li.task').length > {shown}",
        "more tasks as the page scrolls",
    )
    browser.execute_script("window.scrollTo(0, 0)")

    # A change shows within a second, although reading the whole pipeline takes longer.
    stages = issue_stages(server, issue_id)
    first_task = stages[0]["tasks"][0]
    api(
        server,
        "mutation ($input: SkipTaskInput!) { skipTask(input: $input) { id } }",
        {"input": {"taskId": first_task, "reason": "one of many"}},
    )
    change_seconds = seconds_until_changed(browser, first_task, "PENDING_APPROVAL")
    assert task_status(browser, first_task) == "SKIPPED"
    assert change_seconds < 1.0, f"the change took {change_seconds:.2f} s to show"

    # A burst: approving the last stage changes 1,000 tasks at once (they then wait for the
    # earlier stages, so nothing runs). The page reads the pipeline again a few times, not
    # once per change, and the main thread is never held up for long.
    browser.execute_script(
        "window.conveyorLongest = 0;"
        "new PerformanceObserver(list => list.getEntries().forEach(entry =>"
        "  window.conveyorLongest = Math.max(window.conveyorLongest, entry.duration)"
        ")).observe({type: 'longtask'});"
    )
    renders_before = browser.execute_script("return window.conveyorRenders.length")
    last_stage = stages[-1]
    api(
        server,
        "mutation ($input: StageActionInput!) { approveStage(input: $input) { id } }",
        {"input": {"stageId": last_stage["id"]}},
        token=dba_token,  # not the creator, who may not approve in prod
    )
    last_stage_chips = f"[data-stage-id='{last_stage['id']}'] li.task [data-status]"
    last_chips = f'[...document.querySelectorAll("{last_stage_chips}")]'
    try:
        wait_for(
            browser,
            f"const chips = {last_chips};"
            "return chips.length > 0 && chips.every(chip => chip.dataset.status === 'PENDING');",
            "the burst to show",
            timeout=60,
            explain="const counts = {};"
            f"{last_chips}.forEach(chip => {{"
            "  const s = chip.dataset.status; counts[s] = (counts[s] ?? 0) + 1; });"
            "return {counts, renders: window.conveyorRenders.length};",
        )
    except AssertionError as failure:
        raise AssertionError(f"{failure}\nserver log:\n{server.log()[-4000:]}") from None
    time.sleep(2)  # the reads still under way when the change showed
    refetches = browser.execute_script("return window.conveyorRenders.length") - renders_before
    longest = browser.execute_script("return window.conveyorLongest")
    assert refetches < 20, f"{refetches} reads of the pipeline for one burst"
    with capsys.disabled():
        print(
            f"\n5,000-task pipeline: read in {render['fetchMs']:.0f} ms, "
            f"rendered in {render['renderMs']:.0f} ms ({shown} chips at first); "
            f"scrolled to {scroll['chips']} chips, longest frame {scroll['longest']:.0f} ms; "
            f"a change shown after {change_seconds * 1000:.0f} ms; "
            f"a burst of 1,000 changes: {refetches} reads, longest task {longest:.0f} ms"
        )


#: Records the page's WebSockets and what it sends on them, installed before the page loads.
SOCKET_SPY = """
window.conveyorSockets = [];
window.conveyorSent = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) { super(...args); window.conveyorSockets.push(this); }
  send(data) { window.conveyorSent.push(String(data)); super.send(data); }
};
"""


def test_the_page_resumes_after_a_dropped_connection_without_missing_a_change(
    server: ConveyorProcess, browser: Any
) -> None:
    issue_id = create_prod_issue(server, "Dropped", stages=1, tasks=2)
    task_id = issue_task_ids(server, issue_id)[0]
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": SOCKET_SPY})
    sign_in(browser, server, server.token)
    open_pipeline(browser, server, issue_id)
    # The connection drops, and the task changes before the page is connected again.
    browser.execute_script("window.conveyorSockets.forEach(socket => socket.close(3000))")
    api(
        server,
        "mutation ($input: SkipTaskInput!) { skipTask(input: $input) { id } }",
        {"input": {"taskId": task_id, "reason": "while away"}},
    )
    wait_for(
        browser,
        "return window.conveyorSent.map(JSON.parse).some(message =>"
        "  message.type === 'subscribe'"
        "  && message.payload.query.includes('taskStatusChanged')"
        "  && message.payload.variables.after)",
        "the page to follow the tasks again from the last change it had",
    )
    seconds_until_changed(browser, task_id, "PENDING_APPROVAL")
    assert task_status(browser, task_id) == "SKIPPED"


def test_a_task_shows_its_statement_runs_and_events(server: ConveyorProcess, browser: Any) -> None:
    issue_id, tasks = demo_tasks(server)
    dev_schema = tasks[("dev", "create orders")]
    sign_in(browser, server, server.token)
    open_pipeline(browser, server, issue_id)
    browser.find_element(
        "css selector", f"li.task[data-task-id='{dev_schema['id']}'] .task-head a"
    ).click()
    # The worker runs dev at once: its first attempt appears, live.
    run = wait_for(
        browser,
        "const run = document.querySelector('.run[data-run=\"1\"]');"
        "return run && !run.querySelector('[data-status=\"RUNNING\"]') && run.innerText;",
        "the task's first run to end",
    )
    assert "Attempt 1" in run
    page = browser.find_element("css selector", ".task-page").text
    assert "CREATE TABLE orders" in page
    assert "task status changed by" in page


def test_a_task_shows_its_failed_checks_and_an_admin_overrides_them(
    server: ConveyorProcess, browser: Any
) -> None:
    # Prod is protected: a DELETE without WHERE is an error there, and errors block.
    issue_id = create_prod_issue(server, "Clean up", stages=1, tasks=1, statement="DELETE FROM t")
    task_id = issue_stages(server, issue_id)[0]["tasks"][0]
    sign_in(browser, server, server.token)
    browser.execute_script("location.hash = '#/tasks/' + encodeURIComponent(arguments[0])", task_id)
    finding = wait_for(
        browser,
        "return document.querySelector('.checks[data-check-status=\"FAILED\"]')"
        " && document.querySelector('.finding[data-rule=\"delete-without-where\"]');",
        "the failed check on the task's page",
        explain="return document.querySelector('.task-page')?.innerText",
    )
    assert finding.get_attribute("data-level") == "ERROR"
    assert "line 1, column 1" in finding.text
    assert (
        finding.find_element("css selector", "a")
        .get_attribute("href")
        .endswith("#delete-without-where")
    )
    browser.find_element("css selector", ".override input").send_keys("the table is a scratch copy")
    browser.find_element("css selector", "[data-action='OVERRIDE_CHECKS']").click()
    override = wait_for(
        browser,
        "return document.querySelector('.check-override')?.textContent",
        "the override on the task's page",
    )
    assert "Overridden by admin" in override
    assert "the table is a scratch copy" in override


def test_a_running_task_shows_its_log_as_it_runs(
    server: ConveyorProcess, browser: Any, dba_token: str
) -> None:
    # Its own statement: one already applied to the database is not run again.
    marker = uuid.uuid4().hex
    issue_id = create_prod_issue(
        server, "Slow", stages=1, tasks=1, statement=f"SELECT pg_sleep(3);\nSELECT '{marker}'"
    )
    task_id = issue_stages(server, issue_id)[0]["tasks"][0]
    sign_in(browser, server, server.token)
    browser.execute_script("location.hash = '#/tasks/' + encodeURIComponent(arguments[0])", task_id)
    wait_for(browser, "return document.querySelector('.task-page')", "the task's page")
    api(
        server,
        "mutation ($input: TaskActionInput!) { approveTask(input: $input) { id } }",
        {"input": {"taskId": task_id}},
        token=dba_token,
    )
    # The run's own log is stored when the attempt ends: lines shown while it runs came
    # through the subscription.
    running_log = wait_for(
        browser,
        "const run = document.querySelector('.run[data-run=\"1\"]');"
        "const log = run?.querySelector('pre.log')?.textContent ?? '';"
        "const running = run?.querySelector('[data-status=\"RUNNING\"]');"
        "return running && log.includes('pg_sleep') && log;",
        "the running statement in the log while it runs",
        explain="return document.querySelector('.task-page')?.innerText",
    )
    assert "started: SELECT pg_sleep(3)" in running_log
    ended_log = wait_for(
        browser,
        "const run = document.querySelector('.run[data-run=\"1\"]');"
        "return run && !run.querySelector('[data-status=\"RUNNING\"]')"
        " && run.querySelector('pre.log').textContent;",
        "the run to end",
    )
    assert f"finished: SELECT '{marker}'" in ended_log
    events = browser.find_element("css selector", "ol.events").text
    assert "approved" in events.lower(), events


def test_the_issue_list_shows_a_new_issue_and_its_status_without_a_reload(
    server: ConveyorProcess, browser: Any
) -> None:
    sign_in(browser, server, server.token)
    wait_for_list(browser, "titles.length > 0", "the issue list")
    issue_id = create_prod_issue(server, "Opened elsewhere", stages=1, tasks=1)
    wait_for_list(browser, "titles[0] === 'Opened elsewhere'", "the new issue at the top")
    only_task = issue_stages(server, issue_id)[0]["tasks"][0]
    api(
        server,
        "mutation ($input: SkipTaskInput!) { skipTask(input: $input) { id } }",
        {"input": {"taskId": only_task, "reason": "done by hand"}},
    )
    wait_for(
        browser,
        f"return document.querySelector(\"tr[data-issue-id='{issue_id}'] [data-status]\")"
        "?.dataset.status === 'DONE';",
        "the issue done in the list once its only task is skipped",
    )


def listed_titles(browser: Any) -> list[str]:
    titles: list[str] = browser.execute_script(
        "return [...document.querySelectorAll('.issue-table tbody a')].map(a => a.textContent);"
    )
    return titles


def wait_for_list(browser: Any, check: str, what: str) -> list[str]:
    """The listed titles once `check` (JavaScript, over `titles`) holds."""
    wait_for(
        browser,
        "const titles = [...document.querySelectorAll('.issue-table tbody a')]"
        f".map(a => a.textContent); return {check};",
        what,
    )
    return listed_titles(browser)


def test_the_issue_list_filters_by_status_and_environment_and_pages(
    server: ConveyorProcess, browser: Any
) -> None:
    from selenium.webdriver.support.ui import Select

    fillers = [create_prod_issue(server, f"Filler {n}", stages=1, tasks=1) for n in range(21)]
    api(
        server,
        "mutation ($input: IssueActionInput!) { cancelIssue(input: $input) { id } }",
        {"input": {"issueId": fillers[0]}},
    )
    sign_in(browser, server, server.token)
    first_page = wait_for_list(browser, "titles.length === 20", "a full first page")
    assert first_page[0] == "Filler 20"  # newest first
    browser.find_element("xpath", "//button[normalize-space()='Next page']").click()
    second_page = wait_for_list(
        browser, "titles.length > 0 && titles[0] !== 'Filler 20'", "the second page"
    )
    assert not set(first_page) & set(second_page)
    assert DEMO_ISSUE in second_page
    browser.find_element("xpath", "//button[normalize-space()='Previous page']").click()
    assert wait_for_list(browser, "titles[0] === 'Filler 20'", "the first page again")

    Select(browser.find_element("xpath", "//label[contains(., 'Status')]/select")).select_by_value(
        "CANCELED"
    )
    assert wait_for_list(browser, "titles.length === 1", "the canceled issues") == ["Filler 0"]
    Select(browser.find_element("xpath", "//label[contains(., 'Status')]/select")).select_by_value(
        ""
    )
    Select(
        browser.find_element("xpath", "//label[contains(., 'Environment')]/select")
    ).select_by_visible_text("dev")
    in_dev = wait_for_list(
        browser, "titles.length > 0 && !titles.some(t => t.startsWith('Filler'))", "dev's issues"
    )
    assert DEMO_ISSUE in in_dev


def test_a_task_is_skipped_with_a_reason_by_keyboard_alone(
    server: ConveyorProcess, browser: Any
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    issue_id = create_prod_issue(server, "Skipped by keyboard", stages=1, tasks=1)
    task_id = issue_task_ids(server, issue_id)[0]
    sign_in(browser, server, server.token)
    open_pipeline(browser, server, issue_id)
    browser.execute_script("document.activeElement.blur()")
    skip = f"button[data-action='SKIP'][data-task-id='{task_id}']"
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.execute_script(f'return document.activeElement.matches("{skip}")'):
            break
    else:
        raise AssertionError("Tab never reached the Skip button")
    # Enter opens the form, whose reason field takes the focus; Enter again skips.
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for(browser, "return document.activeElement.matches('.inline-form input')", "the form")
    ActionChains(browser).send_keys("not needed here", Keys.ENTER).perform()
    seconds_until_changed(browser, task_id, "PENDING_APPROVAL")
    assert task_status(browser, task_id) == "SKIPPED"
    chip = browser.find_element("css selector", f"li.task[data-task-id='{task_id}']")
    assert "not needed here" in chip.text
