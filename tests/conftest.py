"""Shared fixtures: a fake GigaChat over HTTPS and gigaproxy on port 0 in-process.

``fake`` is a started FakeGigaChat (tests/fake_gigachat.py); ``start_proxy(**env)``
starts gigaproxy against it with extra environment settings and returns a Proxy
handle; ``proxy`` is one started with the defaults.  Every server is stopped at the
end of its test, and the fake must have recorded no internal error.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import sys
import threading
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

import gigaproxy  # noqa: E402
from fake_gigachat import FakeGigaChat  # noqa: E402


# ---- the whole-suite secret scan -------------------------------------------------------
# Every key, password and token any fake GigaChat issued or accepted, and every inbound
# API key a test used, is collected in SECRETS; every gigaproxy log line (at DEBUG) and
# every reply body a test received is collected in CAPTURED.  At the end of the session
# no secret may appear in anything captured (issue: "no secret in any log line, error
# message or response at any log level").

SECRETS = set()  # type: set
CAPTURED = []  # type: List[str]
API_KEY = "gp-inbound-key-5f2c9e0b7a41d3"  # the inbound key tests use with GIGAPROXY_API_KEY
SECRETS.add(API_KEY)

_fake_stop = FakeGigaChat.stop


def _stop_and_remember_secrets(self: FakeGigaChat) -> None:
    SECRETS.update(s for s in [self.credentials, self.password] + list(self._tokens) + list(self.static_tokens) if s)
    _fake_stop(self)


FakeGigaChat.stop = _stop_and_remember_secrets  # type: ignore[assignment]


TRACEBACKS = []  # type: List[str]  # log records that carried an exception: bugs


class _CaptureAll(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        CAPTURED.append(text)
        if record.exc_info:
            TRACEBACKS.append(text)


_capture_handler = _CaptureAll(logging.DEBUG)
_capture_handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))


@pytest.fixture(autouse=True)
def _log_everything_at_debug():
    """Each test runs with gigaproxy logging at DEBUG into the suite-wide capture."""
    logger = logging.getLogger("gigaproxy")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    if _capture_handler not in logger.handlers:
        logger.addHandler(_capture_handler)
    seen = len(TRACEBACKS)
    yield
    logger.setLevel(level)
    assert TRACEBACKS[seen:] == [], "gigaproxy logged an exception (a bug): %s" % TRACEBACKS[seen:][:1]


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_output():
    yield
    everything = "\n".join(CAPTURED)
    leaked = sorted(secret for secret in SECRETS if len(secret) >= 8 and secret in everything)
    assert not leaked, "secrets found in logs or replies: %d (first: %r...)" % (len(leaked), leaked[0][:6])
    if Proxy.started:  # some gigaproxy served, so something must have been captured
        assert CAPTURED, "the capture saw nothing: the scan would mean nothing"


# ---- speed: SSL contexts are built once per distinct TLS setting ------------------------
# Building a context costs milliseconds (the system CA store ~40 ms when it is loaded);
# hundreds of server tests would spend much of their time there.  Servers with the same
# TLS settings share one; the first build for each setting is the real one.  The one
# change gigaproxy makes to a built context, adding the deferred system store, gets the
# next test a fresh context, so that no test sees a store another test made it load.

_real_build_ssl_context = gigaproxy.build_ssl_context
_contexts = {}  # type: Dict[Any, Any]


def _shared_ssl_context(config: gigaproxy.Config, client_cert: bool = False, system_store: bool = False) -> Any:
    key = (config.verify_ssl, config.bundled_ca_file, config.ca_bundle_file,
           (config.cert_file, config.key_file, config.key_file_password) if client_cert else None, system_store)
    cached = _contexts.get(key)
    if cached is None or getattr(cached, "system_store_deferred", False) != cached.built_deferred:  # a test made it load the store
        cached = _contexts[key] = _real_build_ssl_context(config, client_cert, system_store)
        cached.built_deferred = getattr(cached, "system_store_deferred", False)
    return cached


gigaproxy.build_ssl_context = _shared_ssl_context


@pytest.fixture
def build_ssl_context_uncached() -> Any:
    """gigaproxy.build_ssl_context itself, for tests about what a new context holds."""
    return _real_build_ssl_context


@contextlib.contextmanager
def log_arrival(caplog: Any, *texts: str) -> Iterator[threading.Event]:
    """An Event set once caplog has captured a record whose message contains every one of ``texts``.

    A line logged by another thread (a background refresh, the handler that writes the
    access line after its answer has left) is not in ``caplog.records`` just because an
    earlier effect of that thread was seen: wait for this event, then assert on the records.
    It is set by caplog's own handler right after it stored the record, so once it is set
    the record is in ``caplog.records`` whatever the order of handlers.  Only records
    captured inside the ``with`` block count.
    """
    handler = caplog.handler
    arrived = threading.Event()
    previous = handler.__dict__.get("emit")
    emit = handler.emit

    def emit_and_notify(record: logging.LogRecord) -> None:
        emit(record)
        message = record.getMessage()
        if all(text in message for text in texts):
            arrived.set()

    handler.emit = emit_and_notify
    try:
        yield arrived
    finally:
        if previous is None:
            del handler.emit
        else:
            handler.emit = previous


def clean_env(**extra: str) -> Dict[str, str]:
    """An environment for a gigaproxy subprocess: only what starting a process needs, plus ``extra``."""
    env = {}
    for name in ("PATH", "SYSTEMROOT"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)
    return env


def fake_env(fake: FakeGigaChat, **overrides: Optional[str]) -> Dict[str, str]:
    """The environment that points gigaproxy at ``fake`` (None removes a variable)."""
    env = {
        "GIGACHAT_CREDENTIALS": fake.credentials,
        "GIGACHAT_BASE_URL": fake.base_url,
        "GIGACHAT_AUTH_URL": fake.auth_url,
        "GIGACHAT_CA_BUNDLE_FILE": fake.ca_file,
        "GIGAPROXY_RETRY_BACKOFF": "0.001",  # retries stay on, without slowing the suite
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Proxy:
    """A running gigaproxy server plus small HTTP helpers for tests."""

    started = 0  # how many servers the session started (the secret scan needs some)

    def __init__(self, server: gigaproxy.GigaProxyServer) -> None:
        Proxy.started += 1
        self.server = server
        self.port = server.server_address[1]
        self.base_url = "http://127.0.0.1:%d/v1" % self.port
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
                conn: Optional[http.client.HTTPConnection] = None) -> Tuple[int, Any, bytes]:
        """One request; returns (status, headers, raw body)."""
        own = conn is None
        conn = conn or self.connect()
        try:
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            all_headers = {"Content-Type": "application/json"}
            all_headers.update(headers or {})
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read()
            CAPTURED.append(str(response.headers) + data.decode("utf-8", "replace"))
            return response.status, response.headers, data
        finally:
            if own:
                conn.close()

    def json(self, method: str, path: str, body: Any = None, **kw: Any) -> Tuple[int, Any, Any]:
        status, headers, data = self.request(method, path, body, **kw)
        return status, headers, json.loads(data.decode("utf-8"))

    def chat(self, body: Dict[str, Any], **kw: Any) -> Tuple[int, Any, Any]:
        return self.json("POST", "/v1/chat/completions", body, **kw)

    def stream(self, body: Dict[str, Any], **kw: Any) -> Tuple[int, Any, List[Any]]:
        """A streamed chat: returns (status, headers, list of decoded data payloads)."""
        body = dict(body, stream=True)
        status, headers, data = self.request("POST", "/v1/chat/completions", body, **kw)
        return status, headers, sse_payloads(data)


def sse_payloads(data: bytes) -> List[Any]:
    """Decode an SSE body into its data payloads (JSON objects, or the string "[DONE]")."""
    out = []  # type: List[Any]
    for event in data.decode("utf-8").split("\n\n"):
        lines = [line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:")]
        if not lines:
            continue
        payload = "\n".join(lines)
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@pytest.fixture
def fake():
    with FakeGigaChat() as server:
        yield server
    assert not server.errors, server.errors


@pytest.fixture
def make_config(fake, tmp_path):
    def build(*argv: str, **env: Optional[str]) -> gigaproxy.Config:
        args = gigaproxy.build_parser().parse_args(["--port", "0"] + list(argv))
        return gigaproxy.load_config(args, fake_env(fake, **env), cwd=str(tmp_path))

    return build


@pytest.fixture
def start_proxy(make_config):
    started = []  # type: List[Proxy]

    def start(config: Optional[gigaproxy.Config] = None, **env: Optional[str]) -> Proxy:
        handle = Proxy(gigaproxy.make_server(config or make_config(**env)))
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def proxy(start_proxy):
    return start_proxy()
