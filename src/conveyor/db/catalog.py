"""Writes to the catalog: environments, instances and the databases on them."""

from dataclasses import dataclass

from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from conveyor.crypto import PasswordCipher
from conveyor.db.models import Database, Environment, Instance
from conveyor.domain.plan import check_database_name, check_name
from conveyor.domain.statuses import ApprovalPolicy, Engine
from conveyor.errors import ConveyorError, ErrorCode, Problem, conflict, not_found

HOST_MAX_LENGTH = 255


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        raise ConveyorError(problems)


async def _taken(model: type[Model], field: str, value: object, *, exclude_id: int | None) -> bool:
    queryset = model.filter(**{field: value})
    if exclude_id is not None:
        queryset = queryset.exclude(id=exclude_id)
    return bool(await queryset.exists())


async def _save(row: Model) -> None:
    # The checks before this catch what a person would do; a concurrent writer that takes
    # the same unique name in between still meets the database's own constraint.
    try:
        await row.save()
    except IntegrityError:
        raise conflict("a concurrent change took the same name; try again") from None


async def _require(model: type[Model], row_id: int, noun: str, field: str) -> Model:
    row = await model.get_or_none(id=row_id)
    if row is None:
        raise not_found(noun, ("input", field))
    return row


@dataclass(frozen=True)
class EnvironmentChanges:
    name: str | None = None
    order: int | None = None
    approval_policy: ApprovalPolicy | None = None


async def save_environment(environment_id: int | None, changes: EnvironmentChanges) -> Environment:
    """Create an environment (`environment_id` None) or change the given fields of one."""
    environment = (
        Environment()
        if environment_id is None
        else await _require(Environment, environment_id, "environment", "id")
    )
    assert isinstance(environment, Environment)
    problems: list[Problem] = []
    if changes.name is not None:
        problems += check_name(changes.name, ("input", "name"))
        if not problems and await _taken(
            Environment, "name", changes.name, exclude_id=environment_id
        ):
            problems.append(
                Problem(ErrorCode.CONFLICT, "another environment has this name", ("input", "name"))
            )
        environment.name = changes.name
    if changes.order is not None:
        if await _taken(Environment, "order", changes.order, exclude_id=environment_id):
            problems.append(
                Problem(
                    ErrorCode.CONFLICT, "another environment has this order", ("input", "order")
                )
            )
        environment.order = changes.order
    if changes.approval_policy is not None:
        environment.approval_policy = changes.approval_policy
    _raise_if(problems)
    await _save(environment)
    return environment


@dataclass(frozen=True)
class InstanceChanges:
    name: str | None = None
    environment_id: int | None = None
    engine: Engine | None = None
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = None
    max_running_tasks: int | None = None


async def save_instance(
    instance_id: int | None, changes: InstanceChanges, cipher: PasswordCipher
) -> Instance:
    """Create an instance (`instance_id` None) or change the given fields of one."""
    instance = (
        Instance()
        if instance_id is None
        else await _require(Instance, instance_id, "instance", "id")
    )
    assert isinstance(instance, Instance)
    problems: list[Problem] = []
    if changes.name is not None:
        problems += check_name(changes.name, ("input", "name"))
        if not problems and await _taken(Instance, "name", changes.name, exclude_id=instance_id):
            problems.append(
                Problem(ErrorCode.CONFLICT, "another instance has this name", ("input", "name"))
            )
        instance.name = changes.name
    if changes.environment_id is not None:
        if not await Environment.exists(id=changes.environment_id):
            problems.append(
                Problem(
                    ErrorCode.NOT_FOUND, "environment does not exist", ("input", "environmentId")
                )
            )
        instance.environment_id = changes.environment_id
    if changes.engine is not None:
        instance.engine = changes.engine
    if changes.host is not None:
        problems += check_name(changes.host, ("input", "host"), max_length=HOST_MAX_LENGTH)
        instance.host = changes.host
    if changes.port is not None:
        if not 1 <= changes.port <= 65535:
            problems.append(
                Problem(ErrorCode.INVALID_INPUT, "must be between 1 and 65535", ("input", "port"))
            )
        instance.port = changes.port
    if changes.username is not None:
        problems += check_name(changes.username, ("input", "username"))
        instance.username = changes.username
    if changes.password is not None:
        instance.password_encrypted = cipher.encrypt(changes.password)
    if changes.max_running_tasks is not None:
        if changes.max_running_tasks < 1:
            problems.append(
                Problem(ErrorCode.INVALID_INPUT, "must be at least 1", ("input", "maxRunningTasks"))
            )
        instance.max_running_tasks = changes.max_running_tasks
    _raise_if(problems)
    await _save(instance)
    return instance


async def register_database(instance_id: int, name: str) -> Database:
    """Record a database that exists on an instance."""
    _raise_if(check_database_name(name, ("input", "name")))
    async with in_transaction():
        if not await Instance.exists(id=instance_id):
            raise not_found("instance", ("input", "instanceId"))
        if await Database.exists(instance_id=instance_id, name=name):
            raise conflict("the instance already has a database with this name", ("input", "name"))
        database = Database(instance_id=instance_id, name=name)
        await _save(database)
    return database
