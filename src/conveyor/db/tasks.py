"""Task-level writes by a person."""

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from conveyor.db.models import Environment, Pipeline, Stage, Task
from conveyor.domain.plan import check_statement
from conveyor.domain.statuses import ApprovalPolicy, EventKind, PipelineStatus
from conveyor.domain.transitions import TaskAction, TransitionRefused, next_status
from conveyor.errors import ConveyorError, conflict, invalid_input, not_found
from conveyor.events.store import NewEvent, record_events


async def lock_task(
    connection: BaseDBAsyncClient, task_id: int, expected_version: int | None
) -> tuple[Pipeline, Task]:
    """The task and its pipeline, both locked (pipeline first), or a typed refusal."""
    pipeline_ids = (
        await Task.filter(id=task_id).using_db(connection).values_list("pipeline_id", flat=True)
    )
    if not pipeline_ids:
        raise not_found("task", ("input", "taskId"))
    pipeline_id = pipeline_ids[0]
    pipeline = await Pipeline.filter(id=pipeline_id).select_for_update().using_db(connection).get()
    task = await Task.filter(id=task_id).select_for_update().using_db(connection).get()
    if expected_version is not None and task.version != expected_version:
        raise conflict(
            f"the task changed since you read it (now at version {task.version})",
            ("input", "expectedVersion"),
        )
    return pipeline, task


async def approval_policy_of(connection: BaseDBAsyncClient, task: Task) -> ApprovalPolicy:
    environment = (
        await Environment.filter(id__in=Stage.filter(id=task.stage_id).values("environment_id"))
        .using_db(connection)
        .get()
    )
    return environment.approval_policy


async def edit_task_statement(
    task_id: int, statement: str, actor: str, expected_version: int | None = None
) -> Task:
    """Replace a waiting or failed task's statement; it returns to its gate."""
    problems = check_statement(statement, ("input", "statement"))
    if problems:
        raise ConveyorError(problems)
    async with in_transaction() as connection:
        pipeline, task = await lock_task(connection, task_id, expected_version)
        if pipeline.status is not PipelineStatus.OPEN:
            raise conflict(
                f"cannot edit a task of an issue that is {pipeline.status.value}",
                ("input", "taskId"),
            )
        if not task.type.needs_statement:
            raise invalid_input(f"a {task.type.value} task has no statement", ("input", "taskId"))
        try:
            new_status = next_status(
                task.status, TaskAction.EDIT, await approval_policy_of(connection, task)
            )
        except TransitionRefused as refusal:
            raise conflict(str(refusal), ("input", "taskId")) from None
        events = [
            NewEvent(
                EventKind.TASK_EDITED,
                issue_id=pipeline.issue_id,
                pipeline_id=pipeline.id,
                stage_id=task.stage_id,
                task_id=task.id,
                detail={"version": task.version + 1},
            )
        ]
        if new_status is not task.status:
            events.append(
                NewEvent(
                    EventKind.TASK_STATUS_CHANGED,
                    issue_id=pipeline.issue_id,
                    pipeline_id=pipeline.id,
                    stage_id=task.stage_id,
                    task_id=task.id,
                    old_status=task.status,
                    new_status=new_status,
                )
            )
        task.statement = statement
        task.status = new_status
        task.version += 1
        await task.save(
            using_db=connection, update_fields=["statement", "status", "version", "updated_at"]
        )
        await record_events(connection, actor, events)
    return task
