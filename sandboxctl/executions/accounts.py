"""Service accounts: the non-staff users agents call the API as. Each sees only its own executions, has its
own quota, and cannot touch provider settings (staff-only endpoints answer 403 to it)."""

from django.contrib.auth import get_user_model

from sandboxctl.executions.models import ApiToken

# The account RAGFlow's token-less calls run as (api/ragflow.py), with its own concurrency (admission.py).
RAGFLOW_ACCOUNT = "ragflow"


def service_account(name: str):
    """The non-staff account `name`, created without a password if missing (it signs in only by token)."""
    user, created = get_user_model().objects.get_or_create(
        username=name, defaults={"is_staff": False, "is_superuser": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def issue_for(user, token_name: str, warnings) -> str:
    """A new API key for `user`, shown once (the commands print it); a staff user's key is said to be powerful."""
    if user.is_staff or user.is_superuser:
        warnings.write(f"warning: {user.username} is a staff account; its token can change provider settings")
    return ApiToken.issue(user, name=token_name)[1]
