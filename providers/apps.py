from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "providers"
    verbose_name = "Model providers"

    def ready(self) -> None:
        from promptpilot.common.secrets_at_rest import encrypted_field_register

        from .models import API_KEY_PURPOSE

        encrypted_field_register(model="providers.ProviderConnection", field="api_key_encrypted",
                                 purpose=API_KEY_PURPOSE, label="connection API keys")
