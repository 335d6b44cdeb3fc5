"""The builder's workflow pages, mounted at /workflows/ (see promptpilot/urls.py)."""
from django.urls import path

from .pages import editor, preview
from .pages import workflows as pages

app_name = "workflows"

urlpatterns = [
    path("", pages.workflow_list_page, name="list"),
    path("new", editor.workflow_create_page, name="create"),
    path("<int:id>/", pages.workflow_detail_page, name="detail"),
    path("<int:id>/edit", editor.workflow_edit_page, name="edit"),
    path("<int:id>/preview", preview.workflow_preview_page, name="preview"),
    path("<int:id>/run", pages.workflow_run_page, name="run"),
    path("<int:id>/versions/<int:number>/restore", pages.workflow_version_restore_page, name="version-restore"),
]
