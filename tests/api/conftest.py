import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlparse

import asyncpg
import pytest

from tests.conftest import GraphQLClient, _admin_execute, with_database

#: Conveyor's tables, each before the tables it references.
TABLES = (
    "event",
    "task_run",
    "task_dependency",
    "task",
    "stage",
    "pipeline",
    "issue",
    "database",
    "instance",
    "environment",
)


@pytest.fixture(scope="module")
async def module_database_url(server_url: str, template_url: str) -> AsyncIterator[str]:
    """One migrated database for a whole module: creating one costs more than most tests.

    A module opts in by overriding `database_url` with one that empties it (delete_all_rows).
    """
    name = f"conveyor_test_{uuid.uuid4().hex[:12]}"
    template = urlparse(template_url).path.lstrip("/")
    await _admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield with_database(server_url, name)
    await _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def delete_all_rows(database_url: str) -> None:
    """Empty every table of Conveyor's, so that a test starts as on a fresh database."""
    # DELETE, not TRUNCATE: on tables this small it is several times faster.
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            for table in TABLES:
                await connection.execute(f"DELETE FROM {table}")
    finally:
        await connection.close()


CREATE_ENVIRONMENT = """
mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id name } }
"""
CREATE_INSTANCE = """
mutation($input: CreateInstanceInput!) { createInstance(input: $input) { id name } }
"""
REGISTER_DATABASE = """
mutation($input: RegisterDatabaseInput!) { registerDatabase(input: $input) { id name } }
"""


@dataclass(frozen=True)
class Catalog:
    """Global ids of a small catalog: three environments, two instances, their databases."""

    environments: dict[str, str]
    instances: dict[str, str]
    databases: dict[str, str]


@pytest.fixture
async def catalog(graphql: GraphQLClient) -> Catalog:
    environments = {}
    for order, (name, policy) in enumerate(
        [("dev", "AUTOMATIC"), ("test", "AUTOMATIC"), ("prod", "MANUAL")]
    ):
        data = await graphql.ok(
            CREATE_ENVIRONMENT,
            {"input": {"name": name, "order": order, "approvalPolicy": policy}},
        )
        environments[name] = data["createEnvironment"]["id"]
    instances = {}
    databases = {}
    for name in ("alpha", "beta"):
        data = await graphql.ok(
            CREATE_INSTANCE,
            {
                "input": {
                    "name": name,
                    "environmentId": environments["dev"],
                    "host": "127.0.0.1",
                    "username": "postgres",
                    "password": f"secret-{name}",
                }
            },
        )
        instances[name] = data["createInstance"]["id"]
        data = await graphql.ok(
            REGISTER_DATABASE, {"input": {"instanceId": instances[name], "name": f"{name}_db"}}
        )
        databases[name] = data["registerDatabase"]["id"]
    return Catalog(environments=environments, instances=instances, databases=databases)
