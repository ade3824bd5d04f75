"""Adds the monthly voice-masking quota (minutes of recordings; metered in seconds) and sets it
on the seeded plans."""
from django.db import migrations, models

VOICE_MINUTES = {"free": 10, "pro": 300}


def seed(apps, schema_editor):
    Plan = apps.get_model("accounts", "Plan")
    for slug, minutes in VOICE_MINUTES.items():
        Plan.objects.filter(slug=slug).update(voice_minutes_per_period=minutes)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0003_plan_swaps_per_period")]
    operations = [
        migrations.AddField(
            model_name="plan",
            name="voice_minutes_per_period",
            field=models.PositiveIntegerField(default=10, help_text="Minutes of recordings voice-masked per month."),
        ),
        migrations.AlterField(
            model_name="usagecounter",
            name="metric",
            field=models.CharField(
                choices=[
                    ("avatars", "Personas generated"), ("swaps", "Photos and videos protected"),
                    ("upload_bytes", "Upload volume"), ("voice_seconds", "Voice masking"),
                ],
                max_length=32,
            ),
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
