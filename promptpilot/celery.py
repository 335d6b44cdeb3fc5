"""The Celery application. Workers start with ``celery -A promptpilot worker``."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "promptpilot.settings")

app = Celery("promptpilot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
