from django.urls import path

from swaps import views

urlpatterns = [
    path("", views.history, name="swaps-history"),
    path("new/", views.new, name="swaps-new"),
    path("uploads/<int:pk>/", views.upload_detail, name="swaps-upload"),
    path("uploads/<int:pk>/delete/", views.upload_delete, name="swaps-upload-delete"),
    path("uploads/<int:pk>/media/<str:which>/", views.upload_media, name="swaps-upload-media"),
    path("uploads/<int:pk>/faces/<int:key>/", views.face_thumbnail, name="swaps-face"),
    path("<int:pk>/", views.job_detail, name="swaps-job"),
    path("<int:pk>/cancel/", views.job_cancel_view, name="swaps-job-cancel"),
    path("<int:pk>/delete/", views.job_delete, name="swaps-job-delete"),
    path("<int:pk>/result/", views.result, name="swaps-result"),
    path("<int:pk>/thumbnail/", views.result_thumbnail, name="swaps-result-thumbnail"),
]
