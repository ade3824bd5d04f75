"""Persona library: generated faces, attribute forms and generation jobs (see issue 4)."""
