"""SafeFace settings: one module, every value read from the environment through typed helpers.

With nothing set, SafeFace runs the embedded default: SQLite, django-q2's ORM broker, private
media on the local disk under var/, console e-mail and a secret key kept in var/secret_key.
Setting SAFEFACE_ENV=production switches to production rules: SECRET_KEY and ALLOWED_HOSTS are
required, HTTPS is enforced and cookies are secure. See README.md for every variable.
"""
from __future__ import annotations

import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

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
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "base_url": MEDIA_URL},
    },
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
# How private files leave the server: "django" streams them; "nginx" answers X-Accel-Redirect
# (to PRIVATE_MEDIA_INTERNAL_URL, an internal location); "apache" answers X-Sendfile.
PRIVATE_MEDIA_SERVER = env.choice("PRIVATE_MEDIA_SERVER", ("django", "nginx", "apache"), "django")
PRIVATE_MEDIA_INTERNAL_URL = env.str("PRIVATE_MEDIA_INTERNAL_URL", "/_private/")

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
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0, min_value=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", PRODUCTION)
if env.bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
WHITENOISE_USE_FINDERS = DEBUG

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env.choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
