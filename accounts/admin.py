from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from accounts.models import DataExport, Plan, StripeEvent, UsageCounter, User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "display_name", "plan", "is_staff", "date_joined"]
    list_filter = ["plan", "is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "display_name", "stripe_customer_id"]
    fieldsets = [
        (None, {"fields": ["email", "password", "display_name"]}),
        ("Plan", {"fields": ["plan", "stripe_customer_id", "stripe_subscription_id"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "name", "slug", "is_default", "price_label", "avatars_per_period", "swaps_per_period", "upload_bytes_per_period", "voice_minutes_per_period",
        "video_seconds_per_upload", "max_image_side", "max_video_side", "concurrent_jobs",
        "retention_days", "queue_priority",
    ]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(UsageCounter)
class UsageCounterAdmin(admin.ModelAdmin):
    list_display = ["user", "period", "metric", "used"]
    list_filter = ["period", "metric"]
    search_fields = ["user__email"]


@admin.register(DataExport)
class DataExportAdmin(admin.ModelAdmin):
    list_display = ["pk", "user", "status", "progress", "attempts", "created_at", "finished_at"]
    list_filter = ["status"]
    readonly_fields = ["worker", "heartbeat_at", "started_at", "finished_at", "queued_at"]


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "type", "received_at"]
