"""SafeFace settings: one module, every value read from the environment through typed helpers.

With nothing set, SafeFace runs the embedded default: SQLite, django-q2's ORM broker, private
media on the local disk under var/, console e-mail and a secret key kept in var/secret_key.
Setting SAFEFACE_ENV=production switches to production rules: SECRET_KEY and ALLOWED_HOSTS are
required, HTTPS is enforced and cookies are secure. See README.md for every variable.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from engine import models as _engine_models
from safeface.env import env

BASE_DIR = Path(__file__).resolve().parent.parent

SAFEFACE_ENV = env.choice("SAFEFACE_ENV", ("development", "production"), "development")
PRODUCTION = SAFEFACE_ENV == "production"
DEBUG = env.bool("DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when SAFEFACE_ENV=production.")

VAR_DIR = Path(env.str("SAFEFACE_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    key = env.str("SECRET_KEY")
    if key:
        if len(key) < 50 or len(set(key)) < 5:
            raise ImproperlyConfigured("SECRET_KEY must be at least 50 varied characters long.")
        return key
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when SAFEFACE_ENV=production.")
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        candidate = secrets.token_urlsafe(64)
        try:
            # O_EXCL: two processes starting at once agree on one key.
            with key_file.open("x", encoding="ascii") as handle:
                handle.write(candidate)
            key_file.chmod(0o600)
        except FileExistsError:
            pass
    return key_file.read_text(encoding="ascii").strip()


SECRET_KEY = _secret_key()

_default_hosts = [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", _default_hosts)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when SAFEFACE_ENV=production.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env.url("SITE_URL", schemes=("http", "https"), default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_q",
    "safeface",
    "accounts",
    "avatars",
    "swaps",
    "voice",
]

MIDDLEWARE = [
    # First: every response (redirects, errors) carries X-Request-ID, every log line its id.
    "safeface.logs.RequestIdMiddleware",
    "safeface.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "safeface.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "safeface.urls"
WSGI_APPLICATION = "safeface.wsgi.application"
ASGI_APPLICATION = "safeface.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # {% partialdef %} everywhere without {% load %}, as it is built into Django 6.
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "safeface.context_processors.site",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env.url(
    "DATABASE_URL",
    schemes=("sqlite", "postgres", "postgresql", "pgsql"),
    default=f"sqlite:///{VAR_DIR / 'safeface.sqlite3'}",
)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE transactions take the write
    # lock up front so a read-then-write inside atomic() cannot deadlock or race.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", 60, min_value=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache, queue ---------------------------------------------------------------------------
REDIS_URL = env.url("REDIS_URL", schemes=("redis", "rediss", "unix"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "safeface",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Light work (exports, clean-up, the sweeper) runs on the default cluster; generation, swap and
# voice jobs run on the "gpu" cluster, started with Q_CLUSTER_NAME=gpu on the GPU machines.
JOB_TIMEOUT_SECONDS = env.int("JOB_TIMEOUT_SECONDS", 3600, min_value=60)
JOB_STALE_SECONDS = env.int("JOB_STALE_SECONDS", 120, min_value=10)
JOB_HEARTBEAT_SECONDS = env.int("JOB_HEARTBEAT_SECONDS", 15, min_value=0)
JOB_RENUDGE_SECONDS = env.int("JOB_RENUDGE_SECONDS", 600, min_value=30)
# Avatar generator on the gpu workers: the embedded StyleGAN or a diffusers pipeline (GPU backends).
AVATAR_GENERATOR = env.choice("SAFEFACE_GENERATOR", ("stylegan", "diffusers"), "stylegan")
# --- Swaps ----------------------------------------------------------------------------------
# Largest file accepted by the upload form (the plan's monthly volume applies on top).
MAX_UPLOAD_BYTES = env.int("SAFEFACE_MAX_UPLOAD_MB", 1024, min_value=1) * 1024 * 1024
# Pixel cap when decoding an image (decompression bombs are refused before decoding).
MAX_IMAGE_PIXELS = env.int("SAFEFACE_MAX_IMAGE_MEGAPIXELS", 80, min_value=1) * 1_000_000
# Explicit-content gate (nudenet): a sample is flagged when an explicit detection scores at
# least CONTENT_MIN_SCORE; an upload is refused when the share of flagged samples (the image,
# or one frame per second of a video) is over CONTENT_MAX_SHARE.
CONTENT_MIN_SCORE = env.float("SAFEFACE_CONTENT_MIN_SCORE", 0.5, min_value=0.05, max_value=1.0)
CONTENT_MAX_SHARE = env.float("SAFEFACE_CONTENT_MAX_SHARE", 0.1, min_value=0.0, max_value=1.0)
# Scratch folder of the workers for videos (default: the system's temporary folder).
JOB_TEMP_DIR = env.str("SAFEFACE_TEMP_DIR", "") or None
# Face swap engine of the workers: "classical" (the embedded mesh swap, CPU) or an ONNX swapper
# whose FaceFusion-named files are in SAFEFACE_MODELS_DIR (engine.swap.neural.SWAPPERS).
SWAPPER = env.choice(
    "SAFEFACE_SWAPPER",
    (
        "classical", "inswapper_128", "inswapper_128_fp16", "hyperswap_1a_256", "hyperswap_1b_256",
        "hyperswap_1c_256", "simswap_256", "simswap_unofficial_512", "ghost_1_256", "ghost_2_256", "ghost_3_256",
    ),
    "classical",
)
# --- Voice ----------------------------------------------------------------------------------
# Longest recording one voice-masking job accepts, whatever the plan (the plan's monthly minutes
# apply on top).
VOICE_MAX_SECONDS = env.int("SAFEFACE_VOICE_MAX_MINUTES", 60, min_value=1, max_value=240) * 60

Q_CLUSTER = {
    "name": env.str("Q_PREFIX", "safeface"),
    "workers": env.int("Q_WORKERS", 2, min_value=1),
    "timeout": 300,
    "retry": 360,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 500,
    "catch_up": False,
    "poll": 0.5,
    "ALT_CLUSTERS": {
        "gpu": {
            "workers": env.int("Q_GPU_WORKERS", 1, min_value=1),
            "timeout": JOB_TIMEOUT_SECONDS,
            "retry": JOB_TIMEOUT_SECONDS + 60,
            "recycle": 50,
        },
    },
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- Accounts -------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts-login"
LOGIN_REDIRECT_URL = "accounts-usage"
LOGOUT_REDIRECT_URL = "home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# "<count>/<seconds>" per client address for sign-up, log-in and password-reset submissions.
RATELIMIT_ENABLED = env.bool("RATELIMIT_ENABLED", True)
RATELIMIT_AUTH = env.str("RATELIMIT_AUTH", "10/300")
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", 0, min_value=0, max_value=5)

# --- E-mail ---------------------------------------------------------------------------------
EMAIL_HOST = env.str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env.int("EMAIL_PORT", 587, min_value=1, max_value=65535)
    EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", True)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "SafeFace <no-reply@safeface.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Billing --------------------------------------------------------------------------------
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env.url("STRIPE_API_BASE", schemes=("https", "http"), default="https://api.stripe.com")

# --- Internationalisation -------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and private media ---------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env.str("SAFEFACE_MEDIA_ROOT", str(VAR_DIR / "media")))
# No MEDIA_URL route exists: every user file is streamed by a view that checks ownership.
MEDIA_URL = "/private-media-is-never-served-directly/"

# Object storage: with SAFEFACE_S3_BUCKET set, user files live in that private S3 bucket (AWS,
# MinIO, Ceph, R2 ...) under the same users/<id>/ keys as on disk; web and workers both read
# and write through it. Without it, the local disk under MEDIA_ROOT (the embedded default).
S3_BUCKET = env.str("SAFEFACE_S3_BUCKET", "")
S3_ENDPOINT_URL = env.url("SAFEFACE_S3_ENDPOINT_URL", schemes=("http", "https"), default="")
# Where browsers reach the same server, for PRIVATE_MEDIA_SERVER=s3 redirects (the signature
# covers the host, so an internal endpoint such as http://minio:9000 needs its public name).
S3_PUBLIC_ENDPOINT_URL = env.url("SAFEFACE_S3_PUBLIC_ENDPOINT_URL", schemes=("http", "https"), default="")
S3_REGION = env.str("SAFEFACE_S3_REGION", "")
S3_ACCESS_KEY_ID = env.str("SAFEFACE_S3_ACCESS_KEY_ID", "")
S3_SECRET_ACCESS_KEY = env.str("SAFEFACE_S3_SECRET_ACCESS_KEY", "")
S3_ENCRYPT = env.bool("SAFEFACE_S3_ENCRYPT", False)
# How long a presigned download link lives (PRIVATE_MEDIA_SERVER=s3): long enough to follow the
# redirect, too short to be worth sharing.
S3_PRESIGNED_SECONDS = 60

_s3_only = {
    "SAFEFACE_S3_ENDPOINT_URL": S3_ENDPOINT_URL, "SAFEFACE_S3_PUBLIC_ENDPOINT_URL": S3_PUBLIC_ENDPOINT_URL,
    "SAFEFACE_S3_REGION": S3_REGION, "SAFEFACE_S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
    "SAFEFACE_S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
}
if S3_BUCKET:
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", S3_BUCKET) or ".." in S3_BUCKET:
        raise ImproperlyConfigured(
            f"SAFEFACE_S3_BUCKET={S3_BUCKET!r} is not a valid bucket name: 3 to 63 lower-case "
            "letters, digits, dots and hyphens, starting and ending with a letter or digit."
        )
    if bool(S3_ACCESS_KEY_ID) != bool(S3_SECRET_ACCESS_KEY):
        raise ImproperlyConfigured(
            "SAFEFACE_S3_ACCESS_KEY_ID and SAFEFACE_S3_SECRET_ACCESS_KEY must be set together."
        )
    if S3_ENDPOINT_URL and not S3_ACCESS_KEY_ID:
        raise ImproperlyConfigured(
            "SAFEFACE_S3_ENDPOINT_URL names an S3-compatible server: set SAFEFACE_S3_ACCESS_KEY_ID and "
            "SAFEFACE_S3_SECRET_ACCESS_KEY to its credentials."
        )
    if not S3_ENDPOINT_URL and not S3_REGION:
        raise ImproperlyConfigured(
            "SAFEFACE_S3_REGION must be set for an AWS bucket (e.g. eu-central-1); for MinIO and "
            "other S3-compatible servers set SAFEFACE_S3_ENDPOINT_URL instead."
        )
    if S3_PUBLIC_ENDPOINT_URL and not S3_ENDPOINT_URL:
        raise ImproperlyConfigured("SAFEFACE_S3_PUBLIC_ENDPOINT_URL needs SAFEFACE_S3_ENDPOINT_URL (the internal one).")
    _media_storage = {
        "BACKEND": "safeface.object_storage.PrivateS3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "public_endpoint_url": S3_PUBLIC_ENDPOINT_URL or None,
            "region_name": S3_REGION or "us-east-1",
            # Empty: boto3's own chain (AWS_* variables, instance or task role) on AWS.
            "access_key": S3_ACCESS_KEY_ID or None,
            "secret_key": S3_SECRET_ACCESS_KEY or None,
            # Objects get no ACL of their own: they stay as private as the bucket.
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": S3_PRESIGNED_SECONDS,
            "file_overwrite": False,
            "signature_version": "s3v4",
            # S3-compatible servers are reached by path (http://minio:9000/bucket/key): no
            # wildcard DNS needed; AWS picks virtual hosts itself.
            "addressing_style": "path" if S3_ENDPOINT_URL else None,
            "object_parameters": {"ServerSideEncryption": "AES256"} if S3_ENCRYPT else {},
            # Files opened for reading spill to a temp file past 8 MiB instead of filling memory.
            "max_memory_size": 8 * 1024 * 1024,
        },
    }
else:
    _given = [name for name, value in _s3_only.items() if value]
    if _given or S3_ENCRYPT:
        raise ImproperlyConfigured(
            f"{', '.join(_given) or 'SAFEFACE_S3_ENCRYPT'} is set but SAFEFACE_S3_BUCKET is not: set the bucket "
            "to keep media on object storage, or unset the S3 variables to use the local disk."
        )
    _media_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    }
STORAGES = {
    "default": _media_storage,
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if env.bool("STATIC_MANIFEST", not DEBUG)
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        ),
    },
}
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# How private files leave the server, always after the view's ownership check: "django" streams
# them (from disk or the bucket, with byte ranges); "nginx" answers X-Accel-Redirect (to
# PRIVATE_MEDIA_INTERNAL_URL, an internal location); "apache" answers X-Sendfile; "s3" redirects
# to a presigned bucket URL that lives S3_PRESIGNED_SECONDS.
PRIVATE_MEDIA_SERVER = env.choice("PRIVATE_MEDIA_SERVER", ("django", "nginx", "apache", "s3"), "django")
PRIVATE_MEDIA_INTERNAL_URL = env.str("PRIVATE_MEDIA_INTERNAL_URL", "/_private/")
if PRIVATE_MEDIA_SERVER == "s3" and not S3_BUCKET:
    raise ImproperlyConfigured("PRIVATE_MEDIA_SERVER=s3 needs media on object storage: set SAFEFACE_S3_BUCKET.")
if S3_BUCKET and PRIVATE_MEDIA_SERVER in ("nginx", "apache"):
    raise ImproperlyConfigured(
        f"PRIVATE_MEDIA_SERVER={PRIVATE_MEDIA_SERVER} sends files from the local disk, but media is in the "
        "bucket SAFEFACE_S3_BUCKET: use django (streamed through the site) or s3 (presigned redirects)."
    )

# --- Security -------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
_secure_default = PRODUCTION
SESSION_COOKIE_SECURE = env.bool("SECURE_COOKIES", _secure_default)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", _secure_default)
# Probes and Prometheus reach a process directly over plain HTTP (no TLS-terminating proxy).
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, min_value=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", PRODUCTION)
if env.bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
WHITENOISE_USE_FINDERS = DEBUG

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
# json: one JSON object per line (time, level, logger, message, request_id, user_id, job_id,
# job_kind, exception) for log collectors; plain: readable lines for a terminal.
LOG_FORMAT = env.choice("LOG_FORMAT", ("json", "plain"), "json" if PRODUCTION else "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "safeface.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(context)s]: %(message)s"},
        "json": {"()": "safeface.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Health, readiness and metrics ----------------------------------------------------------
# /metrics (and the details of /readyz): with a token, only "Authorization: Bearer <token>";
# without one, only clients on loopback or private networks.
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
# Connect and read timeout of the Redis broker check (and of the queue-depth metric).
HEALTH_TIMEOUT_SECONDS = env.float("HEALTH_TIMEOUT_SECONDS", 3.0, min_value=0.1, max_value=60.0)
# Model groups a worker needs (`manage.py healthcheck --worker`): files present with their size.
HEALTH_MODEL_GROUPS = env.list("HEALTH_MODEL_GROUPS", _engine_models.EMBEDDED_GROUPS)
if _unknown_groups := sorted(set(HEALTH_MODEL_GROUPS) - set(_engine_models.GROUPS)):
    raise ImproperlyConfigured(
        f"HEALTH_MODEL_GROUPS names unknown model group(s) {', '.join(_unknown_groups)}; "
        f"known: {', '.join(_engine_models.GROUPS)}."
    )
# /readyz also checks the model files: on by default in development, where one machine runs
# the site and the workers; off in production, where web hosts carry no models.
READYZ_CHECK_MODELS = env.bool("READYZ_CHECK_MODELS", not PRODUCTION)
