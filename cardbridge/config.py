"""Settings from the environment: one place that knows every knob and fails fast in production."""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import date
from pathlib import Path

CARD_FORMS = ("payment_element", "card_element", "checkout")

DEMO_SECRET_KEY = "sk_test_cardbridge_demo"  # localstripe accepts any sk_test_… key
DEMO_PUBLISHABLE_KEY = "pk_test_cardbridge_demo"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc


def _date(env: dict, name: str) -> date | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a date like 2026-12-31, got {raw!r}") from exc


def _dev_secret(instance_path: Path) -> str:
    """A random key generated once into instance/ so dev sessions survive restarts."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def _networks(env: dict, name: str, default: str) -> list[str]:
    """CIDRs (or single addresses), checked here so a typo stops the start, not a scrape."""
    raw = env.get(name) or default
    found = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ConfigError(f"{name}: {item!r} is not an address or a CIDR") from exc
    return found


def _key_list(env: dict, name: str) -> list[str]:
    return [k.strip() for k in env.get(name, "").split(",") if k.strip()]


def _stripe_keys(env: dict, production: bool) -> tuple[str, str]:
    """The secret and publishable keys: required in production, the demo's elsewhere."""
    secret = env.get("STRIPE_SECRET_KEY") or ""
    publishable = env.get("STRIPE_PUBLISHABLE_KEY") or ""
    if not secret or not publishable:
        if production:
            raise ConfigError("STRIPE_SECRET_KEY and STRIPE_PUBLISHABLE_KEY are required")
        secret, publishable = secret or DEMO_SECRET_KEY, publishable or DEMO_PUBLISHABLE_KEY
    if not secret.startswith(("sk_", "rk_")):
        raise ConfigError("STRIPE_SECRET_KEY does not look like a Stripe secret key")
    return secret, publishable


def load_config(instance_path: str | os.PathLike, env: dict | None = None) -> dict:
    """Build the Flask config mapping from environment variables (SPEC "Configuration")."""
    env = dict(os.environ if env is None else env)
    instance = Path(instance_path)
    demo = _bool(env.get("CARDBRIDGE_DEMO"))
    development = env.get("CARDBRIDGE_ENV", "").lower() == "development"
    debug = _bool(env.get("FLASK_DEBUG")) or demo or development
    production = not debug and not _bool(env.get("CARDBRIDGE_TESTING"))

    secret_key = env.get("SECRET_KEY")
    if not secret_key:
        if production:
            raise ConfigError("SECRET_KEY is required outside debug and demo mode")
        secret_key = _dev_secret(instance)
    link_keys = _key_list(env, "LINK_SECRET_KEYS") or [secret_key]
    # Staff TOTP secrets are encrypted at rest with these (newest last); unset, a key derived
    # from SECRET_KEY (derive()). Their own keys keep them apart from SECRET_KEY.
    totp_keys = _key_list(env, "TOTP_ENCRYPTION_KEYS")

    card_form = env.get("CARD_FORM", "payment_element")
    if card_form not in CARD_FORMS:
        raise ConfigError(f"CARD_FORM must be one of {', '.join(CARD_FORMS)}, got {card_form!r}")
    stripe_secret, stripe_publishable = _stripe_keys(env, production)

    retention_days = _int(env, "RETENTION_DAYS", 90)
    if retention_days < 0:
        raise ConfigError("RETENTION_DAYS must be 0 or more")

    max_age_days = _int(env, "LINK_MAX_AGE_DAYS", 14)
    if max_age_days < 1:
        raise ConfigError("LINK_MAX_AGE_DAYS must be at least 1")

    public_base = env.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000").rstrip("/")
    if not public_base.startswith(("http://", "https://")):
        raise ConfigError(
            f"PUBLIC_BASE_URL must start with http:// or https://, got {public_base!r}")

    settings = {
        "SECRET_KEY": secret_key,
        "LINK_SECRET_KEYS": link_keys,
        "SQLALCHEMY_DATABASE_URI": env.get("DATABASE_URL")
        or f"sqlite:///{(instance / 'cardbridge.db').as_posix()}",
        "REDIS_URL": env.get("REDIS_URL") or None,
        "PUBLIC_BASE_URL": public_base,
        "STRIPE_SECRET_KEY": stripe_secret,
        "STRIPE_PUBLISHABLE_KEY": stripe_publishable,
        "STRIPE_WEBHOOK_SECRET": env.get("STRIPE_WEBHOOK_SECRET") or None,
        # Shared secret an ESP sends to POST /webhooks/email/bounce (503 there until set).
        "BOUNCE_WEBHOOK_SECRET": env.get("BOUNCE_WEBHOOK_SECRET") or None,
        "STRIPE_API_BASE": env.get("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/"),
        "STRIPE_JS_URL": env.get("STRIPE_JS_URL", "https://js.stripe.com/v3/"),
        "STRIPE_TIMEOUT_SECONDS": _int(env, "STRIPE_TIMEOUT_SECONDS", 20),
        "STRIPE_MAX_RETRIES": _int(env, "STRIPE_MAX_RETRIES", 2),
        "CHECKOUT_CURRENCY": env.get("CHECKOUT_CURRENCY", "usd").lower(),
        "CARD_FORM": card_form,
        "LINK_MAX_AGE_DAYS": max_age_days,
        "CUTOVER_DATE": _date(env, "CUTOVER_DATE"),
        # `flask purge` may run this many days after CUTOVER_DATE, not before.
        "RETENTION_DAYS": retention_days,
        "MAIL_SERVER": env.get("MAIL_SERVER") or None,
        "MAIL_PORT": _int(env, "MAIL_PORT", 25),
        "MAIL_USE_TLS": _bool(env.get("MAIL_USE_TLS")),
        "MAIL_USE_SSL": _bool(env.get("MAIL_USE_SSL")),
        "MAIL_USERNAME": env.get("MAIL_USERNAME") or None,
        "MAIL_PASSWORD": env.get("MAIL_PASSWORD") or None,
        "MAIL_DEFAULT_SENDER": env.get("MAIL_DEFAULT_SENDER", "Example Co <billing@example.com>"),
        "COMPANY_NAME": env.get("COMPANY_NAME", "Example Co"),
        "SUPPORT_EMAIL": env.get("SUPPORT_EMAIL", "support@example.com"),
        "BRAND_COLOR": env.get("BRAND_COLOR", "#3b4cca"),
        "LOGO_URL": env.get("LOGO_URL") or None,
        "CAMPAIGN_RATE_PER_MINUTE": _int(env, "CAMPAIGN_RATE_PER_MINUTE", 0),
        "REMINDER_DAYS": [int(d) for d in env.get("REMINDER_DAYS", "3,7,14").split(",") if d],
        "REMINDER_BEFORE_CUTOVER_DAYS": _int(env, "REMINDER_BEFORE_CUTOVER_DAYS", 2),
        "STAFF_REQUIRE_2FA": _bool(env.get("STAFF_REQUIRE_2FA"), default=production),
        "FRESH_LINK_RATE_LIMIT": env.get("FRESH_LINK_RATE_LIMIT", "5 per hour"),
        "RATELIMIT_STORAGE_URI": env.get("REDIS_URL") or "memory://",
        # Redis down: every limit goes on being enforced, in each process's memory (Flask-
        # Limiter's own fallback), rather than failing the request or letting everything
        # through; back on Redis when it answers again (docs/deployment.md, "Redis cut").
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        "RATELIMIT_HEADERS_ENABLED": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "HSTS": not debug,
        # Hops of trusted reverse proxies (TLS terminators) in front of the app; 0 = none.
        "TRUSTED_PROXY_HOPS": _int(env, "TRUSTED_PROXY_HOPS", 0),
        # The largest body anywhere: the console's import uploads. Every other route has its
        # own, smaller bound (BODY_LIMITS, applied per blueprint by cardbridge/web/security.py).
        "MAX_CONTENT_LENGTH": 64 * 1024 * 1024,
        "TOTP_ENCRYPTION_KEYS": totp_keys,
        "LOG_FORMAT": "json" if env.get("LOG_FORMAT", "").lower() == "json" else "text",
        # GET /metrics (Prometheus text): off unless asked for; when on, answered only to the
        # networks in METRICS_ALLOW (CIDRs, comma-separated; loopback unless told), 404 to
        # everyone else (docs/deployment.md says why).
        "METRICS_ENABLED": _bool(env.get("METRICS_ENABLED")),
        "METRICS_ALLOW": _networks(env, "METRICS_ALLOW", "127.0.0.0/8,::1/128"),
        "BODY_LIMITS": {"customer": 16 * 1024, "api": 16 * 1024, "csp": 16 * 1024,
                        "webhooks": 1024 * 1024, "hooks_email": 1024 * 1024,
                        "health": 1024},
        # Subscriptions (SPEC "Subscriptions: begin charging on Stripe").
        "STRIPE_WRITE_RATE": _int(env, "STRIPE_WRITE_RATE",
                                  80 if stripe_secret.startswith(("sk_live_", "rk_live_")) else 20),
        "STRIPE_READ_RATE": _int(env, "STRIPE_READ_RATE",
                                 80 if stripe_secret.startswith(("sk_live_", "rk_live_")) else 20),
        "SUBSCRIPTION_START_BUFFER_HOURS": _int(env, "SUBSCRIPTION_START_BUFFER_HOURS", 48),
        "SUBSCRIPTION_GUARD_HOURS": _int(env, "SUBSCRIPTION_GUARD_HOURS", 12),
        # Legacy arrears of a past_due subscription: review (false), or a one-off item on the
        # first Stripe invoice (true). Never forgiven silently, never billed twice.
        "SUBSCRIPTION_BILL_ARREARS": _bool(env.get("SUBSCRIPTION_BILL_ARREARS")),
        "SUBSCRIPTION_APPLY_CONCURRENCY": _int(env, "SUBSCRIPTION_APPLY_CONCURRENCY", 16),
        "DEMO": demo,
        "DEBUG": debug,
    }
    # Tuning knobs whose defaults live next to the code that uses them; set only when given.
    for name in TUNING_INTS:
        if env.get(name):
            settings[name] = _int(env, name, 0)
    for name in TUNING_LIMITS:
        if env.get(name):
            settings[name] = env[name]
    return settings


# DATABASE_*: per process; gunicorn workers × (pool + overflow) plus the queue workers' must
# stay under PostgreSQL's max_connections (docs/deployment.md). Defaults in derive().
TUNING_INTS = (
    "DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW", "DATABASE_POOL_TIMEOUT_SECONDS",
    "DATABASE_CONNECT_TIMEOUT_SECONDS", "STAFF_IDLE_TIMEOUT_SECONDS",
    "STAFF_SESSION_LIFETIME_SECONDS", "MAIL_TIMEOUT_SECONDS",
    "MAIL_THROTTLE_HORIZON_SECONDS", "MAIL_COMMIT_EVERY",
    "MAIL_CLAIM_LEASE_SECONDS", "MAIL_BATCH_SIZE", "MAIL_RETRY_BASE_SECONDS",
    "MAIL_RETRY_MAX_SECONDS", "MAIL_MAX_ATTEMPTS", "MAIL_REAP_EVERY_SECONDS",
)
TUNING_LIMITS = (  # Flask-Limiter strings such as "10 per minute;100 per hour"
    "STAFF_LOGIN_LIMIT_PER_IP", "STAFF_LOGIN_LIMIT_PER_ACCOUNT",
    "STAFF_LOGIN_LIMIT_ACCOUNT_CEILING", "STAFF_LINK_LIMIT", "STAFF_CUSTOMER_LINK_LIMIT",
    "API_RATE_LIMIT", "API_AUTH_FAILURE_LIMIT", "STAFF_PASSWORD_CHECK_LIMIT",
)


def derive(config, explicit=frozenset()) -> None:
    """Settings that follow from others, applied after any overrides (tests, create_app(config)).

    Cookies are `Secure` with the `__Host-` prefix whenever links are served over HTTPS
    outside debug; plain-HTTP development keeps working.
    """
    if not config.get("TOTP_ENCRYPTION_KEYS"):
        config["TOTP_ENCRYPTION_KEYS"] = ["totp:" + str(config["SECRET_KEY"])]
    secure = not config.get("DEBUG") and config["PUBLIC_BASE_URL"].startswith("https://")
    if "SESSION_COOKIE_SECURE" not in explicit:
        config["SESSION_COOKIE_SECURE"] = secure
    if "SESSION_COOKIE_NAME" not in explicit:
        secure_name = config["SESSION_COOKIE_SECURE"]
        config["SESSION_COOKIE_NAME"] = "__Host-session" if secure_name else "session"
    if "SQLALCHEMY_ENGINE_OPTIONS" not in explicit:
        # A database server can drop idle connections, so check each one out with a ping;
        # a SQLite file cannot, and the ping would be one more statement on every request.
        sqlite = config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
        # hide_parameters: an error's message and log never carry the row's values (emails,
        # names, tokens).
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {"hide_parameters": True} if sqlite else {
            "pool_pre_ping": True, "hide_parameters": True,
            "pool_size": config.get("DATABASE_POOL_SIZE", 10),
            "max_overflow": config.get("DATABASE_MAX_OVERFLOW", 10),
            # A pool that stays empty, or a server that does not answer, fails the request
            # with a 503 in seconds instead of holding the customer for half a minute.
            "pool_timeout": config.get("DATABASE_POOL_TIMEOUT_SECONDS", 10),
            "connect_args": {"connect_timeout": config.get("DATABASE_CONNECT_TIMEOUT_SECONDS",
                                                           5)}}


def per_process_limits_problem(env: dict, workers: int) -> str | None:
    """Why this server must not start, or None: several worker processes each counting rate
    limits in their own memory would let every limit through once per process (two workers:
    ten sign-in tries where five are allowed). Debug and demo run one machine for one person."""
    debug = (_bool(env.get("FLASK_DEBUG")) or _bool(env.get("CARDBRIDGE_DEMO"))
             or env.get("CARDBRIDGE_ENV", "").lower() == "development")
    if workers <= 1 or env.get("REDIS_URL") or debug:
        return None
    return (f"{workers} worker processes with per-process rate limits: every limit would "
            f"allow {workers}x what it says. Set REDIS_URL (limits shared through Redis) or "
            "WEB_CONCURRENCY=1.")
