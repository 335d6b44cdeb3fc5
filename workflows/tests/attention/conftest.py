from workflows.tests.run_pages.conftest import other_page, page, staff_page, staff_user  # noqa: F401
