"""Browser fixtures: Debian's chromium driven by playwright against pytest-django's live
server. A missing chromium FAILS the tests that use them (it never skips them).

Import them into a test package's conftest: ``from workflows.tests.support.browser import
browser, builder, tab  # noqa: F401``.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("PROMPTPILOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "pw-browser-123"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(CHROMIUM):
        pytest.fail(f"Browser tests need chromium at {CHROMIUM} (Debian: apt-get install chromium).", pytrace=False)
    # NOTE: playwright's sync API keeps an event loop on this thread; the ORM calls around it
    # are plain synchronous code, so Django's async guard is relaxed for this module.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            try:
                instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            except Exception as exc:
                pytest.fail(f"Cannot start chromium at {CHROMIUM}: {exc}", pytrace=False)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def builder(django_user_model):
    return django_user_model.objects.create_user(username="builder", password=PASSWORD)


@pytest.fixture
def tab(browser, live_server, builder) -> Iterator:
    """A tab logged in as ``builder`` through the login form, on /workflows/."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    tab.goto("/")
    assert "/accounts/login/" in tab.url, "an anonymous visit is sent to the login page"
    tab.fill("#id_username", builder.username)
    tab.fill("#id_password", PASSWORD)
    tab.click("input[type=submit], button[type=submit]")
    tab.wait_for_url(re.compile(r"/workflows/$"))
    yield tab
    context.close()
