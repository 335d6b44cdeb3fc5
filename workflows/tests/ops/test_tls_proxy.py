"""Behind a TLS-terminating proxy (DJANGO_BEHIND_TLS_PROXY=1): requests the proxy marks
https count as https, so the absolute links the API and pages hand out (webhook URLs,
approval links) say https, and the session and CSRF cookies are sent over https only."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from triggers.tests.helpers import create_trigger
from workflows.tests.factories import make_workflow

from ..support.processes import ROOT

pytestmark = pytest.mark.django_db


def _settings_with(env: dict[str, str]) -> dict:
    code = ("import django, json; django.setup(); from django.conf import settings as s; "
            "print(json.dumps([getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.SESSION_COOKIE_SECURE, "
            "s.CSRF_COOKIE_SECURE]))")
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "promptpilot.settings", **env}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_the_switch_trusts_the_proxys_header_and_secures_the_cookies():
    assert _settings_with({"DJANGO_BEHIND_TLS_PROXY": "1"}) == [["HTTP_X_FORWARDED_PROTO", "https"], True, True]
    assert _settings_with({"DJANGO_BEHIND_TLS_PROXY": "0"}) == [None, False, False]


def test_behind_the_proxy_a_webhook_url_says_https(api, user, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["pilot.example.com", "testserver"]
    trigger, _ = create_trigger(make_workflow(user, steps=[{"name": "s", "type": "TRANSFORM", "config": {"template": "x"}}]), "WEBHOOK")
    proxied = api.get(f"/api/triggers/{trigger.pk}", HTTP_HOST="pilot.example.com",
                      HTTP_X_FORWARDED_PROTO="https").json()
    direct = api.get(f"/api/triggers/{trigger.pk}").json()
    assert proxied["webhook_url"] == f"https://pilot.example.com/api/webhooks/{trigger.pk}"
    assert direct["webhook_url"].startswith("http://")  # no header from the proxy: not https
