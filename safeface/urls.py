from django.contrib import admin
from django.urls import include, path

from safeface import views

admin.site.site_header = "SafeFace administration"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
    path("accounts/", include("accounts.urls")),
    path("personas/", include("avatars.urls")),
    path("swaps/", include("swaps.urls")),
    path("voice/", include("voice.urls")),
    path("admin/", admin.site.urls),
]
