# One image for web, worker, beat and the one-shot migrate job (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code edits do not reinstall them.
COPY requirements.txt ./
RUN pip install -r requirements.txt

COPY . .

# Static files are baked into the image; whitenoise serves them. The throwaway key and
# var dir only exist for this build step (settings need them to import).
RUN DJANGO_SECRET_KEY=collectstatic-only PROMPTPILOT_VAR_DIR=/tmp/build-var \
    python manage.py collectstatic --noinput -v 0 \
    && rm -rf /tmp/build-var \
    && useradd --create-home --uid 10001 promptpilot \
    && mkdir -p /app/var/metrics && chown -R promptpilot /app/var

USER promptpilot
EXPOSE 8000

CMD ["gunicorn", "promptpilot.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "--access-logfile", "-", "--no-control-socket"]
