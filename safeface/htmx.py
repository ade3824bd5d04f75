"""htmx responses the apps share."""
from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling


def htmx_redirect(request: HttpRequest, url: str) -> HttpResponse:
    """A redirect htmx follows as a whole page (a bare 302 would be swapped into the target)."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def render_polled(request: HttpRequest, template: str, partial: str, context: dict, *, finished: bool) -> HttpResponse:
    """A page whose ``partial`` polls while a job runs: the whole page, or for htmx the partial,
    answered with 286 (stop polling) once ``finished``."""
    if not request.htmx:
        return render(request, template, context)
    response = render(request, f"{template}#{partial}", context)
    return HttpResponseStopPolling(response.content) if finished else response
