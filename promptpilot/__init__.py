"""PromptPilot: prompt workflows defined in Django, run durably by Celery workers."""
from .celery import app as celery_app

__all__ = ("celery_app",)
