"""Fixed-window rate limiting for sensitive form submissions, kept in Django's cache (Redis in
production, so every web process shares the counts)."""
from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def parse_rate(rate: str) -> tuple[int, int]:
    """'10/300' -> (10 requests, 300 seconds)."""
    try:
        count, seconds = (int(part) for part in rate.split("/"))
    except ValueError:
        raise ImproperlyConfigured(f"Rate {rate!r} must look like '<count>/<seconds>'.") from None
    if count < 1 or seconds < 1:
        raise ImproperlyConfigured(f"Rate {rate!r} must have a positive count and window.")
    return count, seconds


def client_ip(request: HttpRequest) -> str:
    """The client's address; X-Forwarded-For is trusted only for TRUSTED_PROXY_COUNT hops."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "unknown")


def hit(group: str, keys: Iterable[str], rate: str) -> int:
    """Counts one attempt for every key; returns seconds to wait (0 when allowed)."""
    limit, window = parse_rate(rate)
    now = int(time.time())
    bucket = now // window
    wait = 0
    for key in keys:
        cache_key = f"rl:{group}:{key}:{bucket}"
        cache.add(cache_key, 0, timeout=window + 5)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # expired between add and incr
            cache.set(cache_key, 1, timeout=window + 5)
            count = 1
        if count > limit:
            wait = max(wait, (bucket + 1) * window - now)
    return wait


def ratelimit(group: str, *, extra_keys: Callable[[HttpRequest], Iterable[str]] | None = None):
    """Limits POSTs to a view per client address (and per extra keys such as the e-mail tried)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if settings.RATELIMIT_ENABLED and request.method == "POST":
                keys = [f"ip:{client_ip(request)}"]
                if extra_keys is not None:
                    keys += [k for k in extra_keys(request) if k]
                wait = hit(group, keys, settings.RATELIMIT_AUTH)
                if wait:
                    minutes = max(1, round(wait / 60))
                    response = render(
                        request,
                        "429.html",
                        {"wait_minutes": minutes},
                        status=429,
                    )
                    response["Retry-After"] = str(wait)
                    return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
