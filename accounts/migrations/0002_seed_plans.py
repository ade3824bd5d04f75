"""Creates the Free and Pro plans (edit them in the admin; this runs once)."""
from django.db import migrations

GB = 1024**3
MB = 1024**2

PLANS = [
    {
        "slug": "free",
        "name": "Free",
        "tagline": "Try SafeFace on photos and short clips.",
        "price_label": "Free",
        "is_default": True,
        "sort_order": 0,
        "avatars_per_period": 10,
        "upload_bytes_per_period": 500 * MB,
        "video_seconds_per_upload": 30,
        "max_image_side": 4096,
        "max_video_side": 1280,
        "concurrent_jobs": 1,
        "retention_days": 7,
        "queue_priority": 0,
    },
    {
        "slug": "pro",
        "name": "Pro",
        "tagline": "For creators who publish video every week.",
        "price_label": "$12 / month",
        "is_default": False,
        "sort_order": 10,
        "avatars_per_period": 200,
        "upload_bytes_per_period": 20 * GB,
        "video_seconds_per_upload": 600,
        "max_image_side": 8192,
        "max_video_side": 3840,
        "concurrent_jobs": 4,
        "retention_days": 30,
        "queue_priority": 10,
    },
]


def seed(apps, schema_editor):
    Plan = apps.get_model("accounts", "Plan")
    for values in PLANS:
        Plan.objects.get_or_create(slug=values["slug"], defaults=values)


def unseed(apps, schema_editor):
    apps.get_model("accounts", "Plan").objects.filter(slug__in=[p["slug"] for p in PLANS]).delete()


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
