from django.contrib import admin

from swaps.models import SwapAssignment, SwapJob, Upload


class SwapAssignmentInline(admin.TabularInline):
    model = SwapAssignment
    extra = 0
    can_delete = False
    readonly_fields = ["face_key", "avatar", "avatar_name", "distance"]


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    """Metadata only: the admin never shows a user's pictures."""

    list_display = ["pk", "user", "kind", "format", "status", "size_bytes", "samples", "content_flagged", "created_at"]
    list_filter = ["status", "kind", "format"]
    search_fields = ["user__email"]
    exclude = ["file", "preview", "preview_video"]
    readonly_fields = [
        "user", "kind", "format", "original_name", "size_bytes", "width", "height", "duration", "fps",
        "frame_count", "has_audio", "samples", "content_flagged", "content_score", "submission", "worker",
        "queued_at", "started_at", "finished_at", "quota_metric", "quota_period", "quota_amount", "quota_refunded",
    ]


@admin.register(SwapJob)
class SwapJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "user", "status", "progress", "others", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "others"]
    search_fields = ["user__email"]
    exclude = ["result", "result_thumbnail"]
    inlines = [SwapAssignmentInline]
    readonly_fields = [
        "user", "upload", "others", "audio", "voice_avatar", "quality", "submission", "report", "worker", "queued_at",
        "started_at", "finished_at", "quota_metric", "quota_period", "quota_amount", "quota_refunded",
    ]
