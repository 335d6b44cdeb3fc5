"""/triggers/<id>/edit: name, active and config through trigger_update; type stays."""
from __future__ import annotations

import pytest

from triggers.tests.helpers import create_trigger

from .helpers import flashes, text

pytestmark = pytest.mark.django_db


def test_the_form_is_prefilled_and_the_type_is_shown_but_not_editable(page, workflow):
    trigger, _ = create_trigger(workflow, "API", name="Partner", config={"rate_limit": "5/min"})
    response = page.get(f"/triggers/{trigger.pk}/edit")
    assert response.status_code == 200
    body = text(response)
    assert 'value="Partner"' in body and "&quot;rate_limit&quot;: &quot;5/min&quot;" in body
    assert 'name="type"' not in body and 'name="workflow"' not in body
    assert "fixed at creation" in body


def test_saving_changes_name_active_and_config(page, api_trigger):
    trigger = api_trigger[0]
    response = page.post(f"/triggers/{trigger.pk}/edit",
                         {"name": "Renamed", "config": '{"rate_limit": "2/s"}'}, follow=True)
    assert response.redirect_chain == [(f"/triggers/{trigger.pk}/", 302)]
    trigger.refresh_from_db()
    assert trigger.name == "Renamed" and trigger.config == {"rate_limit": "2/s"} and not trigger.is_active
    assert any("saved" in message for message in flashes(response))


def test_a_posted_type_is_ignored(page, manual):
    page.post(f"/triggers/{manual.pk}/edit", {"name": "x", "is_active": "on", "config": "{}", "type": "WEBHOOK"})
    manual.refresh_from_db()
    assert manual.type == "MANUAL" and manual.name == "x"


@pytest.mark.parametrize(
    ("config", "needle"),
    [('{"rate_limit": "lots"}', "N/period"), ('{"input_mapping": {}}', "do not take config"), ("{", "not valid JSON")],
)
def test_errors_render_on_the_form_and_change_nothing(page, api_trigger, config, needle):
    trigger = api_trigger[0]
    response = page.post(f"/triggers/{trigger.pk}/edit", {"name": "Renamed", "is_active": "on", "config": config})
    assert response.status_code == 200 and needle in text(response)
    assert 'value="Renamed"' in text(response), "what was typed is kept"
    trigger.refresh_from_db()
    assert trigger.name == "Partner API" and trigger.config == {}
