from dataclasses import dataclass

import pytest

from tests.conftest import GraphQLClient

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
