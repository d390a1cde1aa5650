"""A small, realistic sample so that a new user sees a real pipeline tree at once."""

import logging
import secrets
from urllib.parse import parse_qs, urlparse

import asyncpg

from conveyor.crypto import PasswordCipher
from conveyor.db import catalog, issues
from conveyor.db.models import Environment
from conveyor.domain.permissions import SYSTEM, Principal, Role
from conveyor.domain.plan import IssuePlan, StagePlan, TaskPlan
from conveyor.domain.statuses import ApprovalPolicy, Engine, TaskType
from conveyor.domain.targets import UNRESTRICTED
from conveyor.runner.own_database import OwnDatabaseCheck
from conveyor.runner.targets import quote_identifier
from conveyor.settings import Settings

logger = logging.getLogger(__name__)

#: The demo's issues are opened by a developer, so that an admin or DBA approves prod.
DEMO_AUTHOR = Principal(actor="demo", role=Role.DEVELOPER)
ENVIRONMENTS = (
    ("dev", ApprovalPolicy.AUTOMATIC),
    ("test", ApprovalPolicy.AUTOMATIC),
    ("prod", ApprovalPolicy.MANUAL),
)
CREATE_ORDERS = """CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
)"""
SEED_ORDERS = "INSERT INTO orders (customer, total_cents) VALUES ('ada', 4200), ('alan', 1337)"
#: The role the demo's instance connects as: it owns the demo's databases and nothing else,
#: so its tasks cannot reach Conveyor's tables, other databases or the server itself.
DEMO_ROLE = "conveyor_demo"
# A role that can log in and nothing more; the password goes through format(%L), as a
# utility statement takes no parameters.
_ROLE_DEFINITION = (
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD %L"
)
_CREATE_ROLE = f"SELECT format('CREATE ROLE %I {_ROLE_DEFINITION}', $1::text, $2::text)"
_ALTER_ROLE = f"SELECT format('ALTER ROLE %I {_ROLE_DEFINITION}', $1::text, $2::text)"


async def _prepare_targets(database_url: str, names: list[str], password: str) -> None:
    """The demo's role (created, or reset to no privileges and a new password) and its
    databases, owned by it."""
    connection = await asyncpg.connect(database_url)
    try:
        exists = await connection.fetchval(
            "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", DEMO_ROLE
        )
        await connection.execute(
            await connection.fetchval(_ALTER_ROLE if exists else _CREATE_ROLE, DEMO_ROLE, password)
        )
        existing = {
            row["datname"] for row in await connection.fetch("SELECT datname FROM pg_database")
        }
        owner = quote_identifier(DEMO_ROLE)
        for name in names:
            database = quote_identifier(name)
            if name in existing:
                await connection.execute(f"ALTER DATABASE {database} OWNER TO {owner}")
            else:
                await connection.execute(f"CREATE DATABASE {database} OWNER {owner}")
    finally:
        await connection.close()
    for name in names:
        # Owning a database gives CREATE on its public schema through pg_database_owner, which
        # a NOINHERIT role does not use before PostgreSQL 16: granted outright, as the target
        # checks (target-privilege) would otherwise rightly find.
        target = await asyncpg.connect(_on_database(database_url, name))
        try:
            await target.execute(f"GRANT CREATE ON SCHEMA public TO {quote_identifier(DEMO_ROLE)}")
        finally:
            await target.close()


def _on_database(database_url: str, name: str) -> str:
    return urlparse(database_url)._replace(path=f"/{name}").geturl()


async def load_demo(database_url: str, settings: Settings, cipher: PasswordCipher) -> bool:
    """Load the sample unless environments exist already; True when it was loaded."""
    if await Environment.exists():
        logger.info("demo not loaded: the database already has environments")
        return False
    environments = {}
    for order, (name, policy) in enumerate(ENVIRONMENTS):
        protected = policy is ApprovalPolicy.MANUAL
        environments[name] = await catalog.save_environment(
            SYSTEM,
            None,
            catalog.EnvironmentChanges(
                name=name,
                order=order * 10,
                approval_policy=policy,
                developers_may_approve=not protected,
                creator_may_approve=not protected,
            ),
        )
    # The demo's target is the server's own PostgreSQL, at the address Conveyor reaches it
    # by, but as a role of its own: never Conveyor's superuser.
    url = urlparse(database_url)
    host = parse_qs(url.query).get("host", [url.hostname or "localhost"])[0]
    names = [f"demo_{env}" for env in environments]
    password = secrets.token_urlsafe(24)
    await _prepare_targets(database_url, names, password)
    own_database = OwnDatabaseCheck(settings, cipher)
    instance = await catalog.save_instance(
        SYSTEM,
        None,
        catalog.InstanceChanges(
            name="local",
            engine=Engine.POSTGRES,
            environment_id=environments["dev"].id,
            host=host,
            port=url.port or 5432,
            username=DEMO_ROLE,
            password=password,
            max_running_tasks=4,
        ),
        cipher,
        # The operator's own database, not a client's choice; the runner still checks it
        # against the instance networks before each connection.
        networks=UNRESTRICTED,
        own_database=own_database,
    )
    databases = {
        env: await catalog.register_database(
            SYSTEM, instance.id, f"demo_{env}", own_database=own_database
        )
        for env in environments
    }
    await issues.create_issue(
        DEMO_AUTHOR,
        IssuePlan(
            title="Add the orders table",
            description="Create `orders` and seed two rows, promoted from dev to prod.",
            stages=tuple(
                StagePlan(
                    environment_id=environments[env].id,
                    tasks=(
                        TaskPlan(
                            type=TaskType.SCHEMA_UPDATE,
                            name="create orders",
                            ref=f"{env}-schema",
                            instance_id=instance.id,
                            database_id=databases[env].id,
                            statement=CREATE_ORDERS,
                        ),
                        TaskPlan(
                            type=TaskType.DATA_UPDATE,
                            name="seed orders",
                            instance_id=instance.id,
                            database_id=databases[env].id,
                            statement=SEED_ORDERS,
                            blocked_by=(f"{env}-schema",),
                        ),
                    ),
                )
                for env in environments
            ),
        ),
    )
    await issues.create_issue(
        DEMO_AUTHOR,
        IssuePlan(
            title="Discover the databases of instance 'local'",
            stages=(
                StagePlan(
                    environment_id=environments["dev"].id,
                    tasks=(TaskPlan(type=TaskType.INSTANCE_SYNC, instance_id=instance.id),),
                ),
            ),
        ),
    )
    logger.info("demo data loaded")
    return True
