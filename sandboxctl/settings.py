"""Django settings: everything comes from the environment, with defaults that are safe to run as they are."""

import hashlib
import socket
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

from executor import config as executor_config
from executor import egress as executor_egress
from executor.deadlines import visibility_timeout
from sandboxctl.env import (
    env_bool,
    env_choice,
    env_float,
    env_host_map,
    env_int,
    env_json_object,
    env_list,
    env_networks,
    env_rate,
    env_str,
)

# The executor's defaults have one home (executor/config.py); the settings below override them from the environment.
_EXECUTOR = executor_config.SandboxConfig()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("SANDBOXCTL_DATA_DIR", str(BASE_DIR / "data")))

DEBUG = env_bool("DEBUG", False)
# Unset, a stable per-installation key kept in the data folder, written once by `manage.py bootstrap`
# (settings never write files). Still empty, Django refuses to start anything that needs it.
SECRET_KEY_FILE = DATA_DIR / "secret_key"
SECRET_KEY = env_str("SECRET_KEY", "") or env_str("SANDBOXCTL_SECRET_KEY", "") or (
    SECRET_KEY_FILE.read_text().strip() if SECRET_KEY_FILE.is_file() else ""
)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "sandboxctl.console.apps.ConsoleConfig",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "providers.apps.ProvidersConfig",
    "sandboxctl.executions.apps.ExecutionsConfig",
    "sandboxctl.egress.apps.EgressConfig",
    "sandboxctl.worker.apps.WorkerConfig",
]

MIDDLEWARE = [
    "sandboxctl.api.intake.RequestSizeLimitMiddleware",
    "sandboxctl.api.ragflow.RagflowPortMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "sandboxctl.api.static_files.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sandboxctl.urls"
WSGI_APPLICATION = "sandboxctl.wsgi.application"
# The project's templates (admin overrides, console pages): templates/ beside the packages in a source tree (a
# checkout, an editable install, the image's /app); an installed wheel carries that folder as
# sandboxctl/templates (setup.py). Found before any app's, so the admin overrides win whatever the app order.
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates", Path(__file__).resolve().parent / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# SQLite in the data dir when DATABASE_URL is unset (the embedded default); postgres:// uses psycopg 3.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", "") or f"sqlite:///{DATA_DIR / 'sandboxctl.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
# The web process under ASGI (sandboxctl/asgi.py) shares a small pool of PostgreSQL connections between its
# threads instead of opening one per request (Django's persistent connections do not work under ASGI).
if env_bool("DATABASE_POOL", False) and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2, "max_size": env_int("DATABASE_POOL_MAX", 12), "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"  # created by `manage.py bootstrap`
# Static files (admin, the settings page, API docs) are served by the app itself, straight from the packages.
WHITENOISE_USE_FINDERS = True

# Artifact files (executions/artifact_store.py): the file system under the data folder by default; any Django storage
# backend otherwise, e.g. S3 through django-storages (`pip install '.[s3]'`):
# SANDBOX_STORAGE_BACKEND=storages.backends.s3.S3Storage SANDBOX_STORAGE_OPTIONS='{"bucket_name": "…"}'.
SANDBOX_STORAGE_BACKEND = env_str("SANDBOX_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
SANDBOX_STORAGE_OPTIONS = env_json_object("SANDBOX_STORAGE_OPTIONS", {"location": str(DATA_DIR / "files")})
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "executions": {"BACKEND": SANDBOX_STORAGE_BACKEND, "OPTIONS": SANDBOX_STORAGE_OPTIONS},
}
# The single-execution answer inlines artifacts up to this size (all are downloadable by URL).
SANDBOX_ARTIFACT_INLINE_MAX_BYTES = env_int("SANDBOX_ARTIFACT_INLINE_MAX_BYTES", 256 * 1024)
# Per account: artifact bytes kept before submits are refused (429); executions older than this are deleted.
SANDBOX_TENANT_STORAGE_QUOTA = env_int("SANDBOX_TENANT_STORAGE_QUOTA", 1024 * 1024 * 1024)
SANDBOX_RETENTION_DAYS = env_float("SANDBOX_RETENTION_DAYS", 30.0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sandboxctl.api.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "sandboxctl.api.errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": ["sandboxctl.api.intake.StrictJSONParser"],
    "DEFAULT_THROTTLE_CLASSES": ["sandboxctl.api.intake.TenantRateThrottle"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "sandboxctl API",
    "DESCRIPTION": "Run untrusted Python and Node.js code in gVisor sandboxes.",
    "VERSION": "1",
    # Serve Swagger UI's assets from the package: the docs page works on a machine without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Runs and sessions both have a `status`: name their enums apart.
    "ENUM_NAME_OVERRIDES": {"SessionStatusEnum": "sandboxctl.executions.models.SessionStatus",
                            "ExecutionStatusEnum": ["queued", "running", "succeeded", "failed", "timeout",
                                                    "memory_limit", "output_limit", "cancelled", "sandbox_error"]},
    # The schema maps the whole API surface: a token (or a staff session) unless the docs are made public.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny" if env_bool("SANDBOXCTL_PUBLIC_DOCS")
                          else "rest_framework.permissions.IsAuthenticated"],
}

# Celery: JSON only, at-least-once delivery with an at-most-once guard in the task (atomic status change).
# Unset, the broker is the private Redis that `make run` starts on a unix socket in the data folder.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "") or f"socket://{DATA_DIR / 'broker' / 'redis.sock'}"
if CELERY_BROKER_URL.split("://", 1)[0] in ("redis", "rediss"):
    # kombu's Redis transport, hardened: a message it cannot read is dead-lettered instead of killing the worker.
    CELERY_BROKER_TRANSPORT = "sandboxctl.worker.broker:Transport"
elif CELERY_BROKER_URL.startswith("socket://"):
    CELERY_BROKER_TRANSPORT = "sandboxctl.worker.broker:SocketTransport"
CELERY_WORKER_CONSUMER = "sandboxctl.worker.broker:Consumer"
# The cache (request throttling, provider health answers) is shared by every web process: the broker's Redis.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "socket://")):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CELERY_BROKER_URL.replace("socket://", "unix://", 1),
            "KEY_PREFIX": "sandboxctl.cache",
        }
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A broker outage is ridden through: the worker reconnects with backoff for as long as it takes, never exits
# (Celery's default gives up after 100 attempts), and keeps serving the runs it already holds.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None

# Limits of one run. Callers may ask for less, never for more.
SANDBOX_TIMEOUT_DEFAULT = env_float("SANDBOX_TIMEOUT_DEFAULT", 10.0)
SANDBOX_TIMEOUT_MAX = env_float("SANDBOX_TIMEOUT_MAX", 60.0)
SANDBOX_MEMORY_DEFAULT_MB = env_int("SANDBOX_MEMORY_DEFAULT_MB", 256)
SANDBOX_MEMORY_MIN_MB = 32
SANDBOX_MEMORY_MAX_MB = env_int("SANDBOX_MEMORY_MAX_MB", _EXECUTOR.container_memory_mb)
SANDBOX_OUTPUT_LIMIT = env_int("SANDBOX_OUTPUT_LIMIT", 1024 * 1024)
SANDBOX_CODE_MAX_BYTES = env_int("SANDBOX_CODE_MAX_BYTES", 1024 * 1024)
SANDBOX_ARGUMENTS_MAX_BYTES = env_int("SANDBOX_ARGUMENTS_MAX_BYTES", 1024 * 1024)
# A whole request body; larger ones are answered 413 before anything reads them.
SANDBOX_REQUEST_MAX_BYTES = env_int("SANDBOX_REQUEST_MAX_BYTES", 4 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = SANDBOX_REQUEST_MAX_BYTES
# Fair share and quotas per account (admission.py), and a request rate per account (DRF throttling).
SANDBOX_TENANT_MAX_CONCURRENT = env_int("SANDBOX_TENANT_MAX_CONCURRENT", 2)
SANDBOX_TENANT_MAX_QUEUED = env_int("SANDBOX_TENANT_MAX_QUEUED", 50)
SANDBOX_TENANT_RATE = env_rate("SANDBOX_TENANT_RATE", "1200/min")
SANDBOX_WAIT_CAP = env_float("SANDBOX_WAIT_CAP", 600.0)
# Sessions (sandboxctl/executions/sessions.py): live sandboxes per account, per worker host; how long one may
# sit idle and live at most (callers may ask for less; defaults when they do not ask); the size of one file and
# of all a session's files; a one-shot run's input files (sent as base64 inside the JSON body, so they must fit
# SANDBOX_REQUEST_MAX_BYTES with the code).
SANDBOX_TENANT_MAX_SESSIONS = env_int("SANDBOX_TENANT_MAX_SESSIONS", 4)
SANDBOX_WORKER_MAX_SESSIONS = env_int("SANDBOX_WORKER_MAX_SESSIONS", 16)
# File requests of one session queued or running at once (beyond: 409 session_busy, never a worker thread).
SANDBOX_SESSION_REQUESTS_MAX = env_int("SANDBOX_SESSION_REQUESTS_MAX", 4)
SANDBOX_SESSION_IDLE_TIMEOUT = env_float("SANDBOX_SESSION_IDLE_TIMEOUT", 600.0)
SANDBOX_SESSION_IDLE_TIMEOUT_MAX = env_float("SANDBOX_SESSION_IDLE_TIMEOUT_MAX", 3600.0)
SANDBOX_SESSION_MAX_LIFETIME = env_float("SANDBOX_SESSION_MAX_LIFETIME", 3600.0)
SANDBOX_SESSION_MAX_LIFETIME_MAX = env_float("SANDBOX_SESSION_MAX_LIFETIME_MAX", 24 * 3600.0)
SANDBOX_SESSION_FILE_MAX_BYTES = env_int("SANDBOX_SESSION_FILE_MAX_BYTES", 32 * 1024 * 1024)
SANDBOX_SESSION_FILES_MAX_BYTES = env_int("SANDBOX_SESSION_FILES_MAX_BYTES", 96 * 1024 * 1024)
SANDBOX_INPUT_FILES_MAX_BYTES = env_int("SANDBOX_INPUT_FILES_MAX_BYTES", 2 * 1024 * 1024)
SANDBOX_INPUT_FILES_MAX_COUNT = env_int("SANDBOX_INPUT_FILES_MAX_COUNT", 100)
# RAGFlow's `/run` waits for the run's end as long as RAGFlow's own client does (its 600 s), holding no thread.
SANDBOX_RAGFLOW_WAIT = env_float("SANDBOX_RAGFLOW_WAIT", 600.0)
SANDBOX_QUEUE_TTL = env_float("SANDBOX_QUEUE_TTL", 600.0)
# The web tier (sandboxctl/asgi.py, sandboxctl/api/server.py), per web process: threads for the short synchronous
# parts of API requests; a request's headers and body must arrive within these times; open connections at
# most, in all and from one address (on both ports). Waiting requests hold a connection each, not a thread.
SANDBOX_WEB_THREADS = env_int("SANDBOX_WEB_THREADS", 8)
SANDBOX_WEB_HEADER_TIMEOUT = env_float("SANDBOX_WEB_HEADER_TIMEOUT", 10.0)
SANDBOX_WEB_BODY_TIMEOUT = env_float("SANDBOX_WEB_BODY_TIMEOUT", 30.0)
SANDBOX_WEB_HEADER_MAX_BYTES = env_int("SANDBOX_WEB_HEADER_MAX_BYTES", 64 * 1024)
SANDBOX_WEB_MAX_CONNECTIONS = env_int("SANDBOX_WEB_MAX_CONNECTIONS", 4096)
SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS = env_int("SANDBOX_WEB_MAX_CONNECTIONS_PER_ADDRESS", 512)
# Callbacks go only to public addresses, except to these networks (e.g. "10.0.0.0/8,fd00::/8").
SANDBOX_CALLBACK_ALLOWED_NETWORKS = env_networks("SANDBOX_CALLBACK_ALLOWED_NETWORKS", "")


def _egress_presets() -> dict[str, list[str]]:
    """The named sets of allowlist entries: the built-in `pypi` and `npm`, and the operator's (which may
    redefine them), e.g. SANDBOX_EGRESS_PRESETS='{"github": ["github.com", "*.githubusercontent.com"]}'."""
    presets = {name: list(entries) for name, entries in executor_egress.BUILTIN_PRESETS.items()}
    for name, entries in env_json_object("SANDBOX_EGRESS_PRESETS", {}).items():
        if not executor_egress.PRESET_NAME.match(name) or not isinstance(entries, list):
            raise ImproperlyConfigured(f"SANDBOX_EGRESS_PRESETS: {name!r} must be a lower-case name (no dots) "
                                       "with a list of entries")
        try:
            presets[name] = executor_egress.expand(entries, {})
        except executor_egress.EntryError as exc:
            raise ImproperlyConfigured(f"SANDBOX_EGRESS_PRESETS: {name}: {exc}") from None
    return presets


# Egress (sandboxctl/egress/, executor/egress_proxy.py): what runs may reach is each account's ceiling; these
# are the deployment's: presets, the non-global networks the proxy may reach anyway (for tests and internal
# mirrors; empty, none), names the proxy resolves without DNS, pip's and npm's mirror and an extra CA bundle
# for runs with egress, and the proxy's caps per run and per connection.
SANDBOX_EGRESS_PRESETS = _egress_presets()
SANDBOX_EGRESS_ALLOWED_NETWORKS = env_networks("SANDBOX_EGRESS_ALLOWED_NETWORKS", "")
SANDBOX_EGRESS_RESOLVE = env_host_map("SANDBOX_EGRESS_RESOLVE")
SANDBOX_EGRESS_PIP_INDEX_URL = env_str("SANDBOX_EGRESS_PIP_INDEX_URL", "")
SANDBOX_EGRESS_NPM_REGISTRY = env_str("SANDBOX_EGRESS_NPM_REGISTRY", "")
SANDBOX_EGRESS_CA_BUNDLE = env_str("SANDBOX_EGRESS_CA_BUNDLE", "")
SANDBOX_EGRESS_MAX_CONNECTIONS = env_int("SANDBOX_EGRESS_MAX_CONNECTIONS", 256)
SANDBOX_EGRESS_MAX_BYTES = env_int("SANDBOX_EGRESS_MAX_BYTES", 256 * 1024 * 1024)
SANDBOX_EGRESS_IDLE_TIMEOUT = env_float("SANDBOX_EGRESS_IDLE_TIMEOUT", 60.0)
SANDBOX_EGRESS_CONNECTION_MAX_TIME = env_float("SANDBOX_EGRESS_CONNECTION_MAX_TIME", 600.0)

# The self-managed pool (one per worker host). The runsc backend drives runsc directly on OCI bundles (half
# the CPU per sandbox of a start through dockerd); the docker backend goes through dockerd's runsc runtime.
SANDBOX_BACKEND = env_choice("SANDBOX_BACKEND", _EXECUTOR.backend, executor_config.BACKENDS)
SANDBOX_RUNSC_PATH = env_str("SANDBOX_RUNSC_PATH", _EXECUTOR.runsc_path)
# ptrace measured cheaper than systrap per sandbox on the 2-core VMs this was built on; see README.
SANDBOX_RUNSC_PLATFORM = env_choice("SANDBOX_RUNSC_PLATFORM", _EXECUTOR.runsc_platform, ("ptrace", "systrap", "kvm"))
SANDBOX_RUNSC_STATE_DIR = Path(env_str("SANDBOX_RUNSC_STATE_DIR", str(_EXECUTOR.runsc_root.parent)))
SANDBOX_ROOTFS_DIR = Path(env_str("SANDBOX_ROOTFS_DIR", str(_EXECUTOR.rootfs_dir)))
SANDBOX_SNAPSHOT_DIR = Path(env_str("SANDBOX_SNAPSHOT_DIR", str(_EXECUTOR.snapshot_dir)))
SANDBOX_SNAPSHOT_VARIANTS = env_int("SANDBOX_SNAPSHOT_VARIANTS", _EXECUTOR.snapshot_variants)
SANDBOX_RUNTIME = env_str("SANDBOX_RUNTIME", _EXECUTOR.runtime)
SANDBOX_ALLOW_INSECURE_RUNTIME = env_bool("SANDBOX_ALLOW_INSECURE_RUNTIME", _EXECUTOR.allow_insecure_runtime)
# Warm sandboxes kept at least, per kind; demand raises each up to SANDBOX_POOL_MAX.
SANDBOX_POOL_SIZE_PYTHON = env_int("SANDBOX_POOL_SIZE_PYTHON", 2)
SANDBOX_POOL_SIZE_NODEJS = env_int("SANDBOX_POOL_SIZE_NODEJS", 1)
SANDBOX_POOL_SIZE_PYTHON_PRELOADED = env_int("SANDBOX_POOL_SIZE_PYTHON_PRELOADED", 1)
SANDBOX_POOL_MAX = env_int("SANDBOX_POOL_MAX", 6)
# The `ragflow` account stands for every RAGFlow user: it may have as many runs in flight as the pool holds.
SANDBOX_RAGFLOW_MAX_CONCURRENT = env_int("SANDBOX_RAGFLOW_MAX_CONCURRENT", SANDBOX_POOL_MAX)
SANDBOX_POOL_ACQUIRE_TIMEOUT = env_float("SANDBOX_POOL_ACQUIRE_TIMEOUT", 10.0)
SANDBOX_POOL_CREATORS = env_int("SANDBOX_POOL_CREATORS", 2)
SANDBOX_POOL_MAX_CREATIONS_PER_SECOND = env_float("SANDBOX_POOL_MAX_CREATIONS_PER_SECOND", 8.0)
SANDBOX_POOL_SWEEP_INTERVAL = env_float("SANDBOX_POOL_SWEEP_INTERVAL", 15.0)
# Threads of a sandbox worker: runs one worker holds at once. The pool can supply up to SANDBOX_POOL_MAX warm
# sandboxes per language, so that many runs per language is what it is sized for; a thread waiting costs
# little, and a run held back by too few threads is the unfairness admission.py exists to prevent.
SANDBOX_WORKER_CONCURRENCY = env_int("SANDBOX_WORKER_CONCURRENCY", 2 * SANDBOX_POOL_MAX)
CELERY_WORKER_CONCURRENCY = SANDBOX_WORKER_CONCURRENCY  # `celery worker` without -c takes it from here
# Runs in flight across all workers; 0: SANDBOX_WORKER_CONCURRENCY per live sandbox worker.
SANDBOX_ADMISSION_CAPACITY = env_int("SANDBOX_ADMISSION_CAPACITY", 0)
SANDBOX_CPUS = env_float("SANDBOX_CPUS", _EXECUTOR.cpus)
# Modules imported in the snapshot Python runs importing them are restored from (runsc backend; empty: none).
SANDBOX_PYTHON_PRELOAD = env_str("SANDBOX_PYTHON_PRELOAD", "numpy,pandas,matplotlib.pyplot")
# Where a worker keeps run endings it could not write while the database was away (one folder per worker host).
SANDBOX_SPOOL_DIR = Path(env_str("SANDBOX_SPOOL_DIR", str(DATA_DIR / "spool")))
SANDBOX_IMAGE_CACHE_DIR = Path(env_str("SANDBOX_IMAGE_CACHE_DIR", str(_EXECUTOR.image_cache_dir)))
SANDBOX_WORKER_HOST = env_str("SANDBOX_WORKER_HOST", "") or socket.gethostname()
SANDBOX_WORKER_STALE_AFTER = env_float("SANDBOX_WORKER_STALE_AFTER", 30.0)
# A queued run whose queue is empty this long has lost its message (a broker restart): it is sent again.
SANDBOX_QUEUE_REDISPATCH_AFTER = env_float("SANDBOX_QUEUE_REDISPATCH_AFTER", 60.0)
# A running run past its own timeout plus this is ended, whatever its worker's heartbeat says.
SANDBOX_OVERDUE_GRACE = env_float("SANDBOX_OVERDUE_GRACE", 60.0)
# The deployment whose sandboxes a worker may reap: workers sharing a database share a site.
_database = DATABASES["default"]
SANDBOX_SITE = env_str("SANDBOX_SITE", "") or hashlib.sha256(
    f"{_database['ENGINE']}|{_database.get('HOST')}|{_database.get('PORT')}|{_database['NAME']}".encode()
).hexdigest()[:12]

# A message not acknowledged within this time is redelivered: keep it well above the longest run.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": visibility_timeout(
    SANDBOX_TIMEOUT_MAX, SANDBOX_POOL_ACQUIRE_TIMEOUT, SANDBOX_OVERDUE_GRACE)}

# Fernet keys for provider secrets at rest: the first encrypts, all decrypt (rotation). Unset: derived from
# SECRET_KEY, which is fine for a single machine; set your own in production.
SANDBOXCTL_ENCRYPTION_KEYS = env_list("SANDBOXCTL_ENCRYPTION_KEYS", "")

SANDBOXCTL_ADMIN_PASSWORD = env_str("SANDBOXCTL_ADMIN_PASSWORD", "")
SANDBOXCTL_BOOTSTRAP_TOKEN = env_str("SANDBOXCTL_BOOTSTRAP_TOKEN", "")
# RAGFlow's executor-manager protocol is also served on this port (`make run` binds it); from these networks
# it needs no token there (sandboxctl/api/ragflow.py).
RAGFLOW_PORT = env_int("RAGFLOW_PORT", 9385)
SANDBOX_RAGFLOW_TRUSTED_NETWORKS = env_networks("SANDBOX_RAGFLOW_TRUSTED_NETWORKS", "127.0.0.1/32,::1/128")
# When set, /metrics answers only to `Authorization: Bearer <this>`.
SANDBOXCTL_METRICS_TOKEN = env_str("SANDBOXCTL_METRICS_TOKEN", "")
# Admin sign-in: failed attempts allowed per user name and per source address within the window.
SANDBOXCTL_LOGIN_FAILURES_PER_USER = env_int("SANDBOXCTL_LOGIN_FAILURES_PER_USER", 5)
SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE = env_int("SANDBOXCTL_LOGIN_FAILURES_PER_SOURCE", 20)
SANDBOXCTL_LOGIN_FAILURES_PER_USER_ANYWHERE = env_int("SANDBOXCTL_LOGIN_FAILURES_PER_USER_ANYWHERE", 100)
SANDBOXCTL_LOGIN_WINDOW = env_int("SANDBOXCTL_LOGIN_WINDOW", 300)

# Each queue has its own direct exchange and routing key, so a task reaches exactly one queue.
_queues = [*executor_config.SANDBOX_QUEUES, *executor_config.IO_QUEUES]
CELERY_TASK_QUEUES = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in _queues]
CELERY_TASK_DEFAULT_QUEUE = executor_config.CONTROL_QUEUE
CELERY_BEAT_SCHEDULE = {
    "reconcile-executions": {
        "task": "sandboxctl.worker.tasks.reconcile",
        "schedule": env_float("SANDBOX_RECONCILE_INTERVAL", 15.0),
        "options": {"queue": executor_config.CONTROL_QUEUE},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # The SaaS SDKs log every HTTP request at INFO; their failures reach our own logs anyway.
    "loggers": {"httpx": {"level": "WARNING"}, "agentrun-logger": {"level": "WARNING"}},
}
