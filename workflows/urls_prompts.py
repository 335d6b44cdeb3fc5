"""Prompt pages, mounted at /prompts/ (see promptpilot/urls.py)."""
from django.urls import path

from .pages import prompts as pages

app_name = "prompts"

urlpatterns = [
    path("", pages.prompt_list_page, name="list"),
    path("new", pages.prompt_create_page, name="create"),
    path("<int:id>/", pages.prompt_detail_page, name="detail"),
    path("<int:id>/edit", pages.prompt_edit_page, name="edit"),
]
