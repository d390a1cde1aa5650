"""Recording a round's checks (`db.checks.record_checks`, one statement for the findings, the
tasks' gates and their events): a task whose statement changed since it was read keeps
waiting for the checks of its new statement, and the others of the round are recorded."""

from tortoise.expressions import F

from conveyor.db.checks import CheckOutcome, record_checks
from conveyor.db.models import Event, Task, TaskCheck
from conveyor.domain.check_review import CheckSource
from conveyor.domain.checks import CheckLevel, Finding
from conveyor.domain.statuses import EventKind
from tests.api.support import create_catalog, create_issue, database_task
from tests.conftest import GraphQLClient

FINDING = Finding(
    "update-without-where", CheckLevel.ERROR, "no WHERE", "UPDATE t SET a = 1", 1, 1, None
)


async def test_a_task_edited_since_its_statement_was_read_is_left_for_its_new_checks(
    graphql: GraphQLClient,
) -> None:
    catalog = await create_catalog(graphql)
    issue = await create_issue(
        graphql,
        catalog,
        {
            "dev": [
                database_task(catalog, "DATA_UPDATE", name="kept", statement="SELECT 1"),
                database_task(catalog, "DATA_UPDATE", "beta", name="edited", statement="SELECT 2"),
            ]
        },
        checked=False,
    )
    kept, edited = issue.task_key("kept"), issue.task_key("edited")
    # Read at version 1; a person edits the second task before the round is recorded.
    await Task.filter(id=edited).update(statement_version=F("statement_version") + 1)
    found = [(CheckSource.STATEMENT, FINDING)]

    await record_checks(
        [
            CheckOutcome(kept, 1, found, ("update-without-where",)),
            CheckOutcome(edited, 1, found, ("update-without-where",)),
        ]
    )

    kept_task, edited_task = await Task.get(id=kept), await Task.get(id=edited)
    assert (kept_task.checked_version, kept_task.blocking_rules) == (1, ["update-without-where"])
    assert (edited_task.checked_version, edited_task.blocking_rules) == (None, [])
    assert await TaskCheck.filter(task_id=kept).count() == 1
    assert await TaskCheck.filter(task_id=edited).count() == 0
    checked = await Event.filter(kind=EventKind.TASK_CHECKED).values_list("task_id", "detail")
    assert checked == [
        (
            kept,
            {
                "statementVersion": 1,
                "counts": {"ERROR": 1},
                "blockingRules": ["update-without-where"],
            },
        )
    ]
