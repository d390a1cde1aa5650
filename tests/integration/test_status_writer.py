"""The transition table is the only writer of a task's status.

Each module that writes statuses (a person's actions, issue actions, the runner's claims,
finishes and recoveries) writes them through `db.task_status.apply_changes`, which takes an
action, never a status: a transition the table refuses is not written, whoever asks.
"""

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

import conveyor
from conveyor.db.models import Event, Task
from conveyor.db.queries import RUNNER
from conveyor.db.task_status import (
    AttemptToEnd,
    HeldTask,
    StatusChange,
    apply_changes,
    end_attempts,
    lock_task,
    start_tasks,
)
from conveyor.domain.attempts import AttemptEnd
from conveyor.domain.statuses import TaskRunStatus, TaskStatus
from conveyor.domain.transitions import TaskAction, TransitionRefused
from tests.api.support import create_catalog, create_issue, database_task, put_task_in
from tests.conftest import GraphQLClient

SOURCE = Path(conveyor.__file__).parent
#: Each module that writes statuses, and a transition of its kind the table refuses.
REFUSED_BY_MODULE = {
    "db/tasks.py": (TaskStatus.DONE, TaskAction.RETRY),
    "db/issues.py": (TaskStatus.DONE, TaskAction.CANCEL),
    "db/claims.py": (TaskStatus.PENDING, TaskAction.RELEASE),
}


def status_writers() -> set[str]:
    """The modules that take a transition through the one writer."""
    return {
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if re.search(r"\bStatusChange\(", path.read_text()) and path.name != "task_status.py"
    }


def test_every_module_that_writes_statuses_is_tried_below() -> None:
    assert status_writers() == set(REFUSED_BY_MODULE), status_writers()


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Call | ast.Attribute):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _writes_a_task_status(node: ast.AST) -> bool:
    # `x.status = ...`, `<Model>...update(status=...)` on any model but TaskRun (an attempt's
    # status), or SQL that sets a task's status column.
    if isinstance(node, ast.Assign):
        return any(
            isinstance(target, ast.Attribute) and target.attr == "status" for target in node.targets
        )
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "update"
    ):
        return _root_name(node.func) != "TaskRun" and any(
            keyword.arg in ("status", None) for keyword in node.keywords
        )
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        sql = " ".join(node.value.lower().split())
        return re.search(r"update task (\w+ )?set ((?!\bwhere\b).)*\bstatus =", sql) is not None
    return False


def test_only_the_one_writer_runs_the_queries_that_write_a_status() -> None:
    status_queries = {
        name for name, sql in RUNNER.items() if _writes_a_task_status(ast.Constant(value=sql))
    }
    assert status_queries == {"start_tasks", "end_attempts"}
    users = {
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        for name in status_queries
        if f'RUNNER["{name}"]' in path.read_text()
    }
    assert users == {"db/task_status.py"}


def test_no_module_writes_a_task_status_but_the_one_writer() -> None:
    writers = {
        str(path.relative_to(SOURCE))
        for folder in ("db", "runner", "graphql", "events")
        for path in (SOURCE / folder).rglob("*.py")
        if any(_writes_a_task_status(node) for node in ast.walk(ast.parse(path.read_text())))
    }
    # apply_changes, and set_pipeline_status for the pipeline's own status.
    assert writers == {"db/task_status.py"}


@pytest.mark.parametrize("module", sorted(REFUSED_BY_MODULE))
async def test_a_transition_the_table_refuses_is_not_written(
    graphql: GraphQLClient, module: str
) -> None:
    status, action = REFUSED_BY_MODULE[module]
    catalog = await create_catalog(graphql)
    issue = await create_issue(
        graphql, catalog, {"dev": [database_task(catalog, "SCHEMA_UPDATE", statement="SELECT 1")]}
    )
    [task_id] = [issue.task_key(name) for name in issue.tasks]
    await put_task_in(task_id, status)
    events_before = await Event.all().count()

    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id)
        with pytest.raises(TransitionRefused):
            await apply_changes(connection, pipeline, [StatusChange(task, action)], "tester")

    assert (await Task.get(id=task_id)).status is status
    assert await Event.all().count() == events_before


async def test_the_runners_hot_path_writes_only_what_the_table_allows(
    graphql: GraphQLClient,
) -> None:
    catalog = await create_catalog(graphql)
    issue = await create_issue(
        graphql, catalog, {"dev": [database_task(catalog, "SCHEMA_UPDATE", statement="SELECT 1")]}
    )
    [task_id] = [issue.task_key(name) for name in issue.tasks]
    await put_task_in(task_id, TaskStatus.DONE, lease_owner="w")
    events_before = await Event.all().count()
    succeed = AttemptEnd(TaskAction.SUCCEED, TaskRunStatus.DONE, None, None)

    async with in_transaction() as connection:
        with pytest.raises(TransitionRefused):
            await start_tasks(connection, [(task_id, TaskStatus.DONE)], "w", timedelta(1), "t")
        with pytest.raises(TransitionRefused):
            await end_attempts(
                connection, "w", [AttemptToEnd(HeldTask(task_id, 0, TaskStatus.DONE), succeed)], "t"
            )

    assert (await Task.get(id=task_id)).status is TaskStatus.DONE
    assert await Event.all().count() == events_before
