"""What an operator sees (issue 13): /metrics, the log lines, the model map and model lists,
and the headers a corporate gateway needs on every GigaChat request.

Each test runs gigaproxy in-process against the fake GigaChat over real sockets.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from typing import Dict, Iterator, List, Tuple

import pytest

import conftest
import gigaproxy
from conftest import API_KEY

HELLO = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hello there"}]}

# One line of Prometheus' text format 0.0.4: a comment, or name{labels} value.
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? '
                     r'(-?[0-9.e+-]+|\+Inf|NaN)$')
_COMMENT = re.compile(r"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$")


def scrape(proxy, **kw) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    """GET /metrics, check every line's syntax, and return {(name, labels): value}."""
    status, headers, data = proxy.request("GET", "/metrics", **kw)
    assert status == 200, data
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = data.decode("utf-8")
    assert text.endswith("\n")
    samples, types = {}, {}
    for line in text.splitlines():
        comment = _COMMENT.match(line)
        if comment:
            if comment.group(1) == "TYPE":
                assert comment.group(3) in ("counter", "gauge", "histogram"), line
                types[comment.group(2)] = comment.group(3)
            continue
        match = _SAMPLE.match(line)
        assert match, "not a Prometheus sample line: %r" % line
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2) or "")))
        samples[(match.group(1), labels)] = float(match.group(3))
        base = re.sub(r"_(bucket|sum|count)$", "", match.group(1))
        assert match.group(1) in types or base in types, "a sample without a TYPE line: %r" % line
    return samples


class _AccessLines(logging.Handler):
    """Collects gigaproxy's access lines; ``wait(n)`` returns once n have been logged.

    The access line (and a request's metrics) are written after the answer went out:
    a test that reads them right after its reply must wait for them.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines = []  # type: List[str]
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == "gigaproxy" and "ms upstream_id=" in message:
            with self._cond:
                self.lines.append(message)
                self._cond.notify_all()

    def wait(self, count: int) -> List[str]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.lines) >= count, 10), self.lines
            return list(self.lines)


@contextlib.contextmanager
def access_lines() -> Iterator[_AccessLines]:
    handler = _AccessLines()
    logger = logging.getLogger("gigaproxy")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_streams_tokens_and_upstream_errors(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_MAX_RETRIES="0")
    with access_lines() as seen:
        assert proxy.chat(HELLO)[0] == 200
        status, _, events = proxy.stream(HELLO)
        assert status == 200 and events[-1] == "[DONE]"
        fake.add_fault("status", status=422, body={"status": 422, "message": "Invalid params: too long"})
        assert proxy.chat(HELLO)[0] == 400
        seen.wait(3)  # the three requests are counted once their access lines are out
    samples = scrape(proxy)
    assert value(samples, "gigaproxy_requests_total", route="/chat/completions", status="200",
                 model="GigaChat-2") == 2
    assert value(samples, "gigaproxy_requests_total", route="/chat/completions", status="400",
                 model="GigaChat-2") == 1
    assert value(samples, "gigaproxy_request_duration_seconds_count", route="/chat/completions") == 3
    assert value(samples, "gigaproxy_request_duration_seconds_bucket", route="/chat/completions", le="+Inf") == 3
    assert value(samples, "gigaproxy_stream_first_token_seconds_count", route="/chat/completions") == 1
    assert value(samples, "gigaproxy_streams_total", outcome="complete") == 1
    assert value(samples, "gigaproxy_upstream_errors_total", status="422") == 1
    assert value(samples, "gigaproxy_upstream_duration_seconds_count", path="/chat/completions") == 3
    assert value(samples, "gigaproxy_prompt_tokens_total", model="GigaChat-2") > 0
    assert value(samples, "gigaproxy_completion_tokens_total", model="GigaChat-2") > 0
    assert value(samples, "gigaproxy_token_fetches_total") == 1
    assert value(samples, "gigaproxy_token_fetch_failures_total") == 0
    assert value(samples, "gigaproxy_active_requests") == 1  # the scrape itself
    assert value(samples, "gigaproxy_active_streams") == 0
    assert value(samples, "gigaproxy_upstream_idle_connections") >= 1
    buckets = [v for (name, labels), v in samples.items()
               if name == "gigaproxy_request_duration_seconds_bucket"]
    assert buckets == sorted(buckets)  # cumulative


def test_metrics_count_retries_and_need_the_api_key(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_API_KEY=API_KEY, GIGAPROXY_MAX_RETRIES="1")
    auth = {"Authorization": "Bearer " + API_KEY}
    assert proxy.request("GET", "/metrics")[0] == 401
    fake.add_fault("status", status=503)
    with access_lines() as seen:
        assert proxy.chat(HELLO, headers=auth)[0] == 200
        seen.wait(1)
    samples = scrape(proxy, headers=auth)
    assert value(samples, "gigaproxy_upstream_retries_total") == 1
    assert value(samples, "gigaproxy_upstream_errors_total", status="503") == 1


def messages(caplog, level=logging.DEBUG) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gigaproxy" and r.levelno >= level]


def test_upstream_errors_are_warnings_with_status_message_and_request_id(proxy, fake, caplog):
    caplog.set_level(logging.DEBUG, logger="gigaproxy")
    fake.add_fault("status", status=422, body={"status": 422, "message": "Invalid params: messages[1].content too "
                                                                         "long"})
    with access_lines() as seen:
        assert proxy.chat(HELLO)[0] == 400
        access = seen.wait(1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 422" in warnings[0] and "messages[1].content too long" in warnings[0]
    request_id = re.search(r"\(x-request-id ([0-9a-f-]{36})\)", warnings[0])
    assert request_id, warnings  # the id the fake GigaChat answered with, as in the access line
    assert " POST /v1/chat/completions 400 " in access[0] and "upstream_id=" + request_id.group(1) in access[0]


def test_the_access_line_says_how_a_stream_ended_and_which_model_served(proxy, fake, caplog):
    with access_lines() as seen:
        assert proxy.stream(HELLO)[0] == 200
        fake.add_fault("cut", after_events=2)
        status, _, events = proxy.stream(HELLO)
        assert status == 200 and "error" in events[-1]
        access = seen.wait(2)
    assert len(access) == 2 and all(" POST /v1/chat/completions " in m for m in access), access
    assert "stream=complete" in access[0] and "served=GigaChat-2:2.0.28.2" in access[0]
    assert " 200 " in access[1] and "stream=cut" in access[1]


def test_debug_shows_the_body_sent_and_what_was_rewritten(proxy, fake, caplog):
    caplog.set_level(logging.DEBUG, logger="gigaproxy")
    long_text = "x" * 5000
    request = {"model": "gpt-4o", "seed": 7, "temperature": 0, "stop": ["END"],
               "messages": [{"role": "user", "content": long_text}],
               "tools": [{"type": "function", "function": {"name": "mcp__git.status", "parameters": {
                   "type": "object", "properties": {"p": {"type": ["string", "null"]}}}}}]}
    assert proxy.chat(request)[0] == 200
    lines = messages(caplog)
    sent = [m for m in lines if m.startswith("to GigaChat: POST /chat/completions")]
    assert sent and "(5000 chars)" in sent[0] and long_text not in sent[0] and '"top_p":0' in sent[0]
    rewritten = [m for m in lines if m.startswith("rewritten for GigaChat: ")]
    assert len(rewritten) == 1
    for note in ("'mcp__git.status' sent as mcp__git_status", "not forwarded: seed", "stop emulated",
                 "temperature 0 sent as top_p 0", "schema of 'mcp__git.status' rewritten"):
        assert note in rewritten[0], rewritten[0]


def test_a_model_gigachat_does_not_have_is_logged_once_with_what_serves_it(proxy, fake, caplog):
    caplog.set_level(logging.INFO, logger="gigaproxy")
    for _ in range(3):
        assert proxy.chat(dict(HELLO, model="gpt-4o"))[0] == 200
    assert proxy.chat(dict(HELLO, model="GigaChat-2"))[0] == 200
    noted = [m for m in messages(caplog, logging.INFO) if m.startswith("model ")]
    assert noted == ["model 'gpt-4o' is served by GigaChat-2 (GIGACHAT_MODEL)"]


# ---- the model map ---------------------------------------------------------------------------


def test_the_model_map_sends_each_name_to_its_model_in_every_api(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_MODEL_MAP="claude-*haiku*=GigaChat-2, gpt-4o-mini=gigachat-pro, *=GigaChat-2-Max")
    for asked, served in [("claude-3-5-HAIKU-latest", "GigaChat-2"), ("gpt-4o-mini", "GigaChat-2-Pro"),
                          ("claude-sonnet-4-5", "GigaChat-2-Max"), ("GigaChat-2", "GigaChat-2-Max")]:
        status, _, body = proxy.chat(dict(HELLO, model=asked))
        assert status == 200 and body["model"] == asked
        assert fake.chat_requests()[-1]["model"] == served, asked
    assert proxy.json("POST", "/v1/tokens/count", {"model": "claude-3-haiku", "input": ["hi"]})[0] == 200
    assert fake.requests[-1].json["model"] == "GigaChat-2"


@pytest.mark.parametrize("text", ["gpt-4o", "=GigaChat-2", "gpt-4o=", "a=b c", "x=GigaChat-2,,y"])
def test_a_malformed_model_map_stops_startup_naming_it(text):
    if text == "x=GigaChat-2,,y":
        text = "x=GigaChat-2,y"  # an empty entry between commas is fine; "y" alone is not
    with pytest.raises(gigaproxy.ConfigError) as info:
        gigaproxy.load_config(environ={"GIGACHAT_CREDENTIALS": "k", "GIGAPROXY_MODEL_MAP": text}, cwd="/")
    assert "GIGAPROXY_MODEL_MAP" in str(info.value)


# ---- headers for corporate gateways -----------------------------------------------------------


def test_upstream_headers_reach_every_gigachat_call_and_are_never_logged(start_proxy, fake, caplog):
    caplog.set_level(logging.DEBUG, logger="gigaproxy")
    secret = "gw-key-8d1f0c2a9b7e"
    conftest.SECRETS.add(secret)
    proxy = start_proxy(GIGAPROXY_UPSTREAM_HEADERS="X-Gateway-Key: %s; X-Route: ru-1" % secret)
    assert proxy.chat(HELLO)[0] == 200
    assert proxy.stream(HELLO)[0] == 200
    assert proxy.json("GET", "/v1/models")[0] == 200
    for rec in fake.requests:
        headers = {k.lower(): v for k, v in rec.headers.items()}
        assert headers.get("x-gateway-key") == secret and headers.get("x-route") == "ru-1", rec
    assert any(rec.path.endswith("/oauth") for rec in fake.requests)
    assert secret not in repr(proxy.server.config)
    assert all(secret not in m for m in messages(caplog))


@pytest.mark.parametrize("text,says", [
    ("X-Key abc", "expected 'Name: value"),
    ("Bad Name: x", "expected 'Name: value"),
    ("X-Empty:", "expected 'Name: value"),
    ("Authorization: Bearer x", "may not set Authorization"),
    ("Host: other", "may not set Host"),
])
def test_malformed_upstream_headers_stop_startup(text, says):
    with pytest.raises(gigaproxy.ConfigError) as info:
        gigaproxy.load_config(environ={"GIGACHAT_CREDENTIALS": "k", "GIGAPROXY_UPSTREAM_HEADERS": text}, cwd="/")
    assert says in str(info.value) and "Bearer x" not in str(info.value)
