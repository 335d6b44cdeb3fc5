"""The framework-free workflow engine: no Django, no DRF, no Celery imports here.

Persistence and scheduling live in ``workflows.services`` and ``workflows.tasks``; the
engine computes, for one step and a context, what happened and what runs next.
"""
