"""Schedules the job sweeper every minute on the default cluster."""
from django.db import migrations

NAME = "safeface: sweep jobs"


def schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=NAME,
        defaults={"func": "safeface.jobs.sweep_jobs", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"), ("accounts", "0002_seed_plans")]
    operations = [migrations.RunPython(schedule, unschedule)]
