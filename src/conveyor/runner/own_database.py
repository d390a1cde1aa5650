"""Keeping Conveyor's own database out of the catalog: the instance itself is asked, the way
the runner would reach it, before a database is recorded on it."""

from dataclasses import dataclass

from conveyor.crypto import PasswordCipher
from conveyor.db.models import Instance
from conveyor.db.own_database import conveyor_database
from conveyor.domain.targets import InstanceNetworks
from conveyor.runner.targets import Target, conveyor_database_refusal
from conveyor.settings import Settings


@dataclass(frozen=True)
class OwnDatabaseCheck:
    settings: Settings
    cipher: PasswordCipher

    async def __call__(self, instance: Instance, database: str) -> str | None:
        """Why `database` on `instance` may not be recorded: it is Conveyor's own; None when
        it is not, or when the instance cannot be reached now (the runner asks again before
        every connection)."""
        target = Target(
            host=instance.host,
            port=instance.port,
            user=instance.username,
            password=self.cipher.decrypt(instance.password_encrypted),
            database=database,
            conveyor_database=await conveyor_database(),
            connect_timeout=self.settings.connect_timeout_seconds,
            networks=InstanceNetworks.parse(self.settings.instance_networks),
            options=instance.connection_options,
        )
        return await conveyor_database_refusal(target)
