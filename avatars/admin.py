from django.contrib import admin

from avatars.models import Avatar, GenerationJob


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "user", "status", "progress", "attempts", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["user__email"]
    readonly_fields = [
        "user", "attributes", "seed", "submission", "worker", "heartbeat_at", "queued_at", "started_at",
        "finished_at", "quota_metric", "quota_period", "quota_amount", "quota_refunded",
    ]


@admin.register(Avatar)
class AvatarAdmin(admin.ModelAdmin):
    """Provenance is signed: the admin shows it but cannot change it."""

    list_display = ["pk", "name", "user", "status", "favourite", "generator", "seed", "created_at"]
    list_filter = ["status", "favourite", "generator"]
    search_fields = ["name", "user__email"]
    readonly_fields = [
        "user", "generation_job", "status", "rank", "image", "thumbnail", "generator", "model_hash", "seed",
        "attributes", "signature", "measured", "matched", "checks", "created_at", "kept_at",
    ]
    exclude = ["embedding"]
