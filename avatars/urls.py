from django.urls import path

from avatars import views

urlpatterns = [
    path("", views.library, name="avatars-library"),
    path("new/", views.create, name="avatars-create"),
    path("generations/<int:pk>/", views.job, name="avatars-job"),
    path("generations/<int:pk>/cancel/", views.job_cancel_view, name="avatars-job-cancel"),
    path("generations/<int:pk>/regenerate/", views.regenerate, name="avatars-regenerate"),
    path("<int:pk>/", views.detail, name="avatars-detail"),
    path("<int:pk>/keep/", views.pick, name="avatars-pick"),
    path("<int:pk>/image/", views.image, name="avatars-image"),
    path("<int:pk>/download/", views.download, name="avatars-download"),
    path("<int:pk>/rename/", views.rename, name="avatars-rename"),
    path("<int:pk>/favourite/", views.favourite, name="avatars-favourite"),
    path("<int:pk>/delete/", views.delete, name="avatars-delete"),
]
