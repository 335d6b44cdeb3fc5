"""Settings for bench/webhooks.py: the project's settings plus a trivial view, DEBUG off."""
from promptpilot.settings import *  # noqa: F401,F403

ROOT_URLCONF = "bench.webhooks_urls"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
