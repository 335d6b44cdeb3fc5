import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "promptpilot.settings")
application = get_wsgi_application()

from promptpilot.common.wsgi_body import ChunkedBodyMiddleware  # noqa: E402  (needs settings)

application = ChunkedBodyMiddleware(application)  # chunked request bodies (webhooks) are read
