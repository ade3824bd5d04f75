"""Settings for the test suite: the real settings plus a small app of test jobs."""
import os
import tempfile
from pathlib import Path

from safeface.settings import *  # noqa: F403
from safeface.settings import DATABASES, INSTALLED_APPS, STORAGES

INSTALLED_APPS = [*INSTALLED_APPS, "tests.jobapp"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
JOB_HEARTBEAT_SECONDS = 0
RATELIMIT_ENABLED = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The SQLite test database is a file, not Django's default in-memory database: the browser
    # tests of swaps run real `manage.py qcluster` processes that must see what the live server
    # writes (tests/e2e/test_swaps.py). One file per test run (the pid), deleted by Django when
    # the run ends; $SAFEFACE_TEST_DB_DIR chooses the folder (default: the system's temp folder).
    _test_db_dir = Path(os.environ.get("SAFEFACE_TEST_DB_DIR") or tempfile.gettempdir())
    DATABASES["default"]["TEST"] = {"NAME": str(_test_db_dir / f"safeface-test-{os.getpid()}.sqlite3")}
