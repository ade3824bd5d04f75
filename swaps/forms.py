from __future__ import annotations

import uuid

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from swaps.models import SwapJob
from swaps.services import PersonaNotFound

RADIO = forms.RadioSelect(attrs={"class": "h-4 w-4 border-gray-300 text-brand-600"})


class UploadForm(forms.Form):
    file = forms.FileField(
        label="Photo or video",
        error_messages={
            "required": "Choose a photo or a video to upload.",
            "empty": "This file is empty. Choose a photo or a video.",
        },
        widget=forms.ClearableFileInput(attrs={
            "accept": "image/jpeg,image/png,image/webp,image/heic,image/heif,.heic,.heif,video/mp4,video/quicktime,video/webm,image/gif,.mov,.webm,.gif",
            "class": "sr-only",
        }),
    )
    submission = forms.UUIDField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("submission", uuid.uuid4())

    @property
    def max_bytes(self) -> int:
        return settings.MAX_UPLOAD_BYTES

    @property
    def max_human(self) -> str:
        return filesizeformat(settings.MAX_UPLOAD_BYTES)


class SwapForm(forms.Form):
    """Which persona replaces which face, and what happens to the others.

    Persona fields are plain text on purpose: an id that is not one of the user's kept personas
    is not a form error but a forged request, answered with a 404 by the view."""

    others = forms.ChoiceField(label="Everyone else", choices=SwapJob.Others.choices, initial=SwapJob.Others.KEEP, widget=RADIO)
    audio = forms.ChoiceField(label="Sound", choices=SwapJob.Audio.choices, initial=SwapJob.Audio.KEEP, widget=RADIO)
    quality = forms.ChoiceField(label="Output quality", choices=SwapJob.Quality.choices, initial=SwapJob.Quality.STANDARD, widget=RADIO)
    voice = forms.CharField(required=False)
    submission = forms.UUIDField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, face_keys: list[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.face_keys = face_keys
        for key in face_keys:
            self.fields[f"face_{key}"] = forms.CharField(required=False)
        if not self.is_bound:
            self.initial.setdefault("submission", uuid.uuid4())

    def assignments(self) -> dict[int, int]:
        """{face key: avatar id} for the faces given a persona. Raises PersonaNotFound for a
        value that is not an id at all (only a hand-made request sends one)."""
        chosen = {}
        for key in self.face_keys:
            value = (self.cleaned_data.get(f"face_{key}") or "").strip()
            if not value:
                continue
            if not value.isdigit():
                raise PersonaNotFound()
            chosen[key] = int(value)
        return chosen

    def voice_persona(self) -> int | None:
        """The avatar id whose voice masks the sound (None: the first face's persona). Raises
        PersonaNotFound for a value that is not an id at all."""
        value = (self.cleaned_data.get("voice") or "").strip()
        if not value:
            return None
        if not value.isdigit():
            raise PersonaNotFound()
        return int(value)

    def selected_voice(self) -> int | None:
        data = self.data if self.is_bound else self.initial
        value = str(data.get("voice") or "")
        return int(value) if value.isdigit() else None

    def selected_audio(self) -> str:
        data = self.data if self.is_bound else self.initial
        return str(data.get("audio") or SwapJob.Audio.KEEP)

    def selected(self) -> dict[int, int | None]:
        """What the form currently says for each face (bound or not), for re-rendering."""
        data = self.data if self.is_bound else self.initial
        result = {}
        for key in self.face_keys:
            value = str(data.get(f"face_{key}") or "")
            result[key] = int(value) if value.isdigit() else None
        return result
