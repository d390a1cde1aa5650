"""Saving an instance: its connection options come from an allow-list, and while instance
networks are set its host must resolve inside them."""

from typing import Any

import pytest

from conveyor.db.models import Instance
from conveyor.settings import Settings
from tests.api.support import row_key, the_error
from tests.conftest import GraphQLClient

CREATE_INSTANCE = """
mutation($input: CreateInstanceInput!) {
  createInstance(input: $input) { id host connectionOptions { name value } }
}
"""
UPDATE_INSTANCE = """
mutation($input: UpdateInstanceInput!) {
  updateInstance(input: $input) { id name host connectionOptions { name value } }
}
"""
OUTSIDE = "the host resolves to an address outside the instance networks"


@pytest.fixture
def database_url(emptied_module_database_url: str) -> str:
    return emptied_module_database_url


@pytest.fixture
async def environment_id(graphql: GraphQLClient) -> str:
    data = await graphql.ok('mutation { createEnvironment(input: {name: "dev", order: 0}) { id } }')
    found: str = data["createEnvironment"]["id"]
    return found


def restricted(settings: Settings, *networks: str) -> GraphQLClient:
    """A client of a server whose instances must be on `networks`."""
    return GraphQLClient(settings.model_copy(update={"instance_networks": list(networks)}))


def instance_input(environment_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "environmentId": environment_id,
        "host": "127.0.0.1",
        "username": "conveyor",
        "password": "pw",
        **changes,
    }


def options(**values: str) -> list[dict[str, str]]:
    return [{"name": name, "value": value} for name, value in values.items()]


async def create(graphql: GraphQLClient, environment_id: str, **changes: Any) -> dict[str, Any]:
    data = await graphql.ok(CREATE_INSTANCE, {"input": instance_input(environment_id, **changes)})
    created: dict[str, Any] = data["createInstance"]
    return created


async def refusal(graphql: GraphQLClient, document: str, input: dict[str, Any]) -> dict[str, Any]:
    error = the_error(await graphql(document, {"input": input}))
    assert error["extensions"]["code"] == "INVALID_INPUT"
    return error


# --- connection options ----------------------------------------------------------------------


async def test_an_instance_keeps_its_connection_options_and_shows_them_by_name(
    graphql: GraphQLClient, environment_id: str
) -> None:
    created = await create(
        graphql,
        environment_id,
        connectionOptions=options(target_session_attrs="read-write", sslmode="verify-ca"),
    )

    assert created["connectionOptions"] == options(
        sslmode="verify-ca", target_session_attrs="read-write"
    )
    row = await Instance.get(id=row_key(created["id"]))
    assert row.connection_options == {"sslmode": "verify-ca", "target_session_attrs": "read-write"}


async def test_an_instance_has_no_options_unless_given(
    graphql: GraphQLClient, environment_id: str
) -> None:
    created = await create(graphql, environment_id)

    assert created["connectionOptions"] == []
    assert (await Instance.get(id=row_key(created["id"]))).connection_options == {}


async def test_an_update_replaces_the_options_only_when_given(
    graphql: GraphQLClient, environment_id: str
) -> None:
    instance_id = (
        await create(graphql, environment_id, connectionOptions=options(sslmode="require"))
    )["id"]

    renamed = await graphql.ok(UPDATE_INSTANCE, {"input": {"id": instance_id, "name": "orders2"}})
    replaced = await graphql.ok(
        UPDATE_INSTANCE,
        {"input": {"id": instance_id, "connectionOptions": options(target_session_attrs="any")}},
    )
    cleared = await graphql.ok(
        UPDATE_INSTANCE, {"input": {"id": instance_id, "connectionOptions": []}}
    )

    assert renamed["updateInstance"]["connectionOptions"] == options(sslmode="require")
    assert replaced["updateInstance"]["connectionOptions"] == options(target_session_attrs="any")
    assert cleared["updateInstance"]["connectionOptions"] == []


async def test_every_refused_option_is_reported_at_its_place_and_nothing_is_saved(
    graphql: GraphQLClient, environment_id: str
) -> None:
    given = [
        {"name": "sslmode", "value": "require"},
        {"name": "sslrootcert", "value": "/etc/ssl/private/server.key"},
        {"name": "target_session_attrs", "value": "master"},
        {"name": "options", "value": "-c search_path=evil"},
        {"name": "sslmode", "value": "disable"},
    ]

    error = await refusal(
        graphql, CREATE_INSTANCE, instance_input(environment_id, connectionOptions=given)
    )

    assert [
        (problem["field"], problem["message"]) for problem in error["extensions"]["problems"]
    ] == [
        (
            ["input", "connectionOptions", 1, "name"],
            "'sslrootcert' is not allowed: it names a file on the Conveyor server",
        ),
        (
            ["input", "connectionOptions", 2, "value"],
            "'target_session_attrs' must be one of: any, primary, standby, read-write, "
            "read-only, prefer-standby",
        ),
        (
            ["input", "connectionOptions", 3, "name"],
            "'options' is not allowed: it sets server settings at connection; Conveyor sets "
            "the session's own",
        ),
        (["input", "connectionOptions", 4, "name"], "'sslmode' is given more than once"),
    ]
    assert await Instance.all().count() == 0


async def test_a_refused_option_on_update_keeps_the_stored_ones(
    graphql: GraphQLClient, environment_id: str
) -> None:
    instance_id = (
        await create(graphql, environment_id, connectionOptions=options(sslmode="require"))
    )["id"]

    error = await refusal(
        graphql,
        UPDATE_INSTANCE,
        {"id": instance_id, "connectionOptions": options(application_name="psql")},
    )

    assert error["extensions"]["field"] == ["input", "connectionOptions", 0, "name"]
    row = await Instance.get(id=row_key(instance_id))
    assert row.connection_options == {"sslmode": "require"}


# --- instance networks -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "::ffff:127.0.0.1"])
async def test_a_host_outside_the_networks_is_refused_without_its_addresses(
    graphql: GraphQLClient, settings: Settings, environment_id: str, host: str
) -> None:
    client = restricted(settings, "10.0.0.0/8")

    error = await refusal(client, CREATE_INSTANCE, instance_input(environment_id, host=host))

    assert error["extensions"]["field"] == ["input", "host"]
    assert error["message"] == OUTSIDE
    assert await Instance.all().count() == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.42"])
async def test_a_host_inside_the_networks_is_saved(
    graphql: GraphQLClient, settings: Settings, environment_id: str, host: str
) -> None:
    client = restricted(settings, "127.0.0.0/8", "::1")

    assert (await create(client, environment_id, host=host))["host"] == host


async def test_a_host_that_does_not_resolve_cannot_be_checked_and_is_refused(
    graphql: GraphQLClient, settings: Settings, environment_id: str
) -> None:
    client = restricted(settings, "127.0.0.0/8")

    error = await refusal(
        client, CREATE_INSTANCE, instance_input(environment_id, host="no-such-host.invalid")
    )

    assert (error["extensions"]["field"], error["message"]) == (
        ["input", "host"],
        "the host does not resolve, so it cannot be checked against the networks",
    )


async def test_a_unix_socket_is_refused_while_networks_are_set(
    graphql: GraphQLClient, settings: Settings, environment_id: str
) -> None:
    client = restricted(settings, "127.0.0.0/8")

    error = await refusal(
        client, CREATE_INSTANCE, instance_input(environment_id, host="/var/run/postgresql")
    )

    assert error["extensions"]["field"] == ["input", "host"]


async def test_moving_an_instance_outside_the_networks_is_refused(
    graphql: GraphQLClient, settings: Settings, environment_id: str
) -> None:
    client = restricted(settings, "127.0.0.0/8")
    instance_id = (await create(client, environment_id))["id"]

    error = await refusal(client, UPDATE_INSTANCE, {"id": instance_id, "host": "10.1.2.3"})

    assert (error["extensions"]["field"], error["message"]) == (["input", "host"], OUTSIDE)
    assert (await Instance.get(id=row_key(instance_id))).host == "127.0.0.1"


async def test_a_change_that_keeps_the_host_does_not_check_it_again(
    graphql: GraphQLClient, settings: Settings, environment_id: str
) -> None:
    # Saved before the networks were set: it may still be renamed; the runner refuses it.
    instance_id = (await create(graphql, environment_id, host="10.1.2.3"))["id"]

    data = await restricted(settings, "127.0.0.0/8").ok(
        UPDATE_INSTANCE, {"input": {"id": instance_id, "name": "renamed"}}
    )

    assert data["updateInstance"]["name"] == "renamed"


async def test_verify_full_needs_an_ip_address_host_while_networks_are_set(
    graphql: GraphQLClient, settings: Settings, environment_id: str
) -> None:
    client = restricted(settings, "127.0.0.0/8")
    verify_full = options(sslmode="verify-full")

    error = await refusal(
        client,
        CREATE_INSTANCE,
        instance_input(environment_id, host="localhost", connectionOptions=verify_full),
    )
    by_address = await create(client, environment_id, connectionOptions=verify_full)
    anywhere = await create(
        graphql, environment_id, name="other", host="localhost", connectionOptions=verify_full
    )

    assert error["extensions"]["field"] == ["input", "connectionOptions"]
    assert "give the host as an IP address, or use verify-ca" in error["message"]
    assert by_address["connectionOptions"] == verify_full
    assert anywhere["connectionOptions"] == verify_full
