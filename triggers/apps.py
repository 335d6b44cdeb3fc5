from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (event bus: signal receivers and the dispatch_event task)
        from .services import schedules  # noqa: F401  (schedules: pause/buffer receivers, no orphaned periodic tasks)
