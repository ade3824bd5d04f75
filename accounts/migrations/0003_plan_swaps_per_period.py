"""Adds the monthly swap quota (photos and videos protected) and sets it on the seeded plans."""
from django.db import migrations, models

SWAPS = {"free": 20, "pro": 500}


def seed(apps, schema_editor):
    Plan = apps.get_model("accounts", "Plan")
    for slug, amount in SWAPS.items():
        Plan.objects.filter(slug=slug).update(swaps_per_period=amount)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_seed_plans")]
    operations = [
        migrations.AddField(
            model_name="plan",
            name="swaps_per_period",
            field=models.PositiveIntegerField(default=20, help_text="Photos and videos protected per month."),
        ),
        migrations.AlterField(
            model_name="usagecounter",
            name="metric",
            field=models.CharField(
                choices=[("avatars", "Personas generated"), ("swaps", "Photos and videos protected"), ("upload_bytes", "Upload volume")],
                max_length=32,
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
