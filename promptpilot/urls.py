"""Root URLs. API paths answer with or without a trailing slash (APPEND_SLASH is off)."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from promptpilot.common.apis import AuthTokenApi, healthz, readyz
from workflows.metrics import metrics_view
from workflows.pages.executions import approval_link_page

urlpatterns = [
    # First: the webhook receiver is the busiest route (no other pattern overlaps these).
    path("api/", include("triggers.api_urls")),
    path("admin/", admin.site.urls),
    # Builders log in to the pages here (the admin login admits staff only).
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    re_path(r"^healthz/?$", healthz, name="healthz"),
    re_path(r"^readyz/?$", readyz, name="readyz"),
    re_path(r"^metrics/?$", metrics_view, name="metrics"),
    re_path(r"^api/auth/token/?$", AuthTokenApi.as_view(), name="auth-token"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("workflows.api_urls")),
    path("attention/", include("workflows.urls_attention")),
    path("executions/", include("workflows.urls_executions")),
    # Signed approval links (no account): the token rides in the fragment, see services/approvals.py.
    path("approvals/", approval_link_page, name="approval-link"),
    path("prompts/", include("workflows.urls_prompts")),
    path("triggers/", include("triggers.urls")),
    path("workflows/", include("workflows.urls_builder")),
    # The product's home: the builder's workflows.
    path("", RedirectView.as_view(pattern_name="workflows:list", permanent=False)),
]

# JSON error bodies under /api/ (unknown paths, malformed requests); Django's pages elsewhere.
handler400 = "promptpilot.common.apis.bad_request"
handler404 = "promptpilot.common.apis.not_found"
handler500 = "promptpilot.common.apis.server_error"
