"""How a worker reaches its instances: an instance's row, as Conveyor's database holds it,
made a `Target` with the worker's rules (its networks, the refusal of Conveyor's own database)."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from conveyor.crypto import PasswordCipher
from conveyor.domain.targets import DatabaseIdentity, InstanceNetworks
from conveyor.runner.targets import Target


class InstanceRow(Protocol):
    """A task read with its instance (a claimed task, a task to check)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def username(self) -> str: ...
    @property
    def password_encrypted(self) -> str: ...
    @property
    def target_database(self) -> str | None: ...
    @property
    def connection_options(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Reach:
    cipher: PasswordCipher
    conveyor_database: DatabaseIdentity
    networks: InstanceNetworks
    connect_timeout: float

    def target(self, row: InstanceRow) -> Target:
        return Target(
            host=row.host,
            port=row.port,
            user=row.username,
            password=self.cipher.decrypt(row.password_encrypted),
            database=row.target_database,
            conveyor_database=self.conveyor_database,
            connect_timeout=self.connect_timeout,
            networks=self.networks,
            options=row.connection_options,
        )
