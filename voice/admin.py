from django.contrib import admin

from voice.models import MaskJob, PersonaVoice, PreviewJob


@admin.register(PersonaVoice)
class PersonaVoiceAdmin(admin.ModelAdmin):
    """Settings only: the admin never plays a user's recordings."""

    list_display = ["pk", "avatar", "user", "preview_source", "updated_at"]
    search_fields = ["user__email", "avatar__name"]
    exclude = ["preview"]
    readonly_fields = ["avatar", "user", "settings", "preview_source", "preview_settings", "preview_made_at"]


@admin.register(PreviewJob)
class PreviewJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "user", "voice", "source", "status", "created_at", "finished_at"]
    list_filter = ["status", "source"]
    search_fields = ["user__email"]
    exclude = ["clip"]
    readonly_fields = ["user", "voice", "settings", "source", "clip_name", "worker", "queued_at", "started_at", "finished_at"]


@admin.register(MaskJob)
class MaskJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "user", "status", "progress", "avatar_name", "duration", "output_format", "created_at"]
    list_filter = ["status", "output_format"]
    search_fields = ["user__email"]
    exclude = ["source", "result", "original_preview"]
    readonly_fields = [
        "user", "avatar", "avatar_name", "settings", "original_name", "size_bytes", "container", "codec", "has_video",
        "duration", "sample_rate", "channels", "output_format", "submission", "report", "worker", "queued_at",
        "started_at", "finished_at", "quota_metric", "quota_period", "quota_amount", "quota_refunded",
    ]
