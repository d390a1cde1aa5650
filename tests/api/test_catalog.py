"""The catalog's mutations: environments, instances (with their write-only password), databases."""

from collections.abc import Callable
from typing import Any

import pytest

from conveyor.crypto import PasswordCipher
from conveyor.db.models import Database, Environment, Instance
from conveyor.settings import Settings
from tests.api.support import Catalog, global_id, row_key, the_error
from tests.conftest import GraphQLClient

CREATE_ENVIRONMENT = """
mutation($input: CreateEnvironmentInput!) {
  createEnvironment(input: $input) { id name order approvalPolicy }
}
"""
UPDATE_ENVIRONMENT = """
mutation($input: UpdateEnvironmentInput!) {
  updateEnvironment(input: $input) { id name order approvalPolicy }
}
"""
CREATE_INSTANCE = """
mutation($input: CreateInstanceInput!) {
  createInstance(input: $input) {
    id name host port username engine maxRunningTasks environment { name }
  }
}
"""
UPDATE_INSTANCE = """
mutation($input: UpdateInstanceInput!) {
  updateInstance(input: $input) { id name host port environment { name } }
}
"""
REGISTER_DATABASE = """
mutation($input: RegisterDatabaseInput!) {
  registerDatabase(input: $input) { id name instance { name } }
}
"""


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    """The module's one database, emptied for each test: creating one costs more than a test."""
    return emptied_module_database_url


async def error_of(graphql: GraphQLClient, document: str, input: dict[str, Any]) -> dict[str, Any]:
    """The one error of a refused mutation."""
    return the_error(await graphql(document, {"input": input}))


def assert_refused(error: dict[str, Any], code: str, field: list[str], message: str) -> None:
    assert (error["extensions"]["code"], error["extensions"]["field"], error["message"]) == (
        code,
        field,
        message,
    )


async def create_environment(graphql: GraphQLClient, name: str, order: int) -> str:
    data = await graphql.ok(CREATE_ENVIRONMENT, {"input": {"name": name, "order": order}})
    environment_id: str = data["createEnvironment"]["id"]
    return environment_id


def instance_input(environment_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "environmentId": environment_id,
        "host": "db.internal",
        "port": 5433,
        "username": "conveyor",
        "password": "correct horse battery staple",
        **changes,
    }


async def create_instance(graphql: GraphQLClient, environment_id: str, **changes: Any) -> str:
    data = await graphql.ok(CREATE_INSTANCE, {"input": instance_input(environment_id, **changes)})
    instance_id: str = data["createInstance"]["id"]
    return instance_id


# --- environments -----------------------------------------------------------------------------


async def test_creates_an_environment(graphql: GraphQLClient) -> None:
    data = await graphql.ok(
        CREATE_ENVIRONMENT, {"input": {"name": "prod", "order": 30, "approvalPolicy": "MANUAL"}}
    )

    created = data["createEnvironment"]
    assert (created["name"], created["order"], created["approvalPolicy"]) == ("prod", 30, "MANUAL")
    row = await Environment.get(id=row_key(created["id"]))
    assert (row.name, row.order, row.approval_policy) == ("prod", 30, "MANUAL")


async def test_an_environment_is_automatic_unless_told_otherwise(graphql: GraphQLClient) -> None:
    data = await graphql.ok(CREATE_ENVIRONMENT, {"input": {"name": "dev", "order": 0}})

    assert data["createEnvironment"]["approvalPolicy"] == "AUTOMATIC"


async def test_refuses_a_second_environment_of_the_same_name(graphql: GraphQLClient) -> None:
    await create_environment(graphql, "dev", 0)

    error = await error_of(graphql, CREATE_ENVIRONMENT, {"name": "dev", "order": 1})

    assert_refused(error, "CONFLICT", ["input", "name"], "another environment has this name")
    assert await Environment.all().count() == 1


async def test_refuses_a_second_environment_of_the_same_order(graphql: GraphQLClient) -> None:
    await create_environment(graphql, "dev", 0)

    error = await error_of(graphql, CREATE_ENVIRONMENT, {"name": "test", "order": 0})

    assert_refused(error, "CONFLICT", ["input", "order"], "another environment has this order")
    assert await Environment.all().count() == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("  \t", "must not be empty"),
        ("e" * 101, "must be at most 100 characters"),
    ],
    ids=["empty", "blank", "too long"],
)
async def test_refuses_an_environment_name(graphql: GraphQLClient, name: str, message: str) -> None:
    error = await error_of(graphql, CREATE_ENVIRONMENT, {"name": name, "order": 0})

    assert_refused(error, "INVALID_INPUT", ["input", "name"], message)
    assert await Environment.all().count() == 0


async def test_updates_only_the_given_fields_of_an_environment(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "staging", 20)

    data = await graphql.ok(
        UPDATE_ENVIRONMENT, {"input": {"id": environment_id, "approvalPolicy": "MANUAL"}}
    )

    assert data["updateEnvironment"] == {
        "id": environment_id,
        "name": "staging",
        "order": 20,
        "approvalPolicy": "MANUAL",
    }


async def test_an_environment_may_keep_its_own_name_and_order(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "dev", 0)

    data = await graphql.ok(
        UPDATE_ENVIRONMENT, {"input": {"id": environment_id, "name": "dev", "order": 0}}
    )

    assert data["updateEnvironment"]["name"] == "dev"


async def test_refuses_renaming_an_environment_to_a_taken_name(graphql: GraphQLClient) -> None:
    await create_environment(graphql, "dev", 0)
    test_id = await create_environment(graphql, "test", 1)

    error = await error_of(graphql, UPDATE_ENVIRONMENT, {"id": test_id, "name": "dev"})

    assert_refused(error, "CONFLICT", ["input", "name"], "another environment has this name")
    assert (await Environment.get(id=row_key(test_id))).name == "test"


async def test_refuses_moving_an_environment_to_a_taken_order(graphql: GraphQLClient) -> None:
    await create_environment(graphql, "dev", 0)
    test_id = await create_environment(graphql, "test", 1)

    error = await error_of(graphql, UPDATE_ENVIRONMENT, {"id": test_id, "order": 0})

    assert_refused(error, "CONFLICT", ["input", "order"], "another environment has this order")
    assert (await Environment.get(id=row_key(test_id))).order == 1


async def test_refuses_an_empty_name_on_update(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "dev", 0)

    error = await error_of(graphql, UPDATE_ENVIRONMENT, {"id": environment_id, "name": " "})

    assert_refused(error, "INVALID_INPUT", ["input", "name"], "must not be empty")
    assert (await Environment.get(id=row_key(environment_id))).name == "dev"


@pytest.mark.parametrize(
    "make_id",
    [lambda catalog: global_id("Environment", 987_654), lambda catalog: catalog.instances["alpha"]],
    ids=["no such environment", "an instance's id"],
)
async def test_refuses_updating_an_unknown_environment(
    graphql: GraphQLClient, catalog: Catalog, make_id: Callable[[Catalog], str]
) -> None:
    error = await error_of(graphql, UPDATE_ENVIRONMENT, {"id": make_id(catalog), "name": "qa"})

    assert_refused(error, "NOT_FOUND", ["input", "id"], "environment does not exist")
    assert not await Environment.exists(name="qa")


# --- instances --------------------------------------------------------------------------------


async def test_no_field_of_any_output_type_reads_a_password(graphql: GraphQLClient) -> None:
    data = await graphql.ok(
        "{ __schema { types { name kind fields { name } } } }",
    )
    types = {item["name"]: item for item in data["__schema"]["types"]}

    instance_fields = {field["name"] for field in types["Instance"]["fields"]}
    assert {"host", "port", "username"} <= instance_fields
    readable = [
        f"{item['name']}.{field['name']}"
        for item in types.values()
        if item["kind"] in ("OBJECT", "INTERFACE")
        for field in item["fields"] or []
    ]
    assert [name for name in readable if "password" in name.lower()] == []


async def test_the_password_is_stored_encrypted_with_the_settings_key(
    graphql: GraphQLClient, settings: Settings
) -> None:
    environment_id = await create_environment(graphql, "dev", 0)

    instance_id = await create_instance(graphql, environment_id, password="hunter2-plain")

    row = await Instance.get(id=row_key(instance_id))
    assert "hunter2-plain" not in row.password_encrypted
    assert settings.secret_key is not None
    assert PasswordCipher(settings.secret_key).decrypt(row.password_encrypted) == "hunter2-plain"


async def test_creates_an_instance_in_its_environment(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "dev", 0)

    data = await graphql.ok(CREATE_INSTANCE, {"input": instance_input(environment_id)})

    assert {key: value for key, value in data["createInstance"].items() if key != "id"} == {
        "name": "orders",
        "host": "db.internal",
        "port": 5433,
        "username": "conveyor",
        "engine": "POSTGRES",
        "maxRunningTasks": 1,
        "environment": {"name": "dev"},
    }


async def test_a_new_password_replaces_the_ciphertext(
    graphql: GraphQLClient, settings: Settings
) -> None:
    environment_id = await create_environment(graphql, "dev", 0)
    instance_id = await create_instance(graphql, environment_id, password="first")
    before = (await Instance.get(id=row_key(instance_id))).password_encrypted

    await graphql.ok(UPDATE_INSTANCE, {"input": {"id": instance_id, "password": "second"}})

    after = (await Instance.get(id=row_key(instance_id))).password_encrypted
    assert after != before
    assert "second" not in after
    assert settings.secret_key is not None
    assert PasswordCipher(settings.secret_key).decrypt(after) == "second"


async def test_an_update_without_a_password_keeps_the_stored_one(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "dev", 0)
    instance_id = await create_instance(graphql, environment_id)
    before = (await Instance.get(id=row_key(instance_id))).password_encrypted

    data = await graphql.ok(UPDATE_INSTANCE, {"input": {"id": instance_id, "host": "db2.internal"}})

    assert (data["updateInstance"]["host"], data["updateInstance"]["port"]) == (
        "db2.internal",
        5433,
    )
    assert (await Instance.get(id=row_key(instance_id))).password_encrypted == before


async def test_moves_an_instance_to_another_environment(graphql: GraphQLClient) -> None:
    dev_id = await create_environment(graphql, "dev", 0)
    prod_id = await create_environment(graphql, "prod", 1)
    instance_id = await create_instance(graphql, dev_id)

    data = await graphql.ok(
        UPDATE_INSTANCE, {"input": {"id": instance_id, "environmentId": prod_id}}
    )

    assert data["updateInstance"]["environment"] == {"name": "prod"}


@pytest.mark.parametrize("port", [0, -1, 65536])
async def test_refuses_a_port_out_of_range(graphql: GraphQLClient, port: int) -> None:
    environment_id = await create_environment(graphql, "dev", 0)

    error = await error_of(graphql, CREATE_INSTANCE, instance_input(environment_id, port=port))

    assert_refused(error, "INVALID_INPUT", ["input", "port"], "must be between 1 and 65535")
    assert await Instance.all().count() == 0


async def test_refuses_a_port_out_of_range_on_update(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "dev", 0)
    instance_id = await create_instance(graphql, environment_id)

    error = await error_of(graphql, UPDATE_INSTANCE, {"id": instance_id, "port": 70000})

    assert_refused(error, "INVALID_INPUT", ["input", "port"], "must be between 1 and 65535")
    assert (await Instance.get(id=row_key(instance_id))).port == 5433


async def test_refuses_a_task_limit_below_one(graphql: GraphQLClient) -> None:
    environment_id = await create_environment(graphql, "dev", 0)

    error = await error_of(
        graphql, CREATE_INSTANCE, instance_input(environment_id, maxRunningTasks=0)
    )

    assert_refused(error, "INVALID_INPUT", ["input", "maxRunningTasks"], "must be at least 1")


@pytest.mark.parametrize(
    "make_id",
    [lambda catalog: global_id("Environment", 987_654), lambda catalog: catalog.databases["alpha"]],
    ids=["no such environment", "a database's id"],
)
async def test_refuses_an_instance_in_an_unknown_environment(
    graphql: GraphQLClient, catalog: Catalog, make_id: Callable[[Catalog], str]
) -> None:
    before = await Instance.all().count()

    error = await error_of(graphql, CREATE_INSTANCE, instance_input(make_id(catalog)))

    assert_refused(error, "NOT_FOUND", ["input", "environmentId"], "environment does not exist")
    assert await Instance.all().count() == before


async def test_refuses_moving_an_instance_to_an_unknown_environment(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    unknown = global_id("Environment", 987_654)

    error = await error_of(
        graphql,
        UPDATE_INSTANCE,
        {"id": catalog.instances["alpha"], "environmentId": unknown},
    )

    assert_refused(error, "NOT_FOUND", ["input", "environmentId"], "environment does not exist")
    row = await Instance.get(id=row_key(catalog.instances["alpha"]))
    assert row.environment_id == row_key(catalog.environments["dev"])


async def test_refuses_updating_an_unknown_instance(graphql: GraphQLClient) -> None:
    error = await error_of(
        graphql, UPDATE_INSTANCE, {"id": global_id("Instance", 987_654), "host": "x"}
    )

    assert_refused(error, "NOT_FOUND", ["input", "id"], "instance does not exist")


async def test_refuses_a_second_instance_of_the_same_name(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    error = await error_of(
        graphql, CREATE_INSTANCE, instance_input(catalog.environments["dev"], name="alpha")
    )

    assert_refused(error, "CONFLICT", ["input", "name"], "another instance has this name")
    assert await Instance.filter(name="alpha").count() == 1


# --- databases --------------------------------------------------------------------------------


async def test_registers_a_database_on_an_instance(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    data = await graphql.ok(
        REGISTER_DATABASE, {"input": {"instanceId": catalog.instances["alpha"], "name": "orders"}}
    )

    assert data["registerDatabase"]["name"] == "orders"
    assert data["registerDatabase"]["instance"] == {"name": "alpha"}


async def test_refuses_a_second_database_of_the_same_name_on_an_instance(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    error = await error_of(
        graphql, REGISTER_DATABASE, {"instanceId": catalog.instances["alpha"], "name": "alpha_db"}
    )

    assert_refused(
        error,
        "CONFLICT",
        ["input", "name"],
        "the instance already has a database with this name",
    )
    assert await Database.filter(name="alpha_db").count() == 1


async def test_the_same_database_name_may_exist_on_another_instance(
    graphql: GraphQLClient, catalog: Catalog
) -> None:
    data = await graphql.ok(
        REGISTER_DATABASE, {"input": {"instanceId": catalog.instances["beta"], "name": "alpha_db"}}
    )

    assert data["registerDatabase"]["instance"] == {"name": "beta"}
    assert await Database.filter(name="alpha_db").count() == 2


@pytest.mark.parametrize(
    "make_id",
    [lambda catalog: global_id("Instance", 987_654), lambda catalog: catalog.environments["dev"]],
    ids=["no such instance", "an environment's id"],
)
async def test_refuses_a_database_on_an_unknown_instance(
    graphql: GraphQLClient, catalog: Catalog, make_id: Callable[[Catalog], str]
) -> None:
    error = await error_of(
        graphql, REGISTER_DATABASE, {"instanceId": make_id(catalog), "name": "orders"}
    )

    assert_refused(error, "NOT_FOUND", ["input", "instanceId"], "instance does not exist")
    assert not await Database.exists(name="orders")


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "must not be empty"), ("d" * 64, "must be at most 63 characters")],
    ids=["empty", "too long"],
)
async def test_refuses_a_database_name(
    graphql: GraphQLClient, catalog: Catalog, name: str, message: str
) -> None:
    error = await error_of(
        graphql, REGISTER_DATABASE, {"instanceId": catalog.instances["alpha"], "name": name}
    )

    assert_refused(error, "INVALID_INPUT", ["input", "name"], message)
    assert await Database.all().count() == 2
