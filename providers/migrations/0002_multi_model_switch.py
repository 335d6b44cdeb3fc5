"""Create the waffle switch ``workflow.multiModel``, OFF: staff turn multi-model PROMPT
steps on in admin → Waffle → Switches (docs/PROVIDERS.md#multi-model-steps)."""

from django.db import migrations

SWITCH = "workflow.multiModel"
NOTE = (
    "PROMPT steps with several models (config.models with mode parallel, fallback or race). "
    "Off: such steps are refused when saved and fail when run. See docs/PROVIDERS.md#multi-model-steps."
)


def create_switch(apps, schema_editor):
    Switch = apps.get_model("waffle", "Switch")
    # get_or_create: a switch staff already made (on or off) is left as it is.
    Switch.objects.get_or_create(name=SWITCH, defaults={"active": False, "note": NOTE})


def delete_switch(apps, schema_editor):
    apps.get_model("waffle", "Switch").objects.filter(name=SWITCH).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("providers", "0001_provider_operations"),
        ("waffle", "0004_update_everyone_nullbooleanfield"),
    ]

    operations = [migrations.RunPython(create_switch, delete_switch)]
