from django.urls import path

from voice import views

urlpatterns = [
    path("", views.history, name="voice-history"),
    path("new/", views.new, name="voice-new"),
    path("personas/<int:pk>/", views.persona_voice, name="voice-persona"),
    path("personas/<int:pk>/preview/", views.persona_preview, name="voice-persona-preview"),
    path("<int:pk>/", views.job_detail, name="voice-job"),
    path("<int:pk>/cancel/", views.job_cancel_view, name="voice-job-cancel"),
    path("<int:pk>/delete/", views.job_delete, name="voice-job-delete"),
    path("<int:pk>/original/", views.original, name="voice-original"),
    path("<int:pk>/result/", views.result, name="voice-result"),
]
