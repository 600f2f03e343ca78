"""Provider secrets at rest: Fernet encryption with several keys for rotation."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from providers import config_store, encryption


def test_round_trip_and_no_plaintext(settings):
    settings.SANDBOXCTL_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    stored = encryption.encrypt("hunter2-secret")
    assert stored.startswith("fernet:") and "hunter2" not in stored
    assert encryption.decrypt(stored) == "hunter2-secret"


def test_mask_shows_only_the_last_four():
    assert encryption.mask("abcdefghijkl") == "••••ijkl"
    assert encryption.mask("short") == "••••"


def test_rotation_re_encrypts_with_the_new_primary_key(settings, db):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SANDBOXCTL_ENCRYPTION_KEYS = [old]
    config_store.save("e2b", {"api_key": "e2b_live_secret", "domain": "e2b.app", "template": "t"}, activate=False)
    settings.SANDBOXCTL_ENCRYPTION_KEYS = [new, old]
    call_command("rotate_secrets")
    settings.SANDBOXCTL_ENCRYPTION_KEYS = [new]
    assert config_store.load("e2b")["api_key"] == "e2b_live_secret"


def test_a_key_that_was_removed_too_early_is_a_clear_error(settings, db):
    settings.SANDBOXCTL_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    config_store.save("e2b", {"api_key": "e2b_live_secret", "domain": "e2b.app", "template": "t"}, activate=False)
    settings.SANDBOXCTL_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(encryption.SecretError, match="cannot be decrypted"):
        config_store.load("e2b")
