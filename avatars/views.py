from __future__ import annotations

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from accounts import quotas
from accounts.models import UsageCounter
from avatars import services
from avatars.forms import AttributeForm, LibraryFilterForm
from avatars.models import CANDIDATE_COUNT, Avatar, GenerationJob
from safeface.htmx import htmx_redirect, render_polled
from safeface.jobs import JobStatus, job_cancel_for_user
from safeface.private_media import private_file_response
from voice.services import voice_description


# --- loading ----------------------------------------------------------------------------------
def _get_avatar_for_user(request: HttpRequest, pk: int, *, ready_only: bool = True) -> Avatar:
    """The user's own avatar (a persona of the library, or with ``ready_only=False`` also a
    candidate waiting to be kept); 404 for anyone else's."""
    avatars = Avatar.objects.filter(user=request.user)
    if ready_only:
        avatars = avatars.filter(status=Avatar.Status.READY)
    try:
        return avatars.get(pk=pk)
    except Avatar.DoesNotExist:
        raise Http404("No such persona.") from None


def _get_job_for_user(request: HttpRequest, pk: int) -> GenerationJob:
    try:
        return GenerationJob.objects.get(pk=pk, user=request.user)
    except GenerationJob.DoesNotExist:
        raise Http404("No such generation.") from None


def _personas_left(user) -> quotas.Meter | None:
    return next((m for m in quotas.usage_meters(user) if m.metric == UsageCounter.Metric.AVATARS), None)


# --- library ----------------------------------------------------------------------------------
@login_required
@require_GET
@vary_on_headers("HX-Request")
def library(request: HttpRequest) -> HttpResponse:
    owned = Avatar.objects.filter(user=request.user, status=Avatar.Status.READY)
    filters = LibraryFilterForm(request.GET or None)
    context = {
        "filters": filters,
        "avatars": filters.apply(owned),
        "has_any": owned.exists(),
        "waiting": GenerationJob.objects.filter(user=request.user)
        .filter(Q(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]) | Q(status=JobStatus.SUCCEEDED, avatars__status=Avatar.Status.CANDIDATE))
        .distinct()[:5],
    }
    # The filters push their URL into the history; restoring it needs the whole page.
    if request.htmx and not request.htmx.history_restore_request:
        return render(request, "avatars/library.html#avatar-grid", context)
    return render(request, "avatars/library.html", context)


# --- creating ---------------------------------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def create(request: HttpRequest) -> HttpResponse:
    """The attribute form. An htmx GET (any select changed) re-renders the live summary; the
    POST queues a generation and sends the browser to its page."""
    if request.method == "GET" and request.htmx:
        form = AttributeForm(request.GET)
        form.is_valid()
        return render(request, "avatars/create.html#attribute-summary", _create_context(request, form))
    form = AttributeForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            job = services.generation_start(
                user=request.user, attributes=form.attributes(), submission=form.cleaned_data["submission"]
            )
        except quotas.LimitReached as exc:
            error = exc.message
        else:
            return htmx_redirect(request, reverse("avatars-job", args=[job.pk]))
    context = _create_context(request, form, error=error)
    if request.htmx:
        return render(request, "avatars/create.html#create-form", context)
    return render(request, "avatars/create.html", context)


def _create_context(request: HttpRequest, form: AttributeForm, *, error: str = "") -> dict:
    chosen = []
    if form.is_bound and form.is_valid():
        chosen = form.attribute_request().describe()
    return {
        "form": form,
        "chosen": chosen,
        "error": error,
        "meter": _personas_left(request.user),
        "candidate_count": CANDIDATE_COUNT,
    }


# --- a generation -----------------------------------------------------------------------------
def _job_context(job: GenerationJob, **extra) -> dict:
    return {
        "job": job,
        "candidates": list(job.candidates()) if job.status == JobStatus.SUCCEEDED else [],
        # Only a finished generation can have a kept persona: a poll of a running one (every
        # second, per watcher) skips the query.
        "kept": job.kept if job.status == JobStatus.SUCCEEDED else None,
        "requested": job.attribute_request().describe(),
        "regenerate_token": uuid.uuid4(),
        **extra,
    }


@login_required
@require_GET
def job(request: HttpRequest, pk: int) -> HttpResponse:
    generation = _get_job_for_user(request, pk)
    return render_polled(
        request, "avatars/job.html", "job-status", _job_context(generation), finished=generation.is_finished
    )


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    generation = _get_job_for_user(request, pk)
    job_cancel_for_user(request, generation, cancelled="Generation cancelled; your quota was refunded.", stopping="Stopping the generation…")
    return htmx_redirect(request, reverse("avatars-job", args=[generation.pk]))


@login_required
@require_POST
def regenerate(request: HttpRequest, pk: int) -> HttpResponse:
    generation = _get_job_for_user(request, pk)
    try:
        submission = uuid.UUID(request.POST.get("submission", ""))
    except ValueError:
        submission = None
    try:
        new = services.generation_regenerate(user=request.user, job=generation, submission=submission)
    except quotas.LimitReached as exc:
        messages.error(request, exc.message)
        return htmx_redirect(request, reverse("avatars-job", args=[generation.pk]))
    return htmx_redirect(request, reverse("avatars-job", args=[new.pk]))


@login_required
@require_POST
def pick(request: HttpRequest, pk: int) -> HttpResponse:
    candidate = _get_avatar_for_user(request, pk, ready_only=False)
    name = request.POST.get("name", "")
    try:
        kept = services.avatar_pick(user=request.user, avatar=candidate, name=name)
    except services.AvatarActionRefused as exc:
        if request.htmx and candidate.generation_job_id:
            return render(request, "avatars/job.html#candidate-card", {
                "candidate": candidate, "pick_error": exc.message, "name_value": name,
                "job": candidate.generation_job,
            })
        messages.error(request, exc.message)
        if candidate.generation_job_id:
            return htmx_redirect(request, reverse("avatars-job", args=[candidate.generation_job_id]))
        return htmx_redirect(request, reverse("avatars-library"))
    messages.success(request, f"“{kept.name}” is in your library.")
    return htmx_redirect(request, reverse("avatars-library"))


# --- one persona ------------------------------------------------------------------------------
@login_required
@require_GET
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    avatar = _get_avatar_for_user(request, pk)
    return render(request, "avatars/detail.html", {
        "avatar": avatar, "verified": services.avatar_is_verified(avatar), "voice_description": voice_description(avatar),
    })


@login_required
@require_GET
def image(request: HttpRequest, pk: int) -> HttpResponse:
    """The picture for an <img> on the owner's pages (candidates too): ``?size=full`` for the
    1024 px image, otherwise the thumbnail."""
    avatar = _get_avatar_for_user(request, pk, ready_only=False)
    file = avatar.image if request.GET.get("size") == "full" or not avatar.thumbnail else avatar.thumbnail
    return private_file_response(file, download_name=f"persona-{avatar.pk}.png", as_attachment=False)


@login_required
@require_GET
def download(request: HttpRequest, pk: int) -> HttpResponse:
    """The full-size PNG as an attachment, only once its signature checks out: the bytes sent
    are the bytes verified."""
    avatar = _get_avatar_for_user(request, pk)
    try:
        data = services.avatar_verify(avatar)
    except services.AvatarTampered as exc:
        services.report_tampered(exc, action="download", user_id=request.user.pk)
        return render(request, "avatars/tampered.html", {"avatar": avatar}, status=409)
    response = HttpResponse(data, content_type="image/png")
    filename = f"{slugify(avatar.name) or 'persona'}.png"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Content-Length"] = str(len(data))
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_POST
def rename(request: HttpRequest, pk: int) -> HttpResponse:
    avatar = _get_avatar_for_user(request, pk)
    name = request.POST.get("name", "")
    error = ""
    try:
        services.avatar_rename(avatar=avatar, name=name)
    except services.AvatarActionRefused as exc:
        error = exc.message
        avatar.refresh_from_db()
    if request.htmx:
        return render(request, "avatars/detail.html#avatar-name", {
            "avatar": avatar, "rename_error": error, "name_value": name, "renamed": not error,
        })
    if error:
        messages.error(request, error)
    else:
        messages.success(request, "Renamed.")
    return redirect("avatars-detail", pk=avatar.pk)


@login_required
@require_POST
def favourite(request: HttpRequest, pk: int) -> HttpResponse:
    avatar = services.avatar_toggle_favourite(avatar=_get_avatar_for_user(request, pk))
    if request.htmx:
        return render(request, "avatars/detail.html#favourite-button", {"avatar": avatar})
    return redirect("avatars-detail", pk=avatar.pk)


@login_required
@require_POST
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    avatar = _get_avatar_for_user(request, pk)
    name = avatar.name
    services.avatar_delete(avatar=avatar)
    messages.success(request, f"“{name}” and its files were deleted.")
    return htmx_redirect(request, reverse("avatars-library"))
