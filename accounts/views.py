from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from accounts import billing, quotas, services
from accounts.forms import ChangePasswordForm, DeleteAccountForm, LoginForm, NewPasswordForm, ProfileForm, ResetForm, SignupForm
from accounts.models import DataExport, Plan
from safeface.jobs import job_cancel
from safeface.private_media import private_file_response
from safeface.ratelimit import ratelimit

logger = logging.getLogger(__name__)


def _email_key(request: HttpRequest) -> list[str]:
    email = (request.POST.get("username") or request.POST.get("email") or "").strip().lower()
    return [f"email:{email}"] if email else []


@ratelimit("signup")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("accounts-usage")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.user_create(
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
            display_name=form.cleaned_data["display_name"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to SafeFace. Your account is ready.")
        return redirect("accounts-usage")
    return render(request, "accounts/signup.html", {"form": form})


@method_decorator(ratelimit("login", extra_keys=_email_key), name="dispatch")
class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    authentication_form = LoginForm
    redirect_authenticated_user = True


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    messages.info(request, "You are logged out.")
    return redirect("home")


@method_decorator(ratelimit("password-reset", extra_keys=_email_key), name="dispatch")
class PasswordResetView(auth_views.PasswordResetView):
    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/email/password_reset.txt"
    subject_template_name = "accounts/email/password_reset_subject.txt"
    form_class = ResetForm
    success_url = reverse_lazy("accounts-password-reset-done")


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    form_class = NewPasswordForm
    success_url = reverse_lazy("accounts-password-reset-complete")


@method_decorator(ratelimit("password-change"), name="dispatch")
class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    form_class = ChangePasswordForm
    success_url = reverse_lazy("accounts-profile")

    def form_valid(self, form):
        messages.success(self.request, "Password changed. Other devices were logged out.")
        return super().form_valid(form)


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    form = ProfileForm(request.POST or None, instance=request.user)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Profile saved.")
        return redirect("accounts-profile")
    exports = DataExport.objects.filter(user=request.user)[:5]
    return render(request, "accounts/profile.html", {"form": form, "exports": exports})


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    if request.GET.get("upgraded") and not request.htmx:
        messages.success(request, "Payment received. Your plan changes as soon as Stripe confirms it, usually within seconds.")
    plan = quotas.plan_for(request.user)
    context = {
        "plan": plan,
        "meters": quotas.usage_meters(request.user),
        "resets_at": quotas.period_resets_at(),
        "plans": Plan.objects.all(),
    }
    if request.htmx:
        return render(request, "accounts/usage.html#usage-meters", context)
    return render(request, "accounts/usage.html", context)


def _stripe_redirect(request: HttpRequest, make_url) -> HttpResponse:
    """Sends the user to a Stripe-hosted page, or back to the usage page with the reason."""
    if not billing.billing_configured():
        messages.error(request, "Billing is not configured on this server, so plans cannot be bought here yet.")
        return _redirect(request, "accounts-usage")
    try:
        url = make_url(settings.SITE_URL.rstrip("/") + reverse("accounts-usage"))
    except billing.BillingError as exc:
        messages.error(request, str(exc))
        return _redirect(request, "accounts-usage")
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


@login_required
@require_POST
def upgrade(request: HttpRequest, slug: str) -> HttpResponse:
    plan = get_object_or_404(Plan, slug=slug)
    if plan == quotas.plan_for(request.user):
        messages.info(request, f"You are already on the {plan.name} plan.")
        return _redirect(request, "accounts-usage")
    return _stripe_redirect(
        request,
        lambda usage_url: billing.checkout_session_create(
            user=request.user, plan=plan, success_url=usage_url + "?upgraded=1", cancel_url=usage_url
        ),
    )


@login_required
@require_POST
def billing_portal(request: HttpRequest) -> HttpResponse:
    return _stripe_redirect(
        request,
        lambda usage_url: billing.billing_portal_create(
            customer_id=request.user.stripe_customer_id, return_url=usage_url
        ),
    )


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    try:
        event = billing.webhook_event_verify(
            request.body, request.headers.get("Stripe-Signature", ""), settings.STRIPE_WEBHOOK_SECRET or ""
        )
    except billing.SignatureError as exc:
        logger.warning("rejected Stripe webhook: %s", exc)
        return HttpResponseBadRequest("invalid signature")
    outcome = services.stripe_event_apply(event=event)
    logger.info("Stripe event %s (%s): %s", event["id"], event["type"], outcome)
    return HttpResponse(outcome, content_type="text/plain")


@login_required
def account_delete(request: HttpRequest) -> HttpResponse:
    form = DeleteAccountForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        user = request.user
        logout(request)
        services.user_delete(user=user)
        messages.success(request, "Your account and every file and record of it have been deleted.")
        return _redirect(request, "home")
    return render(request, "accounts/delete.html", {"form": form})


# --- data exports ---------------------------------------------------------------------------
def _get_export_for_user(request: HttpRequest, pk: int) -> DataExport:
    try:
        return DataExport.objects.get(pk=pk, user=request.user)
    except DataExport.DoesNotExist:
        raise Http404("No such export.") from None


@login_required
@require_POST
def export_create(request: HttpRequest) -> HttpResponse:
    try:
        services.data_export_create(user=request.user)
        messages.success(request, "Your export is being prepared. It appears below when ready.")
    except quotas.LimitReached as exc:
        messages.error(request, exc.message)
    return _redirect(request, "accounts-profile")


@login_required
@require_GET
def export_status(request: HttpRequest, pk: int) -> HttpResponse:
    export = _get_export_for_user(request, pk)
    response = render(request, "accounts/profile.html#export-row", {"export": export})
    if export.is_finished and request.htmx:
        stop = HttpResponseStopPolling(response.content)
        return stop
    return response


@login_required
@require_POST
def export_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    export = _get_export_for_user(request, pk)
    if export.is_active:
        job_cancel(export)
        messages.info(request, "Export cancelled.")
    return _redirect(request, "accounts-profile")


@login_required
@require_GET
def export_download(request: HttpRequest, pk: int) -> HttpResponse:
    export = _get_export_for_user(request, pk)
    if export.status != "succeeded" or not export.archive:
        raise Http404("This export is not available.")
    return private_file_response(
        export.archive, download_name=f"safeface-export-{export.created_at:%Y%m%d-%H%M}.zip"
    )


def _redirect(request: HttpRequest, name: str) -> HttpResponse:
    if request.htmx:
        return HttpResponseClientRedirect(reverse(name))
    return redirect(name)
