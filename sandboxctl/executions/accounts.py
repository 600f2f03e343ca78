"""Service accounts: the non-staff users agents call the API as. Each sees only its own executions, has its
own quota, and cannot touch provider settings (staff-only endpoints answer 403 to it)."""

from django.contrib.auth import get_user_model


def service_account(name: str):
    """The non-staff account `name`, created without a password if missing (it signs in only by token)."""
    user, created = get_user_model().objects.get_or_create(
        username=name, defaults={"is_staff": False, "is_superuser": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user
