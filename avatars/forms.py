from __future__ import annotations

import uuid

from django import forms

from engine.generate.attributes import ATTRIBUTE_NAMES, CHOICES, LABELS, AttributeRequest

SELECT = {"class": "input"}


def _attribute_field(name: str) -> forms.ChoiceField:
    label = LABELS[name]
    return forms.ChoiceField(
        label=label,
        required=False,
        choices=[("", "Any"), *CHOICES[name].items()],
        widget=forms.Select(attrs=SELECT),
        error_messages={
            "invalid_choice": f"{label}: “%(value)s” is not one of the options. Choose one from the list, or Any.",
        },
    )


class AttributeForm(forms.Form):
    """The look of a new persona: one select per attribute, each with an "Any" option."""

    submission = forms.UUIDField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ATTRIBUTE_NAMES:
            self.fields[name] = _attribute_field(name)
        if not self.is_bound:
            self.initial.setdefault("submission", uuid.uuid4())

    def attribute_fields(self):
        return [self[name] for name in ATTRIBUTE_NAMES]

    def attributes(self) -> dict[str, str]:
        return {name: self.cleaned_data[name] for name in ATTRIBUTE_NAMES if self.cleaned_data.get(name)}

    def attribute_request(self) -> AttributeRequest:
        return AttributeRequest.from_dict(self.attributes())


class LibraryFilterForm(forms.Form):
    """Filters of the persona library: name, favourites, and what the engine measured."""

    q = forms.CharField(label="Name", required=False, max_length=80,
                        widget=forms.SearchInput(attrs={**SELECT, "placeholder": "Search by name"}))
    favourite = forms.BooleanField(label="Favourites only", required=False,
                                   widget=forms.CheckboxInput(attrs={"class": "rounded border-gray-300 text-brand-600"}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ATTRIBUTE_NAMES:
            self.fields[name] = _attribute_field(name)

    def attribute_fields(self):
        return [self[name] for name in ATTRIBUTE_NAMES]

    def apply(self, queryset):
        if not self.is_valid():
            return queryset
        data = self.cleaned_data
        if data.get("q"):
            queryset = queryset.filter(name__icontains=data["q"].strip())
        if data.get("favourite"):
            queryset = queryset.filter(favourite=True)
        for name in ATTRIBUTE_NAMES:
            if data.get(name):
                queryset = queryset.filter(**{f"measured__{name}": data[name]})
        return queryset

    @property
    def active(self) -> bool:
        return self.is_valid() and any(self.cleaned_data.get(n) for n in self.fields)

