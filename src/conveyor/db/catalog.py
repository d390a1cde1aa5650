"""Writes to the catalog: environments, instances and the databases on them."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from conveyor.crypto import PasswordCipher
from conveyor.db.models import Database, Environment, Instance
from conveyor.domain.permissions import Operation, Principal, require
from conveyor.domain.plan import check_database_name, check_name
from conveyor.domain.statuses import ApprovalPolicy, Engine
from conveyor.domain.targets import (
    HOST_MAX_LENGTH,
    ConnectionOptions,
    InstanceNetworks,
    connection_option_problems,
    pinned_address_problem,
)
from conveyor.errors import ConveyorError, ErrorCode, Problem, conflict, not_found
from conveyor.hosts import HostNotAllowed, checked_hosts

#: How long saving an instance waits for its host to resolve, while instance networks are set.
RESOLVE_TIMEOUT_SECONDS = 10.0
#: Why a database on an instance is Conveyor's own and may not be recorded, asked of the
#: instance itself (runner.own_database); None when it is not.
OwnDatabaseCheck = Callable[[Instance, str], Awaitable[str | None]]
OWN_DATABASE_CHECKS_AT_ONCE = 8


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
    developers_may_approve: bool | None = None
    creator_may_approve: bool | None = None


async def save_environment(
    principal: Principal, environment_id: int | None, changes: EnvironmentChanges
) -> Environment:
    """Create an environment (`environment_id` None) or change the given fields of one."""
    require(principal, Operation.MANAGE_CATALOG)
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
    if changes.developers_may_approve is not None:
        environment.developers_may_approve = changes.developers_may_approve
    if changes.creator_may_approve is not None:
        environment.creator_may_approve = changes.creator_may_approve
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
    password: str | None = field(default=None, repr=False)
    max_running_tasks: int | None = None
    #: (name, value) pairs that replace all the instance's options; () clears them.
    connection_options: tuple[tuple[str, str], ...] | None = None


async def save_instance(
    principal: Principal,
    instance_id: int | None,
    changes: InstanceChanges,
    cipher: PasswordCipher,
    *,
    networks: InstanceNetworks,
    own_database: OwnDatabaseCheck,
) -> Instance:
    """Create an instance (`instance_id` None) or change the given fields of one; with
    `networks` set, a new host must resolve inside them. An instance may be the server
    Conveyor's database is on, but none of its databases may be that one."""
    require(principal, Operation.MANAGE_CATALOG)
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
    host_problems = []
    if changes.host is not None:
        host_problems = check_name(changes.host, ("input", "host"), max_length=HOST_MAX_LENGTH)
        problems += host_problems
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
    options_problems = []
    if changes.connection_options is not None:
        options_problems = connection_option_problems(
            changes.connection_options, ("input", "connectionOptions")
        )
        problems += options_problems
        if not options_problems:
            options = ConnectionOptions.parse(changes.connection_options)
            instance.connection_options = options.stored()
    elif instance_id is None:
        instance.connection_options = {}
    # Checked only when the host or the options change: the DNS answer is not asked again for
    # a rename, and the runner checks the host before each connection anyway.
    connection_changed = changes.host is not None or changes.connection_options is not None
    if networks.restricted and connection_changed and not (host_problems or options_problems):
        problems += await _network_problems(
            instance, networks, host_changed=changes.host is not None
        )
    # A move to another server (or port) may bring a database recorded by name onto
    # Conveyor's own; username and password changes reach the same server.
    moved = connection_changed or changes.port is not None
    if instance_id is not None and moved and not problems:
        problems += await _own_database_problems(instance, own_database)
    _raise_if(problems)
    await _save(instance)
    return instance


async def _own_database_problems(
    instance: Instance, own_database: OwnDatabaseCheck
) -> list[Problem]:
    """Whether the instance, where it now points, holds Conveyor's database among its own."""
    names = (
        await Database.filter(instance_id=instance.id)
        .order_by("name")
        .values_list("name", flat=True)
    )
    # One connection per database, a few at a time: a host that does not answer then costs
    # about one connect timeout, not one per database.
    room = asyncio.Semaphore(OWN_DATABASE_CHECKS_AT_ONCE)

    async def refusal(name: str) -> str | None:
        async with room:
            return await own_database(instance, name)

    refusals = await asyncio.gather(*(refusal(str(name)) for name in names))
    for name, found in zip(names, refusals, strict=True):
        if found is not None:
            message = f"its database {name!r} would be Conveyor's own, which is never a target"
            return [Problem(ErrorCode.FORBIDDEN, message, ("input", "host"))]
    return []


async def _network_problems(
    instance: Instance, networks: InstanceNetworks, *, host_changed: bool
) -> list[Problem]:
    """Whether a new host resolves inside the networks, and whether the instance's options
    can work against the checked address the runner will connect to."""
    if host_changed:
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
                await checked_hosts(instance.host, networks)
        except HostNotAllowed as error:
            return [Problem(ErrorCode.INVALID_INPUT, str(error), ("input", "host"))]
        except (OSError, TimeoutError):
            message = "the host does not resolve, so it cannot be checked against the networks"
            return [Problem(ErrorCode.INVALID_INPUT, message, ("input", "host"))]
    options = ConnectionOptions.parse(instance.connection_options.items())
    problem = pinned_address_problem(instance.host, options)
    if problem is not None:
        return [Problem(ErrorCode.INVALID_INPUT, problem, ("input", "connectionOptions"))]
    return []


async def register_database(
    principal: Principal, instance_id: int, name: str, *, own_database: OwnDatabaseCheck
) -> Database:
    """Record a database that exists on an instance, unless it is Conveyor's own."""
    require(principal, Operation.MANAGE_CATALOG)
    _raise_if(check_database_name(name, ("input", "name")))
    instance = await Instance.get_or_none(id=instance_id)
    if instance is None:
        raise not_found("instance", ("input", "instanceId"))
    # Asked before the transaction: the instance may take the connect timeout to answer.
    refusal = await own_database(instance, name)
    if refusal is not None:
        raise ConveyorError([Problem(ErrorCode.FORBIDDEN, refusal, ("input", "name"))])
    async with in_transaction():
        if not await Instance.exists(id=instance_id):
            raise not_found("instance", ("input", "instanceId"))
        if await Database.exists(instance_id=instance_id, name=name):
            raise conflict("the instance already has a database with this name", ("input", "name"))
        database = Database(instance_id=instance_id, name=name)
        await _save(database)
    return database
