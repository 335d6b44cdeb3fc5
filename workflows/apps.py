from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"
    verbose_name = "Workflows"

    def ready(self) -> None:
        from promptpilot.common.secrets_at_rest import encrypted_field_register

        from . import checks  # noqa: F401  (registers system checks)
        from .models.http_credential import HEADERS_PURPOSE

        encrypted_field_register(model="workflows.HttpCredential", field="headers_encrypted",
                                 purpose=HEADERS_PURPOSE, label="HTTP credential headers")
