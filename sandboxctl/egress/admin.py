"""Staff set egress ceilings here: per account (its own page, and on the account's page), and the default new
accounts start with. Entries are written one per line and checked as they are saved."""

from django import forms
from django.conf import settings
from django.contrib import admin

from sandboxctl.egress import policy
from sandboxctl.egress.models import AccountEgress, EgressDefault

HELP = ("One entry per line: a host (files.example.com), a wildcard (*.github.com), an address or network "
        "(203.0.113.0/24), optionally with :PORT or :* (without one, ports 80 and 443), or a preset ({presets}). "
        "Empty: nowhere.")


class EntriesField(forms.CharField):
    """A list of allowlist entries edited as lines of text."""

    widget = forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "vLargeTextField"})

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", HELP.format(presets=", ".join(sorted(settings.SANDBOX_EGRESS_PRESETS))))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value) -> list[str]:
        lines = [line.strip() for line in (value or "").splitlines() if line.strip()]
        try:
            return policy.written(lines)
        except policy.EntryError as exc:
            raise forms.ValidationError(str(exc)) from None


class AccountEgressForm(forms.ModelForm):
    allow = EntriesField(label="may reach")

    class Meta:
        model = AccountEgress
        fields = ["account", "allow"]


class EgressDefaultForm(forms.ModelForm):
    allow = EntriesField(label="new accounts may reach")

    class Meta:
        model = EgressDefault
        fields = ["allow"]


@admin.register(AccountEgress)
class AccountEgressAdmin(admin.ModelAdmin):
    form = AccountEgressForm
    list_display = ("account", "entries", "updated_at")
    search_fields = ("account__username",)
    list_select_related = ("account",)
    autocomplete_fields = ("account",)

    @admin.display(description="may reach")
    def entries(self, row: AccountEgress) -> str:
        return ", ".join(row.allow) or "nowhere"


@admin.register(EgressDefault)
class EgressDefaultAdmin(admin.ModelAdmin):
    form = EgressDefaultForm
    list_display = ("__str__", "updated_at")

    def has_add_permission(self, request) -> bool:
        return not EgressDefault.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AccountEgressInline(admin.StackedInline):
    """The ceiling on the account's own page (sandboxctl/executions/admin.py's account admin)."""

    model = AccountEgress
    form = AccountEgressForm
    fields = ("allow",)
    can_delete = False
    verbose_name = verbose_name_plural = "egress ceiling"
