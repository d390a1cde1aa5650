from collections.abc import AsyncIterator

import pytest

from tests.api.support import Catalog, create_catalog, delete_all_rows
from tests.conftest import GraphQLClient, cloned_database


@pytest.fixture(scope="module")
async def module_database_url(server_url: str, template_url: str) -> AsyncIterator[str]:
    """One migrated database for a whole module: creating one costs more than most tests.

    A module opts in by overriding `database_url` with `emptied_module_database_url`.
    """
    async with cloned_database(server_url, template_url) as url:
        yield url


@pytest.fixture
async def emptied_module_database_url(module_database_url: str) -> str:
    """The module's database, emptied for each test, so that it starts as on a fresh one."""
    await delete_all_rows(module_database_url)
    return module_database_url


@pytest.fixture
async def catalog(graphql: GraphQLClient) -> Catalog:
    return await create_catalog(graphql)
