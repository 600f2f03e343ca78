"""Provider secrets are encrypted at rest with Fernet; several keys allow rotation.

SANDBOXCTL_ENCRYPTION_KEYS is a comma-separated list of Fernet keys: the first encrypts, all decrypt.
Unset, one key is derived from Django's SECRET_KEY, so an installation works out of the box; set real
keys in production and rotate with `manage.py rotate_secrets` after putting a new key first.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

PREFIX = "fernet:"
MASK = "••••"


class SecretError(Exception):
    """A stored secret cannot be decrypted with any configured key."""


def _fernet() -> MultiFernet:
    keys = list(settings.SANDBOXCTL_ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(b"sandboxctl-provider-secrets:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(plaintext: str) -> str:
    return PREFIX + _fernet().encrypt(plaintext.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise SecretError("stored secret is not encrypted")
    try:
        return _fernet().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken as exc:
        raise SecretError("stored secret cannot be decrypted with the configured keys") from exc


def rotate(stored: str) -> str:
    """Re-encrypt with the current primary key."""
    return PREFIX + _fernet().rotate(stored[len(PREFIX):].encode()).decode()


def mask(plaintext: str) -> str:
    """What an API or a page may show of a secret: that it is set, and its last four characters."""
    return MASK + plaintext[-4:] if len(plaintext) > 8 else MASK
