"""The root Mutation: each field translates its input and calls one operation of `db`."""

import strawberry

from conveyor.db import catalog, checks, issues, tasks, tokens
from conveyor.domain.targets import InstanceNetworks
from conveyor.errors import invalid_input
from conveyor.graphql.context import Info
from conveyor.graphql.inputs import (
    CreateApiTokenInput,
    CreateEnvironmentInput,
    CreateInstanceInput,
    CreateIssueInput,
    DryRunInput,
    IssueActionInput,
    OverrideTaskChecksInput,
    RegisterDatabaseInput,
    RevokeApiTokenInput,
    SetReviewPolicyInput,
    SkipTaskInput,
    StageActionInput,
    TaskActionInput,
    UpdateEnvironmentInput,
    UpdateInstanceInput,
    UpdateTaskStatementInput,
    connection_option_pairs,
    node_key,
)
from conveyor.graphql.types.api_token import ApiToken, CreatedApiToken
from conveyor.graphql.types.database import Database
from conveyor.graphql.types.environment import Environment
from conveyor.graphql.types.instance import Instance
from conveyor.graphql.types.issue import Issue
from conveyor.graphql.types.stage import Stage
from conveyor.graphql.types.task import Task
from conveyor.runner.own_database import OwnDatabaseCheck


def _required_key(global_id: strawberry.ID, type_name: str, field: str) -> int:
    key = node_key(global_id, type_name, ("input", field))
    assert key is not None
    return key


def _task_key(input: TaskActionInput) -> int:
    return _required_key(input.task_id, "Task", "taskId")


async def _save_instance(
    info: Info, instance_id: int | None, changes: catalog.InstanceChanges
) -> Instance:
    """A new instance (`instance_id` None) or changes to one, under the process's rules on
    where instances may point."""
    settings, cipher = info.context.settings, info.context.cipher
    row = await catalog.save_instance(
        info.context.acting,
        instance_id,
        changes,
        cipher,
        networks=InstanceNetworks.parse(settings.instance_networks),
        own_database=OwnDatabaseCheck(settings, cipher),
    )
    return Instance.from_row(row)


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Add an environment to the promotion path.")
    async def create_environment(self, info: Info, input: CreateEnvironmentInput) -> Environment:
        row = await catalog.save_environment(
            info.context.acting,
            None,
            catalog.EnvironmentChanges(
                name=input.name,
                order=input.order,
                approval_policy=input.approval_policy,
                developers_may_approve=input.developers_may_approve,
                creator_may_approve=input.creator_may_approve,
            ),
        )
        return Environment.from_row(row)

    @strawberry.mutation(description="Rename, reorder or change the approval policy.")
    async def update_environment(self, info: Info, input: UpdateEnvironmentInput) -> Environment:
        row = await catalog.save_environment(
            info.context.acting,
            _required_key(input.id, "Environment", "id"),
            catalog.EnvironmentChanges(
                name=input.name,
                order=input.order,
                approval_policy=input.approval_policy,
                developers_may_approve=input.developers_may_approve,
                creator_may_approve=input.creator_may_approve,
            ),
        )
        return Environment.from_row(row)

    @strawberry.mutation(description="Register a database server.")
    async def create_instance(self, info: Info, input: CreateInstanceInput) -> Instance:
        return await _save_instance(
            info,
            None,
            catalog.InstanceChanges(
                name=input.name,
                environment_id=_required_key(input.environment_id, "Environment", "environmentId"),
                engine=input.engine,
                host=input.host,
                port=input.port,
                username=input.username,
                password=input.password,
                max_running_tasks=input.max_running_tasks,
                connection_options=connection_option_pairs(input.connection_options),
            ),
        )

    @strawberry.mutation(description="Change a database server's settings or password.")
    async def update_instance(self, info: Info, input: UpdateInstanceInput) -> Instance:
        return await _save_instance(
            info,
            _required_key(input.id, "Instance", "id"),
            catalog.InstanceChanges(
                name=input.name,
                environment_id=node_key(
                    input.environment_id, "Environment", ("input", "environmentId")
                ),
                host=input.host,
                port=input.port,
                username=input.username,
                password=input.password,
                max_running_tasks=input.max_running_tasks,
                connection_options=connection_option_pairs(input.connection_options),
            ),
        )

    @strawberry.mutation(description="Record a database that exists on an instance.")
    async def register_database(self, info: Info, input: RegisterDatabaseInput) -> Database:
        row = await catalog.register_database(
            info.context.acting,
            _required_key(input.instance_id, "Instance", "instanceId"),
            input.name,
            own_database=OwnDatabaseCheck(info.context.settings, info.context.cipher),
        )
        return Database.from_row(row)

    @strawberry.mutation(
        description="Open an issue with its whole pipeline plan; every task starts at its gate."
    )
    async def create_issue(self, info: Info, input: CreateIssueInput) -> Issue:
        row = await issues.create_issue(info.context.acting, input.to_plan())
        return Issue.from_row(row)

    @strawberry.mutation(
        description="Cancel the issue: waiting tasks are canceled, running ones asked to stop."
    )
    async def cancel_issue(self, info: Info, input: IssueActionInput) -> Issue:
        row = await issues.cancel_issue(
            info.context.acting, _required_key(input.issue_id, "Issue", "issueId")
        )
        return Issue.from_row(row)

    @strawberry.mutation(
        description="Reopen a canceled issue; its canceled tasks return to their gate."
    )
    async def reopen_issue(self, info: Info, input: IssueActionInput) -> Issue:
        row = await issues.reopen_issue(
            info.context.acting, _required_key(input.issue_id, "Issue", "issueId")
        )
        return Issue.from_row(row)

    @strawberry.mutation(
        description="Replace the statement of a waiting or failed task. The task returns to its "
        "gate: in a MANUAL environment any approval is dismissed."
    )
    async def update_task_statement(self, info: Info, input: UpdateTaskStatementInput) -> Task:
        row = await tasks.edit_task_statement(
            info.context.acting, _task_key(input), input.statement, input.expected_version
        )
        return Task.from_row(row)

    @strawberry.mutation(
        description="Approve a task that waits for approval: it becomes PENDING and runs when "
        "scheduling allows."
    )
    async def approve_task(self, info: Info, input: TaskActionInput) -> Task:
        row = await tasks.approve_task(
            info.context.acting, _task_key(input), input.expected_version
        )
        return Task.from_row(row)

    @strawberry.mutation(
        description="Approve every task of the stage that waits for approval, at once."
    )
    async def approve_stage(self, info: Info, input: StageActionInput) -> Stage:
        row = await tasks.approve_stage(
            info.context.acting, _required_key(input.stage_id, "Stage", "stageId")
        )
        return Stage.from_row(row)

    @strawberry.mutation(
        description="Send a FAILED or CANCELED task back to its gate for another attempt: in a "
        "MANUAL environment it waits for approval again."
    )
    async def retry_task(self, info: Info, input: TaskActionInput) -> Task:
        row = await tasks.retry_task(info.context.acting, _task_key(input), input.expected_version)
        return Task.from_row(row)

    @strawberry.mutation(
        description="Cancel a waiting task. A RUNNING one is asked to stop: it stays RUNNING, "
        "with cancelRequested, until its worker has aborted it."
    )
    async def cancel_task(self, info: Info, input: TaskActionInput) -> Task:
        row = await tasks.cancel_task(info.context.acting, _task_key(input), input.expected_version)
        return Task.from_row(row)

    @strawberry.mutation(
        description="Pass over a waiting or FAILED task, giving a reason; the pipeline moves "
        "on as if it were DONE."
    )
    async def skip_task(self, info: Info, input: SkipTaskInput) -> Task:
        row = await tasks.skip_task(
            info.context.acting, _task_key(input), input.reason, input.expected_version
        )
        return Task.from_row(row)

    @strawberry.mutation(
        description="Clear a waiting task's notBefore time, so that it need not wait for it."
    )
    async def run_task_now(self, info: Info, input: TaskActionInput) -> Task:
        row = await tasks.run_task_now(
            info.context.acting, _task_key(input), input.expected_version
        )
        return Task.from_row(row)

    @strawberry.mutation(
        description="Let a task whose checks failed run anyway (DBA or ADMIN), for a reason "
        "kept on the task. It holds for the current statement only: an edit dismisses it."
    )
    async def override_task_checks(self, info: Info, input: OverrideTaskChecksInput) -> Task:
        row = await checks.override_checks(
            info.context.acting, _required_key(input.task_id, "Task", "taskId"), input.reason
        )
        return Task.from_row(row)

    @strawberry.mutation(
        description="Ask a worker to dry-run a task, or every schema and data change of a "
        "stage or a pipeline that has not run: its statements run on the target inside a "
        "transaction that is always rolled back, and the outcome becomes a `dry-run` finding "
        "in `Task.checks` (TASK_DRY_RUN_FINISHED tells when). Statements that cannot run in a "
        "transaction are not executed; the finding says so. Answers the tasks asked for."
    )
    async def dry_run(self, info: Info, input: DryRunInput) -> list[Task]:
        given = [
            (name, value)
            for name, value in (
                ("taskId", input.task_id),
                ("stageId", input.stage_id),
                ("pipelineId", input.pipeline_id),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise invalid_input("give exactly one of taskId, stageId, pipelineId", ("input",))
        name, value = given[0]
        key = _required_key(value, name.removesuffix("Id").capitalize(), name)
        keyword = {"taskId": "task_id", "stageId": "stage_id", "pipelineId": "pipeline_id"}
        rows = await checks.request_dry_runs(info.context.acting, **{keyword[name]: key})
        return [Task.from_row(row) for row in rows]

    @strawberry.mutation(
        description="Set an environment's own review policy (ADMIN or DBA): rule levels that "
        "differ from the defaults, and the blocking level. Its tasks that can still run are "
        "checked again."
    )
    async def set_review_policy(self, info: Info, input: SetReviewPolicyInput) -> Environment:
        row = await checks.set_review_policy(
            info.context.acting,
            _required_key(input.environment_id, "Environment", "environmentId"),
            input.levels(),
            None if input.blocking is None else input.blocking.value,
        )
        return Environment.from_row(row)

    @strawberry.mutation(
        description="Create an API token (ADMIN only). Its secret is in the answer, and only there."
    )
    async def create_api_token(self, info: Info, input: CreateApiTokenInput) -> CreatedApiToken:
        issued = await tokens.issue_token(
            info.context.acting,
            input.actor,
            input.role,
            description=input.description,
            expires_at=input.expires_at,
        )
        return CreatedApiToken(token=issued.token, api_token=ApiToken.from_row(issued.row))

    @strawberry.mutation(
        description="Revoke an API token (ADMIN only): requests with it are refused from now on "
        "and its live subscriptions end within seconds."
    )
    async def revoke_api_token(self, info: Info, input: RevokeApiTokenInput) -> ApiToken:
        row = await tokens.revoke_token(
            info.context.acting, _required_key(input.id, "ApiToken", "id")
        )
        if info.context.verified_tokens is not None:
            # At once here; the other processes when the revocation's notification arrives.
            info.context.verified_tokens.forget_all()
        return ApiToken.from_row(row)
