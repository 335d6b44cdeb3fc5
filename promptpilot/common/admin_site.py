"""The admin site: PromptPilot's own sections first on the index, Django's after them."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig

# The order ops staff look in: what runs, what starts runs, what runs call.
FIRST = ("workflows", "triggers", "providers")


class PromptPilotAdminSite(admin.AdminSite):
    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        rank = {label: index for index, label in enumerate(FIRST)}
        return sorted(apps, key=lambda app: (rank.get(app["app_label"], len(FIRST)), app["name"].lower()))


class PromptPilotAdminConfig(AdminConfig):
    default_site = "promptpilot.common.admin_site.PromptPilotAdminSite"
