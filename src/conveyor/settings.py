"""Conveyor's configuration, read once from `CONVEYOR_*` environment variables."""

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from conveyor.domain.targets import InstanceNetworks


def default_data_dir() -> Path:
    # Run as root, the embedded PostgreSQL opens read/execute permissions on every parent of
    # its data directory; under /var/lib those parents are already world-readable, whereas a
    # root home directory (0700) would be opened to everyone.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/conveyor")
    return Path(platformdirs.user_data_dir("conveyor"))


def _comma_separated(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


#: A list read from one environment variable as comma-separated values.
CommaSeparated = Annotated[list[str], NoDecode, BeforeValidator(_comma_separated)]


class Mode(StrEnum):
    """Development shows a client everything that helps write queries; production shows less."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; unset, an embedded PostgreSQL runs in the data directory.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    secret_key: str | None = Field(
        default=None,
        description="Fernet key that encrypts instance passwords; generated into the data "
        "directory when unset.",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    db_pool_max_size: int = Field(default=10, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    max_page_size: int = Field(default=100, ge=1)
    compiled_reads: bool = Field(
        default=True,
        description="Answer the queries the compiler covers with one SQL statement that builds "
        "the response (the rest go to the resolvers); off, every query goes to the resolvers.",
    )
    run_worker: bool = Field(default=True, description="Run a task worker inside `conveyor serve`.")
    worker_concurrency: int = Field(default=4, ge=1, description="Tasks one worker runs at once.")
    lease_seconds: float = Field(
        default=15, gt=0, description="A RUNNING task whose worker stops renewing it is recovered."
    )
    poll_seconds: float = Field(
        default=2, gt=0, description="How often a worker looks for work without a notification."
    )
    lock_timeout_ms: int = Field(default=10_000, ge=0, description="lock_timeout for changes.")
    statement_timeout_ms: int = Field(
        default=3_600_000, ge=0, description="statement_timeout for changes."
    )
    connect_timeout_seconds: float = Field(default=10, gt=0)
    shutdown_grace_seconds: float = Field(
        default=10, ge=0, description="On SIGTERM, how long running statements may finish."
    )
    subscriber_buffer: int = Field(
        default=1000,
        ge=1,
        description="Events a subscriber may fall behind by before its subscription is closed "
        "as too slow; more than one change writes for one subscription, since the events of "
        "a change arrive at once.",
    )
    subscriber_buffer_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1,
        description="Bytes of messages that may wait in the server for a live subscriber's "
        "socket (beyond what the kernel's socket buffers took) before its subscriptions are "
        "closed as too slow.",
    )
    event_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often live updates read new events without a notification.",
    )
    connection_init_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        description="A WebSocket that sends no connection_init within this is closed (4408).",
    )
    websocket_keep_alive_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How often an idle WebSocket is pinged.",
    )
    keep_alive_seconds: int = Field(
        default=120,
        ge=1,
        description="How long an idle HTTP connection is kept open for its next request, said "
        "in every response's `Keep-Alive: timeout=N`. Longer than the idle timeouts of the "
        "proxies in front (AWS ALB 60 s, nginx upstream 60 s), so that they, not this server, "
        "close idle connections: a server that closes first races the proxy's next request.",
    )
    max_query_depth: int = Field(
        default=12,
        ge=1,
        description="Deepest nesting of fields inside fields an operation may have "
        "(`{ issues { edges { node { title } } } }` is 3); deeper is refused (QUERY_TOO_DEEP).",
    )
    max_aliases: int = Field(
        default=30, ge=0, description="Aliases a document may use (TOO_MANY_ALIASES)."
    )
    max_tokens: int = Field(
        default=5000,
        ge=1,
        description="Tokens (names, punctuation, values) a document may have; checked while "
        "parsing (TOO_MANY_TOKENS). Large inputs belong in variables, which do not count.",
    )
    max_directives: int = Field(
        default=50, ge=0, description="Directives a document may use (TOO_MANY_DIRECTIVES)."
    )
    max_request_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1,
        description="Largest HTTP request body /graphql accepts; larger ones get HTTP 413 "
        "(REQUEST_TOO_LARGE) before they are parsed.",
    )
    max_query_cost: int = Field(
        default=10_000,
        ge=1,
        description="Cost an operation may have: each field counts 1, and everything inside a "
        "connection counts once per item of the page it asks for (`first`/`last`, else the "
        "default page size); costlier operations are refused (QUERY_TOO_COSTLY).",
    )
    max_errors: int = Field(
        default=50,
        ge=1,
        description="Errors one response may carry; the rest are replaced by one "
        "TOO_MANY_ERRORS error.",
    )
    mode: Mode = Field(
        default=Mode.DEVELOPMENT,
        description="`production` turns introspection, field suggestions and GraphiQL off "
        "unless they are set explicitly.",
    )
    introspection: bool | None = Field(
        default=None,
        description="Answer introspection (`__schema`, `__type`) queries; default: on in "
        "development mode, off in production.",
    )
    field_suggestions: bool | None = Field(
        default=None,
        description='Suggest names in validation errors ("Did you mean ...?"); default: on in '
        "development mode, off in production.",
    )
    graphiql: bool | None = Field(
        default=None,
        description="Serve GraphiQL to browsers at /graphql; default: on in development mode, "
        "off in production.",
    )
    allowed_origins: CommaSeparated = Field(
        default_factory=list,
        description="Other origins (`https://app.example.com`, comma-separated) whose pages may "
        "open a WebSocket to /graphql; same-origin pages and non-browser clients always may.",
    )
    instance_networks: CommaSeparated = Field(
        default_factory=list,
        description="If set, the networks (`10.0.0.0/8,192.168.1.5`, comma-separated) instances "
        "may be on: every address an instance's host resolves to must be in one of them, "
        "checked when it is saved and before each connection.",
    )
    rate_limit_requests: int = Field(
        default=600,
        ge=0,
        description="Requests one token may make per minute; 0 turns the limit off.",
    )
    rate_limit_cost: int = Field(
        default=200_000,
        ge=0,
        description="Query cost (see max_query_cost) one token may spend per minute; 0 turns "
        "the limit off.",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where the rate limits count, as a `limits` storage URI: `memory://` (each "
        "process for itself) or `redis://host:6379/0`, shared by every replica.",
    )
    metrics_token: str | None = Field(
        default=None,
        description="A bearer token that may read /metrics (for the scraper), from anywhere.",
    )
    metrics_networks: CommaSeparated = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1"],
        description="Networks (comma-separated CIDRs or addresses) that may read /metrics "
        "without a token; empty: none.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Where `conveyor worker` serves /healthz, /readyz and /metrics (on "
        "`host`); unset: nowhere.",
    )
    log_format: LogFormat = Field(
        default=LogFormat.TEXT,
        description="`json`: one JSON object a line, with the request's correlation id, "
        "operation, actor and duration.",
    )
    drain_seconds: float = Field(
        default=0,
        ge=0,
        description="On SIGTERM, how long `conveyor serve` reports not ready (and refuses new "
        "WebSockets) before it closes its WebSockets (1012) and stops accepting connections: "
        "long enough for the load balancer to notice.",
    )
    token_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a process trusts a token it verified without looking it up "
        "again: a token revoked by hand in the database (not through the API or the command) "
        "or whose revocation's notification a process missed, is refused within this time; "
        "0 looks every token up on every request.",
    )
    token_check_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often live subscriptions check that their token is still valid: a "
        "revoked or expired token's subscriptions end within about this time.",
    )

    @field_validator("instance_networks", "metrics_networks")
    @classmethod
    def _networks_parse(cls, entries: list[str]) -> list[str]:
        # A mistyped network stops every process at start, not the first instance saved.
        InstanceNetworks.parse(entries)
        return entries

    def _development_default(self, value: bool | None) -> bool:
        return self.mode is Mode.DEVELOPMENT if value is None else value

    @property
    def introspection_enabled(self) -> bool:
        return self._development_default(self.introspection)

    @property
    def field_suggestions_enabled(self) -> bool:
        return self._development_default(self.field_suggestions)

    @property
    def graphiql_enabled(self) -> bool:
        return self._development_default(self.graphiql)

    @property
    def admin_token_path(self) -> Path:
        """Where `conveyor serve` writes the first admin token, readable by its owner only."""
        return self.data_dir / "admin-token"
