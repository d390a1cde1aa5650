"""Secrets at rest: instance passwords encrypted, keys and tokens in owner-only files."""

import functools
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

logger = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"
#: How many instance passwords a process keeps decrypted.
DECRYPTED_PASSWORDS = 256


class PasswordCipher:
    """Encrypts and decrypts instance passwords with one Fernet key."""

    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)
        # A worker reads an instance's password again for every task on it; a token always
        # decrypts to the same password, and the decryption (an HMAC and AES) costs more
        # than the look-up.
        self._decrypted = functools.lru_cache(maxsize=DECRYPTED_PASSWORDS)(self._decrypt)

    def encrypt(self, password: str) -> str:
        return self._fernet.encrypt(password.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._decrypted(token)

    def _decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("the password was encrypted with another key") from None


def load_or_create_key(data_dir: Path) -> bytes:
    """The key kept in `data_dir`, made (readable by its owner only) on first use."""
    key_file = data_dir / KEY_FILE_NAME
    if key_file.exists():
        return key_file.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: when two processes start at once, the loser reads the winner's key.
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_bytes().strip()
    with os.fdopen(descriptor, "wb") as file:
        file.write(key)
    logger.info("generated a new secret key in the data directory")
    return key


def write_secret(path: Path, content: str) -> None:
    """Write `content` to a new file at `path` that only its owner can read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(content + "\n")
