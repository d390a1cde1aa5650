"""Conveyor's configuration, read once from `CONVEYOR_*` environment variables."""

import os
from pathlib import Path

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    # Run as root, the embedded PostgreSQL opens read/execute permissions on every parent of
    # its data directory; under /var/lib those parents are already world-readable, whereas a
    # root home directory (0700) would be opened to everyone.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/conveyor")
    return Path(platformdirs.user_data_dir("conveyor"))


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
