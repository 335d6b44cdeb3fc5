"""Logged-in clients (as in run_pages) and the browser fixtures for the attention tests."""
from workflows.tests.run_pages.conftest import other_page, page, staff_page, staff_user  # noqa: F401
from workflows.tests.support.browser import browser, builder, tab  # noqa: F401  (browser tests)
