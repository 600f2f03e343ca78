from django.contrib import admin

from sandboxctl.console.models import ProviderActivation
from sandboxctl.executions.display import EMPTY

# Every admin page marks a missing value the same way (Django's default is "-", our own columns say "—").
admin.site.empty_value_display = EMPTY


@admin.register(ProviderActivation)
class ProviderActivationAdmin(admin.ModelAdmin):
    """The activation log is evidence: nobody edits or deletes it from the admin."""

    list_display = ("activated_at", "provider", "activated_by", "probe_success", "forced", "probe_message")
    list_filter = ("provider", "forced", "probe_success")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
