"""Secrets at rest: the keys of ``OFFBOARD_ENCRYPTION_KEYS`` and what they seal.

The variable holds comma-separated Fernet keys (``cryptography.fernet``). The first
encrypts; every one decrypts, so keys rotate without a stop: put a new key first, run
``offboard connections rotate-keys`` (which re-encrypts every stored token with it), then
drop the old key. Unset, installs by OAuth are off: there is nothing to seal tokens with.

Neither a key nor a token ever appears in an error message, a ``repr`` or a log line.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from connector.errors import ConnectorError

if TYPE_CHECKING:
    from connector.settings import Settings

VARIABLE = "OFFBOARD_ENCRYPTION_KEYS"


class EncryptionOff(ConnectorError):
    """No ``OFFBOARD_ENCRYPTION_KEYS``: nothing may be stored that would need sealing."""

    def __init__(self) -> None:
        super().__init__(
            f"{VARIABLE} is not set: tokens of installed accounts cannot be stored or read "
            "(set it to one or more Fernet keys, the first used to encrypt)"
        )


class SecretUnreadable(ConnectorError):
    """A stored secret that none of the keys opens: sealed with a key no longer listed, or damaged."""

    def __init__(self, what: str = "a stored secret") -> None:
        super().__init__(
            f"{what} cannot be decrypted with any key in {VARIABLE}: it was sealed with a key "
            "that is no longer listed, or it is damaged"
        )


def parse_keys(value: str) -> list[str]:
    """The keys listed in ``value`` (comma-separated, blanks ignored), each checked.

    ValueError names the position of a bad key, never the key itself.
    """
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise ValueError("no key given: list one or more Fernet keys, separated by commas")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, binascii.Error, TypeError):
            place = "the key" if len(keys) == 1 else f"key {position} of {len(keys)}"
            raise ValueError(
                f"{place} is not a Fernet key (32 random bytes in url-safe base64, 44 characters; "
                'make one with: python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())")'
            ) from None
    return keys


class Keyring:
    """Encrypts with the first key, decrypts with any (``MultiFernet``)."""

    def __init__(self, keys: str | Sequence[str]) -> None:
        listed = parse_keys(keys) if isinstance(keys, str) else parse_keys(",".join(keys))
        self._count = len(listed)
        self._fernet = MultiFernet([Fernet(key.encode()) for key in listed])

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring | None:
        """The deployment's keyring; None when ``OFFBOARD_ENCRYPTION_KEYS`` is unset (OAuth off)."""
        if settings.encryption_keys is None:
            return None
        return cls(settings.encryption_keys.get_secret_value())

    @staticmethod
    def generate_key() -> str:
        """A new random key, as the variable lists it."""
        return Fernet.generate_key().decode()

    def encrypt(self, plain: str) -> str:
        """``plain`` sealed with the first key: authenticated, and different each time."""
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str, *, what: str = "a stored secret") -> str:
        """What ``token`` seals; ``SecretUnreadable`` (naming ``what``, not the token) if no key opens it."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(what) from None

    def rotate(self, token: str, *, what: str = "a stored secret") -> str:
        """``token`` sealed again with the first key (opened with whichever key opens it)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, UnicodeError):
            raise SecretUnreadable(what) from None

    def __repr__(self) -> str:
        return f"Keyring({self._count} key{'s' if self._count != 1 else ''})"
