from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views

urlpatterns = [
    path("signup/", views.signup, name="accounts-signup"),
    path("login/", views.LoginView.as_view(), name="accounts-login"),
    path("logout/", views.logout_view, name="accounts-logout"),
    path("password-reset/", views.PasswordResetView.as_view(), name="accounts-password-reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name="accounts/password_reset_done.html"),
        name="accounts-password-reset-done",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="accounts-password-reset-confirm",
    ),
    path(
        "password-reset/complete/",
        auth_views.PasswordResetCompleteView.as_view(template_name="accounts/password_reset_complete.html"),
        name="accounts-password-reset-complete",
    ),
    path("password/", views.PasswordChangeView.as_view(), name="accounts-password-change"),
    path("profile/", views.profile, name="accounts-profile"),
    path("usage/", views.usage, name="accounts-usage"),
    path("upgrade/<slug:slug>/", views.upgrade, name="accounts-upgrade"),
    path("billing/portal/", views.billing_portal, name="accounts-billing-portal"),
    path("delete/", views.account_delete, name="accounts-delete"),
    path("exports/", views.export_create, name="accounts-export-create"),
    path("exports/<int:pk>/status/", views.export_status, name="accounts-export-status"),
    path("exports/<int:pk>/cancel/", views.export_cancel, name="accounts-export-cancel"),
    path("exports/<int:pk>/download/", views.export_download, name="accounts-export-download"),
    path("billing/stripe/webhook/", views.stripe_webhook, name="accounts-stripe-webhook"),
]
