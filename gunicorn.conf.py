"""gunicorn's settings file (read from the working directory it starts in): its own lines,
the access log's included, in the app's log format (docs/OPERATIONS.md, "Logs")."""
from promptpilot.common.logs import logging_config
from promptpilot.settings import env

logconfig_dict = logging_config(log_format=env.LOG_FORMAT, level=env.LOG_LEVEL)
