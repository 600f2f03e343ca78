"""The admin settings page (/admin/sandbox-settings/): the page is static; it talks to the staff REST API."""

from django.contrib import admin
from django.shortcuts import render


def sandbox_settings(request):
    context = {**admin.site.each_context(request), "title": "Sandbox settings"}
    return render(request, "console/sandbox_settings.html", context)
