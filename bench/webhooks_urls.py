"""URLs for bench/webhooks.py: the project's URLs plus two reference views.

- ``/bench/trivial``: a trivial JSON view (the issue's baseline);
- ``/bench/straightforward``: the issue's "straightforward chain" for comparison, not
  PromptPilot: verify the Standard Webhooks signature (the project's pure
  ``webhook_verify``), parse the JSON, INSERT one row (autocommit) into
  ``bench_straightforward_deliveries``, Celery ``send_task``, answer 202. No trigger
  lookup, no invocation record, no input validation, no idempotency;
- ``/bench/straightforward-nopublish``: the same without the broker publish, i.e. what
  that chain would cost with its row as an outbox and the relay's cost left out: an
  upper bound for any receive path that verifies and writes a row (nothing relays them).
"""
import json
import os
import uuid

from django.db import connection
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from promptpilot.celery import app
from triggers.services.webhooks import WebhookVerificationError, webhook_verify

STRAIGHTFORWARD_TABLE = "bench_straightforward_deliveries"
STRAIGHTFORWARD_TASK = "bench.straightforward_delivery"  # never consumed: no worker runs in the bench


def trivial(request):
    return JsonResponse({"ok": True})


@csrf_exempt
def straightforward(request, publish=True):
    try:
        msg_id = webhook_verify(secret=os.environ["BENCH_WEBHOOK_SECRET"], headers=request.headers, body=request.body)
        payload = json.loads(request.body)
    except (WebhookVerificationError, ValueError) as exc:
        return JsonResponse({"message": str(exc)}, status=400)
    row_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {STRAIGHTFORWARD_TABLE} (id, webhook_id, payload) VALUES (%s, %s, %s)",
                       [row_id, msg_id, json.dumps(payload)])
    if publish:
        app.send_task(STRAIGHTFORWARD_TASK, args=[str(row_id)])
    return JsonResponse({"id": str(row_id)}, status=202)


@csrf_exempt
def straightforward_nopublish(request):
    return straightforward(request, publish=False)


urlpatterns = [
    path("bench/trivial", trivial),
    path("bench/straightforward", straightforward),
    path("bench/straightforward-nopublish", straightforward_nopublish),
    path("", include("promptpilot.urls")),
]
