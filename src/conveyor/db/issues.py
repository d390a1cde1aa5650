"""Issue-level writes: create an issue with its whole pipeline, cancel it, reopen it."""

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from conveyor.db.events import NewEvent, record_events
from conveyor.db.models import (
    Database,
    Environment,
    Instance,
    Issue,
    Pipeline,
    Stage,
    Task,
    TaskDependency,
)
from conveyor.db.task_status import (
    StatusChange,
    apply_changes,
    issue_creator,
    set_pipeline_status,
)
from conveyor.db.tasks import request_abort
from conveyor.domain.permissions import (
    Operation,
    Principal,
    issue_action_refusal,
    refuse_if,
    require,
)
from conveyor.domain.plan import (
    Catalog,
    IssuePlan,
    stage_names_in_order,
    task_names_in_order,
    validate_issue_plan,
)
from conveyor.domain.statuses import ApprovalPolicy, EventKind, PipelineStatus
from conveyor.domain.transitions import (
    IssueAction,
    gate,
    issue_transition_refusal,
    must_abort_on_issue_cancel,
    next_pipeline_status,
    task_action_of_issue,
)
from conveyor.errors import ConveyorError, conflict, not_found


async def _catalog_for(plan: IssuePlan) -> Catalog:
    environment_ids = {stage.environment_id for stage in plan.stages} - {None}
    tasks = [task for stage in plan.stages for task in stage.tasks]
    instance_ids = {task.instance_id for task in tasks} - {None}
    database_ids = {task.database_id for task in tasks} - {None}
    environments = await Environment.filter(id__in=environment_ids) if environment_ids else []
    instances = await Instance.filter(id__in=instance_ids).only("id") if instance_ids else []
    databases = (
        await Database.filter(id__in=database_ids).values_list("id", "instance_id")
        if database_ids
        else []
    )
    return Catalog(
        environment_policies={env.id: env.approval_policy for env in environments},
        environment_names={env.id: env.name for env in environments},
        instance_ids=frozenset(instance.id for instance in instances),
        database_instances=dict(databases),
    )


async def validated_plan(principal: Principal, plan: IssuePlan) -> Catalog:
    """The catalog `plan` names, once `principal` may open it and it is valid; else the
    refusal with every problem found."""
    require(principal, Operation.CREATE_ISSUE)
    catalog = await _catalog_for(plan)
    problems = validate_issue_plan(plan, catalog)
    if problems:
        raise ConveyorError(problems)
    return catalog


#: An issue's tasks, in plan order ($2..$11: one element a task); each one's id, stage and
#: position. The columns left out take their database defaults.
_INSERT_TASKS = """
    INSERT INTO task (created_at, updated_at, pipeline_id, stage_id, position, name, type,
        status, instance_id, database_id, statement, database_name, not_before)
    SELECT now(), now(), $1, t.stage_id, t.position, t.name, t.type, t.status, t.instance_id,
        t.database_id, t.statement, t.database_name, t.not_before
    FROM unnest($2::int[], $3::int[], $4::text[], $5::text[], $6::text[], $7::int[], $8::int[],
        $9::text[], $10::text[], $11::timestamptz[]) WITH ORDINALITY
        AS t (stage_id, position, name, type, status, instance_id, database_id, statement,
              database_name, not_before, n)
    ORDER BY t.n
    RETURNING id, stage_id, position
"""


async def create_issue(principal: Principal, plan: IssuePlan) -> Issue:
    """Create the issue, its pipeline, stages, tasks and their links, or nothing at all."""
    creator = principal.actor
    catalog = await validated_plan(principal, plan)
    stage_names = stage_names_in_order(plan, catalog)
    task_names = task_names_in_order(plan)
    async with in_transaction() as connection:
        issue = await Issue.create(
            using_db=connection, title=plan.title, description=plan.description, creator=creator
        )
        pipeline = await Pipeline.create(
            using_db=connection, issue=issue, status=PipelineStatus.OPEN
        )
        await Stage.bulk_create(
            [
                Stage(
                    pipeline_id=pipeline.id,
                    position=position,
                    name=stage_names[position],
                    environment_id=stage.environment_id,
                )
                for position, stage in enumerate(plan.stages)
            ],
            using_db=connection,
        )
        stages = (
            await Stage.filter(pipeline_id=pipeline.id).order_by("position").using_db(connection)
        )
        # One statement from arrays (a column each), not a model object a task: building
        # tortoise's objects took half of a 400-task issue's creation.
        rows = [
            (
                stage_row.id,
                position,
                task_names[stage_row.position][position],
                task.type.value,
                gate(catalog.environment_policies[stage.environment_id or 0]).value,
                task.instance_id,
                task.database_id,
                task.statement,
                task.database_name,
                task.not_before,
            )
            for stage_row, stage in zip(stages, plan.stages, strict=True)
            for position, task in enumerate(stage.tasks)
        ]
        columns = [list(column) for column in zip(*rows, strict=True)]  # a stage has a task
        inserted = await connection.execute_query_dict(_INSERT_TASKS, [pipeline.id, *columns])
        stage_positions = {stage_row.id: stage_row.position for stage_row in stages}
        task_ids = [
            row["id"]
            for row in sorted(
                inserted, key=lambda row: (stage_positions[row["stage_id"]], row["position"])
            )
        ]
        planned_tasks = [task for stage in plan.stages for task in stage.tasks]
        id_by_ref = {
            task.ref: task_id
            for task, task_id in zip(planned_tasks, task_ids, strict=True)
            if task.ref is not None
        }
        links = [
            TaskDependency(task_id=task_id, blocked_by_id=id_by_ref[ref])
            for task, task_id in zip(planned_tasks, task_ids, strict=True)
            for ref in task.blocked_by
        ]
        if links:
            await TaskDependency.bulk_create(links, using_db=connection, batch_size=1000)
        await record_events(
            connection,
            creator,
            [
                NewEvent(
                    EventKind.ISSUE_CREATED,
                    issue_id=issue.id,
                    pipeline_id=pipeline.id,
                    new_status=PipelineStatus.OPEN,
                )
            ],
        )
    return issue


async def lock_pipeline_of_issue(
    connection: BaseDBAsyncClient, issue_id: int, principal: Principal
) -> Pipeline:
    """The issue's pipeline, locked for the rest of the transaction, if `principal` may
    act on the issue."""
    pipeline = (
        await Pipeline.filter(issue_id=issue_id).select_for_update().using_db(connection).first()
    )
    if pipeline is None:
        raise not_found("issue", ("input", "issueId"))
    creator = await issue_creator(connection, issue_id)
    refuse_if(issue_action_refusal(principal, creator), ("input", "issueId"))
    return pipeline


async def _policies_by_stage(
    connection: BaseDBAsyncClient, pipeline_id: int
) -> dict[int, ApprovalPolicy]:
    rows = (
        await Stage.filter(pipeline_id=pipeline_id)
        .using_db(connection)
        .values_list("id", "environment__approval_policy")
    )
    return {stage_id: ApprovalPolicy(policy) for stage_id, policy in rows}


def _next_status(pipeline: Pipeline, action: IssueAction) -> PipelineStatus:
    refused = issue_transition_refusal(pipeline.status, action)
    if refused is not None:
        raise conflict(refused, ("input", "issueId"))
    return next_pipeline_status(pipeline.status, action)


async def cancel_issue(principal: Principal, issue_id: int) -> Issue:
    """Cancel the issue: waiting tasks become CANCELED, running ones are asked to stop."""
    async with in_transaction() as connection:
        pipeline = await lock_pipeline_of_issue(connection, issue_id, principal)
        actor = principal.actor
        new_status = _next_status(pipeline, IssueAction.CANCEL)
        tasks = await Task.filter(pipeline_id=pipeline.id).select_for_update().using_db(connection)
        running = [task for task in tasks if must_abort_on_issue_cancel(task.status)]
        if running:
            await request_abort(connection, pipeline, running, actor)
        canceled = await set_pipeline_status(connection, pipeline, new_status)
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(task, action)
                for task in tasks
                if (action := task_action_of_issue(IssueAction.CANCEL, task.status)) is not None
            ],
            actor,
            [canceled],
        )
    return await Issue.get(id=issue_id)


async def reopen_issue(principal: Principal, issue_id: int) -> Issue:
    """Reopen a canceled issue: its canceled tasks return to their gate."""
    async with in_transaction() as connection:
        pipeline = await lock_pipeline_of_issue(connection, issue_id, principal)
        actor = principal.actor
        new_status = _next_status(pipeline, IssueAction.REOPEN)
        tasks = await Task.filter(pipeline_id=pipeline.id).select_for_update().using_db(connection)
        policies = await _policies_by_stage(connection, pipeline.id)
        reopened = await set_pipeline_status(connection, pipeline, new_status)
        await apply_changes(
            connection,
            pipeline,
            [
                StatusChange(task, action, {"cancel_requested_at": None}, policies[task.stage_id])
                for task in tasks
                if (action := task_action_of_issue(IssueAction.REOPEN, task.status)) is not None
            ],
            actor,
            [reopened],
        )
    return await Issue.get(id=issue_id)
