#!/usr/bin/env python3
"""gigaproxy: an OpenAI-compatible HTTP API in front of Sber's GigaChat, in one file.

Any OpenAI client (the ``openai`` SDK, Cline, Roo Code, Continue, Aider, Open WebUI,
LangChain) talks to gigaproxy as if it were OpenAI, and so do clients of three other
APIs it serves through the same core: OpenAI Responses (Codex CLI, the Agents SDK),
Anthropic Messages (Claude Code, the anthropic SDK) and Gemini (Gemini CLI,
google-genai).  gigaproxy fetches and caches GigaChat tokens, verifies TLS with the
bundled Russian Trusted Root CA, translates each request to GigaChat's wire format
and each answer (streamed or not) back.

Usage::

    export GIGACHAT_CREDENTIALS=<authorization key from the Sber cabinet>
    python gigaproxy.py                  # serves http://127.0.0.1:4000/v1
    python gigaproxy.py --help           # every option, its default and env variable
    python gigaproxy.py --check          # settings, DNS, proxy, TLS, token, models, one chat: then exit

Configuration (command-line flag > environment > env file > default):

    GIGACHAT_CREDENTIALS      OAuth authorization key (alias GIGACHAT_AUTH_KEY)
    GIGACHAT_SCOPE            GIGACHAT_API_PERS (default) | GIGACHAT_API_B2B | GIGACHAT_API_CORP
    GIGACHAT_USER, _PASSWORD  user/password authentication instead of a key
    GIGACHAT_ACCESS_TOKEN     a pre-issued access token
    GIGACHAT_BASE_URL         https://gigachat.devices.sberbank.ru/api/v1
    GIGACHAT_AUTH_URL         https://ngw.devices.sberbank.ru:9443/api/v2/oauth
    GIGACHAT_CA_BUNDLE_FILE   extra CA certificates (PEM) to trust
    GIGACHAT_VERIFY_SSL_CERTS true (default) | false
    GIGACHAT_CERT_FILE, GIGACHAT_KEY_FILE, GIGACHAT_KEY_FILE_PASSWORD   mTLS client certificate
    GIGACHAT_TIMEOUT          seconds GigaChat may stay silent before the request fails
    GIGACHAT_MODEL            model for client model names GigaChat does not have
    GIGAPROXY_HOST, GIGAPROXY_PORT, GIGAPROXY_LOG_LEVEL, GIGAPROXY_ENV_FILE   where and how to run
    GIGAPROXY_API_KEY         the key clients must send (none by default; needed off loopback)
    GIGAPROXY_*               timeouts, retries, limits: see ``--help``
    HTTPS_PROXY, NO_PROXY     corporate proxy (HTTP CONNECT), as curl reads them

Vendoring: importing this module has no side effects.  ``main(argv) -> int`` runs the
server; ``load_config()``, ``make_server()``, ``to_gigachat_request()``,
``to_openai_response()`` and ``StreamTranslator`` are the documented building blocks.

Not goals: a general LLM router, a web UI, storing conversations (beyond the bounded
store the Responses API's previous_response_id needs), or any package beyond the Python
standard library (3.8 and newer).

SPDX-License-Identifier: MIT
"""

from __future__ import annotations

# ==== Imports ====
# Standard library only, and nothing that runs code with side effects at import time.
# Modules that import much and are needed rarely are imported where they are used:
# email.utils (an HTTP-date Retry-After), hashlib (image uploads), hmac (the API key
# check), ipaddress (NO_PROXY, image URLs, a --host other than the usual loopback names),
# random (the jitter of a retry).  uuid is replaced by two small helpers under Constants.

import argparse
import base64
import binascii
import collections
import email.errors
import http.client
import http.server
import json
import logging
import os
import re
import select
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, NoReturn, Optional, Tuple

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Config",
    "ConfigError",
    "ProxyError",
    "load_config",
    "parse_env_file",
    "make_server",
    "serve",
    "main",
    "build_parser",
    "resolve_model",
    "to_gigachat_request",
    "translate_chat_request",
    "ChatPlan",
    "ToolNames",
    "normalize_schema",
    "to_openai_response",
    "StreamTranslator",
    "ChatStream",
    "TokenManager",
    "Metrics",
    "run_checks",
    "anthropic_to_chat",
    "chat_to_anthropic",
    "AnthropicStream",
    "responses_to_chat",
    "chat_to_responses",
    "ResponsesStream",
    "ResponseStore",
    "gemini_to_chat",
    "chat_to_gemini",
    "GeminiStream",
]

log = logging.getLogger("gigaproxy")

# ==== Constants ====
# Every default lives here under a DEFAULT_* name; the maps below are read-only tables
# that translation consults, next to the few small helpers every section uses (the wire
# JSON encoder, UUIDs).  Nothing in this section is computed from the environment.

DEFAULT_BASE_URL = "https://gigachat.devices.sberbank.ru/api/v1"
DEFAULT_AUTH_URL = "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
DEFAULT_SCOPE = "GIGACHAT_API_PERS"
KNOWN_SCOPES = ("GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP")
DEFAULT_MODEL = "GigaChat-2"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4000
DEFAULT_TIMEOUT = 180.0  # seconds GigaChat may stay silent (a long answer is silent until done)
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds to open a connection (TCP, proxy tunnel, TLS)
DEFAULT_TOTAL_TIMEOUT = 600.0  # seconds for a whole request, retries and streaming included
DEFAULT_MAX_RETRIES = 2  # extra attempts after 429/5xx/connection failures
DEFAULT_RETRY_BACKOFF = 0.5  # seconds: the first backoff; doubled each time, with full jitter
RETRY_AFTER_MAX_WAIT = 10.0  # a longer Retry-After is passed to the client instead of waited out
DEFAULT_MAX_CONCURRENCY = 128  # client connections served at once; past it: 503
DEFAULT_RESPONSE_STORE_ENTRIES = 1000  # responses kept for previous_response_id, GET and DELETE
DEFAULT_RESPONSE_STORE_MB = 256.0  # and at most this much of them (a conversation with images is large)
DEFAULT_RESPONSE_STORE_SECONDS = 24 * 3600.0  # how long one is kept after it was stored
DEFAULT_CLIENT_TIMEOUT = 60.0  # seconds a client has to send a whole request (head and body)
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds in-flight requests get to finish on SIGTERM / Ctrl-C
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_MAX_BODY_MB = 50.0  # room for several images as data: URLs
DEFAULT_ENV_FILE = ".env"
DEFAULT_EMBEDDINGS_MODEL = "Embeddings"
DEFAULT_STRUCTURED_OUTPUT = "function"  # json_schema answers via a forced function; or "native"
CLIENT_WRITE_TIMEOUT = 120.0  # seconds a client may take to accept what is written to it
DEFAULT_KEEPALIVE_TIMEOUT = 30.0  # seconds an idle keep-alive client connection is kept (at most)
BUNDLED_CA_FILENAME = "russian_trusted_root_ca.pem"

TOKEN_REFRESH_MARGIN = 60.0  # refresh this many seconds before the token expires
TOKEN_RETRY_SECONDS = 5.0  # after a failed refresh ahead of expiry, try again this much later
MODELS_CACHE_SECONDS = 300.0
MODELS_RETRY_SECONDS = 30.0  # after a failed refresh, the cached list is served this long before the next try
POOL_MIN_IDLE_PER_HOST = 16  # idle upstream connections kept per host: this or max_concurrency
ERROR_EXCERPT_CHARS = 200
MAX_REFUSING = 16  # connections answered 503 at once (and closed to make room, not yet ended); past it: closed

USER_AGENT = "gigaproxy/" + __version__

# Compact UTF-8 JSON for the wire.  One encoder, made once: json.dumps() with keyword
# arguments builds a new JSONEncoder on every call, which a stream does per chunk.
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_UUID_HEX = re.compile(r"[0-9A-Fa-f]{32}\Z")


_DIGITS = re.compile(r"[0-9]{1,15}\Z")  # not str.isdigit(): that takes "²" and other digits int() refuses


def uuid4() -> str:
    """A random (version 4) UUID as text, like ``str(uuid.uuid4())`` without importing uuid."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def canonical_uuid(text: str) -> Optional[str]:
    """``str(uuid.UUID(text))`` (braces, ``urn:uuid:`` and hyphens allowed), or None if not a UUID."""
    h = text.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "")
    if not _UUID_HEX.match(h):
        return None
    h = h.lower()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

# Client model names that are shorthands for GigaChat models.
MODEL_ALIASES = {
    "gigachat": "GigaChat-2",
    "gigachat-pro": "GigaChat-2-Pro",
    "gigachat-max": "GigaChat-2-Max",
}

# Chat models GigaChat is known to serve (gigachat-api.md §8); the live list from
# GET /models is consulted as well, and any name starting with "GigaChat" passes through.
KNOWN_MODELS = (
    "GigaChat", "GigaChat-2", "GigaChat-2-Pro", "GigaChat-2-Max", "GigaChat-Plus",
    "GigaChat-Pro", "GigaChat-Max", "GigaChat-preview", "GigaChat-2-preview",
    "GigaChat-2-Pro-preview", "GigaChat-2-Max-preview", "GigaChat-Pro-preview",
    "GigaChat-Max-preview", "GigaChat-2-Reasoning", "GigaChat-3-Ultra",
)

# GigaChat finish_reason -> OpenAI finish_reason.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "function_call": "tool_calls",
    "blacklist": "content_filter",
    "error": "stop",
}

# Client request headers passed on to GigaChat (gigachat-api.md §3); nothing else is.
FORWARDED_HEADERS = ("X-Request-ID", "X-Session-ID", "X-Client-ID")

# Upstream HTTP status -> (status for the client, OpenAI error type, code).
UPSTREAM_STATUS_MAP = {
    400: (400, "invalid_request_error", "upstream_bad_request"),
    401: (401, "authentication_error", "upstream_unauthorized"),
    402: (402, "insufficient_quota", "insufficient_quota"),
    403: (403, "permission_error", "upstream_forbidden"),
    404: (404, "invalid_request_error", "model_not_found"),
    413: (413, "invalid_request_error", "request_too_large"),
    422: (400, "invalid_request_error", "upstream_invalid_params"),
    429: (429, "rate_limit_error", "rate_limit_exceeded"),
    500: (502, "api_error", "upstream_error"),
    502: (502, "api_error", "upstream_error"),
    503: (503, "api_error", "upstream_unavailable"),
    504: (504, "api_error", "upstream_timeout"),
}


# ==== Errors ====
# ProxyError renders itself as an OpenAI error body; the HTTP handler is the one place
# that catches it.  ConfigError is apart: it stops startup with one line and exit code 2.


class ProxyError(Exception):
    """An error that reaches the client as ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: Optional[str] = None,
        param: Optional[str] = None,
        headers: Optional[Dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.retryable = False  # set for failures another attempt may cure (see Upstream._send)
        self.upstream_id = None  # type: Optional[str]  # GigaChat's x-request-id, when GigaChat answered it

    def body(self) -> Dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: Optional[str] = None, code: str = "invalid_value") -> ProxyError:
    if len(message) > 1000:  # messages quote client input; a huge value must not make a huge reply
        message = message[:1000] + "..."
    if param is not None and len(param) > 200:
        param = param[:200] + "..."
    return ProxyError(400, message, "invalid_request_error", code, param)


class ConfigError(Exception):
    """Operator error found at startup: printed as one line, exit code 2."""


# ==== Config ====
# One frozen Config, built once in main() from flags > environment > env file > defaults
# and passed down explicitly.  Nothing reads os.environ after load_config() returns.

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Config(NamedTuple):
    """Everything gigaproxy needs to run; see the module docstring for the variables.

    Immutable; ``config._replace(port=...)`` makes a changed copy.  (A NamedTuple, not a
    dataclass: the dataclasses module and what it imports cost 10-35 ms of every start.)
    """

    credentials: Optional[str] = None
    scope: str = DEFAULT_SCOPE
    user: Optional[str] = None
    password: Optional[str] = None
    access_token: Optional[str] = None
    base_url: str = DEFAULT_BASE_URL
    auth_url: str = DEFAULT_AUTH_URL
    ca_bundle_file: Optional[str] = None
    verify_ssl: bool = True
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    key_file_password: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    model: str = DEFAULT_MODEL
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    log_level: str = DEFAULT_LOG_LEVEL
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
    structured_output: str = DEFAULT_STRUCTURED_OUTPUT
    embeddings_model: str = DEFAULT_EMBEDDINGS_MODEL
    tiktoken_dir: Optional[str] = None  # tiktoken vocabularies; None: tiktoken's default cache (see load_config)
    allow_image_urls: bool = False
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    workers: int = 1
    client_timeout: float = DEFAULT_CLIENT_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    response_store_size: int = DEFAULT_RESPONSE_STORE_ENTRIES
    response_store_seconds: float = DEFAULT_RESPONSE_STORE_SECONDS
    response_store_bytes: int = int(DEFAULT_RESPONSE_STORE_MB * 1048576)
    response_store_file: Optional[str] = None  # set by --workers: the SQLite file the workers share
    api_key: Optional[str] = None
    allow_unauthenticated: bool = False
    https_proxy: Optional[str] = None
    no_proxy: Optional[str] = None
    bundled_ca_file: Optional[str] = None
    model_map: Tuple[Tuple[str, str], ...] = ()  # (glob pattern, GigaChat model), first match wins
    upstream_headers: Tuple[Tuple[str, str], ...] = ()  # added to every GigaChat request; never logged

    @property
    def auth_mode(self) -> str:
        """``oauth``, ``password``, ``token`` or ``mtls`` (what the token manager does)."""
        if self.credentials:
            return "oauth"
        if self.user:
            return "password"
        if self.access_token:
            return "token"
        return "mtls"

    def secrets(self) -> List[str]:
        """The configured secret values, for log redaction."""
        values = [self.credentials, self.password, self.access_token, self.key_file_password, self.api_key]
        values.extend(value for _, value in self.upstream_headers)  # gateway keys often travel in them
        if self.https_proxy:
            values.append(urllib.parse.urlsplit(self.https_proxy).password)
        return [v for v in values if v]

    def __repr__(self) -> str:  # never print a secret, even by accident
        fields = []
        for name, value in zip(self._fields, self):
            if name in ("credentials", "password", "access_token", "key_file_password", "api_key") and value:
                value = "***"
            elif name == "https_proxy" and value:
                value = _redact_url(value)
            elif name == "upstream_headers" and value:
                value = tuple((header, "***") for header, _ in value)
            fields.append("%s=%r" % (name, value))
        return "Config(%s)" % ", ".join(fields)


def _redact_url(url: str) -> str:
    """The URL with any user:password replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


def parse_bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError("%s must be true or false (got %r)" % (name, value))


def parse_env_file(text: str, filename: str = ".env") -> Dict[str, str]:
    """Parse ``KEY=VALUE`` lines the way dotenv does: ``export``, quotes, ``#`` comments.

    Single-quoted values are literal; double-quoted values understand ``\\n``, ``\\t``,
    ``\\"`` and ``\\\\``; an unquoted value ends at `` #``.  A malformed line is a ConfigError.
    """
    result = {}  # type: Dict[str, str]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", key):
            raise ConfigError("%s line %d: expected KEY=VALUE" % (filename, lineno))  # no echo: it may hold a key
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            while quote == '"' and end > 0 and value[end - 1] == "\\" and not value[:end].endswith("\\\\"):
                end = value.find(quote, end + 1)
            if end < 0:
                raise ConfigError("%s line %d: unterminated quote in %s" % (filename, lineno, key))
            rest = value[end + 1:].strip()
            if rest and not rest.startswith("#"):
                raise ConfigError("%s line %d: unexpected text after the quoted value of %s" % (filename, lineno, key))
            value = value[1:end]
            if quote == '"':
                value = re.sub(
                    r"\\(.)",
                    lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)),
                    value,
                )
        else:
            comment = re.search(r"\s#", value)
            if comment:
                value = value[:comment.start()].rstrip()
        result[key] = value
    return result


def _read_env_file(path: str, explicit: bool) -> Dict[str, str]:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return parse_env_file(fh.read(), path)
    except FileNotFoundError:
        if explicit:
            raise ConfigError("env file %s does not exist (set by --env-file or GIGAPROXY_ENV_FILE)" % path)
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cannot read env file %s: %s" % (path, exc))


def _check_url(name: str, value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("%s must be an http(s) URL (got %r)" % (name, value))
    try:
        parts.port
    except ValueError:
        raise ConfigError("%s has an invalid port (got %r)" % (name, value))
    return value.rstrip("/")


def _check_readable(name: str, path: str) -> str:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError("%s: cannot read %s (%s)" % (name, path, exc.strerror or exc))
    return path


def load_config(
    args: Optional[argparse.Namespace] = None,
    environ: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    sources: Optional[Dict[str, str]] = None,
) -> Config:
    """Build the Config from parsed flags, an environment mapping and the env file.

    ``environ`` defaults to ``os.environ``; ``cwd`` is where ``.env`` is looked for.
    ``sources``, if given, is filled with where each variable that was set came from:
    ``{"GIGACHAT_SCOPE": "env", "GIGAPROXY_PORT": "flag --port", "GIGACHAT_MODEL":
    "env file .env", ...}``; a variable missing from it has its default (``--check``).
    Raises ConfigError (one line, naming the variable to fix) on bad or missing settings.
    """
    if args is None:
        args = build_parser().parse_args([])
    env = dict(os.environ if environ is None else environ)
    if sources is None:
        sources = {}

    env_file = args.env_file or env.get("GIGAPROXY_ENV_FILE")
    explicit = bool(env_file)
    if explicit:
        sources["GIGAPROXY_ENV_FILE"] = "flag --env-file" if args.env_file else "env"
    env_file = env_file or DEFAULT_ENV_FILE
    if cwd and not os.path.isabs(env_file):
        env_file = os.path.join(cwd, env_file)
    file_values = _read_env_file(env_file, explicit)

    def get(name: str, default: Optional[str] = None) -> Optional[str]:
        value, where = env.get(name), "env"
        if value is None or value == "":
            value, where = file_values.get(name), "env file " + env_file
        if value is None or value == "":
            return default
        sources[name] = where
        return value

    credentials = get("GIGACHAT_CREDENTIALS")
    auth_key = get("GIGACHAT_AUTH_KEY")
    if credentials and auth_key and credentials.strip() != auth_key.strip():
        raise ConfigError("GIGACHAT_CREDENTIALS and GIGACHAT_AUTH_KEY are both set and differ: keep one")
    credentials = (credentials or auth_key or "").strip() or None
    if credentials and credentials.lower().startswith("basic "):
        credentials = credentials[6:].strip()  # people paste the whole header value

    user, password = get("GIGACHAT_USER"), get("GIGACHAT_PASSWORD")
    if bool(user) != bool(password):
        missing = "GIGACHAT_PASSWORD" if user else "GIGACHAT_USER"
        raise ConfigError("GIGACHAT_USER and GIGACHAT_PASSWORD go together: set %s too" % missing)
    if credentials and user:
        raise ConfigError(
            "both GIGACHAT_CREDENTIALS and GIGACHAT_USER/GIGACHAT_PASSWORD are set: keep one way to authenticate"
        )
    access_token = get("GIGACHAT_ACCESS_TOKEN")

    scope = (get("GIGACHAT_SCOPE", DEFAULT_SCOPE) or DEFAULT_SCOPE).strip()
    if scope not in KNOWN_SCOPES:
        raise ConfigError("GIGACHAT_SCOPE must be one of %s (got %r)" % (", ".join(KNOWN_SCOPES), scope))

    base_url = _check_url("GIGACHAT_BASE_URL", get("GIGACHAT_BASE_URL", DEFAULT_BASE_URL) or "")
    auth_url = _check_url("GIGACHAT_AUTH_URL", get("GIGACHAT_AUTH_URL", DEFAULT_AUTH_URL) or "")

    verify = parse_bool("GIGACHAT_VERIFY_SSL_CERTS", get("GIGACHAT_VERIFY_SSL_CERTS", "true") or "true")
    ca_bundle = get("GIGACHAT_CA_BUNDLE_FILE")
    if ca_bundle:
        _check_readable("GIGACHAT_CA_BUNDLE_FILE", ca_bundle)
    cert_file, key_file = get("GIGACHAT_CERT_FILE"), get("GIGACHAT_KEY_FILE")
    if key_file and not cert_file:
        raise ConfigError("GIGACHAT_KEY_FILE is set without GIGACHAT_CERT_FILE: set the client certificate too")
    if cert_file:
        _check_readable("GIGACHAT_CERT_FILE", cert_file)
    if key_file:
        _check_readable("GIGACHAT_KEY_FILE", key_file)

    if not (credentials or user or access_token or cert_file):
        raise ConfigError(
            "no GigaChat credentials: set GIGACHAT_CREDENTIALS to your authorization key "
            "(or GIGACHAT_USER and GIGACHAT_PASSWORD, or GIGACHAT_ACCESS_TOKEN)"
        )

    def number(name: str, default: float, low: float, high: float, positive: bool = True,
               what: str = "a number of seconds") -> float:
        text = (get(name, repr(default)) or "").strip()
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not low <= value <= high or (positive and value <= 0):
            raise ConfigError("%s must be %s %s %g and at most %g (got %r)"
                              % (name, what, "above" if positive else "from", low, high, text))
        return value

    def whole(name: str, default: int, low: int, high: int) -> int:
        value = number(name, default, low, high, False, "a whole number")
        if value != int(value):
            raise ConfigError("%s must be a whole number (got %r)" % (name, get(name)))
        return int(value)

    timeout = number("GIGACHAT_TIMEOUT", DEFAULT_TIMEOUT, 0, 86400)
    connect_timeout = number("GIGAPROXY_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT, 0, 3600)
    total_timeout = number("GIGAPROXY_TOTAL_TIMEOUT", DEFAULT_TOTAL_TIMEOUT, 0, 86400)
    client_timeout = number("GIGAPROXY_CLIENT_TIMEOUT", DEFAULT_CLIENT_TIMEOUT, 0, 86400)
    shutdown_grace = number("GIGAPROXY_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE, 0, 86400, positive=False)
    retry_backoff = number("GIGAPROXY_RETRY_BACKOFF", DEFAULT_RETRY_BACKOFF, 0, 60, positive=False)
    max_retries = whole("GIGAPROXY_MAX_RETRIES", DEFAULT_MAX_RETRIES, 0, 10)
    max_concurrency = whole("GIGAPROXY_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, 1, 100000)
    response_store_size = whole("GIGAPROXY_RESPONSES_STORE_SIZE", DEFAULT_RESPONSE_STORE_ENTRIES, 1, 10 ** 6)
    response_store_seconds = number("GIGAPROXY_RESPONSES_STORE_SECONDS", DEFAULT_RESPONSE_STORE_SECONDS, 0, 10 ** 8)
    response_store_mb = number("GIGAPROXY_RESPONSES_STORE_MB", DEFAULT_RESPONSE_STORE_MB, 0, 10 ** 6,
                               what="a number of megabytes")
    if args.workers is not None:
        env["GIGAPROXY_WORKERS"] = str(args.workers)  # the flag wins; checked like the variable
    workers = whole("GIGAPROXY_WORKERS", 1, 1, 256)
    for name, flag in (("GIGAPROXY_WORKERS", "workers"), ("GIGAPROXY_HOST", "host"), ("GIGAPROXY_PORT", "port"),
                       ("GIGAPROXY_LOG_LEVEL", "log_level")):
        if getattr(args, flag) not in (None, ""):
            sources[name] = "flag --" + flag.replace("_", "-")
    host = args.host or get("GIGAPROXY_HOST", DEFAULT_HOST) or DEFAULT_HOST
    port_text = str(args.port) if args.port is not None else get("GIGAPROXY_PORT", str(DEFAULT_PORT))
    try:
        port = int(port_text or "")
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError("GIGAPROXY_PORT (--port) must be a port number 0-65535 (got %r)" % port_text)

    api_key = get("GIGAPROXY_API_KEY")
    allow_open = parse_bool("GIGAPROXY_ALLOW_UNAUTHENTICATED", get("GIGAPROXY_ALLOW_UNAUTHENTICATED", "false") or "false")
    if not api_key and not allow_open and not _is_loopback(host):
        raise ConfigError(
            "refusing to listen on %s without GIGAPROXY_API_KEY: anyone who can reach it would use your GigaChat "
            "account; set GIGAPROXY_API_KEY, or GIGAPROXY_ALLOW_UNAUTHENTICATED=true if the network is trusted" % host)

    level = (args.log_level or get("GIGAPROXY_LOG_LEVEL", DEFAULT_LOG_LEVEL) or DEFAULT_LOG_LEVEL).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError("GIGAPROXY_LOG_LEVEL (--log-level) must be DEBUG, INFO, WARNING or ERROR (got %r)" % level)

    max_body_mb = number("GIGAPROXY_MAX_BODY_MB", DEFAULT_MAX_BODY_MB, 0, 4096, what="a number of megabytes")

    structured = (get("GIGAPROXY_STRUCTURED_OUTPUT", DEFAULT_STRUCTURED_OUTPUT) or "").strip().lower()
    if structured not in ("function", "native"):
        raise ConfigError("GIGAPROXY_STRUCTURED_OUTPUT must be function or native (got %r)" % structured)

    model_map = parse_model_map(get("GIGAPROXY_MODEL_MAP") or "")
    upstream_headers = parse_upstream_headers(get("GIGAPROXY_UPSTREAM_HEADERS") or "")

    # Token-id embeddings input is decoded with tiktoken files from GIGAPROXY_TIKTOKEN_DIR, else
    # from tiktoken's own cache: the variables tiktoken reads, else (None) <tempdir>/data-gym-cache,
    # found only if a token-id request comes (the tempfile module is not worth importing first).
    tiktoken_dir = get("GIGAPROXY_TIKTOKEN_DIR")
    if tiktoken_dir and not os.path.isdir(tiktoken_dir):
        raise ConfigError("GIGAPROXY_TIKTOKEN_DIR: %s is not a directory" % tiktoken_dir)
    tiktoken_dir = tiktoken_dir or get("TIKTOKEN_CACHE_DIR") or get("DATA_GYM_CACHE_DIR")

    https_proxy = get("HTTPS_PROXY") or get("https_proxy")
    if https_proxy:
        https_proxy = _check_proxy_url(https_proxy)
    no_proxy = get("NO_PROXY") or get("no_proxy")

    return Config(
        credentials=credentials,
        scope=scope,
        user=user,
        password=password,
        access_token=access_token,
        base_url=base_url,
        auth_url=auth_url,
        ca_bundle_file=ca_bundle,
        verify_ssl=verify,
        cert_file=cert_file,
        key_file=key_file,
        key_file_password=get("GIGACHAT_KEY_FILE_PASSWORD"),
        timeout=timeout,
        connect_timeout=connect_timeout,
        total_timeout=total_timeout,
        max_retries=max_retries,
        retry_backoff=retry_backoff,
        model=(get("GIGACHAT_MODEL", DEFAULT_MODEL) or DEFAULT_MODEL).strip(),
        host=host,
        port=port,
        log_level=level,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        structured_output=structured,
        embeddings_model=(get("GIGAPROXY_EMBEDDINGS_MODEL", DEFAULT_EMBEDDINGS_MODEL) or DEFAULT_EMBEDDINGS_MODEL).strip(),
        tiktoken_dir=tiktoken_dir,
        allow_image_urls=parse_bool("GIGAPROXY_ALLOW_IMAGE_URLS", get("GIGAPROXY_ALLOW_IMAGE_URLS", "false") or "false"),
        max_concurrency=max_concurrency,
        workers=workers,
        client_timeout=client_timeout,
        shutdown_grace=shutdown_grace,
        response_store_size=response_store_size,
        response_store_seconds=response_store_seconds,
        response_store_bytes=max(1, int(response_store_mb * 1048576)),
        api_key=api_key,
        allow_unauthenticated=allow_open,
        https_proxy=https_proxy,
        no_proxy=no_proxy,
        bundled_ca_file=os.path.join(os.path.dirname(os.path.abspath(__file__)), BUNDLED_CA_FILENAME),
        model_map=model_map,
        upstream_headers=upstream_headers,
    )


def parse_model_map(text: str) -> Tuple[Tuple[str, str], ...]:
    """``GIGAPROXY_MODEL_MAP``: ``pattern=model`` pairs separated by commas, patterns as
    shell globs (``claude-*haiku*``), matched without regard to case; a shorthand
    (``gigachat-max``) as the model stands for the GigaChat model it names."""
    pairs = []
    for entry in text.split(","):
        if not entry.strip():
            continue
        pattern, sep, model = entry.partition("=")
        pattern, model = pattern.strip(), model.strip()
        if not sep or not pattern or not model or any(c.isspace() for c in model):
            raise ConfigError("GIGAPROXY_MODEL_MAP: %r is not pattern=model (e.g. claude-*haiku*=GigaChat-2,"
                              "*=GigaChat-2-Max)" % entry.strip())
        pairs.append((pattern, MODEL_ALIASES.get(model.lower(), model)))
    return tuple(pairs)


# Headers GIGAPROXY_UPSTREAM_HEADERS may not set: gigaproxy owns them, or they frame the message.
_OWN_HEADERS = ("authorization", "host", "content-length", "transfer-encoding", "connection", "content-type",
                "accept", "user-agent", "rquid")


def parse_upstream_headers(text: str) -> Tuple[Tuple[str, str], ...]:
    """``GIGAPROXY_UPSTREAM_HEADERS``: ``Name: value`` pairs separated by semicolons."""
    headers = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        name, sep, value = entry.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not re.match(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z", name) or not value:
            raise ConfigError("GIGAPROXY_UPSTREAM_HEADERS: expected 'Name: value; Name2: value2' (an entry for "
                              "header %r is malformed)" % name[:40])  # no echo of the value: it may be a key
        if name.lower() in _OWN_HEADERS:
            raise ConfigError("GIGAPROXY_UPSTREAM_HEADERS may not set %s: gigaproxy sends it itself" % name)
        if not value.isprintable():
            raise ConfigError("GIGAPROXY_UPSTREAM_HEADERS: the value of %s has control characters" % name)
        headers.append((name, value))
    return tuple(headers)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "127.0.0.1", "::1", "[::1]"):  # the usual cases, without ipaddress
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_proxy_url(value: str) -> str:
    if "://" not in value:
        value = "http://" + value
    parts = urllib.parse.urlsplit(value)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            "HTTPS_PROXY must be an http:// proxy URL such as http://user:pass@proxy:3128 (got scheme %r)" % parts.scheme
        )
    try:
        parts.port
    except ValueError:
        raise ConfigError("HTTPS_PROXY has an invalid port")
    return value


# ==== TLS & transport ====
# SSL contexts are built once at startup (the system CA store is added to them the first
# time a certificate needs it, see build_ssl_context).  Transport owns the upstream keep-alive pool:
# a connection belongs to one request from acquire to release, so no lock is held while
# bytes move; only the idle lists are shared, guarded by Transport._lock.


def build_ssl_context(config: Config, client_cert: bool = False, system_store: bool = False) -> ssl.SSLContext:
    """An SSL context trusting the system store, the bundled Russian root and the extra bundle.

    The system store (140-odd roots: ~40 ms and 1-2 MB, a quarter of a cold start) is
    loaded here only with ``system_store`` or when no other root is configured.
    Otherwise the context is marked ``system_store_deferred`` and Transport adds the
    store with ``add_system_store()`` the first time a certificate fails to verify
    without it, then connects again: the same roots are trusted, the system's only later.
    GigaChat's own certificates chain to the bundled root, so most runs never load it.

    ``client_cert`` attaches the mTLS certificate (API calls only, never OAuth: §2.3).
    VERIFY_X509_STRICT, on by default since Python 3.13, is cleared so that every Python
    verifies alike: corporate TLS-inspecting proxies often issue certificates that fail
    only the strict profile.  Chain and hostname are always verified unless turned off.
    """
    if config.verify_ssl:
        roots = [(name, path) for name, path in (("bundled CA", config.bundled_ca_file),
                                                 ("GIGACHAT_CA_BUNDLE_FILE", config.ca_bundle_file))
                 if path and (name != "bundled CA" or os.path.exists(path))]
        deferred = bool(roots) and not system_store
        ctx = None  # type: Optional[ssl.SSLContext]
        for name, path in roots:
            try:
                if ctx is None and deferred:  # given a file, create_default_context skips the system store
                    ctx = ssl.create_default_context(cafile=path)
                    continue
                ctx = ctx or ssl.create_default_context()
                ctx.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("%s: %s is not a readable PEM certificate file (%s)" % (name, path, exc))
        ctx = ctx or ssl.create_default_context()
        ctx.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
        ctx.system_store_deferred = deferred  # type: ignore[attr-defined]
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert and config.cert_file:
        try:
            ctx.load_cert_chain(config.cert_file, config.key_file, password=config.key_file_password)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "GIGACHAT_CERT_FILE/GIGACHAT_KEY_FILE: cannot load the client certificate %s (%s); "
                "check the files and GIGACHAT_KEY_FILE_PASSWORD" % (config.cert_file, exc)
            )
    return ctx


_SYSTEM_STORE_LOCK = threading.Lock()


def add_system_store(ctx: ssl.SSLContext) -> None:
    """Load the system CA store into a context built with it deferred (once; thread-safe)."""
    with _SYSTEM_STORE_LOCK:
        if getattr(ctx, "system_store_deferred", False):
            ctx.load_default_certs()
            ctx.system_store_deferred = False  # type: ignore[attr-defined]


def proxy_bypassed(host: str, port: int, no_proxy: Optional[str]) -> bool:
    """True when NO_PROXY names this host, as curl reads it.

    Entries are separated by commas or spaces; ``*`` matches everything; ``example.com``
    and ``.example.com`` match the domain and its subdomains; ``host:port`` matches one
    port; IP addresses and CIDR blocks (``10.0.0.0/8``) match addresses.
    """
    if not no_proxy:
        return False
    host = host.lower().rstrip(".").strip("[]")
    import ipaddress

    try:
        address = ipaddress.ip_address(host)  # type: Optional[Any]
    except ValueError:
        address = None
    for entry in re.split(r"[,\s]+", no_proxy.lower()):
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port = None
        m = re.match(r"^\[?([^\]]+?)\]?(?::(\d+))?$", entry) if entry.count(":") <= 1 or entry.startswith("[") else None
        if m:
            entry, entry_port = m.group(1), m.group(2)
        if entry_port and int(entry_port) != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry = entry.lstrip("*").lstrip(".")
        if entry and (host == entry or host.endswith("." + entry)):
            return True
    return False


def unfold(value: Optional[str]) -> Optional[str]:
    """A header value with obsolete line folding replaced by a space (RFC 9112 §5.2).

    http.client keeps a folded value as it came (with the line break in it); a client
    must unfold it before reading the value.
    """
    if value is None or "\n" not in value:
        return value
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def _readable_now(sock: socket.socket) -> bool:
    """True when ``sock`` has something to read right now: bytes, or the far end's close."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if hasattr(select, "poll"):  # select() fails on descriptors above FD_SETSIZE
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


class _UpstreamResponse(http.client.HTTPResponse):
    """http.client's response, noting whether the server sent bytes past the end of the body.

    http.client reads a response through a buffered reader that it drops once the body
    has ended: bytes that arrived after the body in the same packet would vanish unseen,
    and the connection go back to the pool although its server broke the protocol.
    Just before that reader is dropped, a non-blocking peek tells whether it holds more.
    """

    overrun = False

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._sock = sock

    def _close_conn(self) -> None:  # http.client calls it when the body has been read to its end
        fp = self.fp
        if fp is not None:
            timeout = self._sock.gettimeout()
            try:
                self._sock.settimeout(0.0)
                self.overrun = bool(fp.peek(1))
            except OSError:  # ssl.SSLWantReadError: nothing more has arrived
                pass
            finally:
                self._sock.settimeout(timeout)
        super()._close_conn()  # type: ignore[misc]


class UpstreamExchange:
    """One request and its response on a pooled ``http.client`` connection.

    ``read()`` reads the whole body, ``read_some()`` a stream piece by piece as it
    arrives (``HTTPResponse.read1``).  ``release()`` hands the connection back to the
    pool only when the response was read to its end without error and the server keeps
    the connection open; ``close()`` drops it (a timeout, a framing error, a client that
    left mid-stream: such a connection is never used again).
    """

    def __init__(self, transport: "Transport", key: Tuple[Any, ...], conn: http.client.HTTPConnection,
                 response: http.client.HTTPResponse) -> None:
        self._transport = transport
        self._key = key
        self._conn = conn  # type: Optional[http.client.HTTPConnection]
        self.response = response
        self.status = response.status
        self.deadline = None  # type: Optional[float]  # time.monotonic() by which the body must end
        self._timeout = None  # type: Optional[float]  # the socket timeout read_some() last set

    def header(self, name: str) -> Optional[str]:
        """A response header (case-insensitive, unfolded), or None."""
        return unfold(self.response.headers.get(name))

    def read(self, timeout: Optional[float] = None) -> bytes:
        """The whole body (``timeout``: waiting at most that long for each piece of it)."""
        try:
            sock = getattr(self.response, "_sock", None)
            if timeout is not None and sock is not None:
                sock.settimeout(timeout)
            data = self.response.read()
        except BaseException:
            self.close()
            raise
        self.release()
        return data

    def read_some(self) -> bytes:
        """The next piece of the body as it arrives (b"" at its end), never waiting past the
        idle timeout or the request's deadline."""
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise _total_timeout_error()
            timeout = min(self._transport.read_timeout, left)
            sock = getattr(self.response, "_sock", None)  # also when http.client gave the socket to the response
            if sock is not None and timeout != self._timeout:  # a syscall: only when it changes
                sock.settimeout(timeout)
                self._timeout = timeout
        return self.response.read1(65536)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        response = self.response
        if getattr(response, "overrun", False):
            log.warning("%s sent bytes after the end of its answer; that connection is not used again", self._key[1])
        elif response.isclosed() and not response.will_close and conn.sock is not None:
            self._transport._put_idle(self._key, conn)
            return
        conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


# A pooled connection the server closed while it sat idle shows up as one of these on reuse.
_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                            ConnectionAbortedError)


class Transport:
    """HTTP/1.1 keep-alive connections to GigaChat hosts (``http.client``), through a
    CONNECT proxy (``set_tunnel``) if set.

    Idle connections are kept per (scheme, host, port, TLS profile) in ``_idle``, guarded
    by ``_lock``; a connection taken from it is used by one request only, and no lock is
    held while bytes move.  Before a connection is reused a zero-timeout readability
    check drops it if the server closed it or sent bytes nobody asked for (no stray byte
    is ever read as the next answer).  A reused connection that fails before any answer
    (the server closed it just then) is retried once on a fresh one.
    """

    def __init__(self, config: Config, api_context: Optional[ssl.SSLContext],
                 auth_context: Optional[ssl.SSLContext]) -> None:
        self.read_timeout = config.timeout
        self._max_idle = max(POOL_MIN_IDLE_PER_HOST, config.max_concurrency)
        self._connect_timeout = config.connect_timeout
        self._contexts = {"api": api_context, "auth": auth_context}
        self._proxy = None  # type: Optional[Tuple[str, int, Dict[str, str]]]
        if config.https_proxy:
            parts = urllib.parse.urlsplit(config.https_proxy)
            proxy_headers = {}
            if parts.username is not None:
                user_pass = "%s:%s" % (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
                proxy_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(user_pass.encode("utf-8")).decode("ascii")
            self._proxy = (parts.hostname or "", parts.port or 3128, proxy_headers)
        self._no_proxy = config.no_proxy
        self._lock = threading.Lock()
        self._idle = {}  # type: Dict[Tuple[Any, ...], List[http.client.HTTPConnection]]

    def _new_connection(self, key: Tuple[Any, ...], connect_timeout: float) -> http.client.HTTPConnection:
        scheme, host, port, profile = key
        context = self._contexts[profile] if scheme == "https" else None
        if self._proxy is not None and scheme == "https" and not proxy_bypassed(host, port, self._no_proxy):
            proxy_host, proxy_port, proxy_headers = self._proxy
            conn = http.client.HTTPSConnection(proxy_host, proxy_port, timeout=connect_timeout,
                                               context=context)  # type: http.client.HTTPConnection
            conn.set_tunnel(host, port, headers=proxy_headers)
        elif scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        conn.response_class = _UpstreamResponse
        deferred = getattr(context, "system_store_deferred", False)  # before: another thread may load it meanwhile
        try:
            conn.connect()
        except ssl.SSLCertVerificationError:
            conn.close()
            if not deferred:
                raise
            assert context is not None
            log.info("the TLS certificate of %s is not signed by the bundled Russian root or GIGACHAT_CA_BUNDLE_FILE:"
                     " loading the system CA store and connecting again", host)
            add_system_store(context)
            return self._new_connection(key, connect_timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    def _get_idle(self, key: Tuple[Any, ...]) -> Optional[http.client.HTTPConnection]:
        """A pooled connection that is still fit for a request, or None."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None or (conn.sock is not None and not _readable_now(conn.sock)):
                return conn
            conn.close()  # closed by the server, or holding bytes that answer nothing: never reused

    def _put_idle(self, key: Tuple[Any, ...], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        conn.close()

    def idle_connections(self) -> int:
        """How many connections the pool holds (for metrics and tests)."""
        with self._lock:
            return sum(len(conns) for conns in self._idle.values())

    def close(self) -> None:
        """Close every idle connection (connections in use close when released)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def request(self, method: str, url: str, body: Optional[bytes], headers: Dict[str, str],
                profile: str = "api", deadline: Optional[float] = None) -> UpstreamExchange:
        """Send one request and return its exchange once the status line and headers arrived.

        ``deadline`` (``time.monotonic()``) bounds the whole wait.  Raises ProxyError 502
        (unreachable, TLS, proxy refused) or 504 (timed out); ``retryable`` is set on the
        failures that happen before GigaChat could have acted on the request.
        """
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname or "", port, profile)
        target = parts.path + ("?" + parts.query if parts.query else "")
        for attempt in (0, 1):
            left = float("inf") if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise _total_timeout_error()
            conn = self._get_idle(key) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                try:
                    conn = self._new_connection(key, min(self._connect_timeout, left))
                except BaseException as exc:
                    error = _transport_error(exc, key[1], min(self._connect_timeout, left), "connect")
                    if isinstance(error, ProxyError) and error.code in ("upstream_unreachable", "upstream_timeout"):
                        error.retryable = True
                    raise error
            try:
                assert conn.sock is not None
                conn.sock.settimeout(min(self.read_timeout, left))
                conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
            except _STALE_CONNECTION_ERRORS:
                conn.close()
                if reused:
                    continue  # the server closed an idle keep-alive connection: retry on a new one
                error = ProxyError(502, "GigaChat at %s closed the connection without answering" % key[1],
                                   "api_error", "upstream_unreachable")
                error.retryable = True
                raise error
            except BaseException as exc:
                conn.close()
                raise _transport_error(exc, key[1], min(self.read_timeout, left))
            exchange = UpstreamExchange(self, key, conn, response)
            exchange.deadline = deadline
            return exchange
        raise AssertionError("unreachable")  # pragma: no cover


def _public_address(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:  # type: ignore[union-attr]
        ip = ip.ipv4_mapped  # type: ignore[union-attr]
    return ip.is_global and not ip.is_multicast


IMAGE_FETCH_TIMEOUT = 15.0
_URL_SAFE = "".join(chr(c) for c in range(33, 127))  # what an image URL's path keeps as is; the rest is %-encoded


def fetch_image(url: str, context: ssl.SSLContext, where: str) -> Tuple[bytes, str]:
    """GET an image for a client (opt-in), refusing what a proxy must not reach.

    The host is resolved once and every address must be public (no loopback, private,
    link-local or reserved ranges: no SSRF into the corporate network); the connection
    goes to the address that was checked (http.client is handed that socket, so a second
    DNS answer cannot divert it); redirects are not followed; at most MAX_IMAGE_BYTES are read.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    try:
        port = parts.port or (443 if https else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise bad_request("%s: cannot resolve %s (%s)" % (where, _printable(host, 80), exc), where, "image_fetch_failed")
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(_public_address(a) for a in addresses):
        raise bad_request("%s: %s resolves to a private, loopback or reserved address; refused"
                          % (where, _printable(host, 80)), where, "image_url_refused")
    if https:
        conn = http.client.HTTPSConnection(host, port, timeout=IMAGE_FETCH_TIMEOUT,
                                           context=context)  # type: http.client.HTTPConnection
    else:
        conn = http.client.HTTPConnection(host, port, timeout=IMAGE_FETCH_TIMEOUT)
    try:
        conn.sock = socket.create_connection((addresses[0], port), timeout=IMAGE_FETCH_TIMEOUT)
        if https:
            conn.sock = context.wrap_socket(conn.sock, server_hostname=host)
        target = urllib.parse.quote((parts.path or "/") + ("?" + parts.query if parts.query else ""), _URL_SAFE)
        conn.request("GET", target, headers={"User-Agent": USER_AGENT, "Accept": "image/*", "Connection": "close"})
        response = conn.getresponse()
        if response.status != 200:
            raise bad_request("%s: the image URL answered HTTP %d%s" % (where, response.status, " (redirects are not "
                              "followed)" if 300 <= response.status < 400 else ""), where, "image_fetch_failed")
        mime = (unfold(response.headers.get("Content-Type")) or "").split(";")[0].strip().lower()
        if mime not in IMAGE_TYPES:
            raise bad_request("%s: the URL served %s, not a PNG, JPEG, TIFF or BMP image" % (where, mime or "no type"),
                              where, "unsupported_image_type")
        data = response.read(MAX_IMAGE_BYTES + 1)
        if len(data) > MAX_IMAGE_BYTES:
            raise bad_request("%s: the image is larger than GigaChat's %d MB limit"
                              % (where, MAX_IMAGE_BYTES // 1048576), where, "image_too_large")
        return data, mime
    except (OSError, http.client.HTTPException) as exc:
        raise bad_request("%s: could not fetch the image (%s)" % (where, exc.__class__.__name__), where,
                          "image_fetch_failed")
    finally:
        conn.close()


def _total_timeout_error() -> ProxyError:
    return ProxyError(504, "GigaChat did not finish within GIGAPROXY_TOTAL_TIMEOUT", "api_error", "upstream_timeout")


def _transport_error(exc: BaseException, host: str, timeout: float, stage: str = "read") -> BaseException:
    """Turn a socket/TLS failure into the ProxyError the client sees."""
    if isinstance(exc, ProxyError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, socket.timeout):
        if stage == "connect":
            return ProxyError(504, "could not connect to GigaChat at %s within %g s (GIGAPROXY_CONNECT_TIMEOUT)"
                              % (host, timeout), "api_error", "upstream_timeout")
        return ProxyError(504, "GigaChat at %s did not answer within %g s (GIGACHAT_TIMEOUT)" % (host, timeout),
                          "api_error", "upstream_timeout")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ProxyError(
            502,
            "TLS verification of %s failed: %s. If a corporate proxy inspects TLS, add its root "
            "certificate with GIGACHAT_CA_BUNDLE_FILE" % (host, getattr(exc, "verify_message", "") or exc),
            "api_error", "upstream_tls_error")
    if isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed"):
        return ProxyError(502, "the HTTPS proxy (HTTPS_PROXY) refused to connect to %s: %s"
                          % (host, str(exc).split(":", 1)[-1].strip()), "api_error", "proxy_error")
    if isinstance(exc, http.client.IncompleteRead):
        return ProxyError(502, "GigaChat at %s closed the connection before its answer was complete" % host,
                          "api_error", "upstream_stream_incomplete")
    if isinstance(exc, http.client.HTTPException):
        return ProxyError(502, "GigaChat at %s broke the HTTP protocol: %s" % (host, exc.__class__.__name__ + (
            ": " + _printable(str(exc), 100) if str(exc) else "")), "api_error", "upstream_bad_response")
    if isinstance(exc, OSError):
        return ProxyError(502, "cannot reach GigaChat at %s: %s" % (host, exc.__class__.__name__ + ": " + str(exc)
                                                                        if str(exc) else exc.__class__.__name__),
                          "api_error", "upstream_unreachable")
    return exc


# ==== Token manager ====
# The only shared state besides the connection pool: one token, guarded by a condition
# variable, with at most one refresh in flight however many requests are waiting.


def _expiry_to_seconds(value: Any) -> Optional[float]:
    """GigaChat expiry in seconds since the epoch: ms (documented) or s (``tok/exp`` form)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return value / 1000.0 if value >= 1e11 else float(value)


class TokenManager:
    """Hands out a valid GigaChat access token, fetching a new one when needed.

    Modes, from the Config: OAuth with an authorization key (``POST auth_url``, Basic key,
    fresh ``RqUID``, form ``scope=``), user/password (``POST {base}/token``), a static
    token (used until GigaChat rejects it, then the key or password if configured), or
    mTLS only (no token at all: ``get()`` returns None).

    Concurrency: ``_cond`` guards ``_token``, ``_refresh_at``, ``_expires_at``, ``_fetching`` and the
    outcome of the last fetch.  A caller that finds no usable token either becomes the
    one fetcher (``_fetching`` set, lock released during the network call) or waits on
    ``_cond``; when the fetch ends every waiter wakes and takes its result, success or
    error, so 50 requests at expiry cause exactly one OAuth call.  The token is refreshed
    TOKEN_REFRESH_MARGIN seconds before expiry (half the lifetime for short-lived ones),
    in a background thread: until it expires the current token is still good, so no
    request waits for that fetch (one that fails is logged and tried again
    TOKEN_RETRY_SECONDS later).  Only a missing, rejected or expired token makes callers wait.
    """

    def __init__(self, config: Config, transport: Transport, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._transport = transport
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._token = config.access_token  # type: Optional[str]
        self._refresh_at = float("inf")  # a static token does not expire by the clock
        self._expires_at = float("inf")
        self._fetching = False
        self._generation = 0
        self._last_error = None  # type: Optional[ProxyError]
        self.fetches = 0  # number of token requests made (for tests, logs and metrics)
        self.failures = 0  # of those, how many failed

    @property
    def can_fetch(self) -> bool:
        """Whether a new token can be fetched (a key or a password is configured)."""
        return bool(self._config.credentials or self._config.user)

    def get(self) -> Optional[str]:
        """Return a usable token (None in mTLS-only mode); may block while one is fetched."""
        with self._cond:
            while True:
                now = self._clock()
                if self._token is not None and now < self._refresh_at:
                    return self._token
                if not self.can_fetch:
                    return self._token
                still_good = self._token is not None and now < self._expires_at
                if not self._fetching:
                    self._fetching = True
                    if not still_good:
                        break  # this caller fetches; the others wait for it
                    try:
                        threading.Thread(target=self._refresh_ahead, name="gigaproxy-token-refresh",
                                         daemon=True).start()
                    except RuntimeError:  # no thread to be had: the next caller tries again
                        self._fetching = False
                if still_good:
                    return self._token  # a refresh is under way; this token has not expired yet
                generation = self._generation
                while self._fetching and self._generation == generation:
                    self._cond.wait()
                if self._generation != generation and self._last_error is not None:
                    raise self._last_error
        token, error = self._fetch_and_publish()
        if error is not None:
            raise error
        return token

    def _refresh_ahead(self) -> None:
        """The background refresh get() starts before the token expires."""
        _, error = self._fetch_and_publish()
        if error is not None:
            log.warning("could not refresh the GigaChat token ahead of its expiry (trying again in %g s): %s",
                        TOKEN_RETRY_SECONDS, error.message)

    def _fetch_and_publish(self) -> Tuple[Optional[str], Optional[ProxyError]]:
        """Fetch a token (``_fetching`` is set by the caller) and hand the outcome to every waiter."""
        token = None  # type: Optional[str]
        error = None  # type: Optional[ProxyError]
        try:
            token, expires = self._fetch()
        except ProxyError as exc:
            error = exc
            self.failures += 1
        except Exception as exc:  # never leave _fetching set: waiters would wait for ever
            self.failures += 1
            error = ProxyError(502, "could not get a GigaChat token: %s" % exc, "api_error", "upstream_auth_unavailable")
        finally:
            with self._cond:
                self._fetching = False
                self._generation += 1
                self._last_error = error
                now = self._clock()
                if token is not None:
                    lifetime = max(0.0, expires - now)
                    self._token = token
                    self._expires_at = now + lifetime
                    self._refresh_at = now + lifetime - min(TOKEN_REFRESH_MARGIN, lifetime / 2)
                elif self._token is not None and now < self._expires_at:
                    self._refresh_at = min(now + TOKEN_RETRY_SECONDS, self._expires_at)
                self._cond.notify_all()
        return token, error

    def invalidate(self, token: Optional[str]) -> None:
        """Forget ``token`` after GigaChat rejected it (no-op if already replaced)."""
        with self._cond:
            if token is not None and token == self._token and self.can_fetch:
                self._token = None
                self._refresh_at = self._expires_at = 0.0

    def _fetch(self) -> Tuple[str, float]:
        config = self._config
        self.fetches += 1
        if config.credentials:
            url = config.auth_url
            headers = {
                "Authorization": "Basic " + config.credentials,
                "RqUID": uuid4(),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
            body = urllib.parse.urlencode({"scope": config.scope}).encode("ascii")
            headers.update(config.upstream_headers)
            exchange = self._transport.request("POST", url, body, headers, profile="auth")
            what = "GIGACHAT_CREDENTIALS (authorization key) and GIGACHAT_SCOPE=%s" % config.scope
        else:
            url = config.base_url + "/token"
            pair = "%s:%s" % (config.user, config.password)
            headers = {
                "Authorization": "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii"),
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            }
            headers.update(config.upstream_headers)
            exchange = self._transport.request("POST", url, b"", headers, profile="api")
            what = "GIGACHAT_USER and GIGACHAT_PASSWORD"
        data = exchange.read()
        status = exchange.status
        parsed = _json_or_none(data)
        message = _upstream_message(parsed, data)
        if status in (400, 401, 403):
            raise ProxyError(401, "GigaChat refused to issue a token (HTTP %d: %s); check %s"
                             % (status, message, what), "authentication_error", "upstream_auth_failed")
        if status != 200 or not isinstance(parsed, dict):
            raise ProxyError(502, "could not get a GigaChat token from %s (HTTP %d: %s)" % (url, status, message),
                             "api_error", "upstream_auth_unavailable")
        token = parsed.get("access_token") or parsed.get("tok")
        expires = _expiry_to_seconds(parsed.get("expires_at", parsed.get("exp")))
        if not isinstance(token, str) or not token or expires is None:
            raise ProxyError(502, "GigaChat's token answer from %s lacks a token or expiry" % url,
                             "api_error", "upstream_auth_unavailable")
        log.debug("fetched a GigaChat token valid for %.0f s", expires - self._clock())
        return token, expires


# ==== Upstream client ====
# Every call to GigaChat goes through Upstream: headers, the token, one retry after a
# 401, and the mapping of GigaChat errors (JSON, HTML or garbage) to ProxyError.
# Metrics (the counters /metrics shows) live here too: Upstream and the handler feed them.

# Every metric gigaproxy counts, with its help text (names and labels as Prometheus expects them).
METRICS_HELP = {
    "gigaproxy_requests_total": "Requests answered, by route, status and GigaChat model",
    "gigaproxy_request_duration_seconds": "Time from a request's arrival to the end of its answer, by route",
    "gigaproxy_stream_first_token_seconds": "Time from a streamed request's arrival to its first event, by route",
    "gigaproxy_streams_total": "Streamed answers by how they ended (complete, cut, client_left)",
    "gigaproxy_prompt_tokens_total": "Prompt tokens GigaChat reported, by GigaChat model",
    "gigaproxy_completion_tokens_total": "Completion tokens GigaChat reported, by GigaChat model",
    "gigaproxy_upstream_duration_seconds": "Time until GigaChat's answer began, per call, by API path",
    "gigaproxy_upstream_errors_total": "GigaChat calls that failed, by HTTP status (0: no answer)",
    "gigaproxy_upstream_retries_total": "GigaChat calls made again after a failure",
}
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
MAX_LABEL_SETS = 1000  # per metric: past it, new label values are counted as "other"


class Metrics:
    """Counters, gauges and histograms for ``GET /metrics`` (Prometheus text format 0.0.4).

    Everything is guarded by ``_lock``, held only to add a number (never across I/O).
    A metric's label values come from small sets (routes, statuses, GigaChat models);
    still, past MAX_LABEL_SETS distinct ones a metric counts new ones as ``other``.
    Gauges that other objects know (active requests, pool connections, token fetches)
    are read at scrape time through ``sources``: name -> (help, type, callable).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = {}  # type: Dict[str, Dict[Tuple[Tuple[str, str], ...], float]]
        self._histograms = {}  # type: Dict[str, Dict[Tuple[Tuple[str, str], ...], List[float]]]
        self.sources = {}  # type: Dict[str, Tuple[str, str, Callable[[], float]]]

    def _key(self, table: Dict[Any, Any], labels: Dict[str, str]) -> Tuple[Tuple[str, str], ...]:
        key = tuple(sorted(labels.items()))
        if key not in table and len(table) >= MAX_LABEL_SETS:
            key = tuple((name, "other") for name, _ in key)
        return key

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            table = self._counters.setdefault(name, {})
            key = self._key(table, labels)
            table[key] = table.get(key, 0) + amount

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        with self._lock:
            table = self._histograms.setdefault(name, {})
            key = self._key(table, labels)
            counts = table.get(key)
            if counts is None:
                counts = table[key] = [0.0] * (len(DURATION_BUCKETS) + 2)  # buckets, +Inf, sum
            for i, bound in enumerate(DURATION_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-2] += 1
            counts[-1] += seconds

    def render(self) -> str:
        """The exposition text: HELP and TYPE lines, then the samples of each metric."""
        def labels_text(key: Tuple[Tuple[str, str], ...], extra: str = "") -> str:
            parts = ['%s="%s"' % (k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
                     for k, v in key]
            if extra:
                parts.append(extra)
            return "{%s}" % ",".join(parts) if parts else ""

        lines = []
        with self._lock:
            counters = {name: dict(table) for name, table in self._counters.items()}
            histograms = {name: {k: list(v) for k, v in table.items()} for name, table in self._histograms.items()}
        for name in sorted(counters):
            lines += ["# HELP %s %s" % (name, METRICS_HELP[name]), "# TYPE %s counter" % name]
            lines += ["%s%s %s" % (name, labels_text(key), _number_text(value))
                      for key, value in sorted(counters[name].items())]
        for name in sorted(histograms):
            lines += ["# HELP %s %s" % (name, METRICS_HELP[name]), "# TYPE %s histogram" % name]
            for key, counts in sorted(histograms[name].items()):
                for bound, count in zip(DURATION_BUCKETS, counts):
                    lines.append("%s_bucket%s %s" % (name, labels_text(key, 'le="%g"' % bound), _number_text(count)))
                lines.append("%s_bucket%s %s" % (name, labels_text(key, 'le="+Inf"'), _number_text(counts[-2])))
                lines.append("%s_sum%s %s" % (name, labels_text(key), repr(counts[-1])))
                lines.append("%s_count%s %s" % (name, labels_text(key), _number_text(counts[-2])))
        for name in sorted(self.sources):
            help_text, kind, read = self.sources[name]
            lines += ["# HELP %s %s" % (name, help_text), "# TYPE %s %s" % (name, kind),
                      "%s %s" % (name, _number_text(read()))]
        return "\n".join(lines) + "\n"


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _debug_excerpt(value: Any, limit: int = 300) -> Any:
    """``value`` with long strings (prompts, base64 images) cut, for a DEBUG line."""
    if isinstance(value, str):
        return value if len(value) <= limit else "%s...(%d chars)" % (value[:limit], len(value))
    if isinstance(value, dict):
        return {k: _debug_excerpt(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_debug_excerpt(v, limit) for v in value]
    return value


def _json_or_none(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _excerpt(data: bytes) -> str:
    """A short, single-line, printable excerpt of an unexpected upstream body."""
    text = data[: ERROR_EXCERPT_CHARS * 4].decode("utf-8", "replace")
    text = re.sub(r"<[^>]{0,200}>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) > ERROR_EXCERPT_CHARS:
        text = text[:ERROR_EXCERPT_CHARS] + "..."
    return text or "(empty body)"


def _upstream_message(parsed: Any, data: bytes) -> str:
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return parsed["message"].strip()[:1000]
    return _excerpt(data)


def upstream_error(status: int, retry_after: Optional[str], data: bytes) -> ProxyError:
    """Map a GigaChat error answer (status, Retry-After header, body) to the OpenAI error the client receives."""
    parsed = _json_or_none(data)
    if not isinstance(parsed, dict):
        return ProxyError(502, "GigaChat answered HTTP %d with a non-JSON body: %s" % (status, _excerpt(data)),
                          "api_error", "upstream_bad_response")
    message = _upstream_message(parsed, data)
    client_status, type_, code = UPSTREAM_STATUS_MAP.get(
        status, (502 if status >= 500 else 400, "api_error" if status >= 500 else "invalid_request_error",
                 "upstream_error"))
    extra = {}
    if status == 429 and retry_after:
        extra["Retry-After"] = retry_after
    if status == 401:
        message = "GigaChat rejected the access token (%s); check the GigaChat credentials the proxy runs with" % message
    return ProxyError(client_status, "GigaChat: " + message, type_, code, headers=extra)


RETRY_STATUSES = (429, 500, 502, 503, 504)
_METRIC_PATHS = frozenset(("/chat/completions", "/models", "/embeddings", "/files", "/tokens/count", "/balance"))
IMAGE_CACHE_SIZE = 256  # uploaded images remembered by content hash


def multipart_form(fields: Dict[str, str], file_field: str, filename: str, content_type: str,
                   data: bytes) -> Tuple[bytes, str]:
    """A multipart/form-data body with text ``fields`` and one file; returns (body, content type)."""
    boundary = "gigaproxy-" + uuid4().replace("-", "")
    parts = []
    for name, value in fields.items():
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                      % (boundary, name, value)).encode("utf-8"))
    parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\nContent-Type: %s\r\n\r\n'
                  % (boundary, file_field, filename, content_type)).encode("utf-8"))
    parts.append(data)
    parts.append(("\r\n--%s--\r\n" % boundary).encode("ascii"))
    return b"".join(parts), "multipart/form-data; boundary=" + boundary


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if _DIGITS.match(value):
        return float(value)
    try:
        import email.utils  # rare: most servers send seconds

        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class Upstream:
    """Calls GigaChat's API with the right headers and token; see TokenManager for auth.

    Shared state besides the token manager and the pool: the model list (``_models``,
    ``_model_ids``, ``_models_at``, ``_models_refreshing``: swapped whole under
    ``_models_cond``, read without it) and the uploaded-image cache (``_files``, guarded by ``_files_lock``).
    No lock is held during a network call.
    """

    def __init__(self, config: Config, transport: Transport, tokens: TokenManager,
                 clock: Callable[[], float] = time.time, metrics: Optional[Metrics] = None) -> None:
        self.config = config
        self.transport = transport
        self.tokens = tokens
        self.metrics = metrics or Metrics()
        self._clock = clock
        self._models = ()  # type: Tuple[Dict[str, Any], ...]
        self._model_ids = ()  # type: Tuple[str, ...]  # their ids, set with them: every chat request reads it
        self._models_at = float("-inf")
        self._models_refreshing = False
        self._models_cond = threading.Condition(threading.Lock())  # notified when a refresh ends
        self._files = collections.OrderedDict()  # type: collections.OrderedDict[Tuple[str, str], str]
        self._files_lock = threading.Lock()  # guards _files: content hash -> GigaChat file id

    @property
    def host(self) -> str:
        """GigaChat's API host, for error messages."""
        return urllib.parse.urlsplit(self.config.base_url).hostname or ""

    def _send(self, method: str, path: str, payload: Any, extra_headers: Optional[Dict[str, str]],
              stream: bool = False, raw: Optional[Tuple[bytes, str]] = None) -> UpstreamExchange:
        """Send with a token and return the 200 exchange; every other outcome raises ProxyError.

        A 401 is retried once with a fresh token.  429, 500, 502, 503, 504 and failures
        to connect (or a connection dropped before any answer) are retried up to
        ``max_retries`` times with exponential backoff and full jitter, honouring a short
        ``Retry-After``, all within ``total_timeout``; a read timeout is not retried.  A
        stream is retried the same way, since nothing has reached the client yet.
        """
        body = None
        headers = {"User-Agent": USER_AGENT, "Accept": "text/event-stream" if stream else "application/json"}
        if raw is not None:
            body, headers["Content-Type"] = raw
        elif payload is not None:
            try:
                body = compact_json(payload).encode("utf-8")
            except UnicodeEncodeError:  # e.g. "\ud800" inside tool arguments, decoded late
                raise bad_request("the request has an unpaired surrogate (\\ud800-\\udfff), which is not Unicode "
                                  "text", None, "invalid_encoding")
            headers["Content-Type"] = "application/json"
        if stream:
            headers["Cache-Control"] = "no-store"
        headers.update(self.config.upstream_headers)
        headers.update(extra_headers or {})
        if log.isEnabledFor(logging.DEBUG):
            log.debug("to GigaChat: %s %s %s", method, path, compact_json(_debug_excerpt(payload)) if raw is None
                      else "(%s, %d bytes)" % (raw[1].split(";")[0], len(raw[0])))
        deadline = time.monotonic() + self.config.total_timeout
        attempt, reauthorized = 0, False
        metrics = self.metrics
        while True:
            token = self.tokens.get()
            if token is not None:
                headers["Authorization"] = "Bearer " + token
            started = time.monotonic()
            try:
                exchange = self.transport.request(method, self.config.base_url + path, body, headers,
                                                  deadline=deadline)
            except ProxyError as exc:
                metrics.inc("gigaproxy_upstream_errors_total", status="0")
                log.warning("GigaChat %s %s failed: %s", method, path, exc.message)
                if exc.retryable and self._may_retry(attempt, None, deadline, exc.message):
                    attempt += 1
                    continue
                raise
            metrics.observe("gigaproxy_upstream_duration_seconds", time.monotonic() - started,
                            path=path if path in _METRIC_PATHS else "other")
            if exchange.status == 401 and not reauthorized and self.tokens.can_fetch:
                self._read(exchange)
                self.tokens.invalidate(token)
                reauthorized = True
                log.info("GigaChat rejected the access token on %s %s: fetching a new one", method, path)
                continue
            if exchange.status == 200:
                return exchange
            retry_after = exchange.header("Retry-After")
            error = upstream_error(exchange.status, retry_after, self._read(exchange))
            metrics.inc("gigaproxy_upstream_errors_total", status=str(exchange.status))
            error.upstream_id = _printable(exchange.header("x-request-id") or "-", 80)
            log.warning("GigaChat %s %s answered HTTP %d: %s (x-request-id %s)", method, path, exchange.status,
                        error.message, error.upstream_id)
            if exchange.status in RETRY_STATUSES and self._may_retry(
                    attempt, _retry_after(retry_after), deadline, error.message):
                attempt += 1
                continue
            raise error

    def _read(self, exchange: UpstreamExchange) -> bytes:
        """A whole answer's body; a connection that fails on the way is a ProxyError (502, 504)."""
        try:
            return exchange.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, self.host, self.config.timeout)

    def _may_retry(self, attempt: int, retry_after: Optional[float], deadline: float, reason: str) -> bool:
        """Sleep before another attempt and return True, or return False if none is due."""
        if attempt >= self.config.max_retries:
            return False
        import random  # retries only

        delay = random.uniform(0, self.config.retry_backoff * (2 ** attempt))
        if retry_after is not None:
            if retry_after > RETRY_AFTER_MAX_WAIT:
                return False  # the client is better placed to wait that long
            delay = max(delay, retry_after)
        if time.monotonic() + delay >= deadline:
            return False
        log.info("retrying GigaChat in %.2f s (attempt %d of %d): %s", delay, attempt + 2,
                 self.config.max_retries + 1, reason)
        self.metrics.inc("gigaproxy_upstream_retries_total")
        time.sleep(delay)
        return True

    def call(self, method: str, path: str, payload: Any = None, extra_headers: Optional[Dict[str, str]] = None,
             raw: Optional[Tuple[bytes, str]] = None) -> Tuple[Any, UpstreamExchange]:
        """A call answered with JSON; returns (parsed body, the exchange: its ``header()`` reads the headers).

        ``payload`` is sent as JSON, or ``raw`` as (bytes, content type).
        """
        exchange = self._send(method, path, payload, extra_headers, raw=raw)
        data = self._read(exchange)
        parsed = _json_or_none(data)
        if parsed is None:
            raise ProxyError(502, "GigaChat answered with a non-JSON body: %s" % _excerpt(data),
                             "api_error", "upstream_bad_response")
        return parsed, exchange

    def open_stream(self, payload: Dict[str, Any], extra_headers: Optional[Dict[str, str]] = None) -> UpstreamExchange:
        """Start a streamed chat completion; errors before the first event raise here."""
        exchange = self._send("POST", "/chat/completions", payload, extra_headers, stream=True)
        content_type = (exchange.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "text/event-stream":
            try:
                data = exchange.read()
            except (OSError, http.client.HTTPException):
                data = b""
            raise ProxyError(502, "GigaChat answered a stream request with %s instead of an event stream: %s"
                             % (content_type or "no content type", _excerpt(data)), "api_error", "upstream_bad_response")
        return exchange

    def models(self) -> Tuple[Dict[str, Any], ...]:
        """GigaChat's model list, cached MODELS_CACHE_SECONDS.

        Once the cache is old, the cached list is still served at once while one
        background refresh fetches the next, so no request waits for it (a failed refresh
        is logged and tried again MODELS_RETRY_SECONDS later).  Only a call with nothing
        cached waits for GigaChat, and raises ProxyError if it does not answer.
        """
        with self._models_cond:
            if self._clock() - self._models_at < MODELS_CACHE_SECONDS:
                return self._models
            if self._models:
                if not self._models_refreshing:
                    self._models_refreshing = True
                    try:
                        threading.Thread(target=self._refresh_models, name="gigaproxy-models-refresh",
                                         daemon=True).start()
                    except RuntimeError:  # no thread to be had: the next caller tries again
                        self._models_refreshing = False
                return self._models
        return self._fetch_models()

    def _fetch_models(self) -> Tuple[Dict[str, Any], ...]:
        data, _ = self.call("GET", "/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ProxyError(502, "GigaChat's model list has no data array", "api_error", "upstream_bad_response")
        models = tuple(m for m in items if isinstance(m, dict) and isinstance(m.get("id"), str))
        with self._models_cond:
            self._models, self._model_ids, self._models_at = models, tuple(m["id"] for m in models), self._clock()
        return models

    def _refresh_models(self) -> None:
        try:
            self._fetch_models()
        except Exception as exc:  # a background thread: nobody else would hear of it
            log.warning("could not refresh the GigaChat model list; serving the cached one (next try in %g s): %s",
                        MODELS_RETRY_SECONDS, exc.message if isinstance(exc, ProxyError) else exc)
            with self._models_cond:
                self._models_at = self._clock() - MODELS_CACHE_SECONDS + MODELS_RETRY_SECONDS
        finally:
            with self._models_cond:
                self._models_refreshing = False
                self._models_cond.notify_all()

    def upload_image(self, data: bytes, mime: str, extra_headers: Dict[str, str]) -> str:
        """The GigaChat file id for an image, uploading it only if this proxy has not already.

        Uploads are remembered by content hash (and X-Client-ID, which scopes GigaChat
        files), the last IMAGE_CACHE_SIZE of them, so a conversation that resends the
        same image every turn uploads it once.
        """
        import hashlib  # image uploads only

        key = (hashlib.sha256(data).hexdigest(), extra_headers.get("X-Client-ID", ""))
        with self._files_lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        body, content_type = multipart_form({"purpose": "general"}, "file", "image." + IMAGE_TYPES[mime], mime, data)
        answer, _ = self.call("POST", "/files", None, extra_headers, raw=(body, content_type))
        file_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise ProxyError(502, "GigaChat's file upload answer has no id", "api_error", "upstream_bad_response")
        with self._files_lock:
            self._files[key] = file_id
            while len(self._files) > IMAGE_CACHE_SIZE:
                self._files.popitem(last=False)
        return file_id

    def known_model_ids(self) -> Tuple[str, ...]:
        """Model ids from the last fetched list, without calling GigaChat."""
        return self._model_ids


# ==== Translation: OpenAI -> GigaChat and back ====
# Pure functions over plain dicts: no I/O, no clock, no randomness (ids and times are
# parameters), so every case is a fixture.  Bad client input raises ProxyError 400
# naming the field; nothing a client sends is forwarded unless it is named here.

_TOOL_CALL_ID_PREFIX = "call_"
ANTHROPIC_TOOL_ID_PREFIX = "toolu_"  # the Anthropic dialect's ids: toolu_ + what follows call_


def resolve_model(name: Any, default: str, known: Tuple[str, ...] = (),
                  model_map: Tuple[Tuple[str, str], ...] = ()) -> str:
    """The GigaChat model for a client's model name.

    The first ``model_map`` pattern (GIGAPROXY_MODEL_MAP, shell globs, any case) that
    matches decides; otherwise aliases (``gigachat``, ``gigachat-pro``, ``gigachat-max``)
    map to GigaChat 2 models, a real GigaChat name (known, listed by GigaChat, or starting
    with ``GigaChat``) passes through in GigaChat's spelling, and anything else
    (``gpt-4o``, ``claude-...``) is ``default``.
    """
    if not isinstance(name, str) or not name.strip():
        return default
    name = name.strip()
    if model_map:
        import fnmatch  # only with GIGAPROXY_MODEL_MAP set

        lowered = name.lower()
        for pattern, model in model_map:
            if fnmatch.fnmatchcase(lowered, pattern.lower()):
                return model
    if name in MODEL_ALIASES:
        return MODEL_ALIASES[name]
    lowered = name.lower()
    for candidate in KNOWN_MODELS + tuple(known):
        if candidate.lower() == lowered:
            return candidate
    if lowered.startswith("gigachat"):
        return name
    return default


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _expect(value: Any, types: Tuple[type, ...], param: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in types:
        raise bad_request("%s must be %s, not a boolean" % (param, what), param, "invalid_type")
    if not isinstance(value, types):
        raise bad_request("%s must be %s, not %s" % (param, what, _type_name(value)), param, "invalid_type")
    return value


def _integer(request: Dict[str, Any], key: str, low: int, high: int) -> Optional[int]:
    value = request.get(key)
    if value is None:
        return None
    _expect(value, (int,), key, "an integer")
    if not low <= value <= high:
        raise bad_request("%s must be from %d to %d (got %d)" % (key, low, high, value), key)
    return value


def _number(request: Dict[str, Any], key: str, low: float, high: float, low_open: bool = False) -> Optional[float]:
    value = request.get(key)
    if value is None:
        return None
    _expect(value, (int, float), key, "a number")
    if value != value or value < low or value > high or (low_open and value == low):
        raise bad_request("%s must be %s %g and at most %g (got %r)"
                          % (key, "above" if low_open else "at least", low, high, value), key)
    return value


IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg", "image/tiff": "tiff", "image/bmp": "bmp"}
MAX_IMAGE_BYTES = 15 * 1024 * 1024  # GigaChat's limit for one image file (§8)
MAX_IMAGES_PER_REQUEST = 10  # GigaChat: one image per message, ten per request (§4.1)
TEXT_ONLY_MODELS = ("GigaChat", "GigaChat-2", "GigaChat-Plus", "GigaChat-preview", "GigaChat-2-preview")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)((?:;[\w.+-]+=[^;,]*)*);base64,", re.I)


class ImageRef:
    """An image a user message carries: decoded bytes (data: URL) or a URL to fetch."""

    def __init__(self, where: str, data: Optional[bytes] = None, mime: Optional[str] = None,
                 url: Optional[str] = None) -> None:
        self.where = where
        self.data = data
        self.mime = mime
        self.url = url


def parse_image_url(url: Any, where: str) -> ImageRef:
    """Validate an ``image_url`` and decode it when it is a ``data:`` URL (size and type checked)."""
    _expect(url, (str,), where, "a string")
    match = _DATA_URL.match(url)
    if match:
        mime = match.group(1).lower()
        if mime not in IMAGE_TYPES:
            raise bad_request("%s: %s images are not accepted by GigaChat; send PNG, JPEG, TIFF or BMP"
                              % (where, mime), where, "unsupported_image_type")
        encoded = url[match.end():]
        if len(encoded) > MAX_IMAGE_BYTES * 4 // 3 + 8:
            raise bad_request("%s: the image is larger than GigaChat's %d MB limit"
                              % (where, MAX_IMAGE_BYTES // 1048576), where, "image_too_large")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request("%s: the data: URL is not valid base64" % where, where, "invalid_image")
        if not data:
            raise bad_request("%s: the image is empty" % where, where, "invalid_image")
        if len(data) > MAX_IMAGE_BYTES:
            raise bad_request("%s: the image is larger than GigaChat's %d MB limit"
                              % (where, MAX_IMAGE_BYTES // 1048576), where, "image_too_large")
        return ImageRef(where, data=data, mime=mime)
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return ImageRef(where, url=url)
    raise bad_request("%s must be a data: URL (data:image/png;base64,...) or an http(s) URL" % where, where,
                      "invalid_image")


def _content_text(content: Any, param: str, images: Optional[List[ImageRef]] = None) -> str:
    """A message's content as the single string GigaChat requires (text parts joined).

    Image parts are collected into ``images`` (user messages only; elsewhere a 400).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad_request("%s must be a string or an array of content parts, not %s"
                          % (param, _type_name(content)), param, "invalid_type")
    texts = []
    for i, part in enumerate(content):
        where = "%s[%d]" % (param, i)
        if isinstance(part, str):
            texts.append(part)
            continue
        _expect(part, (dict,), where, "a content part object")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            texts.append(_expect(part.get("text"), (str,), where + ".text", "a string"))
        elif kind in ("image_url", "input_image") and images is not None:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            images.append(parse_image_url(url, where + ".image_url.url"))
        elif kind in ("image_url", "input_image"):
            raise bad_request("%s: images are accepted in user messages only" % where, where + ".type",
                              "unsupported_content")
        else:
            raise bad_request("%s: content part type %r is not supported (use text)" % (where, kind),
                              where + ".type", "unsupported_content")
    return "\n".join(texts)


def _tool_result_parts(call_id: str, parts: List[Dict[str, Any]]) -> Tuple[str, List[Dict[str, Any]]]:
    """A tool result given as chat parts (text and image_url): the text of its tool message, and
    its images, each labelled, as parts of the user message that follows the results (GigaChat
    takes images in user messages only; _one_image_each() splits them).  For the dialects whose
    tool results carry images."""
    text = "\n".join(p["text"] for p in parts if p["type"] == "text")
    images = [p for p in parts if p["type"] == "image_url"]
    if images:
        text += "%s[%d image(s) in the next message]" % ("\n" if text else "", len(images))
    labelled = []  # type: List[Dict[str, Any]]
    for image in images:
        labelled.extend([{"type": "text", "text": "[image from the result of %s]" % call_id}, image])
    return text, labelled


def _one_image_each(parts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Chat user messages holding ``parts`` in order, each with one image at most (GigaChat's rule)."""
    messages = []  # type: List[Dict[str, Any]]
    current = []  # type: List[Dict[str, Any]]
    for part in parts:
        if part["type"] == "image_url" and any(p["type"] == "image_url" for p in current):
            messages.append({"role": "user", "content": current})
            current = []
        current.append(part)
    if current or not messages:
        messages.append({"role": "user", "content": current})
    return messages


def _reject_constant(name: str) -> Any:
    raise ValueError("%s is not JSON" % name)


def _function_result(text: str) -> str:
    """A tool result as the JSON-object string GigaChat requires (§4.1); others wrapped."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)  # NaN/Infinity are not JSON
    except (ValueError, RecursionError):
        return json.dumps({"result": text}, ensure_ascii=False)
    if isinstance(value, dict):
        return text
    return json.dumps({"result": value}, ensure_ascii=False)


def _parse_arguments(arguments: Any, param: str) -> Dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    _expect(arguments, (str,), param, "a JSON string")
    try:
        value = json.loads(arguments, parse_constant=_reject_constant)  # NaN/Infinity are not JSON
    except RecursionError:
        raise bad_request("%s is nested too deeply" % param, param, "invalid_tool_arguments")
    except ValueError as exc:
        raise bad_request("%s is not valid JSON (%s)" % (param, exc), param, "invalid_tool_arguments")
    if not isinstance(value, dict):
        raise bad_request("%s must encode a JSON object, not %s" % (param, _type_name(value)),
                          param, "invalid_tool_arguments")
    return value


def state_id_from_call_id(call_id: Any) -> Optional[str]:
    """GigaChat's functions_state_id carried inside a tool call id we issued (``call_`` or ``toolu_``)."""
    for prefix in (_TOOL_CALL_ID_PREFIX, ANTHROPIC_TOOL_ID_PREFIX):
        if isinstance(call_id, str) and call_id.startswith(prefix):
            rest = call_id[len(prefix):]
            return rest if canonical_uuid(rest) == rest else None  # only the exact form _tool_call writes
    return None


# ---- tool names and schemas --------------------------------------------------------

# Functions GigaChat has built in (§4.2, §9): a client tool by one of these names is renamed.
GIGACHAT_BUILTIN_FUNCTIONS = frozenset({
    "text2image", "text2model3d", "web_search", "code_interpreter", "image_generate",
    "model_3d_generate", "url_content_extraction",
})
_SAFE_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
SCHEMA_MAX_DEPTH = 12  # $ref chains and nesting deeper than this are cut to a plain object
SCHEMA_MAX_NODES = 2000  # inlining references can multiply a schema; past this, they stay plain objects
_SCHEMA_FORMATS = ("date", "date-time", "time")  # the formats GigaChat accepts
_SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SCHEMA_DROPPED_KEYS = ("$schema", "$id", "$comment", "$defs", "definitions", "$ref", "anyOf", "oneOf",
                        "allOf", "const", "discriminator", "$anchor", "$dynamicRef", "$dynamicAnchor",
                        "nullable", "propertyOrdering")  # the last two: Google's OpenAPI subset
# Google's OpenAPI subset as google-genai puts it on the wire: some keywords in snake_case.
_GOOGLE_SCHEMA_KEYS = (("any_of", "anyOf"), ("property_ordering", "propertyOrdering"), ("min_items", "minItems"),
                       ("max_items", "maxItems"), ("min_length", "minLength"), ("max_length", "maxLength"),
                       ("min_properties", "minProperties"), ("max_properties", "maxProperties"))


class ToolNames:
    """Client tool names <-> function names GigaChat accepts, for one request.

    A name that is a plain identifier (``[A-Za-z_][A-Za-z0-9_]*``, at most 64 characters)
    and not one of GigaChat's built-in functions is kept; others (``mcp__git.status``,
    ``read-file``, ``web_search``) get a safe, unique stand-in.  Every response maps the
    stand-in back, so the client only ever sees the names it sent.
    """

    def __init__(self, names: Any = ()) -> None:
        self._to_gigachat = {}  # type: Dict[str, str]
        self._to_client = {}  # type: Dict[str, str]
        names = [n for n in names if isinstance(n, str)]
        for name in names:  # safe names first, so they never have to move aside
            if self._is_safe(name):
                self.to_gigachat(name)
        for name in names:
            self.to_gigachat(name)

    @staticmethod
    def _is_safe(name: str) -> bool:
        return bool(_SAFE_FUNCTION_NAME.match(name)) and name not in GIGACHAT_BUILTIN_FUNCTIONS

    def to_gigachat(self, name: str) -> str:
        """The GigaChat name for a client name (allocated on first use)."""
        if name not in self._to_gigachat:
            safe = self._fresh(name)
            self._to_gigachat[name] = safe
            self._to_client[safe] = name
        return self._to_gigachat[name]

    def to_client(self, name: str) -> str:
        """The client's name for a function name GigaChat used."""
        return self._to_client.get(name, name)

    def reserve(self, base: str) -> str:
        """A GigaChat function name for the proxy's own use, unlike any client tool's."""
        safe = self._fresh(base)
        self._to_client[safe] = safe
        return safe

    def _fresh(self, name: str) -> str:
        if self._is_safe(name) and name not in self._to_client:
            return name
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)[:56] or "fn"
        if not re.match(r"[A-Za-z_]", base):
            base = "fn_" + base
        if base in GIGACHAT_BUILTIN_FUNCTIONS:
            base = "user_" + base
        safe, n = base, 2
        while safe in self._to_client or safe in GIGACHAT_BUILTIN_FUNCTIONS:
            safe, n = "%s_%d" % (base, n), n + 1
        return safe


def _schema_type(node: Dict[str, Any]) -> Any:
    """A schema node's ``type``, lower-cased: Google's OpenAPI subset spells them ``STRING``, ``OBJECT``."""
    kind = node.get("type")
    if isinstance(kind, str):
        return kind.lower()
    if isinstance(kind, list):
        return [k.lower() if isinstance(k, str) else k for k in kind]
    return kind


def normalize_schema(schema: Any) -> Dict[str, Any]:
    """A tool-parameter JSON Schema rewritten into the subset GigaChat accepts.

    GigaChat rejects ``$ref``/``$defs``, ``anyOf``/``oneOf``/``allOf``, type arrays,
    ``const``, non-string enums, objects without ``properties`` and most ``format``s.
    This inlines local references (``#/$defs/X``, ``#/properties/a``, ``#``; a cycle,
    nesting past SCHEMA_MAX_DEPTH or a schema past SCHEMA_MAX_NODES becomes a plain
    object), merges ``allOf``, merges a union of objects into one object (all
    properties, the common ones required, tag enums joined) and otherwise takes the
    first non-null branch, naming the others in the description; turns
    ``["string", "null"]`` into ``"string"``, ``const`` into a one-value enum, non-string
    enums into a description, infers a missing ``type``, and gives every object
    ``properties``.  Google's OpenAPI subset is read too: upper-case types
    (``STRING``, ``OBJECT``), ``nullable`` (dropped, like ``null`` in a type list) and
    the snake_case keywords google-genai sends (``any_of``, ``max_items``, ...).
    Property names and descriptions survive.
    """
    if not isinstance(schema, dict):
        return {"type": "object", "properties": {}}
    result = _SchemaRewrite(schema).node(schema, (), 0)
    if result.get("type") != "object":
        result = {"type": "object", "properties": {}}
    return result


def _describe(node: Dict[str, Any], note: str) -> None:
    description = node.get("description")
    if not note or (isinstance(description, str) and note in description):
        return
    node["description"] = ("%s (%s)" % (description, note)) if isinstance(description, str) and description else note


def _type_of_value(value: Any) -> str:
    return {"boolean": "boolean", "number": "integer" if isinstance(value, int) else "number",
            "string": "string", "array": "array", "object": "object"}.get(_type_name(value), "string")


def _plain_object(description: Any, note: str) -> Dict[str, Any]:
    out = {"type": "object", "properties": {}}  # type: Dict[str, Any]
    if isinstance(description, str) and description:
        out["description"] = description
    _describe(out, note)
    return out


class _SchemaRewrite:
    """One normalize_schema() run: the root (for references) and the node budget."""

    def __init__(self, root: Dict[str, Any]) -> None:
        self.root = root
        self.budget = SCHEMA_MAX_NODES

    def resolve(self, ref: str) -> Any:
        """The target of a local JSON pointer (``#``, ``#/$defs/X``), or None."""
        if not ref.startswith("#"):
            return None
        target = self.root  # type: Any
        for token in urllib.parse.unquote(ref[1:]).split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                return None
        return target if isinstance(target, dict) else None

    def node(self, node: Any, refs: Tuple[str, ...], depth: int) -> Dict[str, Any]:
        if not isinstance(node, dict):
            return {"type": "string"}  # ``true`` / anything: the most general value an LLM can write
        self.budget -= 1
        if depth > SCHEMA_MAX_DEPTH or self.budget < 0:
            return _plain_object(node.get("description"), "nested too deeply to describe")
        node = dict(node)
        for snake, camel in _GOOGLE_SCHEMA_KEYS:
            if snake in node:
                node.setdefault(camel, node.pop(snake))
        ref = node.pop("$ref", None)
        if isinstance(ref, str):
            target = self.resolve(ref)
            if target is None or ref in refs:
                return _plain_object(node.get("description"), "same structure as its parent" if target else "")
            merged = dict(target)
            merged.update({k: v for k, v in node.items() if k in ("title", "default")})
            if isinstance(node.get("description"), str) and node["description"]:
                merged["description"] = node["description"]
                _describe(merged, target.get("description") if isinstance(target.get("description"), str) else "")
            return self.node(merged, refs + (ref,), depth + 1)
        parts = node.pop("allOf", None)
        for part in parts if isinstance(parts, list) else []:
            self._merge_into(node, self.node(part, refs, depth + 1))
        for union in ("anyOf", "oneOf"):
            variants = node.pop(union, None)
            if isinstance(variants, list):
                options = [self.node(v, refs, depth + 1) for v in variants
                           if not (isinstance(v, dict) and _schema_type(v) == "null")]
                if options:
                    self._union_into(node, options)
        if "const" in node:
            const = node.pop("const")
            node.setdefault("type", _type_of_value(const))
            node["enum"] = [const]
        kind = _schema_type(node)
        if isinstance(kind, str):
            node["type"] = kind
        elif isinstance(kind, list):
            kinds = [k for k in kind if k != "null" and k in _SCHEMA_TYPES] or ["string"]
            node["type"] = kinds[0]
            if len(kinds) > 1:
                _describe(node, "may also be: " + ", ".join(str(k) for k in kinds[1:]))
        enum = node.get("enum")
        if isinstance(enum, list):
            if "type" not in node and enum:
                node["type"] = _type_of_value(enum[0])
            if not all(isinstance(v, str) for v in enum):
                node.pop("enum")
                _describe(node, "one of: " + ", ".join(json.dumps(v, ensure_ascii=False) for v in enum))
        if node.get("type") not in _SCHEMA_TYPES or node.get("type") == "null":
            node.pop("type", None)
            if "properties" in node or "additionalProperties" in node or "required" in node:
                node["type"] = "object"
            elif "items" in node:
                node["type"] = "array"
            else:
                node["type"] = "string"
        if node.get("format") not in _SCHEMA_FORMATS:
            node.pop("format", None)
        for key in _SCHEMA_DROPPED_KEYS:
            node.pop(key, None)
        if node["type"] == "object":
            properties = node.get("properties") if isinstance(node.get("properties"), dict) else {}
            node["properties"] = {name: self.node(value, refs, depth + 1) for name, value in properties.items()}
            if isinstance(node.get("required"), list):
                node["required"] = [r for r in node["required"] if isinstance(r, str) and r in node["properties"]]
                if not node["required"]:
                    del node["required"]
            else:
                node.pop("required", None)
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                node["additionalProperties"] = self.node(extra, refs, depth + 1)
        elif node["type"] == "array":
            items = node.get("items")
            if isinstance(items, list):
                items = items[0] if items else None
            node["items"] = self.node(items, refs, depth + 1) if isinstance(items, dict) else {"type": "string"}
        return node

    @staticmethod
    def _merge_into(node: Dict[str, Any], part: Dict[str, Any]) -> None:
        """``allOf``: every part's properties, requirements and descriptions together."""
        for key, value in part.items():
            if key == "properties" and isinstance(node.get("properties"), dict):
                node["properties"] = dict(value, **node["properties"])
            elif key == "required" and isinstance(node.get("required"), list):
                node["required"] = node["required"] + [r for r in value if r not in node["required"]]
            elif key == "description":
                _describe(node, value)
            else:
                node.setdefault(key, value)

    @staticmethod
    def _union_into(node: Dict[str, Any], options: List[Dict[str, Any]]) -> None:
        """``anyOf``/``oneOf`` of normalised branches, folded into ``node``."""
        if len(options) > 1 and all(o.get("type") == "object" for o in options):
            properties = {}  # type: Dict[str, Any]
            for option in options:
                for name, value in option.get("properties", {}).items():
                    known = properties.get(name)
                    if known is not None and isinstance(known.get("enum"), list) and isinstance(value.get("enum"), list):
                        known["enum"] = known["enum"] + [v for v in value["enum"] if v not in known["enum"]]
                    elif known is None:
                        properties[name] = dict(value)
            required = [r for r in options[0].get("required", []) if all(r in o.get("required", []) for o in options)]
            merged = {"type": "object", "properties": properties}  # type: Dict[str, Any]
            if required:
                merged["required"] = required
            notes = [o["description"] for o in options if isinstance(o.get("description"), str)]
            _describe(node, "one of these forms: " + "; ".join(notes) if notes else "")
            _SchemaRewrite._merge_into(node, merged)
            return
        first = options[0]
        for key, value in first.items():
            if key == "description":
                _describe(node, value)
            else:
                node.setdefault(key, value)
        for other in options[1:]:
            note = "may also be: %s" % other.get("type", "object")
            if isinstance(other.get("description"), str):
                note += " - " + other["description"]
            _describe(node, note)


# ---- requests -----------------------------------------------------------------------


def _translate_messages(messages: Any, names: ToolNames,
                        attached: Optional[List[Tuple[Dict[str, Any], ImageRef]]] = None) -> List[Dict[str, Any]]:
    """OpenAI messages -> GigaChat messages; user images are listed in ``attached``."""
    attached = attached if attached is not None else []
    _expect(messages, (list,), "messages", "an array of messages")
    if not messages:
        raise bad_request("messages must contain at least one message", "messages", "empty_array")
    out = []  # type: List[Dict[str, Any]]
    system_parts = []  # type: List[str]
    pending = {}  # type: Dict[str, Tuple[int, str]]  tool_call_id -> (index in out, function name)
    leading = True
    for i, message in enumerate(messages):
        where = "messages[%d]" % i
        _expect(message, (dict,), where, "a message object")
        role = message.get("role")
        if not isinstance(role, str):
            raise bad_request("%s.role must be a string" % where, where + ".role", "invalid_type")
        if role == "tool":
            call_id = _expect(message.get("tool_call_id"), (str,), where + ".tool_call_id", "a string")
            if call_id not in pending:
                raise bad_request("%s.tool_call_id %r does not answer a tool call of the preceding assistant "
                                  "message" % (where, call_id), where + ".tool_call_id")
            slot, name = pending.pop(call_id)  # name: already GigaChat's
            out[slot] = {"role": "function", "name": name,
                         "content": _function_result(_content_text(message.get("content"), where + ".content"))}
            continue
        if pending:
            raise bad_request("%s: tool call %s has no tool message with its result before this message"
                              % (where, ", ".join(sorted(pending))), where, "missing_tool_result")
        if role in ("system", "developer"):
            text = _content_text(message.get("content"), where + ".content")
            if leading:
                system_parts.append(text)
            else:
                out.append({"role": "user", "content": text})
            continue
        leading = False
        if role == "user":
            images = []  # type: List[ImageRef]
            user = {"role": "user", "content": _content_text(message.get("content"), where + ".content", images)}
            if len(images) > 1:
                raise bad_request("%s has %d images; GigaChat takes one image per message: send them in separate "
                                  "messages" % (where, len(images)), where + ".content", "too_many_images")
            if images:
                user["attachments"] = []  # the file id goes here once the image is uploaded
                attached.append((user, images[0]))
            out.append(user)
        elif role == "assistant":
            text = _content_text(message.get("content"), where + ".content")
            tool_calls = message.get("tool_calls")
            legacy_call = message.get("function_call")
            if tool_calls is not None:
                _expect(tool_calls, (list,), where + ".tool_calls", "an array")
            if tool_calls:
                for j, call in enumerate(tool_calls):
                    cwhere = "%s.tool_calls[%d]" % (where, j)
                    _expect(call, (dict,), cwhere, "an object")
                    function = _expect(call.get("function"), (dict,), cwhere + ".function", "an object")
                    name = names.to_gigachat(
                        _expect(function.get("name"), (str,), cwhere + ".function.name", "a string"))
                    call_id = _expect(call.get("id"), (str,), cwhere + ".id", "a string")
                    if call_id in pending:
                        raise bad_request("%s.id %r is used twice" % (cwhere, call_id), cwhere + ".id")
                    assistant = {"role": "assistant", "content": text if j == 0 else "",
                                 "function_call": {"name": name, "arguments": _parse_arguments(
                                     function.get("arguments"), cwhere + ".function.arguments")}}
                    state_id = state_id_from_call_id(call_id)
                    if state_id:
                        assistant["functions_state_id"] = state_id
                    out.append(assistant)
                    pending[call_id] = (len(out), name)
                    out.append({})  # filled by the matching tool message
            elif legacy_call is not None:
                _expect(legacy_call, (dict,), where + ".function_call", "an object")
                name = names.to_gigachat(
                    _expect(legacy_call.get("name"), (str,), where + ".function_call.name", "a string"))
                out.append({"role": "assistant", "content": text, "function_call": {
                    "name": name,
                    "arguments": _parse_arguments(legacy_call.get("arguments"), where + ".function_call.arguments")}})
            else:
                out.append({"role": "assistant", "content": text})
        elif role == "function":
            name = names.to_gigachat(_expect(message.get("name"), (str,), where + ".name", "a string"))
            out.append({"role": "function", "name": name,
                        "content": _function_result(_content_text(message.get("content"), where + ".content"))})
        else:
            raise bad_request("%s.role %r is not one of system, developer, user, assistant, tool, function"
                              % (where, role), where + ".role", "invalid_role")
    if pending:
        raise bad_request("tool call %s has no tool message with its result" % ", ".join(sorted(pending)),
                          "messages", "missing_tool_result")
    for i, message in enumerate(out):
        call = message.get("function_call")
        if call is not None and (i + 1 == len(out) or out[i + 1].get("role") != "function"):
            # A legacy call with no result in history (Aider's function edit formats keep
            # them so): GigaChat would refuse it, so it becomes what it was: text.
            note = "[called %s with %s]" % (call["name"], json.dumps(call["arguments"], ensure_ascii=False))
            out[i] = {"role": "assistant", "content": (message["content"] + "\n" if message["content"] else "") + note}
    if system_parts:
        out.insert(0, {"role": "system", "content": "\n\n".join(system_parts)})
    if not out:
        raise bad_request("messages must contain a message that is not empty", "messages", "empty_array")
    return out


def _client_tools(request: Dict[str, Any]) -> List[Tuple[Dict[str, Any], str]]:
    """The request's function definitions (``tools`` and legacy ``functions``) with their paths."""
    found = []  # type: List[Tuple[Dict[str, Any], str]]
    tools = request.get("tools")
    if tools is not None:
        _expect(tools, (list,), "tools", "an array")
        for i, tool in enumerate(tools):
            where = "tools[%d]" % i
            _expect(tool, (dict,), where, "an object")
            if tool.get("type", "function") != "function":
                raise bad_request("%s.type %r is not supported (only function tools)" % (where, tool.get("type")),
                                  where + ".type", "unsupported_tool")
            fn = _expect(tool.get("function"), (dict,), where + ".function", "an object")
            found.append((fn, where + ".function"))
    legacy = request.get("functions")
    if legacy is not None:
        _expect(legacy, (list,), "functions", "an array")
        for i, fn in enumerate(legacy):
            found.append((_expect(fn, (dict,), "functions[%d]" % i, "an object"), "functions[%d]" % i))
    for fn, where in found:
        name = _expect(fn.get("name"), (str,), where + ".name", "a string")
        if not name:
            raise bad_request("%s.name must not be empty" % where, where + ".name")
    return found


def _translate_tools(request: Dict[str, Any], tools: List[Tuple[Dict[str, Any], str]],
                     names: ToolNames) -> Tuple[List[Dict[str, Any]], Any, bool]:
    """Tools (from _client_tools) and tool_choice -> GigaChat functions, function_call, and
    whether a call is required."""
    functions = []
    client_names = []
    for fn, where in tools:
        client_names.append(fn["name"])
        out = {"name": names.to_gigachat(fn["name"])}  # type: Dict[str, Any]
        if fn.get("description") is not None:
            out["description"] = _expect(fn["description"], (str,), where + ".description", "a string")
        parameters = fn.get("parameters")
        if parameters is not None:
            _expect(parameters, (dict,), where + ".parameters", "an object")
        out["parameters"] = normalize_schema(parameters)
        functions.append(out)
    param = "tool_choice" if "tool_choice" in request else "function_call"
    choice = request.get(param)
    if not functions:
        return [], None, False
    if choice is None or choice == "auto":
        return functions, "auto", False
    if choice == "none":
        return functions, "none", False
    if choice in ("required", "any"):
        if len(functions) == 1:
            return functions, {"name": functions[0]["name"]}, False
        return functions, "auto", True  # GigaChat cannot force "some function": instructed instead
    if isinstance(choice, dict):
        if "function" in choice:
            name = _expect(choice["function"], (dict,), param + ".function", "an object").get("name")
        else:
            name = choice.get("name")
        if not isinstance(name, str) or name not in client_names:
            raise bad_request("%s names function %r, which is not among the tools" % (param, name), param)
        return functions, {"name": names.to_gigachat(name)}, False
    raise bad_request("%s must be auto, none, required or a named function" % param, param)


REQUIRED_TOOL_INSTRUCTION = "You must answer by calling one of the provided functions."
JSON_OBJECT_INSTRUCTION = ("Respond with one valid JSON object and nothing else: no prose, no Markdown, "
                           "no code fences.")
STRUCTURED_FUNCTION_DESCRIPTION = "Give the final answer to the user in this structure."


class ChatPlan:
    """What the answer side must know about one translated request (pure data).

    ``names`` maps tool names back; ``output`` is None, ``"json_schema"`` or
    ``"json_object"``; ``output_function`` is the GigaChat function that carries a
    structured answer (function mode), and ``unwrap`` the property holding it when the
    client's schema was not an object and had to be wrapped in one.  ``stop`` holds the
    client's stop sequences (emulated: GigaChat has none) and ``n`` the number of
    choices asked for (one GigaChat call each).
    """

    def __init__(self, names: Optional[ToolNames] = None, output: Optional[str] = None,
                 output_function: Optional[str] = None, unwrap: Optional[str] = None,
                 stop: Tuple[str, ...] = (), n: int = 1, legacy_functions: bool = False) -> None:
        self.legacy_functions = legacy_functions  # the client used ``functions``: answer with function_call
        self.images = []  # type: List[Tuple[Dict[str, Any], ImageRef]]  # (GigaChat message, its image)
        self.names = names or ToolNames()
        self.output = output
        self.output_function = output_function
        self.unwrap = unwrap
        self.stop = stop
        self.n = n
        self.notes = []  # type: List[str]  # what was rewritten, dropped or emulated: one DEBUG line

MAX_STOP_SEQUENCES = 4
MAX_CHOICES = 8  # n: each choice is one GigaChat call


def _stop_sequences(request: Dict[str, Any]) -> Tuple[str, ...]:
    stop = request.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    _expect(stop, (list,), "stop", "a string or an array of strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise bad_request("stop takes at most %d sequences (got %d)" % (MAX_STOP_SEQUENCES, len(stop)), "stop")
    for i, item in enumerate(stop):
        _expect(item, (str,), "stop[%d]" % i, "a string")
    return tuple(item for item in stop if item)


def find_stop(text: str, stops: Tuple[str, ...]) -> Tuple[str, Optional[str]]:
    """``text`` up to the first occurrence of any stop sequence, and the sequence found there.

    Where two sequences start at the same place, the one listed first is the one named.
    """
    found = None  # type: Optional[Tuple[int, str]]
    for stop in stops:
        position = text.find(stop)
        if position >= 0 and (found is None or position < found[0]):
            found = (position, stop)
    if found is None:
        return text, None
    return text[:found[0]], found[1]


def cut_at_stop(text: str, stops: Tuple[str, ...]) -> Tuple[str, bool]:
    """``text`` up to the first occurrence of any stop sequence, and whether one was found."""
    cut, stop = find_stop(text, stops)
    return cut, stop is not None


class StopFilter:
    """Streams text through, never emitting a byte of (or past) a stop sequence.

    Only the tail that could still be the start of a stop sequence is held back, so a
    sequence split across two upstream chunks is caught and nothing else is delayed.
    """

    def __init__(self, stops: Tuple[str, ...]) -> None:
        self.stops = stops
        self.matched = None  # type: Optional[str]  # the stop sequence that ended the text
        self._held = ""

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        text = self._held + text
        cut, self.matched = find_stop(text, self.stops)
        if self.matched is not None:
            self._held = ""
            return cut
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(text)), keep, -1):
                if text.endswith(stop[:size]):
                    keep = size
                    break
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def _add_instruction(messages: List[Dict[str, Any]], text: str) -> None:
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = (messages[0]["content"] + "\n\n" + text) if messages[0]["content"] else text
    else:
        messages.insert(0, {"role": "system", "content": text})


def _response_format(request: Dict[str, Any]) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """(kind, json_schema object) of the client's response_format."""
    value = request.get("response_format")
    if value is None:
        return None, None
    _expect(value, (dict,), "response_format", "an object")
    kind = value.get("type")
    if kind == "text":
        return None, None
    if kind == "json_object":
        return "json_object", None
    if kind == "json_schema":
        spec = _expect(value.get("json_schema"), (dict,), "response_format.json_schema", "an object")
        _expect(spec.get("schema", {}), (dict,), "response_format.json_schema.schema", "an object")
        return "json_schema", spec
    raise bad_request("response_format.type must be text, json_object or json_schema", "response_format.type")


MAX_TOKENS_LIMIT = 2 ** 31 - 1  # GigaChat's integers are 32-bit

# Chat request fields translate_chat_request reads; others are accepted and not forwarded.
_CHAT_FIELDS = frozenset((
    "model", "messages", "stream", "stream_options", "n", "stop", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "repetition_penalty", "update_interval", "profanity_check", "reasoning_effort",
    "tools", "tool_choice", "functions", "function_call", "response_format"))

REASONING_EFFORTS = {"minimal": "low", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}


def _reasoning_effort(value: Any, param: str) -> Optional[str]:
    """GigaChat's reasoning_effort for a client's effort (``param`` names the field); None for
    none or no effort: the model decides."""
    if value is None:
        return None
    _expect(value, (str,), param, "a string")
    if value.lower() == "none":
        return None
    if value.lower() not in REASONING_EFFORTS:
        raise bad_request("%s must be low, medium or high (got %r)" % (param, value), param)
    return REASONING_EFFORTS[value.lower()]


def to_gigachat_request(request: Dict[str, Any], default_model: str = DEFAULT_MODEL,
                        known_models: Tuple[str, ...] = (), structured_output: str = "function",
                        model_map: Tuple[Tuple[str, str], ...] = ()) -> Dict[str, Any]:
    """Translate an OpenAI chat-completions request body into a GigaChat v1 one (§12)."""
    return translate_chat_request(request, default_model, known_models, structured_output, model_map)[0]


def translate_chat_request(request: Dict[str, Any], default_model: str = DEFAULT_MODEL,
                           known_models: Tuple[str, ...] = (), structured_output: str = "function",
                           model_map: Tuple[Tuple[str, str], ...] = ()) -> Tuple[Dict[str, Any], ChatPlan]:
    """The GigaChat body for an OpenAI chat request, and the ChatPlan for its answer.

    ``structured_output`` is ``"function"`` (a json_schema answer is produced by forcing
    a function whose parameters are the schema) or ``"native"`` (GigaChat's own
    ``response_format``); ``model_map`` is GIGAPROXY_MODEL_MAP (see resolve_model).
    """
    _expect(request, (dict,), "body", "a JSON object")
    body = {"model": resolve_model(request.get("model"), default_model, known_models, model_map)}  # type: Dict[str, Any]
    if request.get("model") is not None:
        _expect(request["model"], (str,), "model", "a string")
    tools = _client_tools(request)
    names = ToolNames(fn["name"] for fn, _ in tools)
    plan = ChatPlan(names, legacy_functions=bool(request.get("functions")) and not request.get("tools"))
    notes = plan.notes
    for fn, _ in tools:
        if names.to_gigachat(fn["name"]) != fn["name"]:
            notes.append("tool %r sent as %s" % (fn["name"], names.to_gigachat(fn["name"])))
    ignored = sorted(key for key in request if key not in _CHAT_FIELDS)
    if ignored:
        notes.append("not forwarded: " + ", ".join(_printable(key, 40) for key in ignored[:20]))
    body["messages"] = messages = _translate_messages(request.get("messages"), names, plan.images)
    if len(plan.images) > MAX_IMAGES_PER_REQUEST:
        raise bad_request("the request has %d images; GigaChat takes at most %d per request"
                          % (len(plan.images), MAX_IMAGES_PER_REQUEST), "messages", "too_many_images")
    if plan.images and body["model"] in TEXT_ONLY_MODELS:
        raise bad_request("%s does not accept images: ask for gigachat-pro or gigachat-max (or set GIGACHAT_MODEL "
                          "to a Pro or Max model)" % body["model"], "model", "model_not_multimodal")

    stream = request.get("stream")
    if stream is not None and _expect(stream, (bool,), "stream", "a boolean"):
        body["stream"] = True
    options = request.get("stream_options")
    if options is not None:
        _expect(options, (dict,), "stream_options", "an object")
        if options.get("include_usage") is not None:
            _expect(options["include_usage"], (bool,), "stream_options.include_usage", "a boolean")

    n = _integer(request, "n", 1, MAX_CHOICES)
    if n is not None:
        if n > 1 and body.get("stream"):
            raise bad_request("n > 1 cannot be streamed: send stream false, or one request per choice", "n",
                              "unsupported_value")
        plan.n = n
        if n > 1:
            notes.append("n=%d: one GigaChat call per choice" % n)
    plan.stop = _stop_sequences(request)
    if plan.stop:
        notes.append("stop emulated")

    temperature = _number(request, "temperature", 0, 1e6)
    top_p = _number(request, "top_p", 0, 1)
    if temperature == 0:
        body["top_p"] = 0  # GigaChat rejects temperature 0; top_p 0 is its greedy decoding
        notes.append("temperature 0 sent as top_p 0")
    elif temperature is not None:
        body["temperature"] = temperature
    if top_p is not None and "top_p" not in body:
        body["top_p"] = top_p

    for key in ("max_completion_tokens", "max_tokens"):
        value = _integer(request, key, 1, MAX_TOKENS_LIMIT)
        if value is not None:
            body.setdefault("max_tokens", value)

    penalty = _number(request, "repetition_penalty", 0, 1e6, low_open=True)
    if penalty is not None:
        body["repetition_penalty"] = penalty
    interval = _number(request, "update_interval", 0, 3600)
    if interval is not None:
        body["update_interval"] = interval
    if request.get("profanity_check") is not None:
        body["profanity_check"] = _expect(request["profanity_check"], (bool,), "profanity_check", "a boolean")
    effort = _reasoning_effort(request.get("reasoning_effort"), "reasoning_effort")
    if effort is not None:
        body["reasoning_effort"] = effort

    functions, function_call, required = _translate_tools(request, tools, names)
    for fn, function in zip(tools, functions):
        if fn[0].get("parameters") is not None and function["parameters"] != fn[0]["parameters"]:
            notes.append("schema of %r rewritten" % fn[0]["name"])
    if required:
        _add_instruction(messages, REQUIRED_TOOL_INSTRUCTION)
        notes.append("tool_choice required: instructed")

    kind, spec = _response_format(request)
    plan.output = kind
    if kind == "json_schema" and function_call == "none":
        kind = "json_object"  # no function may be called, so not the answer function either
    if kind == "json_object":
        _add_instruction(messages, JSON_OBJECT_INSTRUCTION)
        plan.output = "json_object"
        notes.append("JSON mode: instructed")
    elif kind == "json_schema" and structured_output == "native":
        schema = normalize_schema(spec.get("schema"))  # type: ignore[union-attr]
        strict = bool(spec.get("strict"))  # type: ignore[union-attr]
        if strict and not schema.get("required") and schema.get("properties"):
            schema["required"] = list(schema["properties"])  # GigaChat's strict mode needs the list
        body["response_format"] = {"type": "json_schema", "schema": schema, "strict": strict}
    elif kind == "json_schema":
        assert spec is not None
        schema = spec.get("schema") or {}
        if (_schema_type(schema) or "object") != "object" or {"anyOf", "any_of", "oneOf"} & set(schema):
            plan.unwrap = "value"
            schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
        base = spec.get("name") if isinstance(spec.get("name"), str) and spec.get("name") else "structured_answer"
        function_name = names.reserve(base)
        description = spec.get("description") if isinstance(spec.get("description"), str) else ""
        functions.append({"name": function_name,
                          "description": (description + " " if description else "") + STRUCTURED_FUNCTION_DESCRIPTION,
                          "parameters": normalize_schema(schema)})
        plan.output_function = function_name
        notes.append("json_schema answered through function %s" % function_name)
        if function_call is None:
            function_call = {"name": function_name}  # the client has no tools: force the answer function
        else:
            _add_instruction(messages, "Give your final answer by calling the function %s." % function_name)
    if functions:
        body["functions"] = functions
        body["function_call"] = function_call
    return body, plan


# ---- answers ------------------------------------------------------------------------


def map_usage(usage: Any) -> Dict[str, Any]:
    """GigaChat usage -> OpenAI usage, precached_prompt_tokens as cached_tokens."""
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    prompt, completion = count("prompt_tokens"), count("completion_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": count("total_tokens") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": count("precached_prompt_tokens")},
    }


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments if arguments.strip() else "{}"  # Cline drops calls with empty arguments
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def _tool_call(function_call: Dict[str, Any], state_id: Any, fallback_id: str, names: ToolNames) -> Dict[str, Any]:
    call_id = fallback_id
    if isinstance(state_id, str) and state_id:
        canonical = canonical_uuid(state_id)
        if canonical is not None:
            call_id = _TOOL_CALL_ID_PREFIX + canonical
    return {"id": call_id, "type": "function",
            "function": {"name": names.to_client(str(function_call.get("name") or "")),
                         "arguments": _arguments_text(function_call.get("arguments"))}}


def call_arguments(function: Dict[str, Any]) -> Dict[str, Any]:
    """A chat tool call's ``arguments`` (JSON text) as the object that dialects send (Anthropic's
    ``input``, Gemini's ``args``); arguments that are no JSON object are GigaChat's fault: 502."""
    arguments = function.get("arguments")
    try:
        value = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ProxyError(502, "GigaChat called %s with arguments that are not a JSON object"
                         % (function.get("name") or "a function"), "api_error", "upstream_bad_response")
    return value


def _fallback_call_id(completion_id: str) -> str:
    return _TOOL_CALL_ID_PREFIX + completion_id.rsplit("-", 1)[-1][:24]


def _structured_content(function_call: Dict[str, Any], plan: ChatPlan) -> str:
    """The structured answer carried by the output function's arguments, as JSON text."""
    arguments = function_call.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise ProxyError(502, "GigaChat returned a structured answer that is not JSON", "api_error",
                             "upstream_bad_response")
    if plan.unwrap and isinstance(arguments, dict) and plan.unwrap in arguments:
        arguments = arguments[plan.unwrap]
    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def json_object_text(text: str) -> str:
    """Model text as one JSON object: code fences and prose around it removed.

    Text with no JSON object in it is returned as ``{"response": text}``, so the client
    always gets a parseable JSON object, as OpenAI's JSON mode promises.
    """
    stripped = text.strip()
    fence = re.match(r"^```[A-Za-z0-9_-]*\s*(.*?)\s*```$", stripped, re.S)
    if fence:
        stripped = fence.group(1)
    for candidate in (stripped, stripped[stripped.find("{"):stripped.rfind("}") + 1]):
        try:
            value = json.loads(candidate, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return candidate
    return json.dumps({"response": text}, ensure_ascii=False)


def _failed_call(function_call: Any, names: ToolNames) -> ProxyError:
    name = function_call.get("name") if isinstance(function_call, dict) else None
    what = "function %r" % names.to_client(name) if isinstance(name, str) and name else "a function call"
    return ProxyError(502, "GigaChat could not produce valid arguments for %s (finish_reason \"error\"); "
                      "retrying the request usually helps" % what, "api_error", "tool_call_failed")


def to_openai_response(giga: Dict[str, Any], model: str, completion_id: str, created: int,
                       plan: Optional[ChatPlan] = None) -> Dict[str, Any]:
    """Translate a GigaChat chat answer into an OpenAI ``chat.completion`` object."""
    plan = plan or ChatPlan()
    choices = giga.get("choices") if isinstance(giga, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ProxyError(502, "GigaChat's answer has no choices", "api_error", "upstream_bad_response")
    out_choices = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise ProxyError(502, "GigaChat's answer has a malformed choice", "api_error", "upstream_bad_response")
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = message.get("content")
        out_message = {"role": "assistant", "content": content if isinstance(content, str) else ""}  # type: Dict[str, Any]
        matched = None  # type: Optional[str]  # the stop sequence that cut the text
        upstream_finish = choice.get("finish_reason") or "stop"
        function_call = message.get("function_call")
        if upstream_finish == "error":
            raise _failed_call(function_call, plan.names)
        finish = FINISH_REASONS.get(upstream_finish, "stop")
        if finish == "tool_calls":
            finish = "stop"  # unless a call is really there (built-in functions also end so)
        if isinstance(function_call, dict) and plan.output_function and function_call.get("name") == plan.output_function:
            out_message["content"] = _structured_content(function_call, plan)
            finish = "stop"
        elif isinstance(function_call, dict):
            call = _tool_call(function_call, message.get("functions_state_id"), _fallback_call_id(completion_id),
                              plan.names)
            out_message["content"] = None
            if plan.legacy_functions:
                out_message["function_call"] = call["function"]
                finish = "function_call"
            else:
                out_message["tool_calls"] = [call]
                finish = "tool_calls"
        elif plan.output == "json_object" and finish == "stop":
            out_message["content"] = json_object_text(out_message["content"])
        elif plan.stop:
            out_message["content"], matched = find_stop(out_message["content"], plan.stop)
            finish = "stop" if matched else finish
        if isinstance(message.get("reasoning_content"), str):
            out_message["reasoning_content"] = message["reasoning_content"]
        index = choice.get("index")
        out_choices.append({"index": index if isinstance(index, int) else position, "message": out_message,
                            "logprobs": None, "finish_reason": finish})
        if matched is not None:
            out_choices[-1]["stop_reason"] = matched  # vLLM's field; the Anthropic dialect reports it
    response = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": out_choices,
        "usage": map_usage(giga.get("usage")),
    }  # type: Dict[str, Any]
    if isinstance(giga.get("model"), str):
        response["system_fingerprint"] = giga["model"]
    return response


# ---- token counting -----------------------------------------------------------------


def gigachat_texts(body: Dict[str, Any]) -> List[str]:
    """What GigaChat's ``POST /tokens/count`` should count for a translated chat body:
    each message's text, each function call and each function definition (as JSON)."""
    texts = []  # type: List[str]
    for message in body.get("messages") or ():
        texts.append(message.get("content") or "")
        if message.get("function_call"):
            texts.append(json.dumps(message["function_call"], ensure_ascii=False))
    texts.extend(json.dumps(function, ensure_ascii=False) for function in body.get("functions") or ())
    return [text for text in texts if text]


def count_input(chat: Dict[str, Any], default_model: str = DEFAULT_MODEL, known_models: Tuple[str, ...] = (),
                structured_output: str = "function", model_map: Tuple[Tuple[str, str], ...] = (),
                ) -> Tuple[str, List[str]]:
    """What counting a chat request's tokens takes: (GigaChat model, the texts of its translation)."""
    chat = {key: value for key, value in chat.items() if key not in ("stream", "stream_options", "n")}
    body, _ = translate_chat_request(chat, default_model, known_models, structured_output, model_map)
    return body["model"], gigachat_texts(body)


def count_tokens_total(answer: Any) -> int:
    """The tokens in a GigaChat /tokens/count answer (one entry per text), summed."""
    if not isinstance(answer, list) or not all(isinstance(item, dict) and isinstance(item.get("tokens"), int)
                                               for item in answer):
        raise ProxyError(502, "GigaChat's token count has an unexpected shape", "api_error", "upstream_bad_response")
    return sum(item["tokens"] for item in answer)


def estimate_tokens(texts: List[str]) -> int:
    """A rough token count (four characters a token) for when GigaChat cannot count."""
    return sum((len(text) + 3) // 4 for text in texts)


# ---- several choices, embeddings ---------------------------------------------------------


def merge_choices(responses: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Several one-choice answers (n > 1, or several prompts) as one answer, usage summed."""
    merged = dict(responses[0])
    merged["choices"] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "prompt_tokens_details": {"cached_tokens": 0}}
    for index, response in enumerate(responses):
        for choice in response["choices"]:
            merged["choices"].append(dict(choice, index=index))
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            usage[key] += response["usage"][key]
        usage["prompt_tokens_details"]["cached_tokens"] += response["usage"]["prompt_tokens_details"]["cached_tokens"]
    merged["usage"] = usage
    return merged


EMBEDDING_MODELS = ("Embeddings", "Embeddings-2", "EmbeddingsGigaR", "GigaEmbeddings-3B-2025-09")
EMBEDDINGS_BATCH_TEXTS = 90  # texts per GigaChat call (the limit LangChain's GigaChat client uses)
EMBEDDINGS_BATCH_CHARS = 1000000


def resolve_embeddings_model(name: Any, default: str) -> str:
    """GigaChat embedder names pass through; anything else (text-embedding-3-small) is ``default``."""
    if isinstance(name, str) and name.strip():
        lowered = name.strip().lower()
        for candidate in EMBEDDING_MODELS:
            if candidate.lower() == lowered:
                return candidate
        if lowered.startswith(("embeddings", "gigaembeddings")):
            return name.strip()
    return default


# ---- token ids back to text: tiktoken vocabularies ---------------------------------------
# OpenAI's embeddings API also takes each text as token ids, and LangChain's OpenAIEmbeddings
# sends nothing else by default (tiktoken's cl100k_base).  GigaChat embeds text, so the ids
# are decoded with the client's vocabulary when its file is on this machine: in
# GIGAPROXY_TIKTOKEN_DIR, else in tiktoken's own cache (where tiktoken names each file by the
# SHA-1 of its URL).  Nothing is downloaded; a file is used only when its SHA-256 is the one
# tiktoken itself checks (tiktoken_ext/openai_public.py).

TIKTOKEN_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/%s.tiktoken"
TIKTOKEN_SHA256 = {  # the expected_hash of each file in tiktoken_ext/openai_public.py
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
}
TIKTOKEN_SPECIAL_TOKENS = {  # not in the files; tiktoken adds them the same way
    "cl100k_base": {100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>",
                    100260: "<|fim_suffix|>", 100276: "<|endofprompt|>"},
    "o200k_base": {199999: "<|endoftext|>", 200018: "<|endofprompt|>"},
    "p50k_base": {50256: "<|endoftext|>"},
    "r50k_base": {50256: "<|endoftext|>"},
}
# The vocabulary a client tokenized with, by the model name it sends (tiktoken/model.py,
# first match wins).  Any other name, a GigaChat one included, means cl100k_base: every
# current OpenAI embedding model uses it, and LangChain falls back to it for a name
# tiktoken does not know.
TIKTOKEN_MODEL_PREFIXES = (
    ("text-embedding-", "cl100k_base"),  # text-embedding-ada-002, -3-small, -3-large
    ("text-similarity-", "r50k_base"), ("text-search-", "r50k_base"), ("code-search-", "r50k_base"),
    ("gpt-4o", "o200k_base"), ("chatgpt-4o", "o200k_base"), ("gpt-4.1", "o200k_base"), ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"), ("o1", "o200k_base"), ("o3", "o200k_base"), ("o4-mini", "o200k_base"),
    ("text-davinci-001", "r50k_base"), ("text-davinci-", "p50k_base"), ("code-davinci-", "p50k_base"),
    ("code-cushman-", "p50k_base"),
)
TIKTOKEN_FALLBACK_ENCODING = "cl100k_base"
TIKTOKEN_MAX_FILE_BYTES = 16 * 1024 * 1024  # o200k_base, the largest, is 3.6 MB

# Vocabularies are loaded once per process and shared by every thread: _TIKTOKEN_LOCK guards
# loading (so a burst of first requests parses a file once) and the two tables below; a
# loaded vocabulary is read without the lock (a dict lookup, atomic), never changed again.
_TIKTOKEN_LOCK = threading.Lock()
_TIKTOKEN_LOADED = {}  # type: Dict[Tuple[str, str], Dict[int, bytes]]  # (directory, encoding) -> id -> bytes
_TIKTOKEN_WARNED = set()  # type: set  # what was already logged: a rejected file (path, size, mtime), a missing one


def tiktoken_cache_dir() -> str:
    """tiktoken's default cache directory, ``<tempdir>/data-gym-cache`` (tiktoken/load.py)."""
    import tempfile  # a few ms, and the temporary directory is probed: only when needed

    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def tiktoken_encoding_for(model: Any) -> str:
    """The tiktoken encoding a client that names ``model`` tokenized its input with."""
    name = model.strip().lower() if isinstance(model, str) else ""
    for prefix, encoding in TIKTOKEN_MODEL_PREFIXES:
        if name.startswith(prefix):
            return encoding
    return TIKTOKEN_FALLBACK_ENCODING


def tiktoken_files(encoding: str, directory: str) -> List[str]:
    """Where ``encoding``'s file may be in ``directory``: as downloaded, then as tiktoken caches it."""
    import hashlib

    cache_name = hashlib.sha1((TIKTOKEN_BLOB_URL % encoding).encode("ascii")).hexdigest()
    return [os.path.join(directory, encoding + ".tiktoken"), os.path.join(directory, cache_name)]


def parse_tiktoken_file(data: bytes) -> Dict[int, bytes]:
    """A ``.tiktoken`` file (a line ``<token bytes in base64> <rank>`` per token) as rank -> bytes."""
    vocabulary = {}  # type: Dict[int, bytes]
    for number, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            vocabulary[int(rank)] = binascii.a2b_base64(token)  # b64decode is slower; the hash was checked
        except ValueError:  # binascii.Error is one too
            raise ValueError("line %d is not '<base64 token> <rank>'" % number)
    return vocabulary


def tiktoken_vocabulary(encoding: str, directory: Optional[str]) -> Optional[Dict[int, bytes]]:
    """``encoding``'s table (token id -> bytes) from a verified file in ``directory``, or None.

    ``directory`` None is tiktoken's default cache.  The first call per directory and
    encoding reads, verifies and parses the file (cl100k_base: 1.7 MB, 0.1-0.3 s); later
    calls return the same table.  A file whose SHA-256 differs from tiktoken's is skipped
    with a warning naming it, logged once, as is a vocabulary that is nowhere to be found.
    """
    directory = directory or tiktoken_cache_dir()
    key = (directory, encoding)
    vocabulary = _TIKTOKEN_LOADED.get(key)
    if vocabulary is not None:
        return vocabulary
    with _TIKTOKEN_LOCK:
        vocabulary = _TIKTOKEN_LOADED.get(key)
        if vocabulary is None:
            vocabulary = _load_tiktoken_vocabulary(encoding, directory)
            if vocabulary is not None:
                _TIKTOKEN_LOADED[key] = vocabulary
        return vocabulary


def _load_tiktoken_vocabulary(encoding: str, directory: str) -> Optional[Dict[int, bytes]]:
    import hashlib

    paths = tiktoken_files(encoding, directory)
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        signature = (path, stat.st_size, stat.st_mtime)
        if signature in _TIKTOKEN_WARNED:
            continue
        started = time.monotonic()
        problem = None
        try:
            if stat.st_size > TIKTOKEN_MAX_FILE_BYTES:
                raise ValueError("%d bytes, more than any tiktoken vocabulary" % stat.st_size)
            with open(path, "rb") as fh:
                data = fh.read(TIKTOKEN_MAX_FILE_BYTES + 1)
            if hashlib.sha256(data).hexdigest() != TIKTOKEN_SHA256[encoding]:
                raise ValueError("its SHA-256 is not that of tiktoken's %s file (a partial download, or "
                                 "another file)" % encoding)
            vocabulary = parse_tiktoken_file(data)
        except (OSError, ValueError) as exc:
            problem = exc
        if problem is not None:
            _TIKTOKEN_WARNED.add(signature)
            log.warning("ignoring the tiktoken vocabulary %s: %s", path, problem)
            continue
        for rank, text in TIKTOKEN_SPECIAL_TOKENS[encoding].items():
            vocabulary[rank] = text.encode("utf-8")
        log.info("loaded the tiktoken %s vocabulary from %s (%d tokens, %.0f ms)",
                 encoding, path, len(vocabulary), (time.monotonic() - started) * 1000)
        return vocabulary
    if ("missing", directory, encoding) not in _TIKTOKEN_WARNED:
        _TIKTOKEN_WARNED.add(("missing", directory, encoding))
        log.warning("embeddings input as token ids cannot be decoded: no tiktoken %s vocabulary in %s "
                    "(looked for %s); put %s.tiktoken in GIGAPROXY_TIKTOKEN_DIR to decode them",
                    encoding, directory, " and ".join(os.path.basename(p) for p in paths), encoding)
    return None


def token_ids_to_texts(value: List[Any], model: Any, directory: Optional[str]) -> List[str]:
    """Embeddings ``input`` as token ids (one text, or a list of texts) decoded to texts.

    Like tiktoken's ``decode``, bytes that are not UTF-8 (a character split between two of
    the chunks LangChain cuts a long text into) become U+FFFD.
    """
    encoding = tiktoken_encoding_for(model)
    vocabulary = tiktoken_vocabulary(encoding, directory)
    if vocabulary is None:
        raise bad_request("input is token ids (tiktoken %s) and this proxy has no %s vocabulary to decode them: "
                          "send the text instead (LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False)), "
                          "or put tiktoken's %s.tiktoken file in the proxy's GIGAPROXY_TIKTOKEN_DIR"
                          % (encoding, encoding, encoding), "input", "unsupported_value")
    nested = isinstance(value[0], list)
    texts = []
    for i, ids in enumerate(value if nested else [value]):
        try:
            data = b"".join([vocabulary[token] for token in ids])
        except KeyError:
            j = next(j for j, token in enumerate(ids) if token not in vocabulary)
            raise bad_request("input%s[%d] is token id %d, which tiktoken's %s does not have"
                              % ("[%d]" % i if nested else "", j, ids[j], encoding), "input")
        texts.append(data.decode("utf-8", "replace"))
    return texts


def _is_token_ids(value: Any) -> bool:
    """True for a non-empty array of token ids, or a non-empty array of arrays of them."""
    def all_ints(items: Any) -> bool:
        return isinstance(items, list) and all(type(v) is int for v in items)

    return isinstance(value, list) and bool(value) and (all_ints(value) or all(all_ints(v) for v in value))


def embeddings_request(request: Any, default_model: str,
                       tiktoken_dir: Optional[str] = None) -> Tuple[List[str], str, str, Optional[int]]:
    """Validate an embeddings request: (texts, GigaChat model, encoding_format, dimensions).

    Token ids are decoded with a tiktoken vocabulary from ``tiktoken_dir`` (None: tiktoken's cache).
    """
    _expect(request, (dict,), "body", "a JSON object")
    if request.get("model") is not None:
        _expect(request["model"], (str,), "model", "a string")
    value = request.get("input")
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        texts = list(value)
    elif _is_token_ids(value):
        texts = token_ids_to_texts(value, request.get("model"), tiktoken_dir)
    else:
        raise bad_request("input must be a string, a non-empty array of strings, an array of token ids or an "
                          "array of arrays of token ids", "input", "invalid_type")
    for i, text in enumerate(texts):
        if not text:
            raise bad_request("input[%d] is empty; GigaChat cannot embed an empty string" % i, "input")
    encoding = request.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise bad_request("encoding_format must be float or base64", "encoding_format")
    dimensions = request.get("dimensions")
    if dimensions is not None:
        _expect(dimensions, (int,), "dimensions", "an integer")
        if dimensions < 1:
            raise bad_request("dimensions must be at least 1", "dimensions")
    return texts, resolve_embeddings_model(request.get("model"), default_model), encoding, dimensions


def embedding_batches(texts: List[str]) -> List[List[str]]:
    """Consecutive slices of ``texts`` that GigaChat accepts in one call."""
    batches, current, size = [], [], 0  # type: List[List[str]], List[str], int
    for text in texts:
        if current and (len(current) >= EMBEDDINGS_BATCH_TEXTS or size + len(text) > EMBEDDINGS_BATCH_CHARS):
            batches.append(current)
            current, size = [], 0
        current.append(text)
        size += len(text)
    if current:
        batches.append(current)
    return batches


def parse_embeddings_answer(answer: Any, expected: int) -> Tuple[List[List[float]], int]:
    """The vectors (in input order) and summed prompt tokens of one GigaChat embeddings answer."""
    items = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        raise ProxyError(502, "GigaChat's embeddings answer does not have one vector per input", "api_error",
                         "upstream_bad_response")
    ordered = sorted(items, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    vectors, tokens = [], 0
    for item in ordered:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, list) or not all(isinstance(x, (int, float)) for x in vector):
            raise ProxyError(502, "GigaChat's embeddings answer has a malformed vector", "api_error",
                             "upstream_bad_response")
        vectors.append(vector)
        usage = item.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            tokens += usage["prompt_tokens"]
    return vectors, tokens


def to_embeddings_response(vectors: List[List[float]], model: str, tokens: int, encoding: str) -> Dict[str, Any]:
    """OpenAI's embeddings list; base64 is little-endian float32, as the openai SDK decodes it."""
    data = []
    for index, vector in enumerate(vectors):
        if encoding == "base64":
            packed = struct.pack("<%df" % len(vector), *vector)
            value = base64.b64encode(packed).decode("ascii")  # type: Any
        else:
            value = vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# ==== Streaming ====
# iter_sse_data() reads GigaChat's SSE; StreamTranslator turns each event into OpenAI
# chunks (I/O-free, fed one event at a time); sse_event() encodes one chunk for the wire.

MAX_SSE_LINE = 16 * 1024 * 1024


def iter_sse_data(read: Callable[[], bytes]) -> Iterator[str]:
    """Yield the ``data`` of each server-sent event; comments and other fields are skipped.

    ``read()`` returns the next piece of the body as it arrives (b"" at its end); pieces
    may split lines anywhere.  Each event is yielded as soon as its blank line is in,
    before anything more is read.  A line of MAX_SSE_LINE bytes or more is refused.
    """
    data_lines = []  # type: List[str]
    partial = []  # type: List[bytes]  # the start of a line whose end has not arrived
    partial_size = 0
    while True:
        block = read()
        if not block:  # the end: what is left is the last line
            lines = [b"".join(partial)] if partial else []
        elif b"\n" not in block:  # more of a line whose end has not arrived
            partial.append(block)
            partial_size += len(block)
            lines = []
        else:
            lines = block.split(b"\n")
            if partial:  # the first line continues what earlier blocks ended with
                lines[0] = b"".join(partial) + lines[0]
            tail = lines.pop()
            partial, partial_size = ([tail] if tail else []), len(tail)
        longest = len(lines[0]) if lines else 0  # the one line that can carry earlier blocks
        if len(block) >= MAX_SSE_LINE and lines:  # only then can a line within the block be too long
            longest = max(len(line) for line in lines)
        if partial_size >= MAX_SSE_LINE or longest >= MAX_SSE_LINE:
            raise ProxyError(502, "GigaChat sent an event larger than %d bytes" % MAX_SSE_LINE,
                             "api_error", "upstream_bad_response")
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data_lines:
                    yield "\n".join(data_lines)
                    data_lines = []
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                if value.startswith(b" "):
                    value = value[1:]
                data_lines.append(value.decode("utf-8", "replace"))
        if not block:
            if data_lines:
                yield "\n".join(data_lines)
            return


def sse_event(obj: Any, event: str = "") -> bytes:
    """One server-sent event: ``data:`` with ``obj`` as JSON (a str is sent as it is),
    after an ``event:`` line when ``event`` names it."""
    data = (obj if isinstance(obj, str) else compact_json(obj)).encode("utf-8")
    return (b"event: " + event.encode("ascii") + b"\ndata: " if event else b"data: ") + data + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def openai_error(exc: ProxyError) -> Tuple[int, Dict[str, Any], Dict[str, str]]:
    """(status, body, headers) of an error in OpenAI's shape: the chat dialect's, the default."""
    return exc.status, exc.body(), exc.headers


class ChatStream:
    """The OpenAI chat stream as it is: each chunk one event, ``[DONE]`` at the end.

    Every dialect's stream adapter has this interface, fed what StreamTranslator makes:
    ``feed(chunk)`` returns the events for one chat chunk, ``finish()`` the closing
    events, ``fail(error)`` the events that report an error after the stream began (it
    then ends); an event is ``(name, data)``, name "" for a plain ``data:`` event, and
    ``encode(events)`` makes the bytes for the wire.
    """

    def feed(self, chunk: Dict[str, Any]) -> List[Tuple[str, Any]]:
        return [("", chunk)]

    def finish(self) -> List[Tuple[str, Any]]:
        return [("", "[DONE]")]

    def fail(self, error: ProxyError) -> List[Tuple[str, Any]]:
        return [("", error.body())]  # no [DONE]: a cut stream never looks complete

    def encode(self, events: List[Tuple[str, Any]]) -> bytes:
        return b"".join(sse_event(data, name) for name, data in events)


class StreamTranslator:
    """GigaChat stream events in, OpenAI ``chat.completion.chunk`` dicts out.

    GigaChat sends the role in its first delta, text deltas, and a last event with an
    empty ``content``, the ``finish_reason`` and ``usage``; a function call arrives whole
    in one delta together with ``finish_reason: "function_call"`` (gigachat-api.md §6).
    ``feed(event)`` returns the chunks to write now: the role goes out with the first
    delta, a tool call as one ``tool_calls`` delta (index, id, type, name, full arguments)
    and then a separate finish chunk, the order Cline and Roo need.  With a ChatPlan for
    structured output, the answer function's arguments become one content delta; in
    JSON-object mode the text is held until the end and sent as one cleaned-up object.
    ``finish()`` is called after ``[DONE]``: it returns the usage chunk (``choices: []``)
    when the client asked for ``stream_options.include_usage``, and raises ProxyError
    when the stream ended without a finish reason, so a cut stream never looks complete.
    A GigaChat ``finish_reason: "error"`` (unusable function arguments) raises too.
    """

    def __init__(self, model: str, completion_id: str, created: int, include_usage: bool = False,
                 plan: Optional[ChatPlan] = None) -> None:
        self.model = model
        self.completion_id = completion_id
        self.created = created
        self.include_usage = include_usage
        self.plan = plan or ChatPlan()
        self.finish_reason = None  # type: Optional[str]
        self.usage = None  # type: Optional[Dict[str, Any]]
        self.system_fingerprint = None  # type: Optional[str]
        self._role_sent = False
        self._held = []  # type: List[str]  # JSON-object mode: text kept until the end
        self._stop = StopFilter(self.plan.stop) if self.plan.stop else None

    def _chunk(self, delta: Dict[str, Any], finish_reason: Optional[str]) -> Dict[str, Any]:
        chunk = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }  # type: Dict[str, Any]
        if self.system_fingerprint:
            chunk["system_fingerprint"] = self.system_fingerprint
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def feed(self, event: Any) -> List[Dict[str, Any]]:
        choices = event.get("choices") if isinstance(event, dict) else None
        if not isinstance(choices, list):
            raise ProxyError(502, "GigaChat sent a stream event without choices: %s"
                             % _excerpt(json.dumps(event, ensure_ascii=False).encode("utf-8")),
                             "api_error", "upstream_bad_response")
        if self.finish_reason is not None:
            return []  # nothing may follow the finish chunk
        if self.system_fingerprint is None and isinstance(event.get("model"), str):
            self.system_fingerprint = event["model"]
        if event.get("usage") is not None:
            self.usage = map_usage(event["usage"])
        chunks = []
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            finish = choice.get("finish_reason")
            function_call = delta.get("function_call")
            if finish == "error":
                raise _failed_call(function_call, self.plan.names)
            out = {}  # type: Dict[str, Any]
            if not self._role_sent:
                out["role"] = "assistant"
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                out["reasoning_content"] = reasoning
            content = delta.get("content")
            if isinstance(function_call, dict) and function_call.get("name") == self.plan.output_function:
                out["content"] = _structured_content(function_call, self.plan)
                finish = "stop"
            elif isinstance(function_call, dict):
                if isinstance(content, str) and content.strip():
                    out["content"] = content
                call = _tool_call(function_call, delta.get("functions_state_id"),
                                  _fallback_call_id(self.completion_id), self.plan.names)
                if self.plan.legacy_functions:
                    out["function_call"] = call["function"]
                else:
                    call["index"] = 0
                    out["tool_calls"] = [call]
                finish = "function_call"
            else:
                if finish == "function_call":
                    finish = "stop"  # a built-in function ran; there is no call for the client
                if self.plan.output == "json_object" and isinstance(content, str):
                    self._held.append(content)
                    if finish:
                        text = "".join(self._held)
                        out["content"] = json_object_text(text) if finish == "stop" else text
                elif isinstance(content, str):
                    if self._stop is not None:
                        content = self._stop.feed(content)
                        if self._stop.stopped:
                            finish = "stop"
                        elif finish:
                            content += self._stop.flush()
                    if content or "role" in out:
                        out["content"] = content
            if out:
                self._role_sent = True
                chunks.append(self._chunk(out, None))
            if finish:
                self.finish_reason = FINISH_REASONS.get(finish, "stop")
                if finish == "function_call" and self.plan.legacy_functions:
                    self.finish_reason = "function_call"
                chunks.append(self._chunk({}, self.finish_reason))
                if self.stop_sequence is not None:  # vLLM's field; the Anthropic dialect reports it
                    chunks[-1]["choices"][0]["stop_reason"] = self.stop_sequence
                break
        return chunks

    @property
    def stop_sequence(self) -> Optional[str]:
        """The stop sequence that ended the answer, if one did."""
        return self._stop.matched if self._stop is not None else None

    @property
    def stopped_early(self) -> bool:
        """A stop sequence ended the answer: the rest of the upstream stream is not wanted."""
        return self.stop_sequence is not None

    def finish(self) -> List[Dict[str, Any]]:
        if self.finish_reason is None:
            raise ProxyError(502, "GigaChat's stream ended before the answer was complete",
                             "api_error", "upstream_stream_incomplete")
        if not self.include_usage or (self.usage is None and self.stopped_early):
            return []  # cut before GigaChat reported usage: no numbers are made up
        usage_chunk = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": self.usage or map_usage(None),
        }  # type: Dict[str, Any]
        if self.system_fingerprint:
            usage_chunk["system_fingerprint"] = self.system_fingerprint
        return [usage_chunk]


# ==== Dialects ====
# APIs other than OpenAI chat, each an adapter around the chat core: its request becomes a chat
# request, chat answers and chunks become its shapes.  Pure, as Translation: no I/O, ids are parameters
# (the one exception, the Responses store, says so).

# ---- OpenAI legacy completions (Continue's autocomplete) --------------------------------

COMPLETION_INSTRUCTION = ("Continue the user's text exactly where it stops. Reply with the continuation only: "
                          "do not repeat the text, do not comment, do not add code fences.")
INFILL_INSTRUCTION = ("The user's text contains one <FILL> marker. Reply with only the text that replaces "
                      "<FILL>: no explanation, no code fences, no repetition of the text around it.")
_COMPLETION_FIELDS = ("model", "max_tokens", "temperature", "top_p", "stop", "stream", "stream_options", "n",
                      "repetition_penalty", "update_interval", "profanity_check")


class LegacyCompletion:
    """How a legacy ``/completions`` request was turned into chat requests (one per prompt)."""

    def __init__(self, prompts: List[str], echo: bool) -> None:
        self.prompts = prompts
        self.echo = echo


def completion_to_chat(request: Any) -> Tuple[List[Dict[str, Any]], LegacyCompletion]:
    """A legacy completions request as chat requests: one per prompt, text or fill-in-the-middle."""
    _expect(request, (dict,), "body", "a JSON object")
    prompt = request.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise bad_request("prompt as token ids is not supported: GigaChat takes text", "prompt", "unsupported_value")
    else:
        raise bad_request("prompt must be a string or a non-empty array of strings", "prompt", "invalid_type")
    suffix = request.get("suffix")
    if suffix is not None:
        _expect(suffix, (str,), "suffix", "a string")
    echo = request.get("echo")
    if echo is not None:
        _expect(echo, (bool,), "echo", "a boolean")
    if len(prompts) > 1 and request.get("stream"):
        raise bad_request("several prompts cannot be streamed: send one prompt per request", "prompt",
                          "unsupported_value")
    base = {key: request[key] for key in _COMPLETION_FIELDS if key in request}
    chats = []
    for text in prompts:
        chat = dict(base)
        if suffix:
            chat["messages"] = [{"role": "system", "content": INFILL_INSTRUCTION},
                                {"role": "user", "content": text + "<FILL>" + suffix}]
        else:
            chat["messages"] = [{"role": "system", "content": COMPLETION_INSTRUCTION},
                                {"role": "user", "content": text}]
        chats.append(chat)
    return chats, LegacyCompletion(prompts, bool(echo))


def to_completion_response(chat: Dict[str, Any], legacy: LegacyCompletion, prompt_index: int = 0) -> Dict[str, Any]:
    """A chat.completion answer as a legacy ``text_completion`` one."""
    prefix = legacy.prompts[prompt_index] if legacy.echo else ""
    return {
        "id": "cmpl-" + chat["id"].split("-", 1)[-1],
        "object": "text_completion",
        "created": chat["created"],
        "model": chat["model"],
        "choices": [{"text": prefix + (c["message"].get("content") or ""), "index": c["index"], "logprobs": None,
                     "finish_reason": c["finish_reason"]} for c in chat["choices"]],
        "usage": chat["usage"],
    }


def to_completion_answer(response: Dict[str, Any], legacy: LegacyCompletion, n: int) -> Dict[str, Any]:
    """The merged chat answer to a legacy completion's prompts (``n`` choices each) as one text_completion."""
    by_prompt = [dict(response, choices=[c for c in response["choices"] if c["index"] // n == i])
                 for i in range(len(legacy.prompts))]
    completion = to_completion_response(by_prompt[0], legacy, 0)
    for i, part in enumerate(by_prompt[1:], 1):
        completion["choices"].extend(to_completion_response(part, legacy, i)["choices"])
    return completion


class CompletionStream(ChatStream):
    """The legacy completions stream adapter (see ChatStream): chat.completion.chunk dicts
    in, ``text_completion`` chunks out, then ``[DONE]``."""

    def __init__(self, legacy: LegacyCompletion) -> None:
        self.legacy = legacy
        self._echoed = not legacy.echo

    def feed(self, chunk: Dict[str, Any]) -> List[Tuple[str, Any]]:
        out = {"id": "cmpl-" + chunk["id"].split("-", 1)[-1], "object": "text_completion",
               "created": chunk["created"], "model": chunk["model"]}  # type: Dict[str, Any]
        if not chunk["choices"]:  # the usage chunk
            out["choices"] = []
            out["usage"] = chunk.get("usage")
            return [("", out)]
        choice = chunk["choices"][0]
        text = choice["delta"].get("content") or ""
        if not self._echoed:
            text, self._echoed = self.legacy.prompts[0] + text, True
        if not text and not choice["finish_reason"]:
            return []  # a role-only chunk has nothing to say here
        out["choices"] = [{"text": text, "index": 0, "logprobs": None, "finish_reason": choice["finish_reason"]}]
        return [("", out)]


# ---- Anthropic Messages (Claude Code, the anthropic SDK) -------------------------------

# The SDK types require a thinking block's signature.  GigaChat signs nothing, and a thinking
# block a client sends back is dropped, so any fixed text serves.
ANTHROPIC_THINKING_SIGNATURE = "gigaproxy"
# chat finish_reason -> Anthropic stop_reason (a matched stop sequence is "stop_sequence").
ANTHROPIC_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                          "function_call": "tool_use", "content_filter": "refusal"}
# output_config.effort -> chat reasoning_effort; thinking.budget_tokens below a bound -> that effort.
ANTHROPIC_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "xhigh"}
ANTHROPIC_THINKING_BUDGETS = ((4096, "low"), (16384, "medium"))  # larger budgets: high
# HTTP status -> Anthropic error type; GigaChat's 503 is answered as Anthropic's 529.
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    502: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
# Content blocks that only Anthropic's servers can act on (earlier thinking, server tool calls and
# their results): dropped from history.  Other "*_tool_result" types are server results too.
_ANTHROPIC_DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking", "server_tool_use", "mcp_tool_use",
                                       "container_upload"})
# Claude Code's first system block: billing metadata for Anthropic's servers, not an
# instruction; its text changes with every release, which would defeat GigaChat's prompt cache.
_ANTHROPIC_BILLING_HEADER = "x-anthropic-billing-header:"


def _anthropic_blocks(content: Any, where: str) -> List[Dict[str, Any]]:
    _expect(content, (list,), where, "a string or an array of content blocks")
    for j, block in enumerate(content):
        _expect(block, (dict,), "%s[%d]" % (where, j), "a content block object")
    return content


def _anthropic_dropped(kind: Any) -> bool:
    return kind in _ANTHROPIC_DROPPED_BLOCKS or (
        isinstance(kind, str) and kind.endswith("_tool_result") and kind != "tool_result")


def _anthropic_image_url(source: Any, where: str) -> str:
    """An image block's source as the URL of a chat ``image_url`` part (the core checks it)."""
    _expect(source, (dict,), where, "an object")
    kind = source.get("type")
    if kind == "base64":
        media = _expect(source.get("media_type"), (str,), where + ".media_type", "a string")
        return "data:%s;base64,%s" % (media, _expect(source.get("data"), (str,), where + ".data", "a string"))
    if kind == "url":
        return _expect(source.get("url"), (str,), where + ".url", "a string")
    raise bad_request("%s.type must be base64 or url (got %r); files from Anthropic's Files API are not "
                      "available through GigaChat" % (where, kind), where + ".type", "unsupported_content")


def _anthropic_document(block: Dict[str, Any], where: str) -> List[Dict[str, Any]]:
    """A document block as chat parts: its title and context, then its text (or content blocks)."""
    parts = [{"type": "text", "text": block[key]} for key in ("title", "context")
             if isinstance(block.get(key), str) and block[key]]
    source = _expect(block.get("source"), (dict,), where + ".source", "an object")
    kind = source.get("type")
    if kind == "text":
        parts.append({"type": "text", "text": _expect(source.get("data"), (str,), where + ".source.data",
                                                      "a string")})
    elif kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            parts.append({"type": "text", "text": inner})
        else:
            for j, item in enumerate(_anthropic_blocks(inner, where + ".source.content")):
                parts.extend(_anthropic_parts(item, "%s.source.content[%d]" % (where, j)))
    else:
        raise bad_request("%s.source.type %r is not supported: gigaproxy gives GigaChat text and images only, "
                          "so send the document as text (a source of type text or content)" % (where, kind),
                          where + ".source.type", "unsupported_content")
    return parts


def _anthropic_parts(block: Dict[str, Any], where: str) -> List[Dict[str, Any]]:
    """One content block (not tool_use / tool_result) as chat content parts; [] when dropped."""
    kind = block.get("type")
    if kind == "text":
        return [{"type": "text", "text": _expect(block.get("text"), (str,), where + ".text", "a string")}]
    if kind == "image":
        return [{"type": "image_url", "image_url": {"url": _anthropic_image_url(block.get("source"),
                                                                                   where + ".source")}}]
    if kind == "document":
        return _anthropic_document(block, where)
    if kind == "search_result":
        parts = [{"type": "text", "text": block[key]} for key in ("title", "source")
                 if isinstance(block.get(key), str) and block[key]]
        for j, item in enumerate(_anthropic_blocks(block.get("content", []), where + ".content")):
            parts.extend(_anthropic_parts(item, "%s.content[%d]" % (where, j)))
        return parts
    if kind == "tool_reference":  # a client-side tool search loaded this deferred tool
        name = _expect(block.get("tool_name"), (str,), where + ".tool_name", "a string")
        return [{"type": "text", "text": "Tool %s is available." % name}]
    if _anthropic_dropped(kind):
        log.debug("Anthropic %s block at %s dropped: only Anthropic's servers can use it", kind, where)
        return []
    raise bad_request("%s.type %r is not a content block gigaproxy can pass to GigaChat here" % (where, kind),
                      where + ".type", "unsupported_content")


def anthropic_tool_id(call_id: str) -> str:
    """The Anthropic ``toolu_`` id for a chat tool call id (GigaChat's state id stays inside)."""
    if call_id.startswith(_TOOL_CALL_ID_PREFIX):
        return ANTHROPIC_TOOL_ID_PREFIX + call_id[len(_TOOL_CALL_ID_PREFIX):]
    return call_id


def _anthropic_tool_result(block: Dict[str, Any], where: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """A tool_result block as a chat tool message, and the image parts it carried (with a label)."""
    tool_id = _expect(block.get("tool_use_id"), (str,), where + ".tool_use_id", "a string")
    content = block.get("content")
    parts = []  # type: List[Dict[str, Any]]
    if isinstance(content, str):
        parts.append({"type": "text", "text": content})
    elif content is not None:
        for j, item in enumerate(_anthropic_blocks(content, where + ".content")):
            parts.extend(_anthropic_parts(item, "%s.content[%d]" % (where, j)))
    text, labelled = _tool_result_parts(tool_id, parts)
    is_error = block.get("is_error")
    if is_error is not None and _expect(is_error, (bool,), where + ".is_error", "a boolean"):
        text = json.dumps({"error": text}, ensure_ascii=False)
    return {"role": "tool", "tool_call_id": tool_id, "content": text}, labelled


def _anthropic_user(content: Any, where: str) -> List[Dict[str, Any]]:
    """A user turn as chat messages: its tool results first, then its text and images."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results = []  # type: List[Dict[str, Any]]
    result_parts = []  # type: List[Dict[str, Any]]
    parts = []  # type: List[Dict[str, Any]]
    for j, block in enumerate(_anthropic_blocks(content, where)):
        bwhere = "%s[%d]" % (where, j)
        if block.get("type") == "tool_result":
            message, images = _anthropic_tool_result(block, bwhere)
            results.append(message)
            result_parts.extend(images)
        elif block.get("type") == "tool_use":
            raise bad_request("%s: tool_use blocks belong in assistant messages" % bwhere, bwhere + ".type",
                              "unsupported_content")
        else:
            parts.extend(_anthropic_parts(block, bwhere))
    if results and not (parts or result_parts):
        return results
    return results + _one_image_each(result_parts + parts)


def _anthropic_assistant(content: Any, where: str) -> Dict[str, Any]:
    """An assistant turn as one chat message: its text, and its tool_use blocks as tool_calls."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts = []  # type: List[Dict[str, Any]]
    calls = []  # type: List[Dict[str, Any]]
    for j, block in enumerate(_anthropic_blocks(content, where)):
        bwhere = "%s[%d]" % (where, j)
        kind = block.get("type")
        if kind == "tool_use":
            tool_id = _expect(block.get("id"), (str,), bwhere + ".id", "a string")
            name = _expect(block.get("name"), (str,), bwhere + ".name", "a string")
            arguments = _expect(block.get("input", {}), (dict,), bwhere + ".input", "an object")
            calls.append({"id": tool_id, "type": "function",
                          "function": {"name": name, "arguments": arguments}})
        elif kind == "text" or _anthropic_dropped(kind):
            texts.extend(_anthropic_parts(block, bwhere))
        else:
            raise bad_request("%s.type %r is not accepted in assistant messages (text, tool_use, thinking)"
                              % (bwhere, kind), bwhere + ".type", "unsupported_content")
    message = {"role": "assistant", "content": texts}  # type: Dict[str, Any]
    if calls:
        message["tool_calls"] = calls
    return message


def _anthropic_system(content: Any, where: str) -> List[str]:
    """A system prompt (a string or text blocks) as its texts; Claude Code's billing block dropped."""
    if isinstance(content, str):
        return [content] if content else []
    texts = []
    for j, block in enumerate(_anthropic_blocks(content, where)):
        bwhere = "%s[%d]" % (where, j)
        if block.get("type") != "text":
            raise bad_request("%s.type must be text (got %r)" % (bwhere, block.get("type")), bwhere + ".type",
                              "unsupported_content")
        text = _expect(block.get("text"), (str,), bwhere + ".text", "a string")
        if text and not text.startswith(_ANTHROPIC_BILLING_HEADER):
            texts.append(text)
    return texts


def _anthropic_tools(tools: Any) -> List[Dict[str, Any]]:
    """Custom tools as chat function tools; Anthropic's own tools (a ``type`` of theirs) left out."""
    _expect(tools, (list,), "tools", "an array")
    out = []
    for i, tool in enumerate(tools):
        where = "tools[%d]" % i
        _expect(tool, (dict,), where, "an object")
        if tool.get("type") not in (None, "custom"):
            log.debug("Anthropic tool %r (type %r) left out: it runs on Anthropic's servers or has no schema",
                      tool.get("name"), tool.get("type"))
            continue
        name = _expect(tool.get("name"), (str,), where + ".name", "a string")
        if not name:
            raise bad_request("%s.name must not be empty" % where, where + ".name")
        function = {"name": name}  # type: Dict[str, Any]
        if tool.get("description") is not None:
            function["description"] = _expect(tool["description"], (str,), where + ".description", "a string")
        if tool.get("input_schema") is not None:
            function["parameters"] = _expect(tool["input_schema"], (dict,), where + ".input_schema", "an object")
        out.append({"type": "function", "function": function})  # defer_loading tools too: offered at once
    return out


def _anthropic_tool_choice(choice: Any, chat: Dict[str, Any]) -> None:
    _expect(choice, (dict,), "tool_choice", "an object")
    kind = choice.get("type")
    if kind in ("auto", "none"):
        chat["tool_choice"] = kind
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "tool":
        name = _expect(choice.get("name"), (str,), "tool_choice.name", "a string")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise bad_request("tool_choice.type must be auto, any, tool or none (got %r)" % (kind,), "tool_choice.type")
    disable = choice.get("disable_parallel_tool_use")
    if disable is not None:
        chat["parallel_tool_calls"] = not _expect(disable, (bool,), "tool_choice.disable_parallel_tool_use",
                                                  "a boolean")


def _anthropic_stop_sequences(value: Any) -> List[str]:
    # The chat core emulates stop sequences (GigaChat has none) and takes as many as OpenAI does.
    _expect(value, (list,), "stop_sequences", "an array of strings")
    if len(value) > MAX_STOP_SEQUENCES:
        raise bad_request("stop_sequences takes at most %d sequences here (got %d): gigaproxy emulates them, "
                          "GigaChat has none" % (MAX_STOP_SEQUENCES, len(value)), "stop_sequences")
    for i, item in enumerate(value):
        _expect(item, (str,), "stop_sequences[%d]" % i, "a string")
    return value


def _anthropic_effort(request: Dict[str, Any]) -> Optional[str]:
    """The chat reasoning_effort for ``thinking`` and ``output_config.effort`` (None: GigaChat's default)."""
    effort = None
    config = request.get("output_config")
    if config is not None and _expect(config, (dict,), "output_config", "an object").get("effort") is not None:
        value = _expect(config["effort"], (str,), "output_config.effort", "a string")
        if value not in ANTHROPIC_EFFORTS:
            raise bad_request("output_config.effort must be low, medium, high or max (got %r)" % value,
                              "output_config.effort")
        effort = ANTHROPIC_EFFORTS[value]
    thinking = request.get("thinking")
    if thinking is None:
        return effort
    kind = _expect(thinking, (dict,), "thinking", "an object").get("type")
    if kind == "disabled":
        return "none"
    if kind == "adaptive":
        return effort
    if kind != "enabled":
        raise bad_request("thinking.type must be enabled, adaptive or disabled (got %r)" % (kind,), "thinking.type")
    budget = _expect(thinking.get("budget_tokens"), (int,), "thinking.budget_tokens", "an integer")
    if effort is not None:
        return effort
    for bound, name in ANTHROPIC_THINKING_BUDGETS:
        if budget < bound:
            return name
    return "high"


def anthropic_shows_thinking(request: Dict[str, Any]) -> bool:
    """Whether the answer carries thinking blocks: thinking asked for, and not ``display: "omitted"``."""
    thinking = request.get("thinking")
    return (isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
            and thinking.get("display") != "omitted")


def _anthropic_output_format(request: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Structured outputs (``output_config.format``, earlier ``output_format``) as a chat response_format."""
    config = request.get("output_config")
    spec = config.get("format") if isinstance(config, dict) else None
    param = "output_config.format"
    if spec is None:
        spec, param = request.get("output_format"), "output_format"
    if spec is None:
        return None
    _expect(spec, (dict,), param, "an object")
    if spec.get("type") != "json_schema":
        raise bad_request("%s.type must be json_schema (got %r)" % (param, spec.get("type")), param + ".type")
    schema = _expect(spec.get("schema"), (dict,), param + ".schema", "an object")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def anthropic_to_chat(request: Any, require_max_tokens: bool = True) -> Dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat request, for translate_chat_request.

    ``system`` (a string or text blocks; Claude Code's billing block dropped) and every
    ``role: "system"`` entry of ``messages`` (Claude Code sends them mid-conversation)
    make one leading system message, the only one GigaChat takes.  A user turn's
    ``tool_result`` blocks become tool messages (an error as ``{"error": text}``), its
    text and images user messages (one image each: GigaChat's rule; a tool result's
    images follow the results); an assistant turn's ``tool_use`` blocks become its
    tool_calls (several: the core's parallel calls); thinking blocks are dropped.  Tools of a ``type`` other than custom are left out;
    ``max_tokens`` (required unless ``require_max_tokens`` is false, as for count_tokens)
    is clamped to what GigaChat takes; ``thinking`` and ``output_config.effort`` become
    ``reasoning_effort``; ``top_k``, ``metadata``, ``service_tier``, ``container``,
    ``context_management`` and unknown fields are ignored.  The model name is left for
    the core to resolve.  A streamed request asks for usage, which message_delta reports.
    """
    _expect(request, (dict,), "body", "a JSON object")
    chat = {key: request[key] for key in ("model", "temperature", "top_p", "stream") if key in request}
    source = _expect(request.get("messages"), (list,), "messages", "an array of messages")
    if not source:
        raise bad_request("messages must contain at least one message", "messages", "empty_array")
    system = _anthropic_system(request["system"], "system") if request.get("system") is not None else []
    messages = []  # type: List[Dict[str, Any]]
    for i, message in enumerate(source):
        where = "messages[%d]" % i
        role = _expect(message, (dict,), where, "a message object").get("role")
        content = message.get("content")
        if role == "system":  # GigaChat takes one system message, first: these join it
            system.extend(_anthropic_system(content, where + ".content"))
        elif role == "user":
            messages.extend(_anthropic_user(content, where + ".content"))
        elif role == "assistant":
            messages.append(_anthropic_assistant(content, where + ".content"))
        else:
            raise bad_request("%s.role must be user or assistant (got %r)" % (where, role), where + ".role",
                              "invalid_role")
    chat["messages"] = ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + messages

    max_tokens = request.get("max_tokens")
    if max_tokens is None and require_max_tokens:
        raise bad_request("max_tokens is required", "max_tokens", "missing_required_field")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        chat["max_tokens"] = min(max_tokens, MAX_TOKENS_LIMIT)  # Claude Code asks for 32000; huge is not wrong
    elif max_tokens is not None:
        chat["max_tokens"] = max_tokens  # the core names what is wrong with it
    if request.get("stop_sequences") is not None:
        chat["stop"] = _anthropic_stop_sequences(request["stop_sequences"])
    if request.get("tools") is not None:
        chat["tools"] = _anthropic_tools(request["tools"])
    if request.get("tool_choice") is not None:
        _anthropic_tool_choice(request["tool_choice"], chat)
    effort = _anthropic_effort(request)
    if effort is not None:
        chat["reasoning_effort"] = effort
    output_format = _anthropic_output_format(request)
    if output_format is not None:
        chat["response_format"] = output_format
    if request.get("stream") is True:
        chat["stream_options"] = {"include_usage": True}
    return chat


def anthropic_usage(usage: Any) -> Dict[str, int]:
    """Chat usage as Anthropic's (GigaChat reports no cache writes, and cached reads are not separable)."""
    usage = usage if isinstance(usage, dict) else {}
    return {"input_tokens": usage.get("prompt_tokens") or 0, "output_tokens": usage.get("completion_tokens") or 0,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def _anthropic_stop(finish_reason: Any, stop_sequence: Any) -> Tuple[str, Optional[str]]:
    """(stop_reason, stop_sequence) for a chat choice's finish_reason and matched stop sequence."""
    if isinstance(stop_sequence, str):
        return "stop_sequence", stop_sequence
    return ANTHROPIC_STOP_REASONS.get(finish_reason, "end_turn"), None


def chat_to_anthropic(chat: Dict[str, Any], model: str, message_id: str,
                      show_thinking: bool = True) -> Dict[str, Any]:
    """A ``chat.completion`` (from to_openai_response) as an Anthropic ``message``.

    Blocks in Anthropic's order: thinking (when GigaChat reasoned and ``show_thinking``),
    text, tool_use (ids ``toolu_`` + what follows ``call_``, so GigaChat's state id comes
    back with the tool_result).  ``model`` is the name the client asked for.
    """
    choice = chat["choices"][0]
    message = choice.get("message") or {}
    content = []  # type: List[Dict[str, Any]]
    reasoning = message.get("reasoning_content")
    if show_thinking and isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ANTHROPIC_THINKING_SIGNATURE})
    if isinstance(message.get("content"), str) and message["content"]:
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        content.append({"type": "tool_use", "id": anthropic_tool_id(call["id"]), "name": call["function"]["name"],
                        "input": call_arguments(call["function"])})
    stop_reason, stop_sequence = _anthropic_stop(choice.get("finish_reason"), choice.get("stop_reason"))
    return {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": anthropic_usage(chat.get("usage"))}


class AnthropicStream(ChatStream):
    """The Anthropic stream adapter (see ChatStream): chat.completion.chunk dicts in,
    Anthropic's named events out.

    Each method returns ``(event name, data)`` pairs to write now; ``encode()`` writes
    each with its ``event:`` line.  The order is the official one: ``message_start``;
    for each content block ``content_block_start``, its deltas (``thinking_delta`` then
    ``signature_delta``, ``text_delta``, ``input_json_delta`` pieces that concatenate to
    the tool input), ``content_block_stop``; then ``message_delta`` (stop_reason,
    stop_sequence, usage) and ``message_stop``.  A block closes when a delta of another
    kind (or another tool call) arrives, so blocks never interleave.  ``start()`` may be
    called early (the first ``feed()`` calls it otherwise); ``ping()`` keeps a quiet
    stream alive; ``finish()`` closes after the last chunk (the usage chunk included);
    ``fail()`` reports a failure after the stream began (``event: error``) and ends it.
    GigaChat reports usage only at the end, so ``message_start`` carries
    ``input_tokens`` as given (0 unless counted) and ``message_delta`` the real numbers.
    """

    def __init__(self, model: str, message_id: str, show_thinking: bool = True, input_tokens: int = 0) -> None:
        self.model = model
        self.message_id = message_id
        self.show_thinking = show_thinking
        self.input_tokens = input_tokens
        self.stop_reason = None  # type: Optional[str]
        self.stop_sequence = None  # type: Optional[str]
        self.usage = None  # type: Optional[Dict[str, Any]]
        self._started = False
        self._closed = False
        self._index = -1  # the content block index last opened
        self._block = None  # type: Optional[str]  # the open block's type
        self._call = None  # type: Any  # the chat index of the tool call in the open block

    def start(self) -> List[Tuple[str, Any]]:
        if self._started:
            return []
        self._started = True
        usage = {"input_tokens": self.input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        return [("message_start", {"type": "message_start", "message": {
            "id": self.message_id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}})]

    def ping(self) -> List[Tuple[str, Any]]:
        return [] if self._closed else self.start() + [("ping", {"type": "ping"})]

    def _close_block(self) -> List[Tuple[str, Any]]:
        if self._block is None:
            return []
        events = []  # type: List[Tuple[str, Any]]
        if self._block == "thinking":
            events.append(self._delta({"type": "signature_delta", "signature": ANTHROPIC_THINKING_SIGNATURE}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._block = self._call = None
        return events

    def _open_block(self, block: Dict[str, Any]) -> List[Tuple[str, Any]]:
        events = self._close_block()
        self._index += 1
        self._block = block["type"]
        events.append(("content_block_start", {"type": "content_block_start", "index": self._index,
                                               "content_block": block}))
        return events

    def _delta(self, delta: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        return ("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def feed(self, chunk: Dict[str, Any]) -> List[Tuple[str, Any]]:
        if self._closed:
            return []
        events = self.start()
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if self.show_thinking and isinstance(reasoning, str) and reasoning:
                if self._block != "thinking":
                    events += self._open_block({"type": "thinking", "thinking": "", "signature": ""})
                events.append(self._delta({"type": "thinking_delta", "thinking": reasoning}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block != "text":
                    events += self._open_block({"type": "text", "text": ""})
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                if self._block != "tool_use" or call.get("index", 0) != self._call:
                    tool_id = call.get("id") or "%s_%d" % (self.message_id, self._index + 1)  # not from us
                    events += self._open_block({"type": "tool_use", "id": anthropic_tool_id(tool_id),
                                                "name": function.get("name") or "", "input": {}})
                    self._call = call.get("index", 0)
                if function.get("arguments"):
                    events.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self.stop_reason, self.stop_sequence = _anthropic_stop(choice["finish_reason"],
                                                                       choice.get("stop_reason"))
        return events

    def finish(self) -> List[Tuple[str, Any]]:
        if self._closed:
            return []
        events = self.start() + self._close_block()
        self._closed = True
        usage = anthropic_usage(self.usage)
        if self.usage is None:
            del usage["input_tokens"]  # not known: message_start's number stands
        events.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": self.stop_reason or "end_turn", "stop_sequence": self.stop_sequence}, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def fail(self, error: ProxyError) -> List[Tuple[str, Any]]:
        if self._closed:
            return []
        self._closed = True
        return [("error", anthropic_error(error)[1])]


def anthropic_error(exc: ProxyError) -> Tuple[int, Dict[str, Any]]:
    """The HTTP status and Anthropic error body for a ProxyError (GigaChat's 503 is a 529)."""
    status = 529 if exc.status == 503 else exc.status
    kind = ANTHROPIC_ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": exc.message}}


def anthropic_model(model: Dict[str, Any]) -> Dict[str, Any]:
    """One model (``id``, ``created`` Unix time as the proxy lists it) in Anthropic's shape."""
    created = model.get("created") if isinstance(model.get("created"), int) else 0
    return {"type": "model", "id": model["id"], "display_name": model["id"],
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)), "lifecycle": "active"}


def anthropic_models_list(models: List[Dict[str, Any]], limit: Any = None, after_id: Any = None,
                          before_id: Any = None) -> Dict[str, Any]:
    """Anthropic's model list page: all models unless ``limit`` (1..1000, as text or a number) is given."""
    items = [anthropic_model(m) for m in models]
    ids = [item["id"] for item in items]
    for param, value in (("after_id", after_id), ("before_id", before_id)):
        if value is not None and value not in ids:
            raise ProxyError(404, "%s %r is not a listed model" % (param, value), "invalid_request_error",
                             "model_not_found", param)
    start = ids.index(after_id) + 1 if after_id is not None else 0
    items = items[start:ids.index(before_id)] if before_id is not None else items[start:]
    has_more = False
    if limit is not None:
        text = str(limit) if isinstance(limit, int) and not isinstance(limit, bool) else limit
        if not (isinstance(text, str) and _DIGITS.match(text) and 1 <= int(text) <= 1000):
            raise bad_request("limit must be a whole number from 1 to 1000", "limit")
        count = int(text)
        has_more = len(items) > count
        items = items[-count:] if before_id is not None else items[:count]  # the page next to before_id
    return {"data": items, "has_more": has_more, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None}


def anthropic_count_input(request: Any, default_model: str = DEFAULT_MODEL, known_models: Tuple[str, ...] = (),
                          structured_output: str = "function", model_map: Tuple[Tuple[str, str], ...] = (),
                          ) -> Tuple[str, List[str]]:
    """A count_tokens request as (GigaChat model, texts for GigaChat's /tokens/count)."""
    return count_input(anthropic_to_chat(request, require_max_tokens=False), default_model, known_models,
                       structured_output, model_map)


# ---- Google Gemini ----
# The Gemini API (generateContent and friends) as Gemini CLI and the google-genai SDKs speak it.  Google's
# JSON parser takes camelCase and snake_case field names (its own curl examples use both), so both are read.

GEMINI_ACTIONS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents")
GEMINI_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "RESOURCE_EXHAUSTED", 403: "PERMISSION_DENIED",
    404: "NOT_FOUND", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # other statuses: INVALID_ARGUMENT below 500, INTERNAL from 500
GEMINI_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY",
                         "tool_calls": "STOP", "function_call": "STOP"}
# thinkingBudget -> reasoning effort: Google's own OpenAI-compatible API read backwards (its reasoning_effort
# low is a budget of 1024 tokens, medium 8192, high 24576).  0 turns reasoning off; -1 (dynamic) leaves it
# to GigaChat.
GEMINI_THINKING_BUDGETS = ((1024, "low"), (8192, "medium"))
GEMINI_THINKING_LEVELS = ("minimal", "low", "medium", "high")
GEMINI_CHAT_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]
GEMINI_EMBEDDING_METHODS = ["embedContent", "batchEmbedContents"]
GEMINI_OUTPUT_TOKEN_LIMIT = 8192  # GigaChat publishes none; a figure no client will be refused at
_GEMINI_PATH = re.compile(r"(?:/v1beta|/v1)?/models(?:/([^/:]+)(?::([A-Za-z]+))?)?/?\Z")
_CAMEL_HUMP = re.compile(r"([A-Z])")


def gemini_path(path: str) -> Optional[Tuple[str, str]]:
    """(model, method) of a Gemini API path, or None for any other path.

    ``/v1beta/models/gemini-2.5-pro:streamGenerateContent`` -> ``("gemini-2.5-pro",
    "streamGenerateContent")``; ``/v1/models/x`` -> ``("x", "")``; ``/models`` -> ``("", "")``.
    The ``/v1beta`` or ``/v1`` prefix is optional; the query string must already be cut off.
    """
    match = _GEMINI_PATH.match(urllib.parse.unquote(path))
    if match is None:
        return None
    return match.group(1) or "", match.group(2) or ""


def _gemini_field(obj: Dict[str, Any], name: str) -> Any:
    """``obj[name]`` (camelCase), or the same field spelled in snake_case."""
    value = obj.get(name)
    if value is None:
        value = obj.get(_CAMEL_HUMP.sub(r"_\1", name).lower())
    return value


def _gemini_list(value: Any, param: str) -> List[Any]:
    """A repeated field: an array, or one object standing alone (Google's parser takes that too)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return _expect(value, (list,), param, "an array")


def _gemini_parts(content: Any, where: str) -> List[Tuple[str, Dict[str, Any]]]:
    """A Content's parts with their paths; thought parts (earlier turns' reasoning) are dropped."""
    _expect(content, (dict,), where, "a Content object")
    parts = []
    for j, part in enumerate(_gemini_list(_gemini_field(content, "parts"), where + ".parts")):
        path = "%s.parts[%d]" % (where, j)
        if not _expect(part, (dict,), path, "a Part object").get("thought"):
            parts.append((path, part))
    return parts


def _gemini_text(part: Dict[str, Any], path: str) -> Optional[str]:
    text = _gemini_field(part, "text")
    return None if text is None else _expect(text, (str,), path + ".text", "a string")


def _gemini_base64(data: str) -> str:
    """Standard, padded base64: Google also takes the URL-safe alphabet and missing padding."""
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    return data + "=" * (-len(data) % 4)


def _gemini_media(part: Dict[str, Any], path: str) -> Optional[Dict[str, Any]]:
    """An ``inlineData`` / ``fileData`` part as a chat content part: images as ``image_url`` (the
    chat path checks them, uploads them and refuses URLs unless fetching is allowed), text files as text."""
    inline = _gemini_field(part, "inlineData")
    blob = inline if inline is not None else _gemini_field(part, "fileData")
    if blob is None:
        return None
    path += ".inlineData" if inline is not None else ".fileData"
    _expect(blob, (dict,), path, "an object")
    mime = _gemini_field(blob, "mimeType")
    if mime is None and inline is None:
        mime = "image/"  # a file by URL with no type: taken for an image, which is all a URL can be here
    mime = _expect(mime, (str,), path + ".mimeType", "a string").lower()
    if inline is None and mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": _expect(
            _gemini_field(blob, "fileUri"), (str,), path + ".fileUri", "a string")}}
    if inline is not None and mime.startswith(("image/", "text/")):
        data = _gemini_base64(_expect(_gemini_field(blob, "data"), (str,), path + ".data", "a base64 string"))
        if mime.startswith("image/"):
            return {"type": "image_url", "image_url": {"url": "data:%s;base64,%s" % (mime, data)}}
        try:
            return {"type": "text", "text": base64.b64decode(data, validate=True).decode("utf-8")}
        except (binascii.Error, ValueError):
            raise bad_request("%s.data is not base64-encoded UTF-8 text" % path, path + ".data", "invalid_value")
    raise bad_request("%s.mimeType %s is not supported: GigaChat reads text and images (PNG, JPEG, TIFF, BMP)%s"
                      % (path, mime, "" if inline is not None else "; a file by URL must be an image"),
                      path + ".mimeType", "unsupported_content")


def _gemini_text_only(content: Any, where: str, what: str) -> List[str]:
    """The texts of a Content whose parts must all be text (``what`` names it in the error)."""
    texts = []
    for path, part in _gemini_parts(content, where):
        text = _gemini_text(part, path)
        if text is None:
            raise bad_request("%s: %s takes text parts only" % (path, what), path, "unsupported_content")
        texts.append(text)
    return texts


def _gemini_system(value: Any) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return "\n".join(_gemini_text_only(value, "systemInstruction", "a system instruction"))


def _gemini_model_turn(parts: List[Tuple[str, Dict[str, Any]]]) -> Tuple[Optional[Dict[str, Any]],
                                                                          List[Dict[str, Any]]]:
    """A ``model`` turn as an assistant message (None when nothing is left of it) and its calls."""
    texts, calls, tool_calls = [], [], []  # type: List[str], List[Dict[str, Any]], List[Dict[str, Any]]
    for path, part in parts:
        text = _gemini_text(part, path)
        call = _gemini_field(part, "functionCall")
        if text is not None:
            texts.append(text)  # pieces of one answer (a streamed one is echoed back in pieces): joined as they are
        elif call is not None:
            path += ".functionCall"
            _expect(call, (dict,), path, "a FunctionCall object")
            name = _expect(_gemini_field(call, "name"), (str,), path + ".name", "a string")
            args = _gemini_field(call, "args")
            call_id = _gemini_field(call, "id")
            if call_id is not None:
                _expect(call_id, (str,), path + ".id", "a string")
            # Our ids (``call_<functions_state_id>``) are kept for the chat path to read the state id from;
            # any other id (Gemini CLI's ``write_file_<ms>_0``) or none: the call's path stands in for it.
            ours = state_id_from_call_id(call_id) and all(c["id"] != call_id for c in calls)
            calls.append({"id": call_id, "name": name, "path": path, "chat_id": call_id if ours else path,
                          "answered": False})
            tool_calls.append({"id": calls[-1]["chat_id"], "type": "function", "function": {
                "name": name, "arguments": _expect(args if args is not None else {}, (dict,), path + ".args",
                                                   "an object")}})
        elif _gemini_field(part, "functionResponse") is not None:
            raise bad_request("%s: a functionResponse belongs in a user turn" % path, path, "invalid_value")
        else:
            log.debug("Gemini request: %s left out (GigaChat's history holds the model's text and calls)", path)
    if not "".join(texts) and not calls:
        return None, calls
    message = {"role": "assistant", "content": "".join(texts)}  # type: Dict[str, Any]
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message, calls


def _gemini_tool_result(response: Any, path: str, calls: List[Dict[str, Any]]) -> Dict[str, Any]:
    """A ``functionResponse`` as the chat path's tool message for the call it answers: the open call
    with the same id, else the first open call with the same name."""
    _expect(response, (dict,), path, "a FunctionResponse object")
    name = _gemini_field(response, "name")
    if name is not None:
        _expect(name, (str,), path + ".name", "a string")
    response_id = _gemini_field(response, "id")
    open_calls = [call for call in calls if not call["answered"]]
    match = next((c for c in open_calls if response_id and c["id"] == response_id), None) \
        or next((c for c in open_calls if c["name"] == name), None)
    if match is None:
        raise bad_request("%s (%s) answers no open functionCall of the model turn before it" % (path, name),
                          path, "unmatched_tool_result")
    match["answered"] = True
    result = _gemini_field(response, "response")
    if _gemini_field(response, "parts"):
        log.debug("Gemini request: %s.parts left out (GigaChat takes a function's result as JSON)", path)
    return {"role": "tool", "tool_call_id": match["chat_id"], "content": json.dumps(
        _expect(result if result is not None else {}, (dict,), path + ".response", "an object"), ensure_ascii=False)}


def _gemini_all_answered(calls: List[Dict[str, Any]]) -> None:
    for call in calls:
        if not call["answered"]:
            raise bad_request("%s (%s) has no functionResponse in the user turn after it" % (call["path"], call["name"]),
                              call["path"], "missing_tool_result")


def _gemini_messages(contents: Any) -> List[Dict[str, Any]]:
    """``contents`` as chat messages: ``model`` turns as assistant messages with their calls, ``user``
    turns as tool messages (for their functionResponse parts) followed by a user message.

    Model turns in a row are one answer (google-genai's chat history keeps a streamed answer
    as one model turn per chunk): they become one assistant message.
    """
    messages = []  # type: List[Dict[str, Any]]
    calls = []  # type: List[Dict[str, Any]]  # the last model turn's calls, each answered once
    answer = None  # type: Optional[Dict[str, Any]]  # the assistant message model turns in a row go into
    for i, content in enumerate(_gemini_list(contents, "contents")):
        where = "contents[%d]" % i
        parts = _gemini_parts(content, where)
        role = _gemini_field(content, "role") or "user"
        if role == "model":
            _gemini_all_answered(calls)
            message, calls = _gemini_model_turn(parts)
            if message is not None and answer is not None:
                answer["content"] += message.pop("content")
                answer.update(message)
            elif message is not None:
                messages.append(message)
                answer = message
            continue
        answer = None
        if role not in ("user", "function", "tool"):
            raise bad_request("%s.role must be user or model (got %r)" % (where, role), where + ".role", "invalid_role")
        user = []  # type: List[Dict[str, Any]]
        for path, part in parts:
            response = _gemini_field(part, "functionResponse")
            text = _gemini_text(part, path)
            if response is not None:
                messages.append(_gemini_tool_result(response, path + ".functionResponse", calls))
            elif text is not None:
                user.append({"type": "text", "text": text})
            elif _gemini_field(part, "functionCall") is not None:
                raise bad_request("%s: a functionCall belongs in a model turn" % path, path, "invalid_value")
            else:
                media = _gemini_media(part, path)
                if media is not None:
                    user.append(media)
                else:
                    log.debug("Gemini request: %s left out (no text, image or function response in it)", path)
        if user:
            _gemini_all_answered(calls)
            messages.append({"role": "user", "content": user})
    _gemini_all_answered(calls)
    return messages


def _gemini_tools(request: Dict[str, Any]) -> List[Dict[str, Any]]:
    """``tools[].functionDeclarations`` as chat tools; Google's built-in tools are left out."""
    tools = []
    for i, tool in enumerate(_gemini_list(_gemini_field(request, "tools"), "tools")):
        where = "tools[%d]" % i
        _expect(tool, (dict,), where, "a Tool object")
        for j, declaration in enumerate(_gemini_list(_gemini_field(tool, "functionDeclarations"),
                                                     where + ".functionDeclarations")):
            path = "%s.functionDeclarations[%d]" % (where, j)
            _expect(declaration, (dict,), path, "a FunctionDeclaration object")
            function = {"name": _expect(_gemini_field(declaration, "name"), (str,), path + ".name", "a string")}
            description = _gemini_field(declaration, "description")
            if description is not None:
                function["description"] = _expect(description, (str,), path + ".description", "a string")
            for key in ("parametersJsonSchema", "parameters"):  # JSON Schema, or Google's OpenAPI subset
                schema = _gemini_field(declaration, key)
                if schema is not None:
                    function["parameters"] = _expect(schema, (dict,), "%s.%s" % (path, key), "a schema object")
                    break
            tools.append({"type": "function", "function": function})
        builtin = sorted(key for key in tool if key not in ("functionDeclarations", "function_declarations"))
        if builtin:
            log.debug("Gemini request: %s: %s left out (GigaChat cannot run Google's built-in tools)",
                      where, ", ".join(builtin))
    return tools


def _gemini_tool_choice(request: Dict[str, Any], tools: List[Dict[str, Any]]) -> Tuple[Any, List[Dict[str, Any]]]:
    """``toolConfig.functionCallingConfig`` as the chat ``tool_choice`` (None: auto) and the tools it allows."""
    config = _gemini_field(request, "toolConfig")
    calling = _gemini_field(_expect(config, (dict,), "toolConfig", "an object"), "functionCallingConfig") \
        if config is not None else None
    if calling is None:
        return None, tools
    where = "toolConfig.functionCallingConfig"
    _expect(calling, (dict,), where, "an object")
    mode = _expect(_gemini_field(calling, "mode") or "AUTO", (str,), where + ".mode", "a string").upper()
    if mode in ("AUTO", "MODE_UNSPECIFIED", "VALIDATED"):  # VALIDATED: GigaChat has no constrained decoding
        return None, tools
    if mode == "NONE":
        return "none", tools
    if mode != "ANY":
        raise bad_request("%s.mode must be AUTO, ANY, NONE or VALIDATED (got %r)" % (where, mode), where + ".mode")
    allowed = _gemini_field(calling, "allowedFunctionNames")
    if not allowed:
        return "required", tools
    declared = [tool["function"]["name"] for tool in tools]
    for k, name in enumerate(_expect(allowed, (list,), where + ".allowedFunctionNames", "an array of names")):
        if name not in declared:
            raise bad_request("%s.allowedFunctionNames[%d] %r is not among the functionDeclarations"
                              % (where, k, name), "%s.allowedFunctionNames[%d]" % (where, k))
    if len(set(allowed)) == 1:
        return {"type": "function", "function": {"name": allowed[0]}}, tools
    return "required", [tool for tool in tools if tool["function"]["name"] in allowed]


def _gemini_reasoning(thinking: Any) -> Optional[str]:
    """``thinkingConfig`` as a chat ``reasoning_effort`` (None: GigaChat's default)."""
    where = "generationConfig.thinkingConfig"
    _expect(thinking, (dict,), where, "an object")
    level = _gemini_field(thinking, "thinkingLevel")
    budget = _gemini_field(thinking, "thinkingBudget")
    if level is not None:
        level = _expect(level, (str,), where + ".thinkingLevel", "a string").lower()
        if level in GEMINI_THINKING_LEVELS:
            return level
        if level != "thinking_level_unspecified":
            raise bad_request("%s.thinkingLevel must be MINIMAL, LOW, MEDIUM or HIGH (got %r)" % (where, level),
                              where + ".thinkingLevel")
    elif budget is not None:
        _expect(budget, (int,), where + ".thinkingBudget", "an integer")
        if budget == 0:
            return "none"
        if budget > 0:
            return next((effort for limit, effort in GEMINI_THINKING_BUDGETS if budget <= limit), "high")
    return None


def _gemini_generation(config: Any, chat: Dict[str, Any]) -> None:
    """``generationConfig`` into the chat request; what GigaChat has no use for is ignored."""
    if config is None:
        return
    where = "generationConfig"
    _expect(config, (dict,), where, "an object")
    for key, chat_key, what in (("temperature", "temperature", (int, float)), ("topP", "top_p", (int, float)),
                                ("maxOutputTokens", "max_tokens", (int,)), ("candidateCount", "n", (int,))):
        value = _gemini_field(config, key)
        if value is not None:  # the chat path checks the ranges
            chat[chat_key] = _expect(value, what, "%s.%s" % (where, key), "a number" if float in what else "an integer")
    stops = _gemini_field(config, "stopSequences")
    if stops is not None:
        for k, stop in enumerate(_expect(stops, (list,), where + ".stopSequences", "an array of strings")):
            _expect(stop, (str,), "%s.stopSequences[%d]" % (where, k), "a string")
        stops = list(dict.fromkeys(stop for stop in stops if stop))
        if len(stops) > MAX_STOP_SEQUENCES:  # Google takes 5; the chat path, OpenAI's 4
            raise bad_request("%s.stopSequences: gigaproxy emulates at most %d stop sequences (got %d)"
                              % (where, MAX_STOP_SEQUENCES, len(stops)), where + ".stopSequences")
        if stops:
            chat["stop"] = stops
    mime = _gemini_field(config, "responseMimeType")
    if mime is not None:
        mime = _expect(mime, (str,), where + ".responseMimeType", "a string").lower()
        if mime not in ("text/plain", "application/json"):
            raise bad_request("%s.responseMimeType must be text/plain or application/json (got %r)" % (where, mime),
                              where + ".responseMimeType", "unsupported_value")
    schema_key = "responseJsonSchema" if _gemini_field(config, "responseJsonSchema") is not None else "responseSchema"
    schema = _gemini_field(config, schema_key)
    if schema is not None:  # JSON Schema or Google's OpenAPI subset: the chat path normalises either
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            "schema": _expect(schema, (dict,), "%s.%s" % (where, schema_key), "a schema object")}}
    elif mime == "application/json":
        chat["response_format"] = {"type": "json_object"}
    thinking = _gemini_field(config, "thinkingConfig")
    effort = _gemini_reasoning(thinking) if thinking is not None else None
    if effort is not None:
        chat["reasoning_effort"] = effort


def gemini_to_chat(request: Dict[str, Any], model: str) -> Dict[str, Any]:
    """A Gemini ``GenerateContentRequest`` as an OpenAI chat-completions request.

    ``model`` comes from the URL path.  ``systemInstruction`` (whatever its role) is the
    system message; ``model`` turns are assistant messages, their ``functionCall`` parts
    tool calls; a ``user`` turn's ``functionResponse`` parts answer them (by id when the
    call carried ours, else by name in order, as Gemini CLI re-labels calls) and its
    text, ``inlineData`` and ``fileData`` parts make a user message.  Thought parts and
    thought signatures are dropped.  Tools, tool config and ``generationConfig`` map
    onto their chat fields; ``stream`` is for the caller to set.
    """
    _expect(request, (dict,), "body", "a JSON object")
    system = _gemini_system(_gemini_field(request, "systemInstruction"))
    messages = _gemini_messages(_gemini_field(request, "contents"))
    if not messages:
        raise bad_request("contents must hold at least one turn with text, an image or a function call",
                          "contents", "empty_array")
    chat = {"model": model, "messages": ([{"role": "system", "content": system}] if system else []) + messages}
    choice, tools = _gemini_tool_choice(request, _gemini_tools(request))
    if tools:
        chat["tools"] = tools
        if choice is not None:
            chat["tool_choice"] = choice
    _gemini_generation(_gemini_field(request, "generationConfig"), chat)
    ignored = [key for key in ("cachedContent", "safetySettings", "labels") if _gemini_field(request, key) is not None]
    if ignored:
        log.debug("Gemini request: %s ignored", ", ".join(ignored))
    return chat


def gemini_include_thoughts(request: Any) -> bool:
    """Whether the client asked for thought parts (``generationConfig.thinkingConfig.includeThoughts``)."""
    config = _gemini_field(request, "generationConfig") if isinstance(request, dict) else None
    thinking = _gemini_field(config, "thinkingConfig") if isinstance(config, dict) else None
    return isinstance(thinking, dict) and _gemini_field(thinking, "includeThoughts") is True


# -- answers ---------------------------------------------------------------------------


def _gemini_call_part(call: Dict[str, Any]) -> Dict[str, Any]:
    """A chat tool call as a ``functionCall`` part: args an object, never a string."""
    function = call["function"]
    return {"functionCall": {"name": function["name"], "args": call_arguments(function), "id": call["id"]}}


def _gemini_candidate(parts: List[Dict[str, Any]], finish: Optional[str], index: int) -> Dict[str, Any]:
    content = {"role": "model"}  # type: Dict[str, Any]
    if parts:
        content["parts"] = parts
    candidate = {"content": content, "index": index}  # type: Dict[str, Any]
    if finish:
        candidate["finishReason"] = GEMINI_FINISH_REASONS.get(finish, "OTHER")
    return candidate


def _gemini_response(candidates: List[Dict[str, Any]], usage: Optional[Dict[str, Any]], model_version: str,
                     response_id: str) -> Dict[str, Any]:
    """A GenerateContentResponse; ``usage`` is the chat usage (None: not known)."""
    response = {"candidates": candidates}  # type: Dict[str, Any]
    if usage is not None:
        thoughts = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        metadata = {"promptTokenCount": usage["prompt_tokens"],
                    "candidatesTokenCount": usage["completion_tokens"] - thoughts,
                    "totalTokenCount": usage["total_tokens"]}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached:
            metadata["cachedContentTokenCount"] = cached
        if thoughts:
            metadata["thoughtsTokenCount"] = thoughts
        response["usageMetadata"] = metadata
    response["modelVersion"] = model_version
    response["responseId"] = response_id
    return response


def chat_to_gemini(chat_response: Dict[str, Any], model_version: str, response_id: str,
                   include_thoughts: bool) -> Dict[str, Any]:
    """An OpenAI ``chat.completion`` (one candidate per choice) as a Gemini GenerateContentResponse."""
    candidates = []
    for choice in chat_response["choices"]:
        message = choice["message"]
        parts = []  # type: List[Dict[str, Any]]
        if include_thoughts and message.get("reasoning_content"):
            parts.append({"text": message["reasoning_content"], "thought": True})
        if message.get("content"):
            parts.append({"text": message["content"]})
        parts.extend(_gemini_call_part(call) for call in message.get("tool_calls") or ())
        candidates.append(_gemini_candidate(parts, choice["finish_reason"], choice["index"]))
    return _gemini_response(candidates, chat_response.get("usage"), model_version, response_id)


class GeminiStream(ChatStream):
    """OpenAI ``chat.completion.chunk`` dicts in, Gemini stream chunks out as ``("", data)`` pairs
    (a stream adapter: see ChatStream; ``encode`` is gemini_sse).

    Each chunk with text, reasoning (when thoughts were asked for) becomes a
    GenerateContentResponse at once.  The closing chunk carries ``finishReason`` and
    ``usageMetadata``; it goes out when the usage chunk arrives (build the
    StreamTranslator with ``include_usage``) or at ``finish()``.  Clients need it to
    carry a part too: google-genai's chat history drops a turn with a chunk that has no
    part or an empty text, so the last character of the text so far is always held
    back for it, and function calls (GigaChat sends a call whole, with its finish) ride
    in it.  ``fail(error)`` ends the stream with Google's error envelope as its last chunk.
    """

    def __init__(self, model_version: str, response_id: str, include_thoughts: bool) -> None:
        self.model_version = model_version
        self.response_id = response_id
        self.include_thoughts = include_thoughts
        self._held = ""  # the last character of the text so far
        self._calls = []  # type: List[Dict[str, Any]]  # functionCall parts, sent with the closing chunk
        self._finish = None  # type: Optional[str]
        self._usage = None  # type: Optional[Dict[str, Any]]
        self._closed = False

    def _chunk(self, parts: List[Dict[str, Any]], finish: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
        return "", _gemini_response([_gemini_candidate(parts, finish, 0)], self._usage if finish else None,
                                    self.model_version, self.response_id)

    def feed(self, chunk: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
        if self._closed:
            return []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        out = []
        for choice in chunk["choices"]:
            delta = choice["delta"]
            parts = []  # type: List[Dict[str, Any]]
            if self.include_thoughts and delta.get("reasoning_content"):
                parts.append({"text": delta["reasoning_content"], "thought": True})
            if delta.get("content"):
                text = self._held + delta["content"]
                self._held = text[-1]
                if len(text) > 1:
                    parts.append({"text": text[:-1]})
            self._calls.extend(_gemini_call_part(call) for call in delta.get("tool_calls") or ())
            if parts:
                out.append(self._chunk(parts))
            self._finish = choice["finish_reason"] or self._finish
        if self._finish and self._usage is not None:
            out.extend(self.finish())
        return out

    def finish(self) -> List[Tuple[str, Dict[str, Any]]]:
        """The closing chunk (once; nothing after it)."""
        if self._closed:
            return []
        self._closed = True
        parts = ([{"text": self._held}] if self._held else []) + self._calls
        return [self._chunk(parts, self._finish or "stop")]

    def fail(self, error: ProxyError) -> List[Tuple[str, Dict[str, Any]]]:
        """The held text, then the error as the stream's last chunk (Google's envelope); nothing
        once the closing chunk is out, as a complete answer must not end in an error."""
        if self._closed:
            return []
        self._closed = True
        out = [self._chunk([{"text": self._held}])] if self._held else []
        out.append(("", gemini_error(error)[1]))
        return out

    def encode(self, events: List[Tuple[str, Any]]) -> bytes:
        return gemini_sse(events)


def _gemini_json(data: Any) -> bytes:
    """One-line JSON with U+2028/U+2029 escaped: a JavaScript regex's ``.`` stops at them."""
    text = compact_json(data)
    if "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode("utf-8")


def gemini_sse(events: List[Tuple[str, Dict[str, Any]]]) -> bytes:
    """Gemini's server-sent events: exactly ``data: <JSON on one line>`` and a blank line each.

    No ``event:`` or comment lines and no ``[DONE]``: the JS SDK's parser (Gemini CLI)
    stalls on anything else.
    """
    return b"".join(b"data: " + _gemini_json(data) + b"\r\n\r\n" for _, data in events)


def gemini_json_array(events: List[Tuple[str, Dict[str, Any]]]) -> bytes:
    """``streamGenerateContent`` without ``alt=sse``: one JSON array of all the chunks."""
    return b"[" + b",".join(_gemini_json(data) for _, data in events) + b"]"


def gemini_error(exc: ProxyError) -> Tuple[int, Dict[str, Any], Dict[str, str]]:
    """(status, body, headers) of an error in Google's envelope ``{"error": {code, message, status}}``.

    A Retry-After in seconds also goes in as a ``google.rpc.RetryInfo`` detail, which
    Gemini CLI waits for before it retries.
    """
    status = GEMINI_STATUSES.get(exc.status) or ("INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL")
    error = {"code": exc.status, "message": exc.message, "status": status}  # type: Dict[str, Any]
    retry_after = next((value for name, value in exc.headers.items() if name.lower() == "retry-after"), "").strip()
    if _DIGITS.match(retry_after):
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_after + "s"}]
    return exc.status, {"error": error}, dict(exc.headers)


# -- countTokens, embeddings, models -----------------------------------------------------


def gemini_count_request(request: Dict[str, Any], model: str) -> Dict[str, Any]:
    """A ``countTokens`` body as the chat request whose GigaChat translation is counted
    (``gigachat_texts``): its ``generateContentRequest``, or its ``contents``."""
    _expect(request, (dict,), "body", "a JSON object")
    inner = _gemini_field(request, "generateContentRequest")
    if inner is not None:
        return gemini_to_chat(_expect(inner, (dict,), "generateContentRequest", "an object"), model)
    return gemini_to_chat({"contents": _gemini_field(request, "contents")}, model)


def gemini_count_response(answer: Any) -> Dict[str, Any]:
    """GigaChat's ``tokens/count`` answer (one count per text) as Google's ``{"totalTokens": n}``."""
    return {"totalTokens": count_tokens_total(answer)}


def gemini_embed_request(request: Dict[str, Any], batch: bool) -> Tuple[List[str], Optional[int]]:
    """The texts of an ``embedContent`` (one) or ``batchEmbedContents`` (one per request) body,
    and the ``outputDimensionality`` asked for (None: any)."""
    _expect(request, (dict,), "body", "a JSON object")
    if batch:
        items = _expect(_gemini_field(request, "requests"), (list,), "requests", "an array of EmbedContentRequest")
        if not items:
            raise bad_request("requests must not be empty", "requests", "empty_array")
        prefixes = ["requests[%d]." % i for i in range(len(items))]
    else:
        items, prefixes = [request], [""]
    texts, sizes = [], set()
    for item, prefix in zip(items, prefixes):
        _expect(item, (dict,), prefix[:-1] or "body", "an EmbedContentRequest object")
        pieces = _gemini_text_only(_gemini_field(item, "content"), prefix + "content", "an embedding")
        if not "".join(pieces):
            raise bad_request("%scontent has no text; GigaChat cannot embed an empty string" % prefix,
                              prefix + "content")
        texts.append("\n".join(pieces))
        size = _gemini_field(item, "outputDimensionality")
        if size is not None:
            sizes.add(_expect(size, (int,), prefix + "outputDimensionality", "an integer"))
    if len(sizes) > 1:
        raise bad_request("the requests ask for different outputDimensionality values", "requests")
    return texts, (sizes.pop() if sizes else None)


def gemini_embed_response(vectors: List[List[float]], batch: bool) -> Dict[str, Any]:
    if batch:
        return {"embeddings": [{"values": vector} for vector in vectors]}
    return {"embedding": {"values": vectors[0]}}


def gemini_model(model_id: str) -> Dict[str, Any]:
    """A model the proxy lists, in Google's Model shape."""
    embedder = bool(resolve_embeddings_model(model_id, ""))
    target = MODEL_ALIASES.get(model_id, model_id)
    if embedder:
        limits = (512 if model_id == "Embeddings" else 4096, 1)
    else:  # the GigaChat 2 line and newer advertise 128k tokens; the first line 32k
        limits = (131072 if re.search(r"-[2-9]", target) else 32768, GEMINI_OUTPUT_TOKEN_LIMIT)
    return {"name": "models/" + model_id, "baseModelId": model_id, "displayName": model_id,
            "description": "%s through gigaproxy" % target, "inputTokenLimit": limits[0],
            "outputTokenLimit": limits[1],
            "supportedGenerationMethods": list(GEMINI_EMBEDDING_METHODS if embedder else GEMINI_CHAT_METHODS)}


def gemini_models(model_ids: List[str]) -> Dict[str, Any]:
    """``GET /models`` in Google's shape (everything on one page)."""
    return {"models": [gemini_model(model_id) for model_id in model_ids]}


def gemini_model_info(model_ids: List[str], name: str) -> Dict[str, Any]:
    """``GET /models/{name}`` in Google's shape (``name`` with or without ``models/``); 404 if not listed."""
    if name.startswith("models/"):
        name = name[len("models/"):]
    if name not in model_ids:
        raise ProxyError(404, "models/%s is not found; GET /v1beta/models lists the models" % name,
                         "invalid_request_error", "model_not_found", "model")
    return gemini_model(name)


# ---- OpenAI Responses (Codex CLI, the OpenAI Agents SDK) -----------------------------------
# responses_to_chat() makes a chat request of a Responses one (earlier items of a stored
# conversation passed in), chat_to_responses() a ``response`` object of a chat answer, and
# ResponsesStream the Responses stream events of chat chunks.  Tool names: a function in a
# ``namespace`` tool is offered to GigaChat as ``namespace__name``; a ``custom`` (freeform) tool
# as a function of one string argument, ``input``.  ResponseStore keeps finished responses.

# Tool types only OpenAI's servers can run: left out of what GigaChat is offered (as are unknown types).
RESPONSES_HOSTED_TOOLS = frozenset({
    "file_search", "local_shell", "image_generation", "code_interpreter", "mcp", "shell", "apply_patch",
    "tool_search",
})
RESPONSES_HOSTED_TOOL_PREFIXES = ("web_search", "computer")  # web_search_preview, computer_use_preview, ...
RESPONSES_NAMESPACE_SEPARATOR = "__"
RESPONSES_SUMMARIES = ("auto", "concise", "detailed")
# Item types GigaChat has nothing to say about: dropped from the conversation.
_RESPONSES_DROPPED_ITEMS = frozenset({"reasoning"})
# Fields whose type is checked here; most (store, include, metadata, ...) have no effect on GigaChat.
_RESPONSES_ACCEPTED_FIELDS = (
    ("store", (bool,), "a boolean"), ("background", (bool,), "a boolean"), ("include", (list,), "an array"),
    ("metadata", (dict,), "an object"), ("client_metadata", (dict,), "an object"), ("user", (str,), "a string"),
    ("prompt_cache_key", (str,), "a string"), ("safety_identifier", (str,), "a string"),
    ("service_tier", (str,), "a string"), ("truncation", (str,), "a string"),
    ("parallel_tool_calls", (bool,), "a boolean"), ("stream_options", (dict,), "an object"),
    ("max_tool_calls", (int,), "an integer"), ("top_logprobs", (int,), "an integer"),
    ("previous_response_id", (str,), "a string"), ("reasoning", (dict,), "an object"), ("text", (dict,), "an object"),
)
# Item id prefixes, as OpenAI's ids start (items the client sent without an id get one).
_RESPONSES_ITEM_PREFIXES = {"message": "msg", "reasoning": "rs", "function_call": "fc", "function_call_output": "fco",
                            "custom_tool_call": "ctc", "custom_tool_call_output": "ctco"}


class ResponsesTools:
    """The tools of one Responses request as chat tools, and the way back to the client's names.

    ``chat_tools`` is the chat ``tools`` array.  ``kind(chat_name)`` is ``(type, name,
    namespace)`` for a name a chat answer used: ``"function"`` or ``"custom"``, the name in
    the client's tool, its namespace or None.
    """

    def __init__(self, request: Dict[str, Any]) -> None:
        self.chat_tools = []  # type: List[Dict[str, Any]]
        self._kinds = {}  # type: Dict[str, Tuple[str, str, Optional[str]]]
        tools = request.get("tools")
        if tools is None:
            return
        for i, tool in enumerate(_expect(tools, (list,), "tools", "an array")):
            where = "tools[%d]" % i
            _expect(tool, (dict,), where, "an object")
            if tool.get("type") != "namespace":
                self._add(tool, where, None)
                continue
            namespace = self._name(tool, where)
            for j, inner in enumerate(_expect(tool.get("tools"), (list,), where + ".tools", "an array")):
                self._add(_expect(inner, (dict,), "%s.tools[%d]" % (where, j), "an object"),
                          "%s.tools[%d]" % (where, j), namespace)

    @staticmethod
    def _name(tool: Dict[str, Any], where: str) -> str:
        name = _expect(tool.get("name"), (str,), where + ".name", "a string")
        if not name:
            raise bad_request("%s.name must not be empty" % where, where + ".name")
        return name

    def _add(self, tool: Dict[str, Any], where: str, namespace: Optional[str]) -> None:
        kind = _expect(tool.get("type"), (str,), where + ".type", "a string")
        if kind not in ("function", "custom"):
            # An unknown type is most likely a newer hosted tool: left out too, never a 400.
            hosted = kind in RESPONSES_HOSTED_TOOLS or kind.startswith(RESPONSES_HOSTED_TOOL_PREFIXES)
            log.debug("Responses tool %s left out: %r is %s", where, kind[:100],
                      "a tool only OpenAI's servers run" if hosted else "not a tool type gigaproxy knows")
            return
        name = self._name(tool, where)
        chat_name = self.chat_name(name, namespace)
        function = {"name": chat_name}  # type: Dict[str, Any]
        if tool.get("description") is not None:
            function["description"] = _expect(tool["description"], (str,), where + ".description", "a string")
        if kind == "function":
            if tool.get("parameters") is not None:
                function["parameters"] = _expect(tool["parameters"], (dict,), where + ".parameters", "an object")
        else:
            function["parameters"] = _custom_tool_parameters(tool.get("format"), where + ".format")
        self.chat_tools.append({"type": "function", "function": function})
        self._kinds[chat_name] = (kind, name, namespace)

    @staticmethod
    def chat_name(name: str, namespace: Optional[str]) -> str:
        return namespace + RESPONSES_NAMESPACE_SEPARATOR + name if namespace else name

    def kind(self, chat_name: str) -> Tuple[str, str, Optional[str]]:
        return self._kinds.get(chat_name) or ("function", chat_name, None)

    def choice(self, value: Any) -> Any:
        """The chat tool_choice for a Responses one (``allowed_tools`` narrows ``chat_tools``)."""
        if value is None or value in ("auto", "none", "required"):
            return value
        if not isinstance(value, dict):
            raise bad_request("tool_choice must be auto, none, required or an object", "tool_choice")
        kind = value.get("type")
        if kind in ("function", "custom"):
            name = _expect(value.get("name"), (str,), "tool_choice.name", "a string")
            namespace = value.get("namespace") if isinstance(value.get("namespace"), str) else None
            chat_name = self.chat_name(name, namespace)
            if chat_name not in self._kinds:
                raise bad_request("tool_choice names tool %r, which is not among the tools" % name, "tool_choice.name")
            return {"type": "function", "function": {"name": chat_name}}
        if kind == "allowed_tools":
            mode = value.get("mode", "auto")
            if mode not in ("auto", "required"):
                raise bad_request("tool_choice.mode must be auto or required", "tool_choice.mode")
            allowed = set()
            for i, tool in enumerate(_expect(value.get("tools"), (list,), "tool_choice.tools", "an array")):
                tool = _expect(tool, (dict,), "tool_choice.tools[%d]" % i, "an object")
                if isinstance(tool.get("name"), str):
                    namespace = tool.get("namespace") if isinstance(tool.get("namespace"), str) else None
                    allowed.add(self.chat_name(tool["name"], namespace))
            self.chat_tools = [t for t in self.chat_tools if t["function"]["name"] in allowed]
            return mode
        if isinstance(kind, str) and kind:
            raise bad_request("tool_choice %r asks for a tool only OpenAI's servers run; GigaChat cannot"
                              % kind[:100], "tool_choice.type", "unsupported_value")
        raise bad_request("tool_choice.type must be function, custom or allowed_tools", "tool_choice.type")


def _custom_tool_parameters(spec: Any, where: str) -> Dict[str, Any]:
    """The parameters of the function that stands for a custom (freeform) tool."""
    note = "The whole input of the tool, as plain text."
    if spec is not None:
        _expect(spec, (dict,), where, "an object")
        definition = spec.get("definition")
        if spec.get("type") == "grammar" and isinstance(definition, str) and definition:
            syntax = spec.get("syntax") if isinstance(spec.get("syntax"), str) else ""
            note += " It must follow this %s grammar:\n%s" % (syntax, definition)
    return {"type": "object", "properties": {"input": {"type": "string", "description": note}},
            "required": ["input"]}


def _custom_tool_input(arguments: str) -> str:
    """A custom tool's input from the arguments of the function that stands for it."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


def _responses_parts(content: Any, where: str) -> Any:
    """A Responses message's content (a string or parts) as chat content."""
    if isinstance(content, str):
        return content
    parts = []  # type: List[Dict[str, Any]]
    for j, part in enumerate(_expect(content, (list,), where, "a string or an array of content parts")):
        pwhere = "%s[%d]" % (where, j)
        kind = _expect(part, (dict,), pwhere, "a content part object").get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": _expect(part.get("text"), (str,), pwhere + ".text", "a string")})
        elif kind == "refusal":
            parts.append({"type": "text",
                          "text": _expect(part.get("refusal"), (str,), pwhere + ".refusal", "a string")})
        elif kind == "input_image" and part.get("image_url") is None and part.get("file_id") is not None:
            raise bad_request("%s.file_id: a file stored at OpenAI cannot be read by GigaChat; send the image "
                              "as a data: URL in image_url" % pwhere, pwhere + ".file_id", "unsupported_content")
        elif kind == "input_image":
            url = _expect(part.get("image_url"), (str,), pwhere + ".image_url", "a string (a data: URL)")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind in ("input_file", "input_audio"):
            raise bad_request("%s: %s parts are not supported: GigaChat takes text and images here; send the "
                              "file's text as input_text" % (pwhere, kind), pwhere + ".type", "unsupported_content")
        else:
            raise bad_request("%s.type %r is not supported (use input_text or input_image)" % (pwhere, kind),
                              pwhere + ".type", "unsupported_content")
    return parts


def _is_item_reference(item: Dict[str, Any]) -> bool:
    return item.get("type") == "item_reference" or (item.get("type") is None and "role" not in item and "id" in item)


def item_references(request: Any) -> List[str]:
    """The ids of the ``item_reference`` items in a Responses request's input, for the store."""
    items = request.get("input") if isinstance(request, dict) else None
    if not isinstance(items, list):
        return []
    return [item["id"] for item in items
            if isinstance(item, dict) and _is_item_reference(item) and isinstance(item.get("id"), str)]


def _request_items(request: Dict[str, Any], references: Optional[Mapping[str, Dict[str, Any]]],
                   ) -> List[Tuple[Dict[str, Any], str]]:
    """The request's input as (item, path) pairs: a string is one user message, references resolved."""
    value = request.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [({"type": "message", "role": "user", "content": value}, "input")]
    items = []
    for k, item in enumerate(_expect(value, (list,), "input", "a string or an array of items")):
        where = "input[%d]" % k
        if _is_item_reference(_expect(item, (dict,), where, "an object")):
            item_id = _expect(item.get("id"), (str,), where + ".id", "a string")
            found = (references or {}).get(item_id)
            if not isinstance(found, dict):
                raise bad_request("%s.id: item %r is not in gigaproxy's store (unknown, deleted or expired, or "
                                  "from a response made with store: false)" % (where, item_id), where + ".id",
                                  "item_not_found")
            item = found
        items.append((item, where))
    return items


def _items_to_messages(items: List[Tuple[Dict[str, Any], str]], tools: ResponsesTools,
                       out: List[Dict[str, Any]]) -> None:
    """Append the chat messages for Responses items; calls in a row join one assistant message,
    as chat's parallel tool calls, and images of tool outputs follow the outputs in user messages."""
    images = []  # type: List[Dict[str, Any]]  # labelled image parts of the outputs in a row
    for item, where in items:
        kind = item.get("type") or "message"
        if images and kind not in ("function_call_output", "custom_tool_call_output"):
            out.extend(_one_image_each(images))
            images = []
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise bad_request("%s.role must be user, assistant, system or developer (got %r)" % (where, role),
                                  where + ".role", "invalid_role")
            out.append({"role": role, "content": _responses_parts(item.get("content"), where + ".content")})
        elif kind in ("function_call", "custom_tool_call"):
            call_id = _expect(item.get("call_id"), (str,), where + ".call_id", "a string")
            name = _expect(item.get("name"), (str,), where + ".name", "a string")
            namespace = item.get("namespace")
            if namespace is not None:
                _expect(namespace, (str,), where + ".namespace", "a string")
            if kind == "function_call":
                arguments = item.get("arguments")
                parsed = _parse_arguments(arguments, where + ".arguments")  # checked here, where it is named
                if not (isinstance(arguments, str) and arguments.strip()):
                    arguments = json.dumps(parsed, ensure_ascii=False)  # an object, or nothing: "{}"
            else:
                arguments = json.dumps({"input": _expect(item.get("input"), (str,), where + ".input", "a string")},
                                       ensure_ascii=False)
            call = {"id": call_id, "type": "function",
                    "function": {"name": tools.chat_name(name, namespace), "arguments": arguments}}
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)  # its text, or the calls before it
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            call_id = _expect(item.get("call_id"), (str,), where + ".call_id", "a string")
            output = _responses_parts(item.get("output"), where + ".output")
            text, pictures = (output, []) if isinstance(output, str) else _tool_result_parts(call_id, output)
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
            images.extend(pictures)
        elif kind not in _RESPONSES_DROPPED_ITEMS:
            raise bad_request("%s.type %r is not supported: gigaproxy takes message, function_call, "
                              "function_call_output, custom_tool_call, custom_tool_call_output, reasoning and "
                              "item_reference items" % (where, kind), where + ".type", "unsupported_item")
    if images:
        out.extend(_one_image_each(images))


def _responses_format(text: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The chat response_format for ``text.format``."""
    spec = text.get("format")
    if spec is None:
        return None
    kind = _expect(spec, (dict,), "text.format", "an object").get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise bad_request("text.format.type must be text, json_object or json_schema", "text.format.type")
    _expect(spec.get("schema"), (dict,), "text.format.schema", "an object")
    return {"type": "json_schema", "json_schema": {key: spec[key] for key in ("name", "description", "schema", "strict")
                                                   if spec.get(key) is not None}}


def responses_to_chat(request: Any, history: Any = (),
                      references: Optional[Mapping[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """An OpenAI chat-completions request for a Responses request.

    ``history`` is the conversation before it (``ResponseStore.conversation()`` of its
    ``previous_response_id``), ``references`` the stored items its ``item_reference``
    items name (``ResponseStore.items(item_references(request))``).  The chat core
    (translate_chat_request) does the rest: models, tools, schemas, images, reasoning.
    """
    _expect(request, (dict,), "body", "a JSON object")
    for key, types, what in _RESPONSES_ACCEPTED_FIELDS:
        if request.get(key) is not None:
            _expect(request[key], types, key, what)
    if request.get("background"):
        raise bad_request("background: true is not supported: gigaproxy answers while the client waits",
                          "background", "unsupported_value")
    for key, why in (("conversation", "continue with previous_response_id, or send the history in input"),
                     ("prompt", "send the prompt's text as instructions and input")):
        if request.get(key) is not None:
            raise bad_request("%s is not supported: %s" % (key, why), key, "unsupported_value")
    tools = ResponsesTools(request)
    messages = []  # type: List[Dict[str, Any]]
    instructions = request.get("instructions")
    if instructions is not None and _expect(instructions, (str,), "instructions", "a string"):
        messages.append({"role": "system", "content": instructions})
    items = [(item, "previous_response_id") for item in history] + _request_items(request, references)
    _items_to_messages(items, tools, messages)
    if not messages:
        raise bad_request("input must contain at least one item", "input", "empty_array")
    chat = {"messages": messages}  # type: Dict[str, Any]
    for key in ("model", "stream", "temperature", "top_p"):
        if request.get(key) is not None:
            chat[key] = request[key]
    if chat.get("stream") is True:
        chat["stream_options"] = {"include_usage": True}  # a Responses stream always ends with usage
    max_tokens = _integer(request, "max_output_tokens", 1, MAX_TOKENS_LIMIT)
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    reasoning = request.get("reasoning") or {}
    if _reasoning_effort(reasoning.get("effort"), "reasoning.effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    response_format = _responses_format(request.get("text") or {})
    if response_format is not None:
        chat["response_format"] = response_format
    choice = tools.choice(request.get("tool_choice"))  # before chat_tools: allowed_tools narrows them
    if tools.chat_tools:
        chat["tools"] = tools.chat_tools
        if choice is not None:
            chat["tool_choice"] = choice
    return chat


def response_input_items(request: Dict[str, Any], response_id: str,
                         references: Optional[Mapping[str, Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """The request's input as the items the store keeps and ``input_items`` lists: each with an
    ``id`` (made from ``response_id`` where the client gave none) and a ``status``, a message's
    text as parts."""
    items = []
    for position, (item, _) in enumerate(_request_items(request, references)):
        item = dict(item)
        kind = item.setdefault("type", "message")
        item.setdefault("status", "completed")  # the SDK's listed items require one
        if kind == "message" and isinstance(item.get("content"), str):
            text = item["content"]
            item["content"] = [_output_text(text) if item.get("role") == "assistant"
                               else {"type": "input_text", "text": text}]
        if not isinstance(item.get("id"), str):
            item["id"] = "%s_%s_in%d" % (_RESPONSES_ITEM_PREFIXES.get(kind, "item"), _response_suffix(response_id),
                                         position)
        items.append(item)
    return items


# ---- chat answers -> response objects ----


def _response_suffix(response_id: str) -> str:
    return response_id[len("resp_"):] if response_id.startswith("resp_") else response_id


def _output_item_id(kind: str, response_id: str, index: int) -> str:
    return "%s_%s_%d" % (_RESPONSES_ITEM_PREFIXES[kind], _response_suffix(response_id), index)


def wants_reasoning_summary(request: Dict[str, Any]) -> bool:
    """Whether ``reasoning.summary`` asks for GigaChat's reasoning in the output."""
    reasoning = request.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    return (reasoning.get("summary") or reasoning.get("generate_summary")) in RESPONSES_SUMMARIES


def responses_usage(usage: Any) -> Optional[Dict[str, Any]]:
    """Chat usage (map_usage's shape) as Responses usage; None when there is none."""
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {"input_tokens": usage.get("prompt_tokens", 0),
            "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens", 0),
                                     "cache_write_tokens": 0},  # GigaChat caches by itself, and says nothing of it
            "output_tokens": usage.get("completion_tokens", 0),
            "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens", 0)},
            "total_tokens": usage.get("total_tokens", 0)}


def _responses_status(finish_reason: Any) -> Tuple[str, Optional[Dict[str, str]]]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _output_text(text: str) -> Dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, status: str, content: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, summary: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": summary}


def _call_item(tools: ResponsesTools, response_id: str, index: int, call_id: str, chat_name: str,
               arguments: str, status: str) -> Dict[str, Any]:
    """A ``function_call`` or ``custom_tool_call`` item for a chat tool call, named as the client named it."""
    kind, name, namespace = tools.kind(chat_name)
    if kind == "custom":
        item = {"type": "custom_tool_call", "id": _output_item_id("custom_tool_call", response_id, index),
                "call_id": call_id, "name": name, "input": _custom_tool_input(arguments) if arguments else ""}
    else:
        item = {"type": "function_call", "id": _output_item_id("function_call", response_id, index),
                "call_id": call_id, "name": name, "arguments": arguments, "status": status}
    if namespace:
        item["namespace"] = namespace
    return item


def _response_object(request: Dict[str, Any], response_id: str, created_at: int, model: Any, status: str,
                     output: List[Dict[str, Any]], usage: Optional[Dict[str, Any]],
                     incomplete: Optional[Dict[str, str]] = None, error: Optional[Dict[str, Any]] = None,
                     ) -> Dict[str, Any]:
    """The ``response`` object, with the request's settings echoed."""
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": error, "incomplete_details": incomplete,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"), "model": model, "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"), "service_tier": "default",
        "store": request.get("store", True) is not False, "temperature": request.get("temperature"),
        "text": request.get("text") or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs"), "top_p": request.get("top_p"),
        "truncation": request.get("truncation", "disabled"), "usage": usage, "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def chat_to_responses(chat_response: Dict[str, Any], request: Dict[str, Any], response_id: str,
                      created_at: int) -> Dict[str, Any]:
    """A ``response`` object for a chat answer (to_openai_response's) to a Responses request.

    Tool call ids stay the chat answer's (``call_`` + GigaChat's functions_state_id), so a
    ``function_call_output`` for one carries the state back through the chat core.
    """
    tools = ResponsesTools(request)
    choice = chat_response["choices"][0]
    message = choice["message"]
    status, incomplete = _responses_status(choice.get("finish_reason"))
    output = []  # type: List[Dict[str, Any]]
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning and wants_reasoning_summary(request):
        output.append(_reasoning_item(_output_item_id("reasoning", response_id, 0),
                                      [{"type": "summary_text", "text": reasoning}]))
    calls = message.get("tool_calls") or []
    if message.get("content") or not calls:
        output.append(_message_item(_output_item_id("message", response_id, len(output)),
                                    "incomplete" if incomplete else "completed",
                                    [_output_text(message.get("content") or "")]))
    for call in calls:
        output.append(_call_item(tools, response_id, len(output), call["id"], call["function"]["name"],
                                 call["function"]["arguments"], "completed"))
    return _response_object(request, response_id, created_at, chat_response.get("model"), status, output,
                            responses_usage(chat_response.get("usage")), incomplete)


def _copy_item(item: Dict[str, Any]) -> Dict[str, Any]:
    """An item as it is now, for an event (lists of parts copied: the open item still grows)."""
    return {key: [dict(x) for x in value] if isinstance(value, list) else value for key, value in item.items()}


class ResponsesStream(ChatStream):
    """The Responses stream adapter (see ChatStream): chat.completion.chunk dicts in
    (StreamTranslator's, usage chunk included), Responses' named events out.

    Each method returns ``(event name, data)`` pairs to write now (``encode()`` writes each
    with its ``event:`` line; no ``[DONE]``: the last event says the stream is whole); every
    ``data`` has its ``type`` and a ``sequence_number`` counting from 0.
    The order is OpenAI's: ``response.created``, ``response.in_progress``; then per output
    item ``response.output_item.added``, its own events, ``response.output_item.done``: a
    message has ``content_part.added``, ``output_text.delta``..., ``output_text.done``,
    ``content_part.done``; reasoning (when ``reasoning.summary`` asks for it)
    ``reasoning_summary_part.added``, ``reasoning_summary_text.delta``..., ``.done``,
    ``reasoning_summary_part.done``; a function call ``function_call_arguments.delta``...,
    ``.done``; a custom tool call ``custom_tool_call_input.delta`` and ``.done`` once its
    arguments are whole (its input is inside their JSON).  One item is open at a time: it
    closes when a delta of another kind (or another tool call) arrives, or the choice
    finishes.  ``finish()`` ends with ``response.completed`` (or ``response.incomplete``)
    carrying the whole response; ``fail(error)`` (a ProxyError after the stream began) with
    ``response.failed``.  Nothing follows either, and ``response`` then holds the final
    response object (for the store).  ``start()`` may be called early; ``feed()`` calls it.
    """

    def __init__(self, request: Dict[str, Any], response_id: str, created_at: int, model: Any = None,
                 keep: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        self._keep = keep  # called with the finished response before its closing events go out
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self.model = model if model is not None else request.get("model")
        self.response = None  # type: Optional[Dict[str, Any]]
        self._tools = ResponsesTools(request)
        self._summary = wants_reasoning_summary(request)
        self._sequence = 0
        self._started = False
        self._closed = False
        self._output = []  # type: List[Dict[str, Any]]
        self._open_index = None  # type: Optional[int]  # output index of the open item
        self._pieces = []  # type: List[str]  # the open item's text or arguments so far
        self._call = None  # type: Any  # the chat index of the tool call in the open item
        self._calls_done = set()  # type: set  # chat indexes of closed tool calls
        self._finish = None  # type: Optional[str]
        self._usage = None  # type: Optional[Dict[str, Any]]

    def _event(self, name: str, fields: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
        data = {"type": name, "sequence_number": self._sequence}  # type: Dict[str, Any]
        data.update(fields)
        self._sequence += 1
        return name, data

    def _snapshot(self, status: str, incomplete: Optional[Dict[str, str]] = None,
                  error: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return _response_object(self.request, self.response_id, self.created_at, self.model, status,
                                [_copy_item(item) for item in self._output],
                                None if status == "in_progress" else self._usage, incomplete, error)

    def start(self) -> List[Tuple[str, Dict[str, Any]]]:
        if self._started:
            return []
        self._started = True
        return [self._event("response.created", {"response": self._snapshot("in_progress")}),
                self._event("response.in_progress", {"response": self._snapshot("in_progress")})]

    def _open(self, item: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
        """Close the open item and open ``item`` (its ``output_item.added``)."""
        events = self._close()
        self._open_index = len(self._output)
        self._output.append(item)
        return events + [self._event("response.output_item.added", {"output_index": self._open_index,
                                                                    "item": _copy_item(item)})]

    def _settle(self, status: str) -> Dict[str, Any]:
        """Write what the open item gathered into it."""
        item = self._output[self._open_index]  # type: ignore[index]
        text, self._pieces = "".join(self._pieces), []
        if item["type"] == "message":
            item["content"], item["status"] = [_output_text(text)], status
        elif item["type"] == "reasoning":
            item["summary"] = [{"type": "summary_text", "text": text}]
        elif item["type"] == "function_call":
            item["arguments"], item["status"] = _arguments_text(text), status
        else:
            item["input"] = _custom_tool_input(_arguments_text(text))
        return item

    def _close(self) -> List[Tuple[str, Dict[str, Any]]]:
        index = self._open_index
        if index is None:
            return []
        item = self._settle("incomplete" if _responses_status(self._finish)[1] else "completed")
        self._open_index = None
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            part = item["content"][0]
            events = [self._event("response.output_text.done", dict(at, content_index=0, text=part["text"],
                                                                    logprobs=[])),
                      self._event("response.content_part.done", dict(at, content_index=0, part=dict(part)))]
        elif item["type"] == "reasoning":
            part = item["summary"][0]
            events = [self._event("response.reasoning_summary_text.done", dict(at, summary_index=0,
                                                                               text=part["text"])),
                      self._event("response.reasoning_summary_part.done", dict(at, summary_index=0,
                                                                               part=dict(part)))]
        elif item["type"] == "function_call":
            events = [self._event("response.function_call_arguments.done", dict(at, arguments=item["arguments"]))]
        else:
            events = [self._event("response.custom_tool_call_input.delta", dict(at, delta=item["input"])),
                      self._event("response.custom_tool_call_input.done", dict(at, input=item["input"]))]
        if self._call is not None:
            self._calls_done.add(self._call)
            self._call = None
        events.append(self._event("response.output_item.done", {"output_index": index, "item": _copy_item(item)}))
        return events

    def _open_text(self, kind: str) -> List[Tuple[str, Dict[str, Any]]]:
        """Open a message or a reasoning item, and its one part."""
        item_id = _output_item_id(kind, self.response_id, len(self._output))
        if kind == "message":
            events = self._open(_message_item(item_id, "in_progress", []))
            return events + [self._event("response.content_part.added", {
                "item_id": item_id, "output_index": self._open_index, "content_index": 0,
                "part": _output_text("")})]
        events = self._open(_reasoning_item(item_id, []))
        return events + [self._event("response.reasoning_summary_part.added", {
            "item_id": item_id, "output_index": self._open_index, "summary_index": 0,
            "part": {"type": "summary_text", "text": ""}})]

    def _text_delta(self, kind: str, text: str) -> List[Tuple[str, Dict[str, Any]]]:
        events = []  # type: List[Tuple[str, Dict[str, Any]]]
        if self._open_index is None or self._output[self._open_index]["type"] != kind:
            events = self._open_text(kind)
        self._pieces.append(text)
        at = {"item_id": self._output[self._open_index]["id"], "output_index": self._open_index}
        if kind == "message":
            events.append(self._event("response.output_text.delta", dict(at, content_index=0, delta=text,
                                                                         logprobs=[])))
        else:
            events.append(self._event("response.reasoning_summary_text.delta", dict(at, summary_index=0, delta=text)))
        return events

    def _call_delta(self, call: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
        events = []  # type: List[Tuple[str, Dict[str, Any]]]
        key = call.get("index", 0)
        function = call.get("function") or {}
        if key in self._calls_done:
            log.debug("a fragment of tool call %r after that call closed is dropped", key)
            return events
        if self._call != key or self._open_index is None:
            index = len(self._output)
            call_id = call.get("id") or "call_%s_%d" % (_response_suffix(self.response_id), index)
            events = self._open(_call_item(self._tools, self.response_id, index, call_id,
                                           function.get("name") or "", "", "in_progress"))
            self._call = key
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            self._pieces.append(fragment)
            item = self._output[self._open_index]  # type: ignore[index]
            if item["type"] == "function_call":
                events.append(self._event("response.function_call_arguments.delta", {
                    "item_id": item["id"], "output_index": self._open_index, "delta": fragment}))
        return events

    def feed(self, chunk: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
        if self._closed:
            return []
        events = self.start()
        if isinstance(chunk.get("usage"), dict):
            self._usage = responses_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content")
            if self._summary and isinstance(reasoning, str) and reasoning:
                events += self._text_delta("reasoning", reasoning)
            content = delta.get("content")
            if isinstance(content, str) and content:
                events += self._text_delta("message", content)
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                events += self._close()
        return events

    def finish(self) -> List[Tuple[str, Dict[str, Any]]]:
        if self._closed:
            return []
        events = self.start()
        if not self._output:  # GigaChat said nothing: an empty message, as chat_to_responses makes
            events += self._open_text("message")
        events += self._close()
        self._closed = True
        status, incomplete = _responses_status(self._finish)
        self.response = self._snapshot(status, incomplete)
        if self._keep is not None:  # stored first: a client that continues it at once must find it
            self._keep(self.response)
        events.append(self._event("response." + status, {"response": self.response}))
        return events

    def fail(self, error: ProxyError) -> List[Tuple[str, Dict[str, Any]]]:
        if self._closed:
            return []
        events = self.start()
        self._closed = True
        if self._open_index is not None:
            self._settle("incomplete")
        # The SDK's ResponseError knows a few codes; Codex retries on any but a handful.
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        self.response = self._snapshot("failed", error={"code": code, "message": error.message})
        events.append(self._event("response.failed", {"response": self.response}))
        return events


# An error before a Responses stream began: OpenAI's envelope, as chat's (the default route errors).
responses_error = openai_error


def response_not_found(response_id: str, param: Optional[str] = None) -> ProxyError:
    """The error for an id the store does not have: OpenAI's 400 ``previous_response_not_found``
    for ``previous_response_id`` (Codex and the Agents SDK act on that code), else a 404."""
    why = ("gigaproxy does not have it: unknown, deleted, expired or evicted from its store, or made with "
           "store: false, which keeps nothing")
    if param == "previous_response_id":
        return ProxyError(400, "Previous response with id %r not found: %s." % (response_id, why),
                          "invalid_request_error", "previous_response_not_found", param)
    return ProxyError(404, "Response with id %r not found: %s." % (response_id, why), "invalid_request_error",
                      "not_found", param)


def response_deleted(response_id: str) -> Dict[str, Any]:
    """The answer to ``DELETE /v1/responses/{id}``."""
    return {"id": response_id, "object": "response", "deleted": True}


def input_items_page(items: List[Dict[str, Any]], after: Optional[str] = None, limit: Optional[str] = None,
                     order: Optional[str] = None) -> Dict[str, Any]:
    """``GET /v1/responses/{id}/input_items``: a page of a stored response's input items.

    ``after``, ``limit`` (1 to 100, default 20) and ``order`` (``desc``, the default, or
    ``asc``) are the query parameters as sent.
    """
    count = 20
    if limit is not None:
        if not _DIGITS.match(limit) or not 1 <= int(limit) <= 100:
            raise bad_request("limit must be a whole number from 1 to 100 (got %r)" % limit, "limit")
        count = int(limit)
    if order not in (None, "asc", "desc"):
        raise bad_request("order must be asc or desc (got %r)" % order, "order")
    ordered = list(items) if order == "asc" else list(reversed(items))
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise bad_request("after names item %r, which is not among this response's input items" % after,
                              "after")
        ordered = ordered[ids.index(after) + 1:]
    page = ordered[:count]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > count}


# ---- the store of responses ----


class ResponseStore:
    """Finished responses and their input, for ``previous_response_id``, ``item_reference``,
    ``GET`` and ``DELETE`` (in memory: one process).

    At most ``max_entries`` responses taking at most ``max_bytes`` (their JSON text), the
    least recently used evicted first, each kept ``max_age`` seconds after it was stored
    (``clock`` tells the time; tests pass their own).
    A response is kept as JSON text with its input items and the conversation before it
    (``history``), so ``conversation(id)`` is whole even after earlier responses are gone,
    and nothing a caller does to what it got changes what is kept.  Thread-safe: one lock
    guards the records.  This is state and the clock, unlike the rest of the section.
    """

    def __init__(self, max_entries: int = DEFAULT_RESPONSE_STORE_ENTRIES,
                 max_age: float = DEFAULT_RESPONSE_STORE_SECONDS, clock: Callable[[], float] = time.time,
                 max_bytes: int = int(DEFAULT_RESPONSE_STORE_MB * 1048576)) -> None:
        if max_entries < 1 or max_age <= 0 or max_bytes < 1:
            raise ValueError("a response store needs room for one response and a lifetime above 0")
        self.max_entries = max_entries
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.clock = clock
        self._bytes = 0  # the size of what _records holds
        self._lock = threading.Lock()
        # response id -> (stored at, response, input, history, its item ids, size); least recently used first
        self._records = collections.OrderedDict()  # type: collections.OrderedDict
        self._items = {}  # type: Dict[str, Tuple[str, str]]  # item id -> (response id, item)

    def put(self, response: Dict[str, Any], input_items: List[Dict[str, Any]], history: Any = ()) -> None:
        """Keep a finished response, the input items it answered and the conversation before them."""
        items = {}  # type: Dict[str, str]
        for item in list(input_items) + list(response.get("output") or []):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                items[item["id"]] = compact_json(item)
        self._put(response["id"], compact_json(response), compact_json(list(input_items)),
                  compact_json(list(history)), items)

    def get(self, response_id: str) -> Optional[Dict[str, Any]]:
        record = self._load(response_id)
        return json.loads(record[0]) if record else None

    def input_items(self, response_id: str) -> Optional[List[Dict[str, Any]]]:
        record = self._load(response_id)
        return json.loads(record[1]) if record else None

    def conversation(self, response_id: str) -> Optional[List[Dict[str, Any]]]:
        """The items up to and including the response's output: the ``history`` a request
        that continues it (``previous_response_id``) needs."""
        record = self._load(response_id)
        if record is None:
            return None
        return json.loads(record[2]) + json.loads(record[1]) + (json.loads(record[0]).get("output") or [])

    def items(self, item_ids: List[str]) -> Dict[str, Dict[str, Any]]:
        """The stored input and output items among ``item_ids``, by id (for ``item_reference``)."""
        return {item_id: json.loads(text) for item_id, text in self._load_items(item_ids).items()}

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._drop(response_id)

    # -- what a store keeps where: in memory here; SQLiteResponseStore overrides these --

    def _put(self, response_id: str, response: str, input_items: str, history: str, items: Dict[str, str]) -> None:
        with self._lock:
            now = self.clock()
            self._drop(response_id)
            for old in [key for key, record in self._records.items() if now - record[0] > self.max_age]:
                self._drop(old)
            size = _record_size(response, input_items, history, items)
            self._records[response_id] = (now, response, input_items, history, tuple(items), size)
            self._bytes += size
            for item_id, text in items.items():
                self._items[item_id] = (response_id, text)
            while self._records and (len(self._records) > self.max_entries or self._bytes > self.max_bytes):
                self._drop(next(iter(self._records)))

    def _load(self, response_id: str) -> Optional[Tuple[str, str, str]]:
        """(response, input items, history) as JSON text, or None; counts as a use."""
        with self._lock:
            record = self._records.get(response_id)
            if record is None:
                return None
            if self.clock() - record[0] > self.max_age:
                self._drop(response_id)
                return None
            self._records.move_to_end(response_id)
            return record[1], record[2], record[3]

    def _load_items(self, item_ids: List[str]) -> Dict[str, str]:
        with self._lock:
            now = self.clock()
            found = {}
            for item_id in item_ids:
                owner = self._items.get(item_id)
                record = self._records.get(owner[0]) if owner else None
                if owner and record and now - record[0] <= self.max_age:
                    found[item_id] = owner[1]
            return found

    def _drop(self, response_id: str) -> bool:
        """Forget one response and the items it holds (the lock is held)."""
        record = self._records.pop(response_id, None)
        if record is None:
            return False
        for item_id in record[4]:
            if self._items.get(item_id, ("",))[0] == response_id:
                del self._items[item_id]
        self._bytes -= record[5]  # what it added when stored, whoever holds its items now
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def close(self) -> None:
        """Nothing to release in memory (SQLiteResponseStore closes its connection)."""


def _record_size(response: str, input_items: str, history: str, items: Dict[str, str]) -> int:
    """What one stored response takes, counted in characters of its JSON text."""
    return len(response) + len(input_items) + len(history) + sum(len(text) for text in items.values())


RESPONSE_STORE_FILENAME = "responses.sqlite3"
_RESPONSE_STORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, stored REAL NOT NULL, used INTEGER NOT NULL,
                                      response TEXT NOT NULL, input TEXT NOT NULL, history TEXT NOT NULL,
                                      size INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS responses_used ON responses (used);
CREATE INDEX IF NOT EXISTS responses_stored ON responses (stored);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, response TEXT NOT NULL, item TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_response ON items (response);
"""


class SQLiteResponseStore(ResponseStore):
    """A ResponseStore in a SQLite file, so that ``--workers N`` processes share it: any worker
    continues a response another one made.

    The parent makes the file's private directory (``make_private_dir()``) before it forks
    and removes it at exit (``remove_private_dir()``); each process opens its own connection
    on first use (a connection must not cross a fork).  SQLite's file locks serialize writers
    across processes; one lock per object serializes this process's threads on its one
    connection.  Least recently used is a counter in the file, shared by all processes.
    """

    def __init__(self, path: str, max_entries: int = DEFAULT_RESPONSE_STORE_ENTRIES,
                 max_age: float = DEFAULT_RESPONSE_STORE_SECONDS, clock: Callable[[], float] = time.time,
                 max_bytes: int = int(DEFAULT_RESPONSE_STORE_MB * 1048576)) -> None:
        super().__init__(max_entries, max_age, clock, max_bytes)
        self.path = path
        self._connection = None  # type: Any
        self._pid = 0

    def _db(self) -> Any:
        """This process's connection (the lock is held)."""
        if self._connection is None or self._pid != os.getpid():
            import sqlite3
            connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_RESPONSE_STORE_SCHEMA)
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _write(self, steps: Callable[[Any], Any]) -> Any:
        """Run ``steps(connection)`` in one write transaction (the lock is held)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = steps(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    @staticmethod
    def _forget(db: Any, where: str, args: Tuple[Any, ...]) -> int:
        """Delete the responses ``where`` selects, and their items; how many went."""
        db.execute("DELETE FROM items WHERE response IN (SELECT id FROM responses WHERE %s)" % where, args)
        return db.execute("DELETE FROM responses WHERE %s" % where, args).rowcount

    def _put(self, response_id: str, response: str, input_items: str, history: str, items: Dict[str, str]) -> None:
        def steps(db: Any) -> None:
            now = self.clock()
            self._forget(db, "id = ? OR stored < ?", (response_id, now - self.max_age))
            used = db.execute("SELECT COALESCE(MAX(used), 0) + 1 FROM responses").fetchone()[0]
            db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (response_id, now, used, response, input_items, history,
                        _record_size(response, input_items, history, items)))
            db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)",
                           [(item_id, response_id, text) for item_id, text in items.items()])
            self._forget(db, "id IN (SELECT id FROM responses ORDER BY used DESC LIMIT -1 OFFSET ?)",
                         (self.max_entries,))
            total = db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0]
            while total > self.max_bytes:  # past max_bytes, the least recently used go
                oldest = db.execute("SELECT id, size FROM responses ORDER BY used LIMIT 1").fetchone()
                self._forget(db, "id = ?", (oldest[0],))
                total -= oldest[1]

        with self._lock:
            self._write(steps)

    def _load(self, response_id: str) -> Optional[Tuple[str, str, str]]:
        def steps(db: Any) -> Optional[Tuple[str, str, str]]:
            row = db.execute("SELECT stored, response, input, history FROM responses WHERE id = ?",
                             (response_id,)).fetchone()
            if row is None:
                return None
            if self.clock() - row[0] > self.max_age:
                self._forget(db, "id = ?", (response_id,))
                return None
            db.execute("UPDATE responses SET used = (SELECT MAX(used) + 1 FROM responses) WHERE id = ?",
                       (response_id,))
            return row[1], row[2], row[3]

        with self._lock:
            return self._write(steps)

    def _load_items(self, item_ids: List[str]) -> Dict[str, str]:
        found = {}  # type: Dict[str, str]
        with self._lock:
            db = self._db()
            for item_id in item_ids:
                row = db.execute("SELECT items.item FROM items JOIN responses ON responses.id = items.response "
                                 "WHERE items.id = ? AND responses.stored >= ?",
                                 (item_id, self.clock() - self.max_age)).fetchone()
                if row is not None:
                    found[item_id] = row[0]
        return found

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._write(lambda db: self._forget(db, "id = ?", (response_id,))) > 0

    def __len__(self) -> int:
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._connection.close()
            self._connection = None


def make_private_dir() -> str:
    """A new directory only this user can enter, for the shared response store's file."""
    import tempfile
    return tempfile.mkdtemp(prefix="gigaproxy-")


def remove_private_dir(path: str) -> None:
    import shutil
    shutil.rmtree(path, ignore_errors=True)


# ==== HTTP handler ====
# One thread per client connection (GigaProxyServer, a ThreadingHTTPServer).  http.server
# parses request lines and headers, keeps connections alive, answers Expect: 100-continue
# and writes status lines and dates; Handler adds the checks: framing rules (RFC 9112
# §6-7), a deadline per request, the body limit, JSON errors.  Routes are a table;
# _dispatch() is the single place where errors are rendered.

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # a token (RFC 9110 §5.1)
# A chunk-size line: the size, then extensions (ignored), then CRLF.  A size too large for
# any body (up to 64 hex digits) is a 413, not a 400.
_CHUNK_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,64})[ \t]*(?:;[^\r\n]*)?\r\n\Z")
_HEADER_DEFECTS = (email.errors.MissingHeaderBodySeparatorDefect, email.errors.FirstHeaderLineIsContinuationDefect,
                   email.errors.InvalidHeaderDefect, email.errors.MisplacedEnvelopeHeaderDefect)
MAX_CHUNK_SIZE_LINE = 1024  # bytes, CRLF included
MAX_TRAILER_LINES = 100  # header lines after the last chunk, as http.client allows for headers


def _printable(text: str, limit: int = 300) -> str:
    """Escape control characters so a client cannot forge log lines."""
    text = _CONTROL_CHARS.sub(lambda m: "\\x%02x" % ord(m.group()), text)
    return text if len(text) <= limit else text[:limit] + "..."


class _ClientGone(Exception):
    """The client closed its connection while we were writing to it."""


class _DeadlineReader:
    """The client's input stream with a deadline for the whole request (head and body).

    Each read is one ``recv`` at most, with the socket timeout set to the time left, so a
    client that trickles a byte at a time (slowloris) cannot hold a thread past the
    deadline.  Past it, reads raise ``socket.timeout``, which http.server treats as a
    timed-out request and the body reader turns into a 408.
    """

    def __init__(self, raw: Any, handler: "Handler", deadline: float) -> None:
        self._raw = raw
        self._handler = handler
        self.deadline = deadline
        self.bare_cr = False  # a line read had a CR that does not end it (see Handler._check_framing)

    def _arm(self) -> None:
        """Bound the next recv by the time left (a syscall only when that is a second less or under a second)."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request was not received within GIGAPROXY_CLIENT_TIMEOUT")
        current = self._handler.socket_timeout
        if current is None or current - left > 1.0 or (left < 1.0 and current > left):
            self._handler.set_socket_timeout(left)

    def readline(self, limit: int = -1) -> bytes:
        parts, size = [], 0
        while limit < 0 or size < limit:
            self._arm()
            available = self._raw.peek(1)
            if not available:
                break
            end = available.find(b"\n")
            take = len(available) if end < 0 else end + 1
            if limit >= 0:
                take = min(take, limit - size)
            part = self._raw.read(take)
            parts.append(part)
            size += len(part)
            if part.endswith(b"\n"):
                break
        line = b"".join(parts)
        if b"\r" in (line[:-2] if line.endswith(b"\r\n") else line):
            self.bare_cr = True
        return line

    def read(self, size: int = -1) -> bytes:
        parts, got = [], 0
        while size < 0 or got < size:
            self._arm()
            part = self._raw.read1(65536 if size < 0 else min(65536, size - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)


class _FramingError(Exception):
    """A request whose message framing is ambiguous or broken: answered, then the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves one client connection (HTTP/1.1, keep-alive): the OpenAI API and the dialects.

    http.server reads each request line and its headers; ``parse_request`` then applies
    the framing rules the standard library leaves to its users (no Transfer-Encoding with
    Content-Length, only ``chunked``, one plain Content-Length, token header names, no
    folded lines, no HTTP/0.9): a request that breaks them is answered and its
    connection closed, nothing more read from it.  Every route answers with and without
    the ``/v1`` prefix.  Handlers raise ProxyError for anything the client should see;
    ``_dispatch`` renders it in the route's dialect (OpenAI's error body unless the route
    is Anthropic's or Gemini's), turns any other exception into a
    500 without a traceback on the wire, and writes one access-log line.  A streamed
    answer is written chunk by chunk (chunked transfer encoding) the moment each
    upstream event is translated; once its headers are out, an error can only be
    reported as an ``error`` event followed by the end of the stream.

    Between requests the connection is idle: the server may close it to make room for a
    new one (see GigaProxyServer); a connection that sends nothing is closed after
    GIGAPROXY_CLIENT_TIMEOUT, an idle keep-alive one after DEFAULT_KEEPALIVE_TIMEOUT at most.
    """

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # errors before the version is known still get a status line
    server_version = "gigaproxy/" + __version__
    sys_version = ""
    disable_nagle_algorithm = True  # TCP_NODELAY: a stream's events leave at once
    server = None  # type: GigaProxyServer  # set by socketserver; declared for readers

    # -- plumbing: waiting for requests, framing checks, writing ---------------------------

    def setup(self) -> None:
        super().setup()
        self._input = self.rfile  # the buffered socket reader; each request reads through a _DeadlineReader
        self.socket_timeout = None  # type: Optional[float]  # what the connection's timeout is set to
        self._answered = 0  # requests answered on this connection
        self._new_request()

    def _new_request(self) -> None:
        """What one request's answer, access line and metrics are made of, reset."""
        self._started = time.monotonic()
        self._status = 0  # what the access line and the metrics report; set as each answer starts
        self._route_name = "-"
        self._model = self._served_by = self._upstream_id = "-"
        self._stream_outcome = None  # type: Optional[str]
        self._errors = openai_error  # type: Callable[[ProxyError], Tuple[int, Dict[str, Any], Dict[str, str]]]
        self._response_headers = {}  # type: Dict[str, str]  # a dialect's headers on every answer (request-id)

    def finish(self) -> None:
        self.rfile = self._input  # so that socketserver closes the real reader
        super().finish()

    def set_socket_timeout(self, seconds: float) -> None:
        """Set the connection's timeout; no syscall when it already is that."""
        if seconds != self.socket_timeout:
            self.connection.settimeout(seconds)
            self.socket_timeout = seconds

    def handle_one_request(self) -> None:
        """Wait for the next request (idle: the server may close the connection meanwhile),
        then give it GIGAPROXY_CLIENT_TIMEOUT to arrive whole, head and body."""
        config = self.server.config
        self.close_connection = True
        wait = config.client_timeout if not self._answered else min(DEFAULT_KEEPALIVE_TIMEOUT, config.client_timeout)
        self.server.connection_idle(self.connection)
        try:
            self.set_socket_timeout(wait)
            arrived = self._input.peek(1)
        except OSError:  # idle too long, or the client (or the server making room) closed it
            arrived = b""
        if not self.server.connection_busy(self.connection) or not arrived:
            return
        self._body = _DeadlineReader(self._input, self, time.monotonic() + config.client_timeout)
        # A head that arrived whole is read straight from the buffer (and looked over here for a
        # CR that ends no line); one still coming, under the deadline (whose readline looks).
        end = arrived.find(b"\r\n\r\n")
        self.rfile = self._input if end >= 0 else self._body
        self._body.bare_cr = end >= 0 and b"\r" in arrived[:end + 2].replace(b"\r\n", b"")
        self._new_request()
        try:
            super().handle_one_request()
        except _ClientGone:  # went away before an answer to a bad head (or a 413 to Expect) was out
            self.close_connection = True
        finally:
            self.rfile = self._input
            self._answered += 1

    def parse_request(self) -> bool:
        """http.server's parse, then the framing rules it leaves to us (RFC 9112 §6, §7)."""
        self._expect_continue = False
        if not super().parse_request():
            return False
        try:
            self._check_framing()
        except _FramingError as exc:
            self.send_error(exc.status, str(exc))
            return False
        if self._expect_continue:
            length = self.headers.get("Content-Length")
            if length is not None and int(length) > self.server.config.max_body_bytes:
                self._send_json(413, self._too_large().body(), {"Connection": "close"})
                self._log_access()
                self._drain(int(length))
                return False
            http.server.BaseHTTPRequestHandler.handle_expect_100(self)
        return True

    def handle_expect_100(self) -> bool:
        """Noted here, answered by parse_request once the framing and the size are checked."""
        self._expect_continue = True
        return True

    def _check_framing(self) -> None:
        """Refuse what a front proxy could read differently from us (request smuggling)."""
        if len(self.requestline.split()) != 3:
            raise _FramingError(400, "HTTP/0.9 requests are not supported")
        if self._body.bare_cr:  # the email parser takes a lone CR for a line end: a hidden header
            raise _FramingError(400, "a CR in the request head that does not end a line")
        headers = self.headers
        # The email parser behind http.server takes a line it cannot read as the end of the
        # headers (its defects say so), a first "From " line as an envelope, and a folded
        # line as part of the one before.
        if headers.get_unixfrom() or any(isinstance(d, _HEADER_DEFECTS) for d in headers.defects):
            raise _FramingError(400, "malformed header line")
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise _FramingError(400, "bad header name %r" % name[:60])
            if "\n" in value or "\r" in value:
                raise _FramingError(400, "folded header lines (obs-fold) are not accepted: %s" % name[:60])
        encodings = headers.get_all("Transfer-Encoding")
        lengths = headers.get_all("Content-Length")
        if encodings and lengths:
            raise _FramingError(400, "Transfer-Encoding and Content-Length together are not accepted")
        if encodings and ",".join(encodings).strip().lower() != "chunked":
            raise _FramingError(501, "Transfer-Encoding %r is not supported (only chunked)"
                                % _printable(", ".join(encodings), 60))
        if lengths and (len(lengths) > 1 or not _DIGITS.match(lengths[0].strip(" \t"))):
            raise _FramingError(400, "Content-Length must be one plain number (got %s)"
                                % _printable(", ".join(lengths), 60))

    def version_string(self) -> str:
        return self.server_version

    _date = (-1, "")  # (second, its Date header value), shared by every connection

    def date_time_string(self, timestamp: Optional[float] = None) -> str:
        """http.server's Date value, formatted once a second rather than once a response."""
        if timestamp is not None:
            return super().date_time_string(timestamp)
        second = int(time.time())
        cached = Handler._date
        if cached[0] != second:
            cached = Handler._date = (second, super().date_time_string(second))
        return cached[1]

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        """http.server calls this as a response starts: the status is noted; the access line comes at the end."""
        self._status = int(code) if isinstance(code, int) else self._status

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.info("%s " + format, self.address_string(), *(_printable(a) if isinstance(a, str) else a for a in args))

    def log_error(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("%s " + format, self.address_string(), *args)

    def _log_access(self) -> None:
        """The access line: request, status, the model asked of GigaChat and the one that
        answered, time taken, GigaChat's request id, and how a stream ended."""
        self.log_message("%s %s %s model=%s served=%s %.0fms upstream_id=%s%s", self.command or "-",
                         urllib.parse.urlsplit(self.path).path if self.command else "-", self._status or "-",
                         self._model, self._served_by, (time.monotonic() - self._started) * 1000,
                         self._upstream_id, " stream=" + self._stream_outcome if self._stream_outcome else "")

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        """http.server's error replies (bad request line or headers, 414, 431, 501, 505) in JSON, then close."""
        self.close_connection = True
        if not self.request_version:  # a request line over 64 KiB: http.server cleared everything
            self.request_version = self.default_request_version
        self.command = self.command or ""
        self._send_json(code, ProxyError(code, message or "bad request", "invalid_request_error").body(),
                        {"Connection": "close"})
        self._log_access()

    def _send_json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
        self._send_body(status, compact_json(obj).encode("utf-8"), "application/json; charset=utf-8", headers)

    def _send_body(self, status: int, data: bytes, content_type: str, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in self._response_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Connection" not in (headers or {}):
            if self.close_connection:
                self.send_header("Connection", "close")
            elif self.request_version == "HTTP/1.0":
                self.send_header("Connection", "keep-alive")  # an HTTP/1.0 client must be told it stays open
        # The head and the body leave in one write (one syscall, one TCP segment when small).
        self._headers_buffer.append(b"\r\n" if self.command == "HEAD" else b"\r\n" + data)
        try:
            self.flush_headers()
        except OSError as exc:  # the client is gone: nobody to tell
            raise _ClientGone(exc)

    def _write_events(self, adapter: Any, chunks: List[Dict[str, Any]], end: bool = False) -> None:
        """What one upstream event became, through the dialect's stream adapter, in one
        write (``end``: and the adapter's closing events, then the end of the body)."""
        events = [event for chunk in chunks for event in adapter.feed(chunk)]
        if end:
            events += adapter.finish()
        if events or end:
            self._write_chunk(adapter.encode(events), end)

    def _write_chunk(self, data: bytes, end: bool = False) -> None:
        """One chunk of a chunked body (``end``: and the empty chunk that ends the body);
        for an HTTP/1.0 client, which knows no chunks, the bytes as they are (the end of
        the connection ends the body).

        The response head, if still held, goes out with it, in the same write.
        """
        if self.request_version == "HTTP/1.0":
            chunk = data
        else:
            chunk = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
            if end:
                chunk += b"0\r\n\r\n"
        try:
            if getattr(self, "_headers_buffer", None):
                self._headers_buffer.append(chunk)
                self.flush_headers()
                self.server.upstream.metrics.observe("gigaproxy_stream_first_token_seconds",
                                                     time.monotonic() - self._started, route=self._route_name)
            else:
                self.wfile.write(chunk)
        except OSError as exc:
            raise _ClientGone(exc)

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        self._stream_started = False
        self._linger = 0  # body bytes to read and discard after an early answer
        self._body_taken = False  # the request's body was read (or set aside): it cannot pass for a request
        path = urllib.parse.urlsplit(self.path).path
        self.server.request_started()
        self._gemini_route = self._gemini_path(path)
        self._errors = gemini_error if self._gemini_route else ROUTE_ERRORS.get(_route_key(path), openai_error)
        # (even a refused key is answered in the route's dialect)
        if self._errors is anthropic_http_error:
            self._response_headers["request-id"] = "req_" + os.urandom(12).hex()
        try:
            self.set_socket_timeout(CLIENT_WRITE_TIMEOUT)  # for writing; body reads re-arm it
            self._check_api_key(path)
            handler, args = self._route(path)
            if self.command in ("GET", "HEAD", "DELETE", "OPTIONS") and (
                    self.headers.get("Transfer-Encoding") or (self._declared_length() or 0) > 0):
                self._discard_body()  # these routes read no body: before the answer, so it can say Connection: close
            handler(*args)
        except ProxyError as exc:
            self._upstream_id = exc.upstream_id or self._upstream_id
            self._render_error(exc)
        except _ClientGone:
            self.close_connection = True
            self._status = self._status or 499
        except Exception:
            log.exception("internal error while serving %s %s", self.command, _printable(path))
            self._render_error(ProxyError(500, "internal error in gigaproxy; see its log", "api_error", "internal_error"))
        finally:
            if not self._body_taken:  # a route that reads no body (GET /v1/models with a Content-Length)
                self._discard_body()
            if self._linger:
                self._drain(self._linger)
            if self.server.draining:
                self.close_connection = True
            self.server.request_finished()
            metrics = self.server.upstream.metrics
            metrics.inc("gigaproxy_requests_total", route=self._route_name, status=str(self._status or 0),
                        model=self._model)
            metrics.observe("gigaproxy_request_duration_seconds", time.monotonic() - self._started,
                            route=self._route_name)
            self._log_access()

    def _check_api_key(self, path: str) -> None:
        """With GIGAPROXY_API_KEY set, every route but /health needs it (Bearer or x-api-key)."""
        expected = self.server.config.api_key
        if not expected or path.rstrip("/") in ("/health", "/v1/health"):
            return
        supplied = self.headers.get("x-api-key") or self.headers.get("api-key") or self._google_key() or ""
        authorization = self.headers.get("Authorization") or ""
        if authorization[:7].lower() == "bearer ":
            supplied = authorization[7:].strip()
        import hmac  # only with GIGAPROXY_API_KEY set; after the first request, a dict lookup

        if not hmac.compare_digest(supplied.encode("utf-8", "replace"), expected.encode("utf-8")):
            self._discard_body()
            raise ProxyError(401, "missing or wrong API key: send GIGAPROXY_API_KEY as 'Authorization: Bearer "
                             "<key>', 'x-api-key' or 'x-goog-api-key'", "authentication_error", "invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"})

    def _drain(self, size: int) -> None:
        """Read and drop up to ``size`` body bytes (-1: until EOF), for DRAIN_SECONDS at most.

        A client still sending a body it was refused would otherwise get a reset before
        it reads the answer; so the answer goes out, our side is shut for writing, and
        what the client still sends is read and dropped for a short while.
        """
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            while size != 0 and time.monotonic() < deadline:
                self.set_socket_timeout(max(0.01, deadline - time.monotonic()))
                part = self._input.read1(65536 if size < 0 else min(size, 65536))
                if not part:
                    break
                size = -1 if size < 0 else size - len(part)
        except OSError:
            pass

    def _render_error(self, exc: ProxyError) -> None:
        """The error as the route's dialect writes errors (``_errors``: OpenAI's unless a route says)."""
        if self._stream_started:
            return  # the stream code already reported it in-band
        status, body, headers = self._errors(exc)
        try:
            self._send_json(status, body, headers)
        except _ClientGone:
            self.close_connection = True

    # -- routing ------------------------------------------------------------------------

    def _gemini_path(self, path: str) -> Optional[Tuple[str, str]]:
        """(model, method) when the request is for the Gemini API, else None.

        ``/v1beta/...`` and ``/models/{model}:{method}`` are Gemini's alone; ``/v1/models``
        (the google-genai SDK's default version) is Gemini's for a request that
        authenticates the Google way (``x-goog-api-key`` or ``?key=``), OpenAI's otherwise.
        """
        found = gemini_path(path)
        if found is None or (found[1] == "" and not path.startswith("/v1beta") and self._google_key() is None):
            return None
        return found

    def _google_key(self) -> Optional[str]:
        """The key a Google client sends: ``x-goog-api-key``, or ``?key=`` in the URL."""
        key = self.headers.get("x-goog-api-key")
        if key is None and "key=" in self.path:
            key = (urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("key") or [None])[0]
        return key

    def _route(self, path: str) -> Tuple[Callable[..., None], Tuple[Any, ...]]:
        if self._gemini_route is not None:
            model, action = self._gemini_route
            allowed = ("GET",) if action == "" else ("POST",) if action in GEMINI_ACTIONS else ()
            self._route_name = "/models/{model}:" + action if allowed and action else "/models (gemini)"
            if not allowed:
                self._discard_body()
                raise ProxyError(404, "no method %r in gigaproxy's Gemini API (it serves %s)"
                                 % (_printable(action, 40), ", ".join(GEMINI_ACTIONS)), "invalid_request_error",
                                 "not_found")
            if ("GET" if self.command == "HEAD" else self.command) not in allowed:
                self._discard_body()
                raise ProxyError(405, "method %s is not allowed here (use %s)" % (self.command, allowed[0]),
                                 "invalid_request_error", "method_not_allowed", headers={"Allow": allowed[0]})
            return self._gemini, (model, action)
        path = _route_key(path)
        method = "GET" if self.command == "HEAD" else self.command
        parts = path.split("/")
        if path.startswith("/models/") and len(path) > len("/models/"):
            allowed = {"GET": self._model_info}  # type: Dict[str, Callable[..., None]]
            args = (urllib.parse.unquote(path[len("/models/"):]),)  # type: Tuple[Any, ...]
            self._route_name = "/models/{id}"
        elif len(parts) in (3, 4) and parts[1] == "responses" and parts[2] and parts[3:] in ([], ["input_items"]):
            allowed = {"GET": self._response} if parts[3:] else {"GET": self._response, "DELETE": self._response}
            args = (parts[2], "".join(parts[3:]))
            self._route_name = "/responses/{id}" + "".join("/" + p for p in parts[3:])
        else:
            allowed = ROUTES.get(path, {})
            allowed = {m: getattr(self, name) for m, name in allowed.items()}
            args = ()
            self._route_name = path if allowed else "unknown"
        if not allowed:
            self._discard_body()
            raise ProxyError(404, "no route %s %s; gigaproxy serves /v1/chat/completions, /v1/completions, "
                             "/v1/embeddings, /v1/models, /v1/responses, /v1/messages, /v1beta/models, /health"
                             % (self.command, _printable(path, 100)), "invalid_request_error", "not_found")
        if method not in allowed:
            self._discard_body()
            raise ProxyError(405, "method %s is not allowed on %s (use %s)"
                             % (self.command, _printable(path, 100), ", ".join(sorted(allowed))),
                             "invalid_request_error", "method_not_allowed",
                             headers={"Allow": ", ".join(sorted(allowed))})
        return allowed[method], args

    # -- request bodies -----------------------------------------------------------------
    # The framing headers were checked in parse_request: at most one plain Content-Length,
    # or Transfer-Encoding exactly "chunked", never both.

    def _declared_length(self) -> Optional[int]:
        """The Content-Length (checked in parse_request), or None without one."""
        length = self.headers.get("Content-Length")
        return None if length is None else int(length)

    def _discard_body(self) -> None:
        """Keep the connection usable after refusing (or not needing) a request's body:
        read and drop a small one, close after a large or chunked one."""
        self._body_taken = True
        length = self._declared_length()
        if self.headers.get("Transfer-Encoding") or (length or 0) > 65536:
            self._linger = -1 if length is None else length  # read after answering, then close
            self.close_connection = True
        elif length:
            try:
                self._body.read(length)
            except OSError:
                self.close_connection = True

    def _too_large(self) -> ProxyError:
        return ProxyError(413, "request body is larger than %g MB (GIGAPROXY_MAX_BODY_MB)"
                          % (self.server.config.max_body_bytes / 1048576.0), "invalid_request_error",
                          "request_too_large")

    def _read_body(self) -> bytes:
        """The request body (Content-Length or chunked), within the size limit and deadline."""
        self._body_taken = True
        try:
            return self._read_body_unguarded()
        except socket.timeout:
            self.close_connection = True
            raise ProxyError(408, "the request body did not arrive within %g s (GIGAPROXY_CLIENT_TIMEOUT)"
                             % self.server.config.client_timeout, "invalid_request_error", "request_timeout")
        except OSError as exc:
            raise _ClientGone(exc)
        finally:
            self.set_socket_timeout(CLIENT_WRITE_TIMEOUT)

    def _read_body_unguarded(self) -> bytes:
        limit = self.server.config.max_body_bytes
        if self.headers.get("Transfer-Encoding"):
            return self._read_chunked(limit)
        length = self._declared_length()
        if length is None:
            self.close_connection = True
            raise ProxyError(411, "a request body needs a Content-Length header", "invalid_request_error",
                             "length_required")
        if length > limit:
            self.close_connection = True
            self._linger = length  # read it after answering (for a while), so the client sees the 413
            raise self._too_large()
        return self._read_exact(length)

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body read strictly (RFC 9112 §7.1): a bounded size line whose extensions
        are ignored, CRLF after every chunk's data, trailers read (bounded) and dropped.

        Anything else is a 400 and the end of the connection: nothing more is read from it.
        """
        parts, total = [], 0
        while True:
            line = self._body.readline(MAX_CHUNK_SIZE_LINE + 1)
            match = _CHUNK_SIZE_LINE.match(line) if len(line) <= MAX_CHUNK_SIZE_LINE else None
            if match is None:
                raise self._bad_chunked("malformed chunk size line" if line else "the body ended before its last chunk")
            size = int(match.group(1), 16)
            if size == 0:
                break
            total += size
            if total > limit:
                self.close_connection = True
                self._linger = -1
                raise self._too_large()
            parts.append(self._read_exact(size))
            if self._body.read(2) != b"\r\n":
                raise self._bad_chunked("a chunk's data is not followed by CRLF")
        for _ in range(MAX_TRAILER_LINES + 1):
            line = self._body.readline(65537)
            if line == b"\r\n":
                return b"".join(parts)
            if not line.endswith(b"\r\n") or len(line) > 65536:
                break
        raise self._bad_chunked("malformed or endless trailer after the last chunk")

    def _bad_chunked(self, message: str) -> ProxyError:
        self.close_connection = True
        return bad_request("malformed chunked request body: " + message, None, "bad_chunked_body")

    def _read_exact(self, size: int) -> bytes:
        data = self._body.read(size)
        if len(data) < size:
            self.close_connection = True
            raise bad_request("request body ended after %d of %d bytes" % (len(data), size), None, "truncated_body")
        return data

    def _read_json(self) -> Dict[str, Any]:
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media and media not in JSON_MEDIA_TYPES and not media.endswith("+json"):
            self._discard_body()
            raise ProxyError(415, "Content-Type %s is not supported; send application/json"
                             % _printable(media, 60), "invalid_request_error", "unsupported_media_type")
        data = self._read_body()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise bad_request("request body is not valid UTF-8 (byte %d)" % exc.start, None, "invalid_encoding")
        if not text.strip():
            raise bad_request("request body is empty; send a JSON object", None, "invalid_json")
        try:
            value = json.loads(text, parse_constant=_reject_constant)  # NaN and Infinity are not JSON
        except RecursionError:
            raise bad_request("request body is nested too deeply", None, "invalid_json")
        except ValueError as exc:
            raise bad_request("request body is not valid JSON: %s" % exc, None, "invalid_json")
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            try:  # an escaped half of a surrogate pair alone is not text: GigaChat could not take it
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("request body has an unpaired surrogate escape (\\ud800-\\udfff), which is not "
                                  "Unicode text", None, "invalid_encoding")
        if not isinstance(value, dict):
            raise bad_request("request body must be a JSON object, not %s" % _type_name(value), None, "invalid_json")
        return value

    # -- routes -------------------------------------------------------------------------

    def _root(self) -> None:
        self._send_json(200, {"name": "gigaproxy", "version": __version__, "openai_base_url": "/v1"})

    def _health(self) -> None:
        self._send_json(200, {"status": "ok", "version": __version__})

    def _list_models(self) -> None:
        if self.headers.get("anthropic-version"):  # Claude Code's model picker asks in Anthropic's shape
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self._errors = anthropic_http_error
            self._send_json(200, anthropic_models_list(self._model_objects(), *[(query.get(name) or [None])[0]
                                                                               for name in ("limit", "after_id",
                                                                                            "before_id")]))
            return
        self._send_json(200, {"object": "list", "data": self._model_objects()})

    def _model_info(self, model_id: str) -> None:
        """Any id a chat request would accept, with the GigaChat model that serves it."""
        for item in self._model_objects():
            if item["id"] == model_id:
                self._send_json(200, item)
                return
        self._send_json(200, _model_object(model_id, "chat", "gigaproxy", self._resolve_model(model_id)))

    def _resolve_model(self, name: Any) -> str:
        config = self.server.config
        return resolve_model(name, config.model, self.server.upstream.known_model_ids(), config.model_map)

    def _model_objects(self) -> List[Dict[str, Any]]:
        """The model list: shorthands, the model map's plain names and GIGACHAT_MODEL first,
        then GigaChat's chat models, then its embedders; its service models (filters,
        checkers) are left out.  Each says its type and the GigaChat model that serves it."""
        config = self.server.config
        listed = self.server.upstream.models()
        kinds = [(m, m.get("type") or ("embedder" if m["id"] in EMBEDDING_MODELS else "chat")) for m in listed]
        items, seen = [], set()  # type: List[Dict[str, Any]], set
        own = list(MODEL_ALIASES) + [p for p, _ in config.model_map if not any(c in p for c in "*?[")] + [config.model]
        for name in own:
            if name not in seen:
                seen.add(name)
                items.append(_model_object(name, "chat", "gigaproxy", self._resolve_model(name)))
        for wanted in ("chat", "embedder"):
            for model, kind in kinds:
                if kind == wanted and model["id"] not in seen:
                    seen.add(model["id"])
                    served_by = self._resolve_model(model["id"]) if kind == "chat" else model["id"]
                    items.append(_model_object(model["id"], kind, model.get("owned_by") or "salutedevices",
                                               served_by, model.get("created")))
        return items

    def _metrics(self) -> None:
        data = self.server.upstream.metrics.render().encode("utf-8")
        self._send_body(200, data, "text/plain; version=0.0.4; charset=utf-8")

    def _forwarded_headers(self) -> Dict[str, str]:
        headers = {}
        for name in FORWARDED_HEADERS:
            value = self.headers.get(name)
            if value and len(value) <= 256 and value.isprintable():
                headers[name] = value
        return headers

    def _chat_completions(self) -> None:
        self._serve_chat([self._read_json()])

    def _completions(self) -> None:
        chats, legacy = completion_to_chat(self._read_json())
        self._serve_chat(chats, lambda response, n: to_completion_answer(response, legacy, n),
                         lambda model: CompletionStream(legacy))

    def _responses(self) -> None:
        """OpenAI Responses (Codex CLI, the Agents SDK) through the chat core; kept in the
        response store unless ``store: false``, for previous_response_id, GET and DELETE."""
        request = self._read_json()
        store = self.server.response_store
        history = ()  # type: Any
        previous = request.get("previous_response_id")
        if isinstance(previous, str):
            history = store.conversation(previous)
            if history is None:
                raise response_not_found(previous, "previous_response_id")
        references = store.items(item_references(request))
        chat = responses_to_chat(request, history, references)
        response_id = "resp_" + os.urandom(16).hex()
        created = int(time.time())
        keep = request.get("store", True) is not False
        inputs = response_input_items(request, response_id, references)
        def put(response: Dict[str, Any]) -> None:
            if keep:
                store.put(response, inputs, history)

        def respond(answer: Dict[str, Any], n: int) -> Dict[str, Any]:
            response = chat_to_responses(answer, request, response_id, created)
            put(response)
            return response

        self._serve_chat([chat], respond, lambda model: ResponsesStream(request, response_id, created, model, put))

    def _response(self, response_id: str, part: str) -> None:
        """``GET`` / ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``."""
        store = self.server.response_store
        if part == "input_items":
            items = store.input_items(response_id)
            if items is None:
                raise response_not_found(response_id)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            self._send_json(200, input_items_page(items, *[(query.get(name) or [None])[0]
                                                           for name in ("after", "limit", "order")]))
        elif self.command == "DELETE":
            if not store.delete(response_id):
                raise response_not_found(response_id)
            self._send_json(200, response_deleted(response_id))
        else:
            found = store.get(response_id)
            if found is None:
                raise response_not_found(response_id)
            self._send_json(200, found)

    def _anthropic_messages(self) -> None:
        """Anthropic Messages (Claude Code, the anthropic SDK) through the chat core."""
        request = self._read_json()
        message_id = "msg_" + self._response_headers["request-id"][4:]
        thinking = anthropic_shows_thinking(request)
        self._serve_chat([anthropic_to_chat(request)],
                         lambda response, n: chat_to_anthropic(response, response["model"], message_id, thinking),
                         lambda model: AnthropicStream(model, message_id, thinking))

    def _anthropic_count_tokens(self) -> None:
        """``{"input_tokens": n}`` for the translated request, counted by GigaChat (estimated if it cannot)."""
        request = self._read_json()
        config = self.server.config
        self._send_json(200, {"input_tokens": self._count_tokens(
            anthropic_count_input(request, config.model, self.server.upstream.known_model_ids(),
                                  config.structured_output, config.model_map))})

    def _gemini(self, model: str, method: str) -> None:
        """The Gemini API (Gemini CLI, the google-genai SDKs): ``/v1beta/models/{model}:{method}``."""
        if method == "":
            ids = [item["id"] for item in self._model_objects()]
            self._send_json(200, gemini_model_info(ids, model) if model else gemini_models(ids))
        elif method in ("generateContent", "streamGenerateContent"):
            self._gemini_generate(model, method == "streamGenerateContent")
        elif method == "countTokens":
            config = self.server.config
            self._send_json(200, {"totalTokens": self._count_tokens(count_input(
                gemini_count_request(self._read_json(), model), config.model, self.server.upstream.known_model_ids(),
                config.structured_output, config.model_map))})
        else:  # embedContent, batchEmbedContents (the router let no other method through)
            batch = method == "batchEmbedContents"
            texts, dimensions = gemini_embed_request(self._read_json(), batch)
            vectors, _ = self._embed(texts, resolve_embeddings_model(model, self.server.config.embeddings_model),
                                     dimensions, "outputDimensionality")
            self._send_json(200, gemini_embed_response(vectors, batch))

    def _gemini_generate(self, model: str, stream: bool) -> None:
        request = self._read_json()
        chat = gemini_to_chat(request, model)
        thoughts = gemini_include_thoughts(request)
        response_id = os.urandom(12).hex()
        sse = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("alt") == ["sse"]
        if stream and sse:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}  # the closing chunk reports usage
        # Without alt=sse a stream is one JSON array of chunks: one chunk holding the whole answer is one.
        self._serve_chat([chat], lambda response, n: ([chat_to_gemini(response, self._model, response_id, thoughts)]
                                                      if stream else
                                                      chat_to_gemini(response, self._model, response_id, thoughts)),
                         lambda client_model: GeminiStream(self._model, response_id, thoughts))

    def _count_tokens(self, counted: Tuple[str, List[str]]) -> int:
        """Tokens of (GigaChat model, texts) as GigaChat counts them; estimated (a DEBUG line
        says so) when it cannot."""
        model, texts = counted
        self._model = model
        if not texts:
            return 0
        try:
            answer, exchange = self.server.upstream.call("POST", "/tokens/count", {"model": model, "input": texts},
                                                         self._forwarded_headers())
            self._upstream_id = exchange.header("x-request-id") or "-"
            return count_tokens_total(answer)
        except ProxyError as exc:
            count = estimate_tokens(texts)
            log.debug("token count: GigaChat could not count (%s); estimated %d tokens", exc.message, count)
            return count

    def _serve_chat(self, requests: List[Dict[str, Any]],
                    respond: Optional[Callable[[Dict[str, Any], int], Any]] = None,
                    stream: Callable[[str], Any] = lambda model: ChatStream()) -> None:
        """Answer chat requests through the chat core, in a dialect's shapes.

        The core resolves the model, translates, uploads images, calls GigaChat (``n``
        times, or once per prompt of a legacy completion) and translates the answer back
        into a ``chat.completion``; ``respond(answer, n)`` turns that into the dialect's
        body (default: as it is), and ``stream(model)`` makes the dialect's stream adapter
        (see ChatStream) for a streamed answer (``model``: the name the client asked for).
        """
        upstream = self.server.upstream
        config = self.server.config
        translated = [translate_chat_request(r, config.model, upstream.known_model_ids(), config.structured_output,
                                             config.model_map) for r in requests]
        giga, plan = translated[0]
        self._model = giga["model"]
        client_model = requests[0].get("model") or giga["model"]
        self.server.note_model(client_model, giga["model"])
        if plan.notes:
            log.debug("rewritten for GigaChat: %s", "; ".join(plan.notes))
        completion_id = "chatcmpl-" + os.urandom(16).hex()
        created = int(time.time())
        headers = self._forwarded_headers()
        if plan.images:
            self._attach_images(plan, headers)
        if giga.get("stream"):
            options = requests[0].get("stream_options") or {}
            translator = StreamTranslator(client_model, completion_id, created, bool(options.get("include_usage")), plan)
            self._stream_chat(giga, headers, translator, stream(client_model))
            return
        calls = [(body, call_plan) for body, call_plan in translated for _ in range(call_plan.n)]
        answers = self._call_all([body for body, _ in calls], headers)
        responses = [to_openai_response(answer, client_model, completion_id, created, call_plan)
                     for answer, (_, call_plan) in zip(answers, calls)]
        response = merge_choices(responses) if len(responses) > 1 else responses[0]
        self._count_usage(response.get("system_fingerprint"), response["usage"])
        self._send_json(200, respond(response, plan.n) if respond else response)

    def _count_usage(self, served_by: Optional[str], usage: Optional[Dict[str, Any]]) -> None:
        """Note the GigaChat model that answered (for the access line) and count its tokens."""
        if served_by:
            self._served_by = served_by
        if usage:
            metrics = self.server.upstream.metrics
            metrics.inc("gigaproxy_prompt_tokens_total", usage["prompt_tokens"], model=self._model)
            metrics.inc("gigaproxy_completion_tokens_total", usage["completion_tokens"], model=self._model)

    def _attach_images(self, plan: ChatPlan, headers: Dict[str, str]) -> None:
        """Upload the request's images to GigaChat (each once) and fill in the attachment ids."""
        context = self.server.image_context
        for _, image in plan.images:
            if image.data is None and context is None:
                raise bad_request("%s: http(s) image URLs are not fetched by default (a proxy that fetches URLs "
                                  "can be abused); send a data: URL, or set GIGAPROXY_ALLOW_IMAGE_URLS=true"
                                  % image.where, image.where, "image_url_not_allowed")
        for message, image in plan.images:
            if image.data is None:
                assert context is not None and image.url is not None
                image.data, image.mime = fetch_image(image.url, context, image.where)
            message["attachments"] = [self.server.upstream.upload_image(image.data, image.mime or "", headers)]

    def _call_all(self, bodies: List[Dict[str, Any]], headers: Dict[str, str]) -> List[Any]:
        """Chat calls to GigaChat, in parallel when there are several; the first error wins."""
        results = [None] * len(bodies)  # type: List[Any]
        errors = [None] * len(bodies)  # type: List[Optional[BaseException]]

        def run(i: int) -> None:
            try:
                answer, exchange = self.server.upstream.call("POST", "/chat/completions", bodies[i], headers)
                results[i] = answer
                self._upstream_id = exchange.header("x-request-id") or "-"
            except BaseException as exc:  # re-raised below, in the request's own thread
                errors[i] = exc

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(bodies))]
        for thread in threads:
            thread.start()
        run(0)
        for thread in threads:
            thread.join()
        for error in errors:
            if error is not None:
                raise error
        return results

    def _embeddings(self) -> None:
        request = self._read_json()
        config = self.server.config
        texts, model, encoding, dimensions = embeddings_request(request, config.embeddings_model, config.tiktoken_dir)
        vectors, tokens = self._embed(texts, model, dimensions, "dimensions")
        self._send_json(200, to_embeddings_response(vectors, request.get("model") or model, tokens, encoding))

    def _embed(self, texts: List[str], model: str, dimensions: Optional[int], param: str
               ) -> Tuple[List[List[float]], int]:
        """GigaChat's vectors for ``texts`` (in batches it takes) and the tokens it counted;
        a size other than ``dimensions`` (the field ``param``) is a 400."""
        self._model = model
        vectors, tokens = [], 0  # type: List[List[float]], int
        for batch in embedding_batches(texts):
            answer, exchange = self.server.upstream.call(
                "POST", "/embeddings", {"model": model, "input": batch}, self._forwarded_headers())
            self._upstream_id = exchange.header("x-request-id") or "-"
            batch_vectors, batch_tokens = parse_embeddings_answer(answer, len(batch))
            vectors.extend(batch_vectors)
            tokens += batch_tokens
        if dimensions is not None and vectors and len(vectors[0]) != dimensions:
            raise bad_request("%s=%d is not available: %s returns %d-dimensional vectors"
                              % (param, dimensions, model, len(vectors[0])), param, "unsupported_value")
        return vectors, tokens

    def _balance(self) -> None:
        answer, _ = self.server.upstream.call("GET", "/balance", None, self._forwarded_headers())
        self._send_json(200, answer)

    def _tokens_count(self) -> None:
        request = self._read_json()
        value = request.get("input")
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
            raise bad_request("input must be a string or a non-empty array of strings", "input", "invalid_type")
        model = self._resolve_model(request.get("model"))
        self._model = model
        answer, _ = self.server.upstream.call("POST", "/tokens/count", {"model": model, "input": value},
                                              self._forwarded_headers())
        self._send_json(200, answer)

    def _stream_chat(self, giga: Dict[str, Any], headers: Dict[str, str], translator: StreamTranslator,
                     adapter: Any) -> None:
        """Stream GigaChat's answer through ``translator`` and the dialect's ``adapter`` (see ChatStream)."""
        exchange = self.server.upstream.open_stream(giga, headers)  # errors here are ordinary replies
        self._upstream_id = exchange.header("x-request-id") or "-"
        finished = False
        self.server.streams_changed(+1)
        self._stream_outcome = "client_left"  # until it ends otherwise
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            if self.request_version == "HTTP/1.0":
                self.close_connection = True  # no chunks in HTTP/1.0: the stream ends with the connection
            else:
                self.send_header("Transfer-Encoding", "chunked")
            if self.close_connection:
                self.send_header("Connection", "close")
            self.send_header("X-Accel-Buffering", "no")
            for name, value in self._response_headers.items():
                self.send_header(name, value)
            self._headers_buffer.append(b"\r\n")  # end_headers() without its flush: the head leaves with the first event
            self._stream_started = True
            try:
                for data in iter_sse_data(exchange.read_some):
                    if data.strip() == "[DONE]":
                        finished = True
                        break
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise ProxyError(502, "GigaChat sent a stream event that is not JSON: %s"
                                         % _excerpt(data.encode("utf-8")), "api_error", "upstream_bad_response")
                    self._write_events(adapter, translator.feed(event))
                    if translator.stopped_early:
                        break  # the upstream request is closed below, unread
                tail = translator.finish()
                self._count_usage(translator.system_fingerprint, translator.usage)
            except http.client.IncompleteRead:  # the connection ended inside the body
                raise ProxyError(502, "GigaChat's stream ended before the answer was complete",
                                 "api_error", "upstream_stream_incomplete")
            except (OSError, http.client.HTTPException) as exc:
                error = _transport_error(exc, self.server.upstream.host, self.server.config.timeout)
                if not isinstance(error, ProxyError):
                    raise
                raise error
            if finished:  # back to the pool before the client hears the end, so its next request finds it
                try:
                    exchange.read(STREAM_END_WAIT)  # GigaChat's body ends right after [DONE]
                except (OSError, http.client.HTTPException):
                    exchange.close()
            self._write_events(adapter, tail, end=True)
            self._stream_outcome = "complete"
        except ProxyError as exc:
            if not self._stream_started:
                self._stream_outcome = None
                raise
            self._stream_outcome = "cut"
            log.warning("stream ended with an error: %s", exc.message)
            try:
                self._write_chunk(adapter.encode(adapter.fail(exc)), end=True)
            except _ClientGone:
                self.close_connection = True
        finally:
            exchange.close()  # no-op after release(); otherwise drops the upstream connection
            self.server.streams_changed(-1)
            if self._stream_outcome:
                self.server.upstream.metrics.inc("gigaproxy_streams_total", outcome=self._stream_outcome)


DRAIN_SECONDS = 2.0
STREAM_END_WAIT = 1.0  # seconds the end of GigaChat's body may lag its [DONE]; past it the connection is dropped
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

# Request media types read as JSON: curl -d sends form-urlencoded unless told otherwise.
JSON_MEDIA_TYPES = ("application/json", "text/plain", "application/x-www-form-urlencoded")

def _route_key(path: str) -> str:
    """A request path as ROUTES knows it: without one ``/v1`` prefix or a trailing slash."""
    if path == "/v1" or path.startswith("/v1/"):
        path = path[3:]
    if len(path) > 1:
        path = path.rstrip("/")
    return path or "/"


def anthropic_http_error(exc: ProxyError) -> Tuple[int, Dict[str, Any], Dict[str, str]]:
    """An error on an Anthropic route: Anthropic's envelope and status (see anthropic_error)."""
    status, body = anthropic_error(exc)
    return status, body, exc.headers


def _model_object(model_id: str, kind: str, owned_by: str, served_by: str, created: Any = 0) -> Dict[str, Any]:
    """One entry of the model list (OpenAI's shape, plus its type and the GigaChat model that serves it)."""
    return {"id": model_id, "object": "model", "created": created if isinstance(created, int) else 0,
            "owned_by": owned_by, "type": kind, "gigachat_model": served_by}


ROUTES = {
    "/": {"GET": "_root"},
    "/health": {"GET": "_health"},
    "/metrics": {"GET": "_metrics"},
    "/api/hello": {"GET": "_health"},  # Claude Code's connectivity probe (HEAD)
    "/messages": {"POST": "_anthropic_messages"},
    "/v1/messages": {"POST": "_anthropic_messages"},  # a base URL given with /v1 by mistake
    "/messages/count_tokens": {"POST": "_anthropic_count_tokens"},
    "/v1/messages/count_tokens": {"POST": "_anthropic_count_tokens"},
    "/models": {"GET": "_list_models"},
    "/chat/completions": {"POST": "_chat_completions"},
    "/completions": {"POST": "_completions"},
    "/embeddings": {"POST": "_embeddings"},
    "/balance": {"GET": "_balance"},
    "/tokens/count": {"POST": "_tokens_count"},
    "/responses": {"POST": "_responses"},
}  # type: Dict[str, Dict[str, str]]

# Routes of other dialects, whose errors (a refused key included) are written in the dialect's envelope.
ROUTE_ERRORS = {
    "/messages": anthropic_http_error, "/v1/messages": anthropic_http_error,
    "/messages/count_tokens": anthropic_http_error, "/v1/messages/count_tokens": anthropic_http_error,
}  # type: Dict[str, Callable[[ProxyError], Tuple[int, Dict[str, Any], Dict[str, str]]]]


# ==== Server & CLI ====
# make_server() binds and wires the pieces; serve() runs until Ctrl-C or SIGTERM;
# main() reads the configuration, sets up logging and is the only place that exits.


class _OverCapacity(Handler):
    """Answers one request on a connection over the cap with 503 + ``Retry-After`` and closes it.

    The request head is read first (for a second at most), so that closing does not
    reset the answer away before the client reads it.
    """

    def handle(self) -> None:
        self.close_connection = True
        self.set_socket_timeout(1.0)
        try:
            self.raw_requestline = self._input.readline(65537)
            if self.raw_requestline and http.server.BaseHTTPRequestHandler.parse_request(self):
                self._send_json(503, ProxyError(
                    503, "gigaproxy is at GIGAPROXY_MAX_CONCURRENCY (%d connections); retry shortly"
                    % self.server.config.max_concurrency, "api_error", "overloaded").body(),
                    {"Retry-After": "1", "Connection": "close"})
        except (OSError, _ClientGone):
            pass
        log.warning("refused a connection from %s: over GIGAPROXY_MAX_CONCURRENCY=%d",
                    self.client_address[0], self.server.config.max_concurrency)

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        self.close_connection = True  # a malformed head here gets no answer but the close


class GigaProxyServer(http.server.ThreadingHTTPServer):
    """The listening socket, the shared upstream client, and the counts that bound load.

    One thread per client connection, at most ``config.max_concurrency`` of them.  A
    connection only waiting for its next request (idle) does not keep a new one out:
    at the cap the longest-idle connection is closed to make room (``_idle``, in the
    order they became idle); only when every connection is busy with a request does a
    new one get a 503 with ``Retry-After`` from a short-lived thread (those are bounded
    too; beyond them the connection is simply closed).  ``_lock`` guards the counters
    and ``_idle``; ``_quiet`` is notified when the last request ends, which is what a
    graceful shutdown waits for.  Connections are known by their sockets: ``_idle``
    holds the idle ones, ``_closed_idle`` those closed to make room whose threads have
    not ended yet.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog (socketserver's default is 5)
    allow_reuse_address = os.name != "nt"  # on Windows SO_REUSEADDR lets others steal the port

    def __init__(self, config: Config, upstream: Upstream) -> None:
        self.config = config
        self.upstream = upstream
        self.draining = False
        self.image_context = build_ssl_context(config, system_store=True) if config.allow_image_urls else None
        self._lock = threading.Lock()
        self._quiet = threading.Condition(self._lock)
        self._connections = 0  # handler threads running (those in _closed_idle included)
        self._refusing = 0
        self._requests = 0
        self._idle = collections.OrderedDict()  # type: collections.OrderedDict[socket.socket, None]
        self._closed_idle = set()  # type: set
        if config.response_store_file:  # --workers: any worker continues any response
            self.response_store = SQLiteResponseStore(config.response_store_file, config.response_store_size,
                                                      config.response_store_seconds, time.time,
                                                      config.response_store_bytes)  # type: ResponseStore
        else:
            self.response_store = ResponseStore(config.response_store_size, config.response_store_seconds, time.time,
                                                config.response_store_bytes)
        self._streams = 0
        self._models_noted = set()  # type: set  # client model names already logged with what serves them
        upstream.metrics.sources.update({
            "gigaproxy_active_requests": ("Requests being served", "gauge", lambda: self._requests),
            "gigaproxy_active_streams": ("Streamed answers being written", "gauge", lambda: self._streams),
            "gigaproxy_client_connections": ("Client connections open", "gauge", lambda: self._connections),
            "gigaproxy_upstream_idle_connections": ("Keep-alive connections to GigaChat waiting in the pool",
                                                    "gauge", upstream.transport.idle_connections),
            "gigaproxy_token_fetches_total": ("GigaChat access tokens fetched (or tried)", "counter",
                                              lambda: upstream.tokens.fetches),
            "gigaproxy_token_fetch_failures_total": ("GigaChat access token fetches that failed", "counter",
                                                     lambda: upstream.tokens.failures),
        })
        if ":" in config.host:
            self.address_family = socket.AF_INET6
        super().__init__((config.host, config.port), Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse-DNS lookup of the address (seconds on a bad resolver)."""
        if self.config.workers > 1:  # every worker process listens on the same port
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            admitted = self._connections - len(self._closed_idle) < self.config.max_concurrency
            if not admitted and self._idle and len(self._closed_idle) < MAX_REFUSING:
                self._close_idle(next(iter(self._idle)))  # the longest idle makes room
                admitted = True
            if admitted:
                self._connections += 1
                self._idle[request] = None  # idle until its thread has a request: it can make room at once
            elif self._refusing < MAX_REFUSING:
                self._refusing += 1
            else:
                self.shutdown_request(request)  # overloaded even for polite refusals
                return
        target = self.process_request_thread if admitted else self._refuse
        try:
            threading.Thread(target=target, args=(request, client_address), daemon=True).start()
        except RuntimeError as exc:  # the system will not give another thread: drop this connection
            log.warning("cannot start a thread for a connection from %s: %s", client_address[0], exc)
            self.shutdown_request(request)
            with self._lock:
                if admitted:
                    self._connections -= 1
                    self._idle.pop(request, None)
                else:
                    self._refusing -= 1

    def _close_idle(self, connection: socket.socket) -> None:
        """Close an idle connection (``_lock`` held); its thread ends on its own soon after."""
        del self._idle[connection]
        self._closed_idle.add(connection)
        try:
            connection.shutdown(socket.SHUT_RDWR)  # wakes its thread, blocked in recv
        except OSError:
            pass

    def connection_idle(self, connection: socket.socket) -> None:
        """The connection waits for its next request: it may be closed to make room meanwhile."""
        with self._lock:
            if connection not in self._closed_idle:
                self._idle[connection] = None

    def connection_busy(self, connection: socket.socket) -> bool:
        """The connection has a request (or its wait ended); False if it was closed while idle."""
        with self._lock:
            self._idle.pop(connection, None)
            return connection not in self._closed_idle

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # handle, then shutdown_request
        finally:
            with self._lock:
                self._connections -= 1
                self._idle.pop(request, None)
                self._closed_idle.discard(request)

    def _refuse(self, request: Any, client_address: Any) -> None:
        try:
            _OverCapacity(request, client_address, self)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._lock:
                self._refusing -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection failed outside any request (a reset, a half-sent request line)."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("connection from %s ended: %s", client_address[0], error)
        else:
            log.exception("unexpected error on a connection from %s", client_address[0])

    def streams_changed(self, delta: int) -> None:
        with self._lock:
            self._streams += delta

    def note_model(self, client_model: str, served_by: str) -> None:
        """Log once (INFO) that a client model name is not GigaChat's and which model serves it."""
        if client_model == served_by or client_model in self._models_noted:
            return
        with self._lock:
            if client_model in self._models_noted or len(self._models_noted) >= MAX_LABEL_SETS:
                return
            self._models_noted.add(client_model)
        log.info("model %r is served by %s (%s)", _printable(client_model, 80), served_by,
                 "GIGAPROXY_MODEL_MAP" if self.config.model_map else "a shorthand" if client_model in MODEL_ALIASES
                 else "GIGACHAT_MODEL")

    def request_started(self) -> None:
        with self._lock:
            self._requests += 1

    def request_finished(self) -> None:
        with self._lock:
            self._requests -= 1
            if self._requests == 0:
                self._quiet.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if some still are after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._requests > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._quiet.wait(left)
            return True

    def close_idle_connections(self) -> None:
        """Close every connection that waits for its next request (at shutdown)."""
        with self._lock:
            for connection in list(self._idle):
                self._close_idle(connection)

    def server_close(self) -> None:
        super().server_close()
        self.upstream.transport.close()
        self.response_store.close()


def make_server(config: Config) -> GigaProxyServer:
    """Build the SSL contexts, token manager and upstream client, and bind the socket.

    Raises ConfigError when a certificate cannot be loaded or the address is taken.
    """
    if config.verify_ssl and config.bundled_ca_file and not os.path.exists(config.bundled_ca_file):
        log.warning("%s is not next to gigaproxy.py; trusting the system certificate store only "
                    "(copy the file beside the script or set GIGACHAT_CA_BUNDLE_FILE)", BUNDLED_CA_FILENAME)
    if not config.verify_ssl:
        log.warning("TLS certificate verification is OFF (GIGACHAT_VERIFY_SSL_CERTS=false): "
                    "traffic to GigaChat can be intercepted")
    auth_context = build_ssl_context(config)
    api_context = build_ssl_context(config, client_cert=True) if config.cert_file else auth_context
    transport = Transport(config, api_context, auth_context)
    tokens = TokenManager(config, transport)
    upstream = Upstream(config, transport, tokens)
    try:
        return GigaProxyServer(config, upstream)
    except OSError as exc:
        transport.close()
        raise ConfigError("cannot listen on %s:%d (%s); choose another --port / GIGAPROXY_PORT or --host"
                          % (config.host, config.port, exc.strerror or exc))


def serve(server: GigaProxyServer) -> None:
    """Serve until Ctrl-C or SIGTERM, then stop accepting and let requests in flight finish.

    In-flight requests (streams included) get ``config.shutdown_grace`` seconds; a second
    Ctrl-C stops at once.  Idle keep-alive connections are not waited for.
    """
    previous = None
    if hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread():
        def on_sigterm(signum: int, frame: Any) -> None:
            threading.Thread(target=server.shutdown, name="gigaproxy-shutdown", daemon=True).start()
        try:
            previous = signal.signal(signal.SIGTERM, on_sigterm)
        except (ValueError, OSError):
            previous = None
    try:
        try:
            server.serve_forever(poll_interval=0.5)
        except KeyboardInterrupt:
            pass
        server.draining = True
        server.socket.close()  # stop accepting; requests in flight go on
        server.close_idle_connections()  # keep-alive clients waiting for nothing: closed now
        log.info("stopping: waiting up to %g s for requests in flight (GIGAPROXY_SHUTDOWN_GRACE)",
                 server.config.shutdown_grace)
        try:
            if not server.wait_idle(server.config.shutdown_grace):
                log.warning("requests still running after the grace period; stopping anyway")
        except KeyboardInterrupt:
            log.warning("second interrupt: stopping at once")
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


ENV_HELP = """environment variables (flag > environment > env file > default):
  GigaChat access:
  GIGACHAT_CREDENTIALS          authorization key from the Sber cabinet (alias GIGACHAT_AUTH_KEY)
  GIGACHAT_SCOPE                GIGACHAT_API_PERS (default), GIGACHAT_API_B2B or GIGACHAT_API_CORP
  GIGACHAT_USER, GIGACHAT_PASSWORD   user/password instead of a key
  GIGACHAT_ACCESS_TOKEN         a pre-issued access token
  GIGACHAT_BASE_URL             default %(base)s
  GIGACHAT_AUTH_URL             default %(auth)s
  GIGACHAT_CA_BUNDLE_FILE       extra CA certificates (PEM), e.g. your corporate proxy's root
  GIGACHAT_VERIFY_SSL_CERTS     default true (true/false/1/0/yes/no)
  GIGACHAT_CERT_FILE, GIGACHAT_KEY_FILE, GIGACHAT_KEY_FILE_PASSWORD   mTLS client certificate
  GIGACHAT_MODEL                default %(model)s: used for model names GigaChat does not have
  HTTPS_PROXY, NO_PROXY         corporate HTTP proxy (CONNECT) and the hosts that bypass it
  Timeouts and retries:
  GIGACHAT_TIMEOUT              default %(timeout)g s: longest silence from GigaChat
  GIGAPROXY_CONNECT_TIMEOUT     default %(connect)g s: to open a connection (TCP, proxy, TLS)
  GIGAPROXY_TOTAL_TIMEOUT       default %(total)g s: a whole request, retries and stream included
  GIGAPROXY_MAX_RETRIES         default %(retries)d: retries after 429, 5xx or a failed connection
  GIGAPROXY_RETRY_BACKOFF       default %(backoff)g s: first backoff, doubled each retry, jittered
  Serving:
  GIGAPROXY_API_KEY             key clients must send (Bearer or x-api-key); none by default
  GIGAPROXY_ALLOW_UNAUTHENTICATED  default false: allow a non-loopback --host without a key
  GIGAPROXY_MAX_CONCURRENCY     default %(concurrency)d client connections; more get 503
  GIGAPROXY_CLIENT_TIMEOUT      default %(client)g s for a client to send a whole request
  GIGAPROXY_MAX_BODY_MB         default %(body)g: largest request body accepted
  GIGAPROXY_SHUTDOWN_GRACE      default %(grace)g s for requests in flight at SIGTERM / Ctrl-C
  GIGAPROXY_STRUCTURED_OUTPUT   default function: json_schema answers via a forced function, or native
  GIGAPROXY_EMBEDDINGS_MODEL    default %(embeddings)s: for embeddings model names GigaChat does not have
  GIGAPROXY_TIKTOKEN_DIR        tiktoken files (cl100k_base.tiktoken) to decode token-id embeddings
                                input; default tiktoken's cache (TIKTOKEN_CACHE_DIR, <tmp>/data-gym-cache)
  GIGAPROXY_ALLOW_IMAGE_URLS    default false: fetch http(s) image URLs (public addresses only)
  GIGAPROXY_MODEL_MAP           client model names to GigaChat models, first match wins, e.g.
                                claude-*haiku*=GigaChat-2,*=GigaChat-2-Max
  GIGAPROXY_UPSTREAM_HEADERS    headers added to every GigaChat request: 'Name: value; Name2: value2'
  GIGAPROXY_RESPONSES_STORE_SIZE     default %(store_size)d: Responses API answers kept for previous_response_id
  GIGAPROXY_RESPONSES_STORE_SECONDS  default %(store_seconds)g: how long one is kept
  GIGAPROXY_RESPONSES_STORE_MB       default %(store_mb)g: the most they may take, all together
""" % {"embeddings": DEFAULT_EMBEDDINGS_MODEL, "base": DEFAULT_BASE_URL, "auth": DEFAULT_AUTH_URL, "timeout": DEFAULT_TIMEOUT, "model": DEFAULT_MODEL,
       "body": DEFAULT_MAX_BODY_MB, "connect": DEFAULT_CONNECT_TIMEOUT, "total": DEFAULT_TOTAL_TIMEOUT,
       "retries": DEFAULT_MAX_RETRIES, "backoff": DEFAULT_RETRY_BACKOFF, "concurrency": DEFAULT_MAX_CONCURRENCY,
       "client": DEFAULT_CLIENT_TIMEOUT, "grace": DEFAULT_SHUTDOWN_GRACE,
       "store_size": DEFAULT_RESPONSE_STORE_ENTRIES, "store_seconds": DEFAULT_RESPONSE_STORE_SECONDS,
       "store_mb": DEFAULT_RESPONSE_STORE_MB}


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        """One line and exit code 2, like every other startup error."""
        self.exit(2, "gigaproxy: error: %s (see --help)\n" % message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="gigaproxy",
        description="OpenAI-compatible API for Sber GigaChat. Point clients at http://HOST:PORT/v1.",
        epilog=ENV_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (env GIGAPROXY_HOST, default %s)" % DEFAULT_HOST)
    parser.add_argument("--port", type=int, help="port to listen on (env GIGAPROXY_PORT, default %d)" % DEFAULT_PORT)
    parser.add_argument("--env-file", metavar="PATH",
                        help="KEY=VALUE file to read settings from (env GIGAPROXY_ENV_FILE, default ./%s if present)"
                        % DEFAULT_ENV_FILE)
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper,
                        help="log verbosity (env GIGAPROXY_LOG_LEVEL, default %s)" % DEFAULT_LOG_LEVEL)
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes sharing the port, Linux only (env GIGAPROXY_WORKERS, default 1)")
    parser.add_argument("--check", action="store_true",
                        help="do not serve: check the settings, DNS, proxy, TLS, the token, the model list and one "
                        "tiny chat, one line each; exit 0 if all pass, 1 otherwise")
    parser.add_argument("--version", action="version", version="gigaproxy " + __version__)
    return parser


class _RedactingFilter(logging.Filter):
    """Defence in depth: replace configured secrets in any log record with ***."""

    def __init__(self, secrets: List[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None  # formatted once, here
        return True


def _configure_logging(config: Config) -> None:
    for handler in list(log.handlers):
        if getattr(handler, "_gigaproxy", False):
            log.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._gigaproxy = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s " + ("[%(process)d] " if config.workers > 1 else "")
                                           + "%(levelname)s %(message)s"))
    handler.addFilter(_RedactingFilter(config.secrets()))
    log.addHandler(handler)
    log.setLevel(config.log_level)
    log.propagate = False


def main(argv: Optional[List[str]] = None) -> int:
    """Run gigaproxy with command-line ``argv``; returns the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (argparse printed why)
        return exc.code if isinstance(exc.code, int) else 2
    if args.check:
        return _check_command(args)
    try:
        config = load_config(args)
        _configure_logging(config)
        if config.workers > 1:
            reservation = _reserve_port(config)
            config = config._replace(port=reservation.getsockname()[1])
            build_ssl_context(config, client_cert=True)  # certificate problems stop startup here, once
        else:
            server = make_server(config)
    except ConfigError as exc:
        print("gigaproxy: error: %s" % exc, file=sys.stderr)
        return 2
    if config.workers > 1:
        return _run_workers(config, reservation)
    _log_listening(config, server.server_address[:2])
    serve(server)
    log.info("gigaproxy stopped")
    return 0


def _log_listening(config: Config, address: Tuple[str, int]) -> None:
    host, port = address
    shown_host = "[%s]" % host if ":" in host else host
    log.info("gigaproxy %s listening on http://%s:%d/v1 -> %s (auth: %s, default model %s%s)",
             __version__, shown_host, port, config.base_url, config.auth_mode, config.model,
             ", %d workers" % config.workers if config.workers > 1 else "")


def _reserve_port(config: Config) -> socket.socket:
    """A bound, never-listening SO_REUSEPORT socket that holds the port for the workers."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers (GIGAPROXY_WORKERS) needs Linux (SO_REUSEPORT); on %s run one gigaproxy "
                          "per port instead" % sys.platform)
    sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise ConfigError("cannot listen on %s:%d (%s); choose another --port / GIGAPROXY_PORT or --host"
                          % (config.host, config.port, exc.strerror or exc))
    return sock


def _run_workers(config: Config, reservation: socket.socket) -> int:
    """``--workers N`` (Linux): N processes accepting on one port (SO_REUSEPORT).

    The parent holds the port with a bound socket that never listens, so the kernel
    spreads connections over the workers only; each worker binds its own listening
    socket, with its own token manager and connection pool, and reports through a pipe
    once it listens (only then is "listening" logged).  Workers ignore SIGINT: the
    parent turns the first Ctrl-C (or a SIGTERM) into SIGTERM for every worker, which
    drains as ``serve`` does, and a second Ctrl-C into SIGKILL.
    """
    private = make_private_dir()  # the workers' shared response store; removed when they have stopped
    config = config._replace(response_store_file=os.path.join(private, RESPONSE_STORE_FILENAME))
    ready_read, ready_write = os.pipe()
    children = []  # type: List[int]
    for _ in range(config.workers):
        pid = os.fork()  # type: ignore[attr-defined]
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                reservation.close()
                os.close(ready_read)
                server = make_server(config)
                os.write(ready_write, b"+")
                os.close(ready_write)
                serve(server)
                code = 0
            except ConfigError as exc:
                print("gigaproxy: error: %s" % exc, file=sys.stderr)
                code = 2
            finally:
                os._exit(code)
        children.append(pid)
    os.close(ready_write)
    ready = 0
    while ready < config.workers:
        got = os.read(ready_read, config.workers)
        if not got:
            break  # a worker died before listening; its exit status says why
        ready += len(got)
    os.close(ready_read)
    if ready == config.workers:
        _log_listening(config, reservation.getsockname()[:2])

    interrupts = [0]

    def stop(signum: int, frame: Any) -> None:
        interrupts[0] += 1
        for child in children:
            _signal_quietly(child, signal.SIGTERM if interrupts[0] == 1 else signal.SIGKILL)

    previous = signal.signal(signal.SIGTERM, stop), signal.signal(signal.SIGINT, stop)
    worst = 0
    try:
        while children:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid in children:
                children.remove(pid)
                worst = max(worst, os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
                if ready < config.workers or worst:
                    stop(signal.SIGTERM, None)  # one worker failed: the others go too
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        reservation.close()
        remove_private_dir(private)
    log.info("gigaproxy stopped")
    return worst


def _signal_quietly(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


# ---- python gigaproxy.py --check: the doctor ----------------------------------------
# One line per check: a mark (passed, failed, or not tried because a check it needs
# failed), a name and what was found; a failure adds its likely cause and the setting
# that fixes it.  The checks run on the server's own pieces (build_ssl_context,
# Transport and its CONNECT tunnel, TokenManager, Upstream), so what passes here is
# what the server will do.  Nothing is served and no secret is printed: every line is
# scrubbed of the configured secrets and the token before it is written.

CHECK_TIMEOUT = 60.0  # seconds --check waits for any one GigaChat answer (the chat included)
CHECK_PROMPT = "Reply with one word: OK"

# (variable, Config field, listed even at its default); the rest are listed when set.
_CHECK_SETTINGS = (
    ("GIGACHAT_CREDENTIALS", "credentials", False),
    ("GIGACHAT_USER", "user", False),
    ("GIGACHAT_PASSWORD", "password", False),
    ("GIGACHAT_ACCESS_TOKEN", "access_token", False),
    ("GIGACHAT_SCOPE", "scope", True),
    ("GIGACHAT_AUTH_URL", "auth_url", True),
    ("GIGACHAT_BASE_URL", "base_url", True),
    ("GIGACHAT_MODEL", "model", True),
    ("GIGACHAT_CA_BUNDLE_FILE", "ca_bundle_file", True),
    ("GIGACHAT_VERIFY_SSL_CERTS", "verify_ssl", True),
    ("GIGACHAT_CERT_FILE", "cert_file", False),
    ("GIGACHAT_KEY_FILE", "key_file", False),
    ("GIGACHAT_KEY_FILE_PASSWORD", "key_file_password", False),
    ("HTTPS_PROXY", "https_proxy", True),
    ("NO_PROXY", "no_proxy", False),
    ("GIGACHAT_TIMEOUT", "timeout", False),
    ("GIGAPROXY_CONNECT_TIMEOUT", "connect_timeout", False),
    ("GIGAPROXY_TOTAL_TIMEOUT", "total_timeout", False),
    ("GIGAPROXY_MAX_RETRIES", "max_retries", False),
    ("GIGAPROXY_RETRY_BACKOFF", "retry_backoff", False),
    ("GIGAPROXY_HOST", "host", True),
    ("GIGAPROXY_PORT", "port", True),
    ("GIGAPROXY_API_KEY", "api_key", True),
    ("GIGAPROXY_ALLOW_UNAUTHENTICATED", "allow_unauthenticated", False),
    ("GIGAPROXY_LOG_LEVEL", "log_level", False),
    ("GIGAPROXY_WORKERS", "workers", False),
    ("GIGAPROXY_MAX_CONCURRENCY", "max_concurrency", False),
    ("GIGAPROXY_CLIENT_TIMEOUT", "client_timeout", False),
    ("GIGAPROXY_MAX_BODY_MB", "max_body_bytes", False),
    ("GIGAPROXY_SHUTDOWN_GRACE", "shutdown_grace", False),
    ("GIGAPROXY_STRUCTURED_OUTPUT", "structured_output", False),
    ("GIGAPROXY_EMBEDDINGS_MODEL", "embeddings_model", False),
    ("GIGAPROXY_ALLOW_IMAGE_URLS", "allow_image_urls", False),
)
_CHECK_ALIASES = {"GIGACHAT_CREDENTIALS": "GIGACHAT_AUTH_KEY", "HTTPS_PROXY": "https_proxy", "NO_PROXY": "no_proxy"}
_SECRET_FIELDS = ("credentials", "password", "access_token", "key_file_password", "api_key")

# OpenSSL verify codes (X509_V_ERR_*), stable across OpenSSL 1.1 and 3.x.
_TLS_UNKNOWN_ISSUER = (2, 18, 19, 20, 21)  # no trusted root for the chain (a self-signed or unknown CA)
_TLS_EXPIRED = (9, 10)  # not yet valid, expired
_TLS_WRONG_HOST = (62, 64)  # host name or IP address mismatch


class _CheckReport:
    """Writes the ``--check`` lines to ``out`` and counts them.

    Marks are ✓ ✗ and -; a stream that cannot encode them (a legacy Windows console,
    ``PYTHONIOENCODING=ascii``) gets OK, FAIL and SKIP instead.  Every line is scrubbed
    of the secrets it knows, whatever produced the text.
    """

    def __init__(self, out: Any, secrets: List[str]) -> None:
        self._out = out
        self._secrets = [s for s in secrets if len(s) >= 4]
        self._encoding = getattr(out, "encoding", None)
        try:
            "\u2713\u2717".encode(self._encoding or "utf-8")
            self.marks = {"ok": "\u2713", "fail": "\u2717", "skip": "-"}
        except (UnicodeEncodeError, LookupError):
            self.marks = {"ok": "OK", "fail": "FAIL", "skip": "SKIP"}
        self._width = max(len(mark) for mark in self.marks.values())
        self.indent = self._width + 1  # where the text after a mark starts
        self.counts = {"ok": 0, "fail": 0, "skip": 0}

    def add_secret(self, secret: Optional[str]) -> None:
        if secret and len(secret) >= 4:
            self._secrets.append(secret)

    def write(self, text: str) -> None:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        if self._encoding:  # a host name or an upstream message the stream cannot show becomes "?"
            try:
                text = text.encode(self._encoding, "replace").decode(self._encoding)
            except LookupError:
                pass
        self._out.write(text + "\n")
        self._out.flush()

    def check(self, state: str, name: str, text: str, cause: str = "", fix: str = "") -> bool:
        """One check's line; returns whether it passed."""
        self.counts[state] += 1
        if cause:
            text += "; likely cause: " + cause
        if fix:
            text += "; fix: " + fix
        self.write("%-*s %-7s%s" % (self._width, self.marks[state], name, text))
        return state == "ok"

    def ok(self, name: str, text: str) -> bool:
        return self.check("ok", name, text)

    def fail(self, name: str, text: str, cause: str = "", fix: str = "") -> bool:
        return self.check("fail", name, text, cause, fix)

    def skip(self, name: str, text: str) -> bool:
        return self.check("skip", name, text)

    def summary(self) -> int:
        """The closing line; returns the exit code (0 when every check passed)."""
        total, failed, skipped = sum(self.counts.values()), self.counts["fail"], self.counts["skip"]
        if not failed and not skipped:
            self.write("all %d checks passed: start gigaproxy without --check" % total)
            return 0
        self.write("%d of %d checks failed%s: fix the first %s above, then run --check again"
                   % (failed, total, ", %d not tried" % skipped if skipped else "", self.marks["fail"]))
        return 1


def _check_header(report: _CheckReport) -> None:
    report.write("gigaproxy %s --check: Python %s, %s (nothing is served; secrets are not shown)"
                 % (__version__, sys.version.split()[0], ssl.OPENSSL_VERSION))


def _setting_value(config: Config, field: str) -> str:
    value = getattr(config, field)
    if field in _SECRET_FIELDS:
        if not value:
            return "(not set)"
        text = "(set, %d characters, hidden)" % len(value)
        if field == "credentials":
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            if b":" not in decoded:  # an authorization key is base64 of client_id:client_secret
                text += " - not base64 of client_id:client_secret: is it the Authorization key?"
        return text
    if value is None:
        return "(not set)"
    if field == "https_proxy":
        return _redact_url(value)
    if field == "max_body_bytes":
        return "%g MB" % (value / 1048576.0)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "%g s" % value
    return str(value)


def check_settings(config: Config, sources: Mapping[str, str]) -> List[Tuple[str, str, str]]:
    """(variable, value as shown, where it came from) for the settings ``--check`` lists.

    Secrets are never shown, only whether they are set and their length; a proxy URL
    loses its user and password.  ``sources`` is what ``load_config`` filled in.
    """
    rows = []
    for name, field, always in _CHECK_SETTINGS:
        alias = _CHECK_ALIASES.get(name)
        if alias is not None and name not in sources and alias in sources:
            name = alias  # shown as it was spelt: GIGACHAT_AUTH_KEY, https_proxy
        source = sources.get(name, "default")
        value = getattr(config, field)
        if always or source != "default" or value != Config._field_defaults.get(field):
            rows.append((name, _setting_value(config, field), source))
    bundled = config.bundled_ca_file
    if bundled:
        present = os.path.exists(bundled)
        rows.append(("(bundled root CA)", bundled if present else bundled + " (MISSING: copy %s next to "
                     "gigaproxy.py)" % BUNDLED_CA_FILENAME, "next to gigaproxy.py"))
    return rows


def _cert_name(name: Any) -> str:
    for rdn in name or ():
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "?"


def _describe_cert(version: Optional[str], cert: Any) -> str:
    """``TLSv1.3; certificate for X, issued by Y, valid until 2026-04-10`` (what a verified peer shows)."""
    parts = [version or "TLS"]
    if cert:
        text = "certificate for %s, issued by %s" % (_cert_name(cert.get("subject")), _cert_name(cert.get("issuer")))
        try:
            until = ssl.cert_time_to_seconds(cert["notAfter"])
            text += ", valid until %s" % time.strftime("%Y-%m-%d", time.gmtime(until))
            days = (until - time.time()) / 86400
            if days < 30:
                text += " (expires in %d days)" % max(0, days)
        except (KeyError, ValueError):
            pass
        parts.append(text)
    return "; ".join(parts)


def _tls_handshake(config: Config, context: ssl.SSLContext, key: Tuple[Any, ...]
                   ) -> Tuple[Optional[Tuple[Optional[str], Any]], Optional[BaseException]]:
    """Open one connection as the server would (Transport, the proxy tunnel included) with
    ``context``; returns ((TLS version, peer certificate), None) or (None, the exception)."""
    try:
        conn = Transport(config, context, context)._new_connection(key, config.connect_timeout)
    except Exception as exc:  # reported by the caller, whatever it is
        return None, exc
    try:
        sock = conn.sock
        return ((sock.version(), sock.getpeercert()) if isinstance(sock, ssl.SSLSocket) else (None, None)), None
    finally:
        conn.close()


def _trusted_by(config: Config, key: Tuple[Any, ...], client_cert: bool) -> str:
    """Which single root verified the chain: each trust source alone, in the order they are
    tried, until one verifies (Python < 3.13 cannot list the verified chain itself)."""
    candidates = []
    if config.bundled_ca_file and os.path.exists(config.bundled_ca_file):
        candidates.append(("the bundled Russian Trusted Root CA", config._replace(ca_bundle_file=None)))
    if config.ca_bundle_file:
        candidates.append(("GIGACHAT_CA_BUNDLE_FILE=%s" % config.ca_bundle_file,
                           config._replace(bundled_ca_file=None)))
    candidates.append(("the system certificate store", config._replace(bundled_ca_file=None, ca_bundle_file=None)))
    for name, alone in candidates:
        context = build_ssl_context(alone, client_cert=client_cert)
        context.system_store_deferred = False  # type: ignore[attr-defined]  # these roots only: no fallback
        if _tls_handshake(alone, context, key)[1] is None:
            return name
    return "the bundled root, GIGACHAT_CA_BUNDLE_FILE and the system store together"


def tls_problem(exc: BaseException, config: Config, host: str, url_var: str) -> Tuple[str, str, str]:
    """(what failed, likely cause, the fix) for a failed TLS connection to ``host``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        what = "certificate not accepted: %s" % str(getattr(exc, "verify_message", "") or exc).rstrip(".")
        if code in _TLS_UNKNOWN_ISSUER:
            cause = ("a CA none of the trusted roots knows issued it: a corporate proxy or antivirus that "
                     "inspects TLS re-signs certificates with its own root")
            if config.bundled_ca_file and not os.path.exists(config.bundled_ca_file):
                cause += ", or %s is missing next to gigaproxy.py" % BUNDLED_CA_FILENAME
            if config.ca_bundle_file:
                fix = ("GIGACHAT_CA_BUNDLE_FILE=%s does not hold that root: add the inspection root "
                       "certificate (PEM) to it" % config.ca_bundle_file)
            else:
                fix = ("get the TLS-inspection root certificate from IT (PEM; on Windows export it from "
                       "certmgr.msc as Base-64) and set GIGACHAT_CA_BUNDLE_FILE to its path")
            return what, cause, fix
        if code in _TLS_EXPIRED:
            return (what, "the certificate has expired or is not valid yet, or this machine's clock is wrong "
                    "(it says %s UTC)" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                    "correct the system date and time; if a TLS-inspecting proxy serves an old certificate, tell IT")
        if code in _TLS_WRONG_HOST:
            return (what, "the certificate was issued for another host name: %s names the wrong host, or a "
                    "device in between answers for %s" % (url_var, host),
                    "check the host name in %s" % url_var)
        return what, "the certificate chain was rejected", "check %s and GIGACHAT_CA_BUNDLE_FILE" % url_var
    if isinstance(exc, ssl.SSLError):
        return ("TLS handshake failed: %s" % (exc.reason or exc),
                "the port does not speak TLS, or a firewall or proxy cuts TLS, or GigaChat wants a client "
                "certificate", "check the scheme and port in %s; for mTLS set GIGACHAT_CERT_FILE and "
                "GIGACHAT_KEY_FILE" % url_var)
    if isinstance(exc, socket.timeout):
        return ("no TLS answer within %g s" % config.connect_timeout, "a firewall or proxy holds the connection",
                "check %s; GIGAPROXY_CONNECT_TIMEOUT waits longer" % url_var)
    return ("the connection failed during the TLS handshake: %s: %s" % (exc.__class__.__name__, exc),
            "a firewall or proxy cut it", "check %s and HTTPS_PROXY" % url_var)


def _proxy_problem(status: str, config: Config, target: str, url_var: str) -> Tuple[str, str]:
    """(likely cause, fix) for a proxy that refused to open a tunnel with HTTP ``status``."""
    if status == "407":
        if config.https_proxy and urllib.parse.urlsplit(config.https_proxy).username is not None:
            cause = "the proxy rejected the user name or password in HTTPS_PROXY"
        else:
            cause = "the proxy wants a user name and password"
        return (cause, "set HTTPS_PROXY=http://user:password@host:port (percent-encode @ : / % in them as %40 "
                "%3A %2F %25); a proxy that accepts only NTLM or Kerberos needs a local helper such as px "
                "or cntlm, and HTTPS_PROXY pointing at it")
    if status == "403":
        return ("the proxy does not allow connections to %s" % target,
                "ask IT to allow CONNECT to %s, or list the host in NO_PROXY if it is reachable directly" % target)
    if status in ("502", "503", "504"):
        return ("the proxy could not resolve or reach %s" % target,
                "check the host in %s; ask IT whether the proxy may reach it" % url_var)
    return "the proxy refused the tunnel", "check HTTPS_PROXY and NO_PROXY"


def _check_endpoint(report: _CheckReport, config: Config, url_var: str, url: str, profile: str,
                    contexts: Dict[bool, ssl.SSLContext], seen_proxy: List[bool]) -> bool:
    """DNS, TCP (or the proxy tunnel) and TLS to the host of ``url``: three lines; True if all passed.

    ``contexts`` holds the verifying SSL contexts by "with the client certificate" (built
    once: the system store takes tens of milliseconds to load); ``seen_proxy`` notes
    that the proxy's name was looked up already.
    """
    parts = urllib.parse.urlsplit(url)
    host, https = parts.hostname or "", parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = "%s:%d" % (host, port)
    # (host, port, headers) of HTTPS_PROXY as Transport reads it (credentials included), unless NO_PROXY applies
    proxy = Transport(config, None, None)._proxy if https and not proxy_bypassed(host, port, config.no_proxy) else None
    shown_proxy = _redact_url(config.https_proxy or "")

    # DNS: the proxy resolves the GigaChat host itself, so only the proxy's own name is looked up here.
    if proxy is not None:
        if not seen_proxy:
            try:
                infos = socket.getaddrinfo(proxy[0], proxy[1], type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                return report.fail("DNS", "cannot resolve the proxy host %s (HTTPS_PROXY): %s"
                                   % (proxy[0], getattr(exc, "strerror", None) or exc),
                                   "the proxy name is misspelt, or it is known only inside the corporate network",
                                   "check HTTPS_PROXY (the browser's proxy settings show it)")
            seen_proxy.append(True)
            report.ok("DNS", "proxy host %s (HTTPS_PROXY) resolves to %s; the proxy resolves GigaChat's host names"
                      % (proxy[0], _addresses(infos)))
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return report.fail("DNS", "cannot resolve %s (%s): %s" % (host, url_var, getattr(exc, "strerror", None)
                                                                      or exc),
                               "the name is misspelt, or this machine's DNS does not see the internet",
                               "check the host in %s; if this machine reaches the internet only through a proxy, "
                               "set HTTPS_PROXY" % url_var)
        report.ok("DNS", "%s (%s) resolves to %s" % (host, url_var, _addresses(infos)))

    # TCP: a plain connection, or the CONNECT tunnel the server would open (http.client's set_tunnel).
    started = time.monotonic()
    if proxy is not None:
        conn = http.client.HTTPConnection(proxy[0], proxy[1], timeout=config.connect_timeout)
        conn.set_tunnel(host, port, headers=proxy[2])
        try:
            conn.connect()
        except socket.timeout:
            return report.fail("TCP", "the proxy %s did not answer within %g s" % (shown_proxy, config.connect_timeout),
                               "a firewall drops traffic to the proxy, or the proxy is down",
                               "check HTTPS_PROXY; GIGAPROXY_CONNECT_TIMEOUT waits longer")
        except OSError as exc:
            message = str(exc)
            if message.startswith("Tunnel connection failed"):
                status = (re.findall(r"\d{3}", message) or [""])[0]
                cause, fix = _proxy_problem(status, config, target, url_var)
                return report.fail("TCP", "the proxy %s (HTTPS_PROXY) refused the tunnel to %s: %s"
                                   % (shown_proxy, target, message.split(":", 1)[1].strip()), cause, fix)
            return report.fail("TCP", "cannot connect to the proxy %s (HTTPS_PROXY): %s"
                               % (shown_proxy, exc.__class__.__name__ + (": " + exc.strerror if exc.strerror else "")),
                               "nothing listens at that host and port", "check the host and port in HTTPS_PROXY")
        finally:
            conn.close()
        report.ok("TCP", "tunnel to %s through HTTPS_PROXY %s opened in %.0f ms"
                  % (target, shown_proxy, (time.monotonic() - started) * 1000))
    else:
        fix_tcp = "check the host and port in %s; if this machine reaches the internet only through a proxy, " \
            "set HTTPS_PROXY" % url_var
        try:
            socket.create_connection((host, port), timeout=config.connect_timeout).close()
        except socket.timeout:
            return report.fail("TCP", "%s did not answer within %g s" % (target, config.connect_timeout),
                               "a firewall drops the traffic", fix_tcp + " (GIGAPROXY_CONNECT_TIMEOUT waits longer)")
        except ConnectionRefusedError:
            return report.fail("TCP", "cannot connect to %s: connection refused" % target,
                               "nothing listens at that port, or a firewall rejects the connection", fix_tcp)
        except OSError as exc:
            return report.fail("TCP", "cannot connect to %s: %s" % (target, exc.strerror or exc),
                               "no route to the host from this network", fix_tcp)
        report.ok("TCP", "connected to %s in %.0f ms" % (target, (time.monotonic() - started) * 1000))

    if not https:
        return report.ok("TLS", "not used: %s is an http:// URL (traffic is not encrypted)" % url_var)
    client_cert = profile == "api" and bool(config.cert_file)
    key = ("https", host, port, profile)
    checked = config._replace(verify_ssl=True)
    try:
        context = contexts.get(client_cert) or build_ssl_context(checked, client_cert=client_cert, system_store=True)
    except ConfigError as exc:  # only with verification off: the files were not loaded before
        return report.fail("TLS", str(exc), "", "correct the file named above")
    contexts[client_cert] = context
    peer, error = _tls_handshake(config, context, key)
    if not config.verify_ssl:
        verdict = ("would verify with %s: set GIGACHAT_VERIFY_SSL_CERTS=true" % _trusted_by(checked, key, client_cert)
                   if error is None
                   else "would NOT verify (%s)" % tls_problem(error, config, host, url_var)[0])
        return report.ok("TLS", "%s: verification is OFF (GIGACHAT_VERIFY_SSL_CERTS=false), anyone in between can "
                         "read the traffic; the certificate %s" % (target, verdict))
    if error is not None:
        what, cause, fix = tls_problem(error, config, host, url_var)
        return report.fail("TLS", "%s: %s" % (target, what), cause, fix)
    assert peer is not None
    return report.ok("TLS", "%s: chain verified by %s; %s" % (target, _trusted_by(config, key, client_cert),
                                                               _describe_cert(*peer)))


def _addresses(infos: List[Any]) -> str:
    seen = []  # type: List[str]
    for info in infos:
        if info[4][0] not in seen:
            seen.append(info[4][0])
    return ", ".join(seen[:3]) + (" and %d more" % (len(seen) - 3) if len(seen) > 3 else "")


def _token_problem(exc: ProxyError, config: Config) -> Tuple[str, str]:
    """(likely cause, fix) for a token GigaChat would not issue."""
    if exc.code == "upstream_auth_failed":
        if config.auth_mode == "password":
            return "GigaChat does not accept this user and password", "check GIGACHAT_USER and GIGACHAT_PASSWORD"
        said = re.search(r"\(HTTP (\d+): (.*)\); check ", exc.message)  # TokenManager._fetch's wording
        if said and (said.group(1) == "400" or "scope" in said.group(2).lower()):
            others = ", ".join(s for s in KNOWN_SCOPES if s != config.scope)
            return ("the authorization key is not issued for GIGACHAT_SCOPE=%s" % config.scope,
                    "set GIGACHAT_SCOPE to your key's scope (%s; PERS: individuals, B2B: prepaid packages, "
                    "CORP: pay-as-you-go)" % others)
        return ("GigaChat does not know this authorization key: mistyped, cut short, revoked, or the Client "
                "Secret pasted instead of the Authorization key",
                "copy the Authorization key from your project in the Sber cabinet into GIGACHAT_CREDENTIALS")
    if exc.code == "upstream_auth_unavailable":
        return ("the OAuth service failed, or something in between answered instead of it",
                "run --check again later; check GIGACHAT_AUTH_URL")
    return "", "see the network checks above"


def _api_problem(exc: ProxyError, config: Config) -> Tuple[str, str]:
    """(likely cause, fix) for a failed call to GigaChat's API (models, chat)."""
    status = exc.status
    if exc.code in ("upstream_unreachable", "upstream_tls_error", "proxy_error"):
        return "the connection failed although the network checks above passed", "run --check again"
    if exc.code == "upstream_unauthorized":
        if config.auth_mode == "token":
            return ("GigaChat rejected GIGACHAT_ACCESS_TOKEN (tokens live 30 minutes)",
                    "set GIGACHAT_CREDENTIALS to your authorization key so that gigaproxy fetches tokens itself")
        if config.auth_mode == "mtls":
            return "GigaChat does not accept the client certificate", "check GIGACHAT_CERT_FILE and GIGACHAT_KEY_FILE"
        return ("the API host refused a token the OAuth host issued: the two URLs may belong to different "
                "GigaChat installations", "check GIGACHAT_AUTH_URL and GIGACHAT_BASE_URL")
    if status == 402:
        return ("this key has no tokens left (the package is used up or a limit was reached)",
                "top up in the Sber cabinet, or use a key and GIGACHAT_SCOPE with a balance")
    if status == 403:
        return "the key's tariff does not include this", "check GIGACHAT_SCOPE and the tariff in the Sber cabinet"
    if status == 404:
        return ("GigaChat has no model %s for this key" % config.model,
                "set GIGACHAT_MODEL to a model the models check lists")
    if status == 429:
        return "too many requests for this key just now", "wait a minute and run --check again"
    if status == 400:
        return ("GigaChat refused a plain request: GIGACHAT_BASE_URL may not point at GigaChat's v1 API",
                "check GIGACHAT_BASE_URL (it ends in /api/v1)")
    if exc.code == "upstream_timeout":
        return "GigaChat did not answer in time", "run --check again; GIGACHAT_TIMEOUT sets how long to wait"
    if status >= 500:
        return ("GigaChat, or a gateway in front of it, failed",
                "run --check again later; if GIGACHAT_BASE_URL is a corporate gateway, ask its owners")
    return "", ""


def _check_token(report: _CheckReport, config: Config, tokens: TokenManager, reachable: bool) -> bool:
    mode = config.auth_mode
    if mode == "mtls":
        return report.ok("token", "none needed: the client certificate (GIGACHAT_CERT_FILE) is the credential")
    if mode == "token":
        return report.ok("token", "GIGACHAT_ACCESS_TOKEN is used as given (its expiry is unknown; the models "
                         "check tries it)")
    if not reachable:
        return report.skip("token", "not tried: %s is not reachable (above)"
                           % ("GIGACHAT_AUTH_URL" if mode == "oauth" else "GIGACHAT_BASE_URL"))
    try:
        report.add_secret(tokens.get())
    except ProxyError as exc:
        cause, fix = _token_problem(exc, config)
        return report.fail("token", exc.message.split("; check ", 1)[0], cause, fix)  # the fix says what to check
    expires = tokens._expires_at  # set by the fetch that get() just made
    who = ("authorization key accepted for %s" % config.scope if mode == "oauth"
           else "GIGACHAT_USER %s and password accepted" % config.user)
    return report.ok("token", "%s; the token expires at %s local time (in %d min)"
                     % (who, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expires)),
                        max(0, round((expires - time.time()) / 60))))


def _check_models(report: _CheckReport, config: Config, upstream: Upstream) -> bool:
    try:
        models = upstream.models()
    except ProxyError as exc:
        cause, fix = _api_problem(exc, config)
        return report.fail("models", "GET /models failed: %s" % exc.message, cause, fix)
    ids = [m["id"] for m in models]
    if config.model in ids:
        return report.ok("models", "%d models; GIGACHAT_MODEL=%s is among them" % (len(ids), config.model))
    chat_ids = [m["id"] for m in models if m.get("type") in (None, "chat")] or ids
    spelled = [i for i in ids if i.lower() == config.model.lower()]
    if config.model.lower() in MODEL_ALIASES:
        cause = "%s is a gigaproxy shorthand, not a GigaChat model id" % config.model
        fix = "set GIGACHAT_MODEL=%s" % MODEL_ALIASES[config.model.lower()]
    elif spelled:
        cause, fix = "GigaChat spells it %s" % spelled[0], "set GIGACHAT_MODEL=%s" % spelled[0]
    else:
        cause = "a typo, or a model this key's tariff does not include"
        fix = "set GIGACHAT_MODEL to one of: %s" % ", ".join(chat_ids[:12] + (["..."] if len(chat_ids) > 12 else []))
    return report.fail("models", "%d models, but GIGACHAT_MODEL=%s is not among them" % (len(ids), config.model),
                       cause, fix)


def _check_chat(report: _CheckReport, config: Config, upstream: Upstream) -> bool:
    payload = {"model": config.model, "messages": [{"role": "user", "content": CHECK_PROMPT}], "max_tokens": 8}
    started = time.monotonic()
    try:
        answer, _ = upstream.call("POST", "/chat/completions", payload)
    except ProxyError as exc:
        cause, fix = _api_problem(exc, config)
        return report.fail("chat", "a one-line chat with %s failed: %s" % (config.model, exc.message), cause, fix)
    elapsed = (time.monotonic() - started) * 1000
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return report.fail("chat", "GigaChat's chat answer has no choices: %s" % _excerpt(compact_json(answer).encode()),
                           "GIGACHAT_BASE_URL may not point at GigaChat's v1 API", "check GIGACHAT_BASE_URL")
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return report.ok("chat", "%s answered in %.0f ms (%s tokens)" % (
        answer.get("model") or config.model, elapsed, usage.get("total_tokens", "?")))


def run_checks(config: Config, sources: Optional[Mapping[str, str]] = None, out: Any = None) -> int:
    """``--check``: test the configuration and the way to GigaChat, one printed line per check.

    The checks, in order (a check whose prerequisite failed is reported as not tried):
    the configuration and where each value came from; for the OAuth host (when an
    authorization key is used) and the API host: DNS, TCP (or the HTTPS_PROXY tunnel)
    and TLS (which trusted root verified the chain, or why it failed); the token; the
    model list (and whether GIGACHAT_MODEL is in it); one tiny chat.  Retries are off
    and every wait is capped at CHECK_TIMEOUT.  Returns 0 when every check passed, else 1.
    """
    out = out if out is not None else sys.stdout
    report = _CheckReport(out, config.secrets())
    _check_header(report)
    sources = sources or {}
    rows = check_settings(config, sources)
    kinds = collections.Counter("env file" if s.startswith("env file") else s.split(" ", 1)[0]
                                for s in sources.values())
    report.ok("config", "loaded (auth: %s); %s, the rest defaults" % (
        {"oauth": "authorization key, OAuth", "password": "user and password", "token": "access token",
         "mtls": "client certificate"}[config.auth_mode],
        ", ".join("%d from %s" % (kinds[kind], name) for kind, name in (
            ("flag", "flags"), ("env", "the environment"), ("env file", "the env file")) if kinds[kind])
        or "nothing set"))
    name_width = max(len(name) for name, _, _ in rows)
    value_width = min(40, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        report.write("%*s %-*s  %-*s  (%s)" % (report.indent, "", name_width, name, value_width, value, source))

    try:  # the contexts the server would build: a certificate file that does not load stops here
        auth_context = build_ssl_context(config, system_store=True)
        api_context = build_ssl_context(config, client_cert=True, system_store=True) if config.cert_file \
            else auth_context
    except ConfigError as exc:
        report.fail("config", str(exc), "", "correct the file or password named above")
        return report.summary()

    config = config._replace(max_retries=0, timeout=min(config.timeout, CHECK_TIMEOUT),
                             connect_timeout=min(config.connect_timeout, CHECK_TIMEOUT),
                             total_timeout=min(config.total_timeout, CHECK_TIMEOUT))
    seen_proxy = []  # type: List[bool]
    contexts = {False: auth_context, True: api_context} if config.verify_ssl else {}
    auth_ok = True
    if config.auth_mode == "oauth":
        auth_ok = _check_endpoint(report, config, "GIGACHAT_AUTH_URL", config.auth_url, "auth", contexts, seen_proxy)
    api_ok = _check_endpoint(report, config, "GIGACHAT_BASE_URL", config.base_url, "api", contexts, seen_proxy)

    transport = Transport(config, api_context, auth_context)
    try:
        tokens = TokenManager(config, transport)
        token_ok = _check_token(report, config, tokens, auth_ok if config.auth_mode == "oauth" else api_ok)
        if api_ok and token_ok:
            upstream = Upstream(config, transport, tokens)
            _check_models(report, config, upstream)
            _check_chat(report, config, upstream)
        else:
            why = "not tried: %s" % ("GIGACHAT_BASE_URL is not reachable (above)" if not api_ok else "no token (above)")
            report.skip("models", why)
            report.skip("chat", why)
    finally:
        transport.close()
    return report.summary()


def _check_command(args: argparse.Namespace) -> int:
    """``main(["--check", ...])``: load the configuration (a ConfigError is a failed check) and run the checks."""
    sources = {}  # type: Dict[str, str]
    try:
        config = load_config(args, sources=sources)
    except ConfigError as exc:
        report = _CheckReport(sys.stdout, [])
        _check_header(report)
        report.fail("config", str(exc), "", "set the variable the message names (see --help)")
        return report.summary()
    _configure_logging(config)
    return run_checks(config, sources)

if __name__ == "__main__":
    sys.exit(main())
