from django.contrib import admin

from providers.models import SystemSetting


@admin.register(SystemSetting)
class SystemSettingAdmin(admin.ModelAdmin):
    list_display = ("name", "data_type", "source", "updated_at")
    readonly_fields = ("updated_at",)
