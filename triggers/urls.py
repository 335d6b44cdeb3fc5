"""Server-rendered trigger pages, mounted at /triggers/ (see promptpilot/urls.py)."""
from django.urls import path

from . import views

app_name = "triggers"

urlpatterns = [
    path("", views.trigger_list_page, name="list"),
    path("new", views.trigger_create_page, name="create"),
    path("<uuid:id>/", views.trigger_detail_page, name="detail"),
    path("<uuid:id>/edit", views.trigger_edit_page, name="edit"),
    path("<uuid:id>/activity", views.trigger_activity_partial, name="activity"),
    path("<uuid:id>/toggle", views.trigger_toggle, name="toggle"),
    path("<uuid:id>/rotate", views.trigger_rotate, name="rotate"),
    path("<uuid:id>/secret", views.trigger_secret_page, name="secret"),
    path("<uuid:id>/execute", views.trigger_execute, name="execute"),
    path("<uuid:id>/delete", views.trigger_delete_page, name="delete"),
]
