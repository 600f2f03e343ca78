"""Read-only views of provider settings and worker heartbeats: settings change only through the validated
settings page and API (a free-text edit of `sandbox.provider_type` would break every run)."""

from django.contrib import admin

from providers.models import SystemSetting, WorkerHeartbeat


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SystemSetting)
class SystemSettingAdmin(ReadOnlyAdmin):
    list_display = ("name", "data_type", "source", "updated_at")
    fields = ("name", "data_type", "source", "updated_at")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("worker", "host", "pool_depth", "runtime", "seen_at")
