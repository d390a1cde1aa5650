"""An issue's pipeline plan as a client submits it, and every rule it must pass, without IO."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from conveyor.domain.statements import refusal_of
from conveyor.domain.statuses import ApprovalPolicy, TaskType
from conveyor.errors import ErrorCode, FieldPath, Problem

# The limits of a plan (the README's "Limits" lists them). A refusal carries its limit in
# `extensions.limit`; the GraphQL inputs' descriptions quote these constants.
#: Names of stages and tasks (and of environments, instances, actors), and refs.
NAME_MAX_LENGTH = 100
TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000
#: PostgreSQL truncates identifiers past 63 bytes.
DATABASE_NAME_MAX_LENGTH = 63
STATEMENT_MAX_LENGTH = 1_000_000
MAX_STAGES = 50
MAX_TASKS_PER_STAGE = 1_000
#: Refs one task's `blockedBy` may list.
MAX_BLOCKED_BY = 100


#: Stands in a plan for an id that names no row of the expected type: validation reports it
#: (NOT_FOUND) at its field, together with every other problem of the plan.
UNKNOWN_ROW = 0
#: Stands in a plan for a text that is no id at all: reported alike, as INVALID_INPUT.
MALFORMED_ID = -1
MALFORMED_ID_MESSAGE = "not a valid id of this API"


@dataclass(frozen=True)
class TaskPlan:
    type: TaskType
    instance_id: int | None
    name: str | None = None
    #: A name other tasks of the same plan use in their `blocked_by`.
    ref: str | None = None
    database_id: int | None = None
    statement: str | None = None
    database_name: str | None = None
    not_before: datetime | None = None
    blocked_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class StagePlan:
    environment_id: int | None
    tasks: tuple[TaskPlan, ...]
    name: str | None = None


@dataclass(frozen=True)
class IssuePlan:
    title: str
    stages: tuple[StagePlan, ...]
    description: str = ""


@dataclass(frozen=True)
class Catalog:
    """What the plan refers to that already exists: the facts validation needs."""

    environment_policies: Mapping[int, ApprovalPolicy] = field(default_factory=dict)
    environment_names: Mapping[int, str] = field(default_factory=dict)
    instance_ids: frozenset[int] = frozenset()
    database_instances: Mapping[int, int] = field(default_factory=dict)


def check_name(value: str, path: FieldPath, *, max_length: int = NAME_MAX_LENGTH) -> list[Problem]:
    """A name must have a visible character and fit its column."""
    if not value.strip():
        return [Problem(ErrorCode.INVALID_INPUT, "must not be empty", path)]
    return check_length(value, path, max_length)


def check_length(value: str, path: FieldPath, max_length: int) -> list[Problem]:
    """A text must fit its column."""
    if len(value) > max_length:
        return [
            Problem(
                ErrorCode.INVALID_INPUT,
                f"must be at most {max_length} characters",
                path,
                limit=max_length,
            )
        ]
    return []


def check_database_name(value: str, path: FieldPath) -> list[Problem]:
    """A database name must fit PostgreSQL's identifiers, which are limited in bytes."""
    problems = check_name(value, path, max_length=DATABASE_NAME_MAX_LENGTH)
    if not problems and len(value.encode()) > DATABASE_NAME_MAX_LENGTH:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"must be at most {DATABASE_NAME_MAX_LENGTH} bytes in UTF-8",
                path,
                limit=DATABASE_NAME_MAX_LENGTH,
            )
        )
    if not problems and "\x00" in value:
        problems.append(Problem(ErrorCode.INVALID_INPUT, "must not contain a NUL character", path))
    return problems


def validate_issue_plan(plan: IssuePlan, catalog: Catalog) -> list[Problem]:
    """Every problem with `plan`, in input order; an empty list means it may be created."""
    root: FieldPath = ("input",)
    problems = check_name(plan.title, (*root, "title"), max_length=TITLE_MAX_LENGTH)
    problems += check_length(plan.description, (*root, "description"), DESCRIPTION_MAX_LENGTH)
    if not plan.stages:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT, "a pipeline needs at least one stage", (*root, "stages")
            )
        )
    elif len(plan.stages) > MAX_STAGES:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"a pipeline has at most {MAX_STAGES} stages",
                (*root, "stages"),
                limit=MAX_STAGES,
            )
        )
    refs = _collect_refs(plan, problems)
    for stage_index, stage in enumerate(plan.stages):
        stage_path: FieldPath = (*root, "stages", stage_index)
        problems += _validate_stage(stage, stage_path, catalog, refs)
    problems += _find_cycles(plan, refs)
    return problems


def _validate_stage(
    stage: StagePlan, path: FieldPath, catalog: Catalog, refs: Mapping[str, FieldPath]
) -> list[Problem]:
    problems: list[Problem] = []
    if stage.name is not None:
        problems += check_name(stage.name, (*path, "name"))
    if stage.environment_id is None:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT, "a stage needs an environment", (*path, "environmentId")
            )
        )
    elif stage.environment_id == MALFORMED_ID:
        problems.append(_malformed_id((*path, "environmentId")))
    elif stage.environment_id not in catalog.environment_policies:
        problems.append(
            Problem(ErrorCode.NOT_FOUND, "environment does not exist", (*path, "environmentId"))
        )
    if not stage.tasks:
        problems.append(
            Problem(ErrorCode.INVALID_INPUT, "a stage needs at least one task", (*path, "tasks"))
        )
    elif len(stage.tasks) > MAX_TASKS_PER_STAGE:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"a stage has at most {MAX_TASKS_PER_STAGE} tasks",
                (*path, "tasks"),
                limit=MAX_TASKS_PER_STAGE,
            )
        )
    for task_index, task in enumerate(stage.tasks):
        problems += _validate_task(task, (*path, "tasks", task_index), catalog, refs)
    return problems


def _validate_task(
    task: TaskPlan, path: FieldPath, catalog: Catalog, refs: Mapping[str, FieldPath]
) -> list[Problem]:
    problems: list[Problem] = []
    if task.name is not None:
        problems += check_name(task.name, (*path, "name"))
    if task.instance_id is None:
        problems.append(
            Problem(ErrorCode.INVALID_INPUT, "a task needs an instance", (*path, "instanceId"))
        )
    elif task.instance_id == MALFORMED_ID:
        problems.append(_malformed_id((*path, "instanceId")))
    elif task.instance_id not in catalog.instance_ids:
        problems.append(
            Problem(ErrorCode.NOT_FOUND, "instance does not exist", (*path, "instanceId"))
        )
    problems += _validate_database(task, path, catalog)
    problems += _validate_payload(task, path)
    if len(task.blocked_by) > MAX_BLOCKED_BY:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"a task is blocked by at most {MAX_BLOCKED_BY} tasks",
                (*path, "blockedBy"),
                limit=MAX_BLOCKED_BY,
            )
        )
        return problems
    return problems + _validate_blockers(task, path, refs)


def _validate_blockers(
    task: TaskPlan, path: FieldPath, refs: Mapping[str, FieldPath]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, ref in enumerate(task.blocked_by):
        if ref in seen:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"blocked by '{ref}' twice",
                    (*path, "blockedBy", index),
                )
            )
        elif ref not in refs:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"blocked by '{ref}', but no task of this pipeline has that ref",
                    (*path, "blockedBy", index),
                )
            )
        elif ref == task.ref:
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    "a task cannot be blocked by itself",
                    (*path, "blockedBy", index),
                )
            )
        elif _stage_index(refs[ref]) > _stage_index(path):
            # Its stage could never finish: the blocker may only start after it.
            problems.append(
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"blocked by '{ref}', which belongs to a later stage",
                    (*path, "blockedBy", index),
                )
            )
        seen.add(ref)
    return problems


def _malformed_id(path: FieldPath) -> Problem:
    return Problem(ErrorCode.INVALID_INPUT, MALFORMED_ID_MESSAGE, path)


def _validate_database(task: TaskPlan, path: FieldPath, catalog: Catalog) -> list[Problem]:
    database_path = (*path, "databaseId")
    if task.database_id is None:
        if task.type.needs_database:
            return [
                Problem(
                    ErrorCode.INVALID_INPUT,
                    f"{task.type.described} needs a database",
                    database_path,
                )
            ]
        return []
    if not task.type.needs_database:
        return [
            Problem(
                ErrorCode.INVALID_INPUT,
                f"{task.type.described} takes no database",
                database_path,
            )
        ]
    if task.database_id == MALFORMED_ID:
        return [_malformed_id(database_path)]
    instance_of_database = catalog.database_instances.get(task.database_id)
    if instance_of_database is None:
        return [Problem(ErrorCode.NOT_FOUND, "database does not exist", database_path)]
    # An unknown instance is reported on its own field; comparing with it would add noise.
    if task.instance_id in catalog.instance_ids and instance_of_database != task.instance_id:
        return [
            Problem(
                ErrorCode.INVALID_INPUT,
                "the database is not on the task's instance",
                database_path,
            )
        ]
    return []


def _validate_payload(task: TaskPlan, path: FieldPath) -> list[Problem]:
    problems: list[Problem] = []
    if task.type.needs_statement:
        problems += check_statement(task.statement, (*path, "statement"))
    elif task.statement is not None:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"{task.type.described} takes no statement",
                (*path, "statement"),
            )
        )
    name_path = (*path, "databaseName")
    if task.type.needs_database_name:
        if task.database_name is None:
            problems.append(
                Problem(ErrorCode.INVALID_INPUT, "the new database needs a name", name_path)
            )
        else:
            problems += check_database_name(task.database_name, name_path)
    elif task.database_name is not None:
        problems.append(
            Problem(
                ErrorCode.INVALID_INPUT,
                f"{task.type.described} takes no database name",
                name_path,
            )
        )
    return problems


def check_statement(statement: str | None, path: FieldPath) -> list[Problem]:
    """A statement must be SQL Conveyor will run, within a sane size."""
    if statement is None or not statement.strip():
        return [Problem(ErrorCode.INVALID_INPUT, "the statement must not be empty", path)]
    if len(statement) > STATEMENT_MAX_LENGTH:
        return [
            Problem(
                ErrorCode.INVALID_INPUT,
                f"the statement must be at most {STATEMENT_MAX_LENGTH} characters",
                path,
                limit=STATEMENT_MAX_LENGTH,
            )
        ]
    refusal = refusal_of(statement)
    if refusal is not None:
        return [Problem(ErrorCode.INVALID_INPUT, refusal.message, path)]
    return []


def _stage_index(path: FieldPath) -> int:
    # Paths into a plan read ("input", "stages", <stage index>, "tasks", ...).
    index = path[2]
    assert isinstance(index, int)
    return index


def _collect_refs(plan: IssuePlan, problems: list[Problem]) -> dict[str, FieldPath]:
    refs: dict[str, FieldPath] = {}
    for stage_index, stage in enumerate(plan.stages):
        for task_index, task in enumerate(stage.tasks):
            if task.ref is None:
                continue
            path: FieldPath = ("input", "stages", stage_index, "tasks", task_index, "ref")
            ref_problems = check_name(task.ref, path)
            problems += ref_problems
            if ref_problems:
                continue
            if task.ref in refs:
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        f"ref '{task.ref}' is used by another task of this pipeline",
                        path,
                    )
                )
            else:
                refs[task.ref] = path
    return refs


def _find_cycles(plan: IssuePlan, refs: Mapping[str, FieldPath]) -> list[Problem]:
    edges = {
        task.ref: [ref for ref in task.blocked_by if ref in refs and ref != task.ref]
        for stage in plan.stages
        for task in stage.tasks
        if task.ref is not None
    }
    problems: list[Problem] = []
    state: dict[str, str] = {}

    def visit(ref: str, trail: list[str]) -> None:
        state[ref] = "visiting"
        for blocker in edges.get(ref, []):
            if state.get(blocker) == "visiting":
                # A node being visited is on the current path, so the cycle is its tail.
                cycle = [*trail[trail.index(blocker) :], ref, blocker]
                problems.append(
                    Problem(
                        ErrorCode.INVALID_INPUT,
                        "blocked-by links form a cycle: " + " -> ".join(cycle),
                        (*refs[ref][:-1], "blockedBy"),
                    )
                )
            elif blocker not in state:
                visit(blocker, [*trail, ref])
        state[ref] = "done"

    for ref in edges:
        if ref not in state:
            visit(ref, [])
    return problems


def task_names_in_order(plan: IssuePlan) -> list[list[str]]:
    """The name each task gets: its own, else its type and its place in the stage."""
    return [
        [
            task.name if task.name is not None else f"{task.type.value.lower()}-{index + 1}"
            for index, task in enumerate(stage.tasks)
        ]
        for stage in plan.stages
    ]


def stage_names_in_order(plan: IssuePlan, catalog: Catalog) -> list[str]:
    """The name each stage gets: its own, else its environment's."""
    return [
        stage.name
        if stage.name is not None
        else catalog.environment_names.get(stage.environment_id or 0, f"stage-{index + 1}")
        for index, stage in enumerate(plan.stages)
    ]
