import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def point_to_latest(apps, schema_editor):
    Workflow = apps.get_model("workflows", "Workflow")
    WorkflowVersion = apps.get_model("workflows", "WorkflowVersion")
    newest = WorkflowVersion.objects.filter(workflow=OuterRef("pk")).order_by("-number").values("pk")[:1]
    Workflow.objects.update(latest_version=Subquery(newest))


class Migration(migrations.Migration):

    dependencies = [
        ('workflows', '0010_attention_dismissal'),
    ]

    operations = [
        migrations.AddField(
            model_name='workflow',
            name='latest_version',
            field=models.ForeignKey(blank=True, editable=False, help_text="The newest version of the definition (what a preview runs). Written only by workflow_version_create, under the workflow's row lock.", null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='workflows.workflowversion'),
        ),
        migrations.RunPython(point_to_latest, migrations.RunPython.noop),
    ]
