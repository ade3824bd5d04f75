from __future__ import annotations

import logging
from pathlib import Path

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import quotas
from accounts.models import UsageCounter
from avatars.models import Avatar
from safeface.htmx import htmx_redirect, render_polled
from safeface.jobs import JobStatus, job_cancel_for_user
from safeface.private_media import private_file_response
from swaps import services
from swaps.forms import SwapForm, UploadForm
from swaps.models import SwapJob, Upload, UploadFace

security_logger = logging.getLogger("safeface.security")


# --- loading ----------------------------------------------------------------------------------
def _get_upload_for_user(request: HttpRequest, pk: int) -> Upload:
    try:
        return Upload.objects.get(pk=pk, user=request.user)
    except Upload.DoesNotExist:
        raise Http404("No such upload.") from None


def _get_job_for_user(request: HttpRequest, pk: int) -> SwapJob:
    try:
        return SwapJob.objects.select_related("upload").get(pk=pk, user=request.user)
    except SwapJob.DoesNotExist:
        raise Http404("No such swap.") from None


def _meter(user, metric: str) -> quotas.Meter | None:
    return next((m for m in quotas.usage_meters(user) if m.metric == metric), None)


# --- history ----------------------------------------------------------------------------------
@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    jobs = SwapJob.objects.filter(user=request.user).select_related("upload").prefetch_related("assignments")
    waiting = (
        Upload.objects.filter(user=request.user, swaps__isnull=True)
        .exclude(status=JobStatus.CANCELLED)
        .annotate(face_count=Count("faces"))
    )
    return render(request, "swaps/history.html", {
        "jobs": jobs[:100],
        "waiting": waiting[:20],
        "meter": _meter(request.user, UsageCounter.Metric.SWAPS),
    })


# --- uploading --------------------------------------------------------------------------------
@login_required
@require_http_methods(["GET", "POST"])
def new(request: HttpRequest) -> HttpResponse:
    form = UploadForm(request.POST or None, request.FILES or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            upload = services.upload_create(
                user=request.user, file=form.cleaned_data["file"], submission=form.cleaned_data["submission"]
            )
        except (services.UploadRejected, quotas.LimitReached) as exc:
            error = exc.message
        else:
            return htmx_redirect(request, reverse("swaps-upload", args=[upload.pk]))
    context = {
        "form": form,
        "error": error,
        "volume": _meter(request.user, UsageCounter.Metric.UPLOAD_BYTES),
        "swaps_meter": _meter(request.user, UsageCounter.Metric.SWAPS),
        "plan": quotas.plan_for(request.user),
        "has_personas": Avatar.objects.filter(user=request.user, status=Avatar.Status.READY).exists(),
    }
    if request.htmx:
        return render(request, "swaps/new.html#upload-form", context)
    return render(request, "swaps/new.html", context)


# --- picking faces ----------------------------------------------------------------------------
def _initial_choices(upload: Upload, faces: list[UploadFace], distances: dict) -> dict[str, str]:
    """Preselects the best-protecting persona for the main face (the only one, the largest in a
    photo, the one seen most in a video); the others start as "not replaced"."""
    if not faces:
        return {}
    if upload.is_video:
        main = max(faces, key=lambda f: (f.appearances, -f.key))
    else:
        main = max(faces, key=lambda f: ((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), -f.key))
    best = services.best_persona(distances.get(main.key, {}))
    return {f"face_{main.key}": str(best)} if best else {}


def _picker_context(request: HttpRequest, upload: Upload, form: SwapForm | None = None, *, error: str = "") -> dict:
    personas = list(Avatar.objects.filter(user=request.user, status=Avatar.Status.READY))
    faces = list(upload.faces.all())
    distances = services.persona_distances(upload, personas)
    keys = [f.key for f in faces]
    if form is None:
        form = SwapForm(face_keys=keys, initial=_initial_choices(upload, faces, distances))
    selected = form.selected()
    by_pk = {a.pk: a for a in personas}
    rows = []
    for face in faces:
        near = distances.get(face.key, {})
        ranked = sorted(personas, key=lambda a: (-near.get(a.pk, 0.0), a.pk))
        chosen = by_pk.get(selected.get(face.key))
        distance = near.get(chosen.pk) if chosen else None
        warning = distance is not None and distance < services.RESEMBLES
        best = by_pk.get(services.best_persona(near))
        rows.append({
            "face": face,
            "options": [(a, near.get(a.pk), a.pk == (best.pk if best else None)) for a in ranked],
            "chosen": chosen,
            "distance": distance,
            "warning": warning,
            "suggestion": best if warning and best and best.pk != chosen.pk else None,
        })
    # Whose voice masks the sound: one of the chosen personas (the first face's by default).
    voices = list({row["chosen"].pk: row["chosen"] for row in rows if row["chosen"]}.values())
    voice = by_pk.get(form.selected_voice()) if form.selected_voice() in {a.pk for a in voices} else None
    return {
        "upload": upload,
        "form": form,
        "rows": rows,
        "masking": upload.is_video and upload.has_audio and form.selected_audio() == SwapJob.Audio.MASK,
        "voices": voices,
        "voice": voice or (voices[0] if voices else None),
        "personas": personas,
        "error": error,
        "chosen_count": sum(1 for r in rows if r["chosen"]),
        "swaps_meter": _meter(request.user, UsageCounter.Metric.SWAPS),
    }


@login_required
@require_http_methods(["GET", "POST"])
def upload_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The upload's check (polled while it runs), then the face picker; POST starts the swap."""
    upload = _get_upload_for_user(request, pk)
    keys = list(upload.faces.values_list("key", flat=True))
    if request.method == "POST":
        form = SwapForm(request.POST, face_keys=keys)
        error = ""
        if form.is_valid():
            try:
                assignments = form.assignments()
                voice = form.voice_persona()
            except services.PersonaNotFound:
                # Not an id at all: as forged as someone else's id (which swap_start logs).
                security_logger.warning(
                    "SECURITY user %s sent a persona value that is not an id (upload %s)", request.user.pk, upload.pk
                )
                raise Http404("No such persona.") from None
            try:
                job = services.swap_start(
                    user=request.user, upload=upload, assignments=assignments,
                    others=form.cleaned_data["others"], audio=form.cleaned_data["audio"],
                    quality=form.cleaned_data["quality"], voice=voice, submission=form.cleaned_data["submission"],
                )
            except services.PersonaNotFound:
                raise Http404("No such persona.") from None
            except (services.SwapRefused, quotas.LimitReached) as exc:
                error = exc.message
            else:
                return htmx_redirect(request, reverse("swaps-job", args=[job.pk]))
        else:
            error = "Check the options below."
        context = _picker_context(request, upload, form, error=error)
        if request.htmx:
            return render(request, "swaps/upload.html#face-picker", context)
        return render(request, "swaps/upload.html", context)
    if request.htmx and "picker" in request.GET:
        form = SwapForm(request.GET, face_keys=keys)
        form.is_valid()
        return render(request, "swaps/upload.html#face-picker", _picker_context(request, upload, form))
    return render_polled(
        request, "swaps/upload.html", "upload-status", _picker_context(request, upload), finished=upload.is_finished
    )


@login_required
@require_POST
def upload_delete(request: HttpRequest, pk: int) -> HttpResponse:
    upload = _get_upload_for_user(request, pk)
    name = str(upload)
    services.upload_delete(upload=upload)
    messages.success(request, f"“{name}” and everything made from it were deleted.")
    return htmx_redirect(request, reverse("swaps-history"))


@login_required
@require_GET
def upload_media(request: HttpRequest, pk: int, which: str) -> HttpResponse:
    """The owner's own upload for the page's players: the original, its preview image, or a
    browser-playable copy of a video."""
    upload = _get_upload_for_user(request, pk)
    stem = slugify(Path(upload.original_name).stem) or "upload"
    if which == "original":
        return private_file_response(
            upload.file, download_name=f"{stem}.{upload.extension}", as_attachment=False, request=request
        )
    if which == "preview":
        return private_file_response(upload.preview, download_name=f"{stem}-preview.jpg", as_attachment=False)
    if which == "video":
        file = upload.preview_video if upload.preview_video else upload.file
        suffix = "mp4" if upload.preview_video else upload.extension
        return private_file_response(file, download_name=f"{stem}-preview.{suffix}", as_attachment=False, request=request)
    raise Http404("No such file.")


@login_required
@require_GET
def face_thumbnail(request: HttpRequest, pk: int, key: int) -> HttpResponse:
    upload = _get_upload_for_user(request, pk)
    face = upload.faces.filter(key=key).first()
    if face is None:
        raise Http404("No such face.")
    return private_file_response(face.thumbnail, download_name=f"face-{face.number}.jpg", as_attachment=False)


# --- a swap -----------------------------------------------------------------------------------
@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    context = {"job": job, "upload": job.upload, "assignments": list(job.assignments.all())}
    return render_polled(request, "swaps/job.html", "job-status", context, finished=job.is_finished)


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    job_cancel_for_user(request, job, cancelled="Swap cancelled; it was not counted against your quota.", stopping="Stopping the swap…")
    return htmx_redirect(request, reverse("swaps-job", args=[job.pk]))


@login_required
@require_POST
def job_delete(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    services.swap_delete(job=job)
    messages.success(request, "The swap and its files were deleted.")
    return htmx_redirect(request, reverse("swaps-history"))


@login_required
@require_GET
def result(request: HttpRequest, pk: int) -> HttpResponse:
    """The protected file: inline for the page's players, ``?download=1`` as an attachment."""
    job = _get_job_for_user(request, pk)
    if job.status != JobStatus.SUCCEEDED:
        raise Http404("This swap has no result.")
    stem = slugify(Path(job.upload.original_name).stem) or "photo"
    name = f"{stem}-protected.{job.result_suffix}"
    return private_file_response(
        job.result, download_name=name, as_attachment=bool(request.GET.get("download")), request=request
    )


@login_required
@require_GET
def result_thumbnail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    return private_file_response(job.result_thumbnail, download_name=f"swap-{job.pk}.jpg", as_attachment=False)
