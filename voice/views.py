from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import quotas
from accounts.models import UsageCounter
from avatars.models import Avatar
from engine.voice import PARAMETERS
from safeface.htmx import htmx_redirect, render_polled
from safeface.jobs import JobStatus, job_cancel_for_user
from safeface.private_media import private_file_response
from voice import services
from voice.forms import MaskForm, VoiceForm
from voice.models import MaskJob, PersonaVoice


# --- loading ----------------------------------------------------------------------------------
def _get_avatar_for_user(request: HttpRequest, pk: int) -> Avatar:
    try:
        return Avatar.objects.get(pk=pk, user=request.user, status=Avatar.Status.READY)
    except Avatar.DoesNotExist:
        raise Http404("No such persona.") from None


def _get_job_for_user(request: HttpRequest, pk: int) -> MaskJob:
    try:
        return MaskJob.objects.get(pk=pk, user=request.user)
    except MaskJob.DoesNotExist:
        raise Http404("No such recording.") from None


def _meter(user) -> quotas.Meter | None:
    return next((m for m in quotas.usage_meters(user) if m.metric == UsageCounter.Metric.VOICE_SECONDS), None)


def _personas(user) -> list[Avatar]:
    return list(Avatar.objects.filter(user=user, status=Avatar.Status.READY))


# --- a persona's voice ------------------------------------------------------------------------
def _voice_context(request: HttpRequest, avatar: Avatar, voice: PersonaVoice, form: VoiceForm | None = None, *, error: str = "") -> dict:
    if form is None:
        form = VoiceForm(initial=voice.settings)
    latest = voice.last_preview_job()
    return {
        "avatar": avatar,
        "voice": voice,
        "form": form,
        "error": error,
        "preview_job": latest,
        "preview_active": latest is not None and latest.is_active,
        # a failure newer than the preview shown is worth saying
        "preview_failed": latest is not None and latest.status == JobStatus.FAILED
        and (voice.preview_made_at is None or latest.created_at > voice.preview_made_at),
        "sample_available": services.sample_available(),
        "parameters": PARAMETERS,
        "preview_seconds": int(services.PREVIEW_SECONDS),
    }


@login_required
@require_http_methods(["GET", "POST"])
def persona_voice(request: HttpRequest, pk: int) -> HttpResponse:
    """The persona's voice: method and sliders (Save), a new random voice (Randomise) and a
    preview (polled while it is made). Every POST saves the sliders first, except Randomise."""
    avatar = _get_avatar_for_user(request, pk)
    voice = services.voice_for(avatar)
    here = reverse("voice-persona", args=[avatar.pk])
    if request.method == "POST":
        action = request.POST.get("action", "save")
        if action == "randomise":
            services.voice_randomise(voice=voice)
            messages.success(request, f"“{avatar.name}” has a new voice: {voice.describe()}.")
            return htmx_redirect(request, here)
        form = VoiceForm(request.POST, request.FILES)
        error = ""
        if form.is_valid():
            try:
                services.voice_update(voice=voice, values=form.values())
            except ValueError as exc:
                error = str(exc)
            else:
                if action != "preview":
                    messages.success(request, "Voice saved.")
                    return htmx_redirect(request, here)
                try:
                    services.preview_start(user=request.user, voice=voice, clip=form.cleaned_data["clip"])
                except (services.AudioRejected, quotas.LimitReached) as exc:
                    error = exc.message
                else:
                    return htmx_redirect(request, here)
        else:
            error = "Check the settings below."
        voice.refresh_from_db()
        context = _voice_context(request, avatar, voice, form, error=error)
        if request.htmx:
            return render(request, "voice/persona.html#voice-form", context)
        return render(request, "voice/persona.html", context)
    context = _voice_context(request, avatar, voice)
    return render_polled(request, "voice/persona.html", "voice-preview", context, finished=not context["preview_active"])


@login_required
@require_GET
def persona_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The persona's latest preview, for the page's player."""
    avatar = _get_avatar_for_user(request, pk)
    voice = PersonaVoice.objects.filter(avatar=avatar).first()
    if voice is None or not voice.preview:
        raise Http404("No preview yet.")
    name = f"{slugify(avatar.name) or 'persona'}-voice-preview.mp3"
    return private_file_response(voice.preview, download_name=name, as_attachment=False, request=request)


# --- masking recordings -----------------------------------------------------------------------
@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    return render(request, "voice/history.html", {
        "jobs": MaskJob.objects.filter(user=request.user)[:100],
        "personas": _personas(request.user),
        "meter": _meter(request.user),
    })


@login_required
@require_http_methods(["GET", "POST"])
def new(request: HttpRequest) -> HttpResponse:
    personas = _personas(request.user)
    initial = {}
    wanted = request.GET.get("persona", "")
    if wanted.isdigit() and any(p.pk == int(wanted) for p in personas):
        initial["persona"] = wanted
    elif personas:
        initial["persona"] = str(personas[0].pk)
    form = MaskForm(request.POST or None, request.FILES or None, initial=initial)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            job = services.mask_start(
                user=request.user, persona=form.cleaned_data["persona"], file=form.cleaned_data["file"],
                output_format=form.cleaned_data["output_format"], submission=form.cleaned_data["submission"],
            )
        except services.PersonaNotFound:
            raise Http404("No such persona.") from None
        except (services.AudioRejected, quotas.LimitReached) as exc:
            error = exc.message
        else:
            return htmx_redirect(request, reverse("voice-job", args=[job.pk]))
    context = {
        "form": form,
        "error": error,
        "personas": personas,
        "selected": form.selected_persona(),
        "meter": _meter(request.user),
        "plan": quotas.plan_for(request.user),
        "max_minutes": settings.VOICE_MAX_SECONDS // 60,
    }
    if request.htmx:
        return render(request, "voice/new.html#mask-form", context)
    return render(request, "voice/new.html", context)


@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    return render_polled(request, "voice/job.html", "job-status", {"job": job}, finished=job.is_finished)


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    job_cancel_for_user(request, job, cancelled="Masking cancelled; it was not counted against your minutes.", stopping="Stopping…")
    return htmx_redirect(request, reverse("voice-job", args=[job.pk]))


@login_required
@require_POST
def job_delete(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    services.mask_delete(job=job)
    messages.success(request, "The recording and its masked version were deleted.")
    return htmx_redirect(request, reverse("voice-history"))


def _stem(job: MaskJob) -> str:
    return slugify(Path(job.original_name).stem) or "recording"


@login_required
@require_GET
def original(request: HttpRequest, pk: int) -> HttpResponse:
    """The owner's own upload for the page's "before" player (an MP3 copy when browsers cannot
    play the upload as it is)."""
    job = _get_job_for_user(request, pk)
    if job.original_preview:
        return private_file_response(
            job.original_preview, download_name=f"{_stem(job)}-original.mp3", as_attachment=False, request=request
        )
    return private_file_response(
        job.source, download_name=f"{_stem(job)}.{job.source_suffix}", as_attachment=False, request=request
    )


@login_required
@require_GET
def result(request: HttpRequest, pk: int) -> HttpResponse:
    """The masked recording: inline for the page's player, ``?download=1`` as an attachment."""
    job = _get_job_for_user(request, pk)
    if job.status != JobStatus.SUCCEEDED:
        raise Http404("This recording has no masked version.")
    name = f"{_stem(job)}-masked.{job.result_suffix}"
    return private_file_response(job.result, download_name=name, as_attachment=bool(request.GET.get("download")), request=request)
