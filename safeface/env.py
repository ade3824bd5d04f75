"""Typed readers for environment variables.

Every setting SafeFace reads from the environment goes through one of these helpers, so a bad
value stops start-up with a message that names the variable and what was expected, instead of
surfacing later as a confusing error.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Env:
    """Reads typed values from a mapping (``os.environ`` by default)."""

    def __init__(self, source: Mapping[str, str] | None = None) -> None:
        self.source = os.environ if source is None else source

    def _raw(self, name: str) -> str | None:
        value = self.source.get(name)
        if value is None:
            return None
        return value.strip()

    def str(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self._raw(name)
        if value is None or value == "":
            if required:
                raise ImproperlyConfigured(f"{name} must be set.")
            return default
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a boolean; use one of: true, false, 1, 0, yes, no, on, off."
        )

    def int(
        self,
        name: str,
        default: int,
        *,
        min_value: int | None = None,
        max_value: int | None = None,
    ) -> int:
        value = self._raw(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a whole number.") from None
        if min_value is not None and number < min_value:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum of {min_value}.")
        if max_value is not None and number > max_value:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum of {max_value}.")
        return number

    def float(
        self,
        name: str,
        default: float,
        *,
        min_value: float | None = None,
        max_value: float | None = None,
    ) -> float:
        value = self._raw(name)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
        if number != number:
            raise ImproperlyConfigured(f"{name} is not a number.")
        if min_value is not None and number < min_value:
            raise ImproperlyConfigured(f"{name}={number} is below the minimum of {min_value}.")
        if max_value is not None and number > max_value:
            raise ImproperlyConfigured(f"{name}={number} is above the maximum of {max_value}.")
        return number

    def list(self, name: str, default: Sequence[str] = ()) -> list[str]:
        value = self._raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self._raw(name)
        if value is None or value == "":
            return default
        if value not in choices:
            raise ImproperlyConfigured(
                f"{name}={value!r} is not one of: {', '.join(choices)}."
            )
        return value

    def url(self, name: str, *, schemes: Sequence[str], default: str | None = None) -> str | None:
        value = self._raw(name)
        if value is None or value == "":
            return default
        parsed = urlparse(value)
        if parsed.scheme not in schemes:
            raise ImproperlyConfigured(
                f"{name} must be a URL starting with one of: "
                f"{', '.join(s + '://' for s in schemes)} (got scheme {parsed.scheme!r})."
            )
        return value


env = Env()
