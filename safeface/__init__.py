"""SafeFace Django project: settings, URLs and small shared helpers."""
