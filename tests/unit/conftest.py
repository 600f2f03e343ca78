"""The fast tier: no password needs to be strong here, and PBKDF2's deliberate slowness cost seconds per user."""

import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
