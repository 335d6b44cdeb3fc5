"""Start-up checks: durability depends on a few settings agreeing with each other."""
from django.conf import settings
from django.core.checks import Error, register


@register()
def check_backoff_below_visibility_timeout(app_configs, **kwargs):
    """Countdown tasks sit unacknowledged in Redis; if a countdown outlived the broker's
    visibility timeout, Redis would hand the message to a second worker."""
    conf = settings.PROMPTPILOT
    errors = []
    visibility = conf["VISIBILITY_TIMEOUT"]
    if conf["MAX_BACKOFF_SECONDS"] * 2 > visibility:
        errors.append(
            Error(
                f"PROMPTPILOT_MAX_BACKOFF_SECONDS ({conf['MAX_BACKOFF_SECONDS']}) must be at most half of "
                f"CELERY_VISIBILITY_TIMEOUT ({visibility}).",
                hint="Lower PROMPTPILOT_MAX_BACKOFF_SECONDS or raise CELERY_VISIBILITY_TIMEOUT.",
                id="promptpilot.E001",
            )
        )
    if conf["STEP_LEASE_SECONDS"] * 2 > visibility:
        errors.append(
            Error(
                "PROMPTPILOT_STEP_LEASE_SECONDS must be at most half of CELERY_VISIBILITY_TIMEOUT.",
                id="promptpilot.E002",
            )
        )
    if conf["INLINE_STEP_BUDGET_SECONDS"] * 2 > visibility:
        # The message of the task that goes on with later steps stays unacknowledged meanwhile.
        errors.append(
            Error(
                "PROMPTPILOT_INLINE_STEP_BUDGET_SECONDS must be at most half of CELERY_VISIBILITY_TIMEOUT.",
                id="promptpilot.E003",
            )
        )
    return errors
