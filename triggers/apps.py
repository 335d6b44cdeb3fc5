from django.apps import AppConfig


class TriggersConfig(AppConfig):
    name = "triggers"
    verbose_name = "Triggers"

    def ready(self) -> None:
        from promptpilot.common.secrets_at_rest import encrypted_field_register

        from . import receivers  # noqa: F401  (event bus: signal receivers and the dispatch_event task)
        from .services import schedules  # noqa: F401  (schedules: pause/buffer receivers, no orphaned periodic tasks)
        from .services.secrets import PURPOSE

        for field, label in (("secret_encrypted", "webhook signing secrets"),
                             ("previous_secret_encrypted", "previous webhook signing secrets (grace period)")):
            encrypted_field_register(model="triggers.WorkflowTrigger", field=field, purpose=PURPOSE, label=label)
