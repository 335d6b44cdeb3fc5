from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "promptpilot.common"
    label = "common"
    verbose_name = "PromptPilot common"
