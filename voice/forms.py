from __future__ import annotations

import uuid

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from engine.voice import METHODS, PARAMETERS
from voice.models import MaskJob

RADIO = forms.RadioSelect(attrs={"class": "h-4 w-4 border-gray-300 text-brand-600"})
AUDIO_ACCEPT = (
    "audio/*,video/mp4,video/quicktime,video/webm,.wav,.flac,.mp3,.m4a,.aac,.ogg,.opus,.oga,.webm,.mp4,.mov,.mkv"
)


class RangeInput(forms.NumberInput):
    input_type = "range"


def _parameter_field(name: str) -> forms.FloatField:
    spec = PARAMETERS[name]
    message = f"{spec.label} must be between {spec.minimum:g} and {spec.maximum:g}."
    return forms.FloatField(
        label=spec.label, help_text=spec.help, min_value=spec.minimum, max_value=spec.maximum,
        widget=RangeInput(attrs={
            "min": spec.minimum, "max": spec.maximum, "step": spec.step, "class": "w-full accent-brand-600",
            "data-slider": name,
        }),
        error_messages={
            "required": f"Set the {spec.label.lower()}.", "invalid": f"{spec.label} must be a number.",
            "min_value": message, "max_value": message,
        },
    )


class VoiceForm(forms.Form):
    """A persona's voice: the method and a slider per parameter; and, for a preview, an optional
    clip of the owner's own recording."""

    method = forms.ChoiceField(
        label="Method", choices=list(METHODS.items()), widget=RADIO,
        error_messages={"invalid_choice": "Choose one of the two methods.", "required": "Choose a method."},
    )
    clip = forms.FileField(
        label="Your own clip (optional)", required=False,
        help_text="Preview with a recording of yours instead of the sample sentence: its first 15 seconds are used, "
                  "then deleted.",
        widget=forms.ClearableFileInput(attrs={"accept": AUDIO_ACCEPT, "class": "input"}),
        error_messages={"empty": "This file is empty. Choose a recording."},
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in PARAMETERS:
            self.fields[name] = _parameter_field(name)

    def parameter_fields(self):
        return [self[name] for name in PARAMETERS]

    def values(self) -> dict:
        return {name: self.cleaned_data[name] for name in ("method", *PARAMETERS)}


class MaskForm(forms.Form):
    """A recording, the persona whose voice masks it, and the output format.

    The persona is plain text on purpose: an id that is not one of the user's kept personas is not
    a form error but a forged request, answered with a 404 by the view."""

    file = forms.FileField(
        label="Recording or video",
        error_messages={
            "required": "Choose a recording (or a video with sound) to upload.",
            "empty": "This file is empty (0 bytes). Choose a recording or a video with sound.",
        },
        widget=forms.ClearableFileInput(attrs={"accept": AUDIO_ACCEPT, "class": "sr-only"}),
    )
    persona = forms.CharField(required=False)
    output_format = forms.ChoiceField(
        label="Output format", choices=MaskJob.Format.choices, initial=MaskJob.Format.MP3, widget=RADIO,
        error_messages={"invalid_choice": "Choose one of the offered output formats."},
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

    def selected_persona(self) -> str:
        data = self.data if self.is_bound else self.initial
        return str(data.get("persona") or "")
