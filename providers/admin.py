from django.contrib import admin

from providers.models import SystemSetting, WorkerHeartbeat


@admin.register(SystemSetting)
class SystemSettingAdmin(admin.ModelAdmin):
    list_display = ("name", "data_type", "source", "updated_at")
    readonly_fields = ("updated_at",)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("worker", "host", "pool_depth", "seen_at")
    readonly_fields = ("worker", "host", "pool_depth", "seen_at")
