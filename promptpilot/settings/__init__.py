"""Default settings module: `manage.py`, wsgi and Celery load this one."""
from .base import *  # noqa: F401,F403
