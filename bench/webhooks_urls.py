"""URLs for bench/webhooks.py: the project's URLs plus ``/bench/trivial`` (the baseline)."""
from django.http import JsonResponse
from django.urls import include, path


def trivial(request):
    return JsonResponse({"ok": True})


urlpatterns = [
    path("bench/trivial", trivial),
    path("", include("promptpilot.urls")),
]
