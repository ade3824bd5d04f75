"""Settings for the test suite: the real settings plus a small app of test jobs."""
from safeface.settings import *  # noqa: F403
from safeface.settings import INSTALLED_APPS, STORAGES

INSTALLED_APPS = [*INSTALLED_APPS, "tests.jobapp"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
JOB_HEARTBEAT_SECONDS = 0
RATELIMIT_ENABLED = True
