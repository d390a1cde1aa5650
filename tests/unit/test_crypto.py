"""Instance passwords at rest: what one key encrypts, only that key decrypts."""

import pytest
from cryptography.fernet import Fernet

from conveyor.crypto import PasswordCipher


def test_a_password_decrypts_to_itself_every_time() -> None:
    cipher = PasswordCipher(Fernet.generate_key())
    token = cipher.encrypt("s3cret")
    assert cipher.decrypt(token) == "s3cret"
    assert cipher.decrypt(token) == "s3cret"  # the second time from what the first kept


def test_a_password_of_another_key_is_refused_every_time() -> None:
    token = PasswordCipher(Fernet.generate_key()).encrypt("s3cret")
    cipher = PasswordCipher(Fernet.generate_key())
    for _ in range(2):  # a refusal is not kept as an answer
        with pytest.raises(ValueError, match="another key"):
            cipher.decrypt(token)
