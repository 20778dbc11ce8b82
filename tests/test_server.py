"""End to end: a client talks HTTP to gigaproxy, which talks HTTPS to the fake GigaChat."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time

import pytest

import gigaproxy
from conftest import log_arrival, sse_payloads

HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}


ATTEMPTS = 3  # one try and GIGAPROXY_MAX_RETRIES (2) more, for retryable failures


def fail_every_attempt(fake, kind, attempts=ATTEMPTS, **fault):
    for _ in range(attempts):
        fake.add_fault(kind, **fault)


def assert_openai_error(body, status_code=None):
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error


# ---- chat, non-streaming --------------------------------------------------------------


def test_chat_round_trip(proxy, fake):
    status, headers, body = proxy.chat(HELLO)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o"  # the name the client asked for
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"] == {"role": "assistant", "content": "Echo: hello there"}
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    sent = fake.chat_requests()
    assert sent == [{"model": "GigaChat-2", "messages": [{"role": "user", "content": "hello there"}]}]


def test_every_route_answers_with_and_without_v1(proxy):
    for prefix in ("/v1", ""):
        status, _, body = proxy.chat(HELLO) if prefix else proxy.json("POST", "/chat/completions", HELLO)
        assert status == 200 and body["object"] == "chat.completion"
        status, _, body = proxy.json("GET", prefix + "/models")
        assert status == 200 and body["object"] == "list"
        status, _, body = proxy.json("GET", prefix + "/models/gigachat-max")
        assert status == 200 and body["id"] == "gigachat-max"
    status, _, body = proxy.json("GET", "/v1/models/")  # trailing slash
    assert status == 200 and body["object"] == "list"


def test_translation_reaches_upstream_as_gigachat_accepts_it(proxy, fake):
    request = {
        "model": "gigachat-max",
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]},
            {"role": "assistant", "content": None},
            {"role": "system", "content": "late instruction"},
            {"role": "user", "content": "go"},
        ],
        "temperature": 0,
        "max_completion_tokens": 50,
        "stop": ["\n\n"],
        "seed": 7,
        "user": "u-1",
        "presence_penalty": 0.5,
        "stream_options": {"include_usage": True},
        "parallel_tool_calls": False,
        "repetition_penalty": 1.1,
        "update_interval": 0.2,
        "profanity_check": False,
    }
    status, _, body = proxy.chat(request)
    assert status == 200, body
    assert body["model"] == "gigachat-max"
    sent = fake.chat_requests()[0]
    assert sent == {
        "model": "GigaChat-2-Max",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "part one\npart two"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "late instruction"},
            {"role": "user", "content": "go"},
        ],
        "top_p": 0,
        "max_tokens": 50,
        "repetition_penalty": 1.1,
        "update_interval": 0.2,
        "profanity_check": False,
    }


def test_finish_reasons_and_cached_tokens_are_mapped(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "cut"}, finish_reason="length",
                       usage={"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                              "precached_prompt_tokens": 4})
    fake.enqueue_reply({"role": "assistant", "content": ""}, finish_reason="blacklist")
    _, _, body = proxy.chat(HELLO)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                             "prompt_tokens_details": {"cached_tokens": 4}}
    _, _, body = proxy.chat(HELLO)
    assert body["choices"][0]["finish_reason"] == "content_filter"


def test_model_names(proxy, fake):
    for asked, sent in (("gigachat", "GigaChat-2"), ("gigachat-pro", "GigaChat-2-Pro"),
                        ("gigachat-max", "GigaChat-2-Max"), ("GigaChat-2-Max", "GigaChat-2-Max"),
                        ("gigachat-2-pro", "GigaChat-2-Pro"), ("claude-3-5-sonnet-20241022", "GigaChat-2"),
                        ("gpt-4o", "GigaChat-2")):
        fake.reset()
        status, _, body = proxy.chat(dict(HELLO, model=asked))
        assert status == 200, body
        assert body["model"] == asked
        assert fake.chat_requests()[0]["model"] == sent


def test_unknown_model_goes_to_gigachat_model(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_MODEL="GigaChat-2-Pro")
    proxy.chat(dict(HELLO, model="gpt-4o-mini"))
    assert fake.chat_requests()[0]["model"] == "GigaChat-2-Pro"


def test_forwarded_headers_are_an_allow_list(proxy, fake):
    proxy.chat(HELLO, headers={"X-Session-ID": "sess-1", "X-Client-ID": "cli-1", "X-Request-ID": "req-1",
                               "Authorization": "Bearer client-secret-key", "Cookie": "a=b",
                               "OpenAI-Organization": "org"})
    sent = [r for r in fake.requests if r.path.endswith("/chat/completions")][0]
    assert sent.headers["x-session-id"] == "sess-1"
    assert sent.headers["x-client-id"] == "cli-1"
    assert sent.headers["x-request-id"] == "req-1"
    assert "client-secret-key" not in sent.headers["authorization"]
    assert "cookie" not in sent.headers and "openai-organization" not in sent.headers
    assert sent.headers["user-agent"].startswith("gigaproxy/")


# ---- streaming ------------------------------------------------------------------------


def test_stream_round_trip_with_usage(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "one two three"}, chunks=["one", " two", " three"])
    status, headers, events = proxy.stream(dict(HELLO, stream_options={"include_usage": True}))
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:] if c["choices"])
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    assert fake.chat_requests()[0]["stream"] is True


def test_stream_without_include_usage_has_no_usage_chunk(proxy, fake):
    _, _, events = proxy.stream(HELLO)
    assert events[-1] == "[DONE]"
    assert all(c["choices"] for c in events[:-1])
    assert all("usage" not in c for c in events[:-1])


def test_stream_events_reach_the_client_as_they_leave_upstream(proxy, fake):
    """The second upstream event is held; the first must already be at the client."""
    release, holding = threading.Event(), threading.Event()
    fake.enqueue_reply({"role": "assistant", "content": "first second"}, chunks=["first", " second"])
    fake.add_fault("hold", after_events=1, release=release, holding=holding, timeout=10)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        body = json.dumps(dict(HELLO, stream=True)).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while b'"first"' not in received:
            data = sock.recv(65536)
            assert data, "connection closed before the first event arrived"
            received += data
        assert holding.wait(5)  # upstream is holding its second event...
        assert b"second" not in received  # ...and the first is already here
        release.set()
        while not received.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            assert data
            received += data
        assert b"second" in received and b"[DONE]" in received
    finally:
        release.set()
        sock.close()


def test_stream_failure_before_first_byte_is_an_ordinary_error(proxy, fake):
    fake.add_fault("status", status=429, headers={"Retry-After": "30"})  # too long to wait: passed on
    status, headers, data = proxy.request("POST", "/v1/chat/completions", dict(HELLO, stream=True))
    assert status == 429
    assert headers["Retry-After"] == "30"
    assert len([r for r in fake.requests if r.path.endswith("/chat/completions")]) == 1
    error = assert_openai_error(json.loads(data))
    assert error["type"] == "rate_limit_error"


@pytest.mark.parametrize("after_events", [0, 2])
def test_stream_cut_mid_way_ends_with_an_error_event(proxy, fake, after_events):
    fake.enqueue_reply({"role": "assistant", "content": "a b c d"}, chunks=["a", " b", " c", " d"])
    fake.add_fault("cut", after_events=after_events)
    status, _, events = proxy.stream(HELLO)
    assert status == 200
    assert "[DONE]" not in events
    error = assert_openai_error(events[-1])
    assert error["code"] == "upstream_stream_incomplete"
    assert not any(c.get("choices") and c["choices"][0]["finish_reason"] for c in events[:-1])


def test_stream_upstream_stall_ends_with_a_timeout_event(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_TIMEOUT="0.3")
    release = threading.Event()
    fake.add_fault("hold", after_events=1, release=release, timeout=10)
    try:
        status, _, events = proxy.stream(HELLO)
    finally:
        release.set()
    assert status == 200
    error = assert_openai_error(events[-1])
    assert error["code"] == "upstream_timeout"


class _AccessLineSeen(logging.Handler):
    """Sets an event when the access line for a path is logged (the request is over)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.seen = threading.Event()
        self.line = ""

    def emit(self, record):
        if record.name == "gigaproxy" and self.path in record.getMessage() and "ms upstream_id=" in record.getMessage():
            self.line = record.getMessage()
            self.seen.set()


@contextlib.contextmanager
def access_line_of(path):
    """An _AccessLineSeen on gigaproxy's logger (at INFO) for the ``with`` block."""
    watcher = _AccessLineSeen(path)
    logger = logging.getLogger("gigaproxy")
    logger.addHandler(watcher)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield watcher
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(old_level)


def raw_chat(port, request):
    """A client socket that has sent ``request`` to /v1/chat/completions."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = json.dumps(request).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
                 b"Content-Type: application/json\r\n\r\n%s" % (len(body), body))
    return sock


def test_client_leaving_mid_stream_closes_the_upstream_request(proxy, fake):
    release, holding = threading.Event(), threading.Event()
    fake.enqueue_reply({"role": "assistant", "content": "x y"}, chunks=["x", " y"])
    fake.add_fault("hold", after_events=1, release=release, holding=holding, timeout=10)
    with access_line_of("/v1/chat/completions") as watcher:
        try:
            sock = raw_chat(proxy.port, dict(HELLO, stream=True))
            received = b""
            while b'"x"' not in received:
                received += sock.recv(65536)
            sock.close()
            left = time.monotonic()
            release.set()  # upstream sends the rest; the proxy's write fails and it drops the upstream
            assert watcher.seen.wait(5), "the handler did not finish after the client left"
            assert time.monotonic() - left < 1.0
        finally:
            release.set()
    # The upstream connection of the abandoned stream was closed, not returned to the pool.
    api_idle = [c for key, conns in proxy.server.upstream.transport._idle.items() if key[3] == "api" for c in conns]
    assert api_idle == []
    assert proxy.chat(HELLO)[0] == 200  # and the proxy still serves


def test_client_gone_before_a_plain_answer_is_a_499_not_an_internal_error(proxy, fake):
    """The client resets its connection while GigaChat thinks: writing the answer fails quietly.

    (The suite fails any test in which gigaproxy logs a traceback, so this also checks that
    no "internal error" is logged.)
    """
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", release=release, holding=holding, timeout=10)
    with access_line_of("/v1/chat/completions") as watcher:
        try:
            sock = raw_chat(proxy.port, HELLO)
            assert holding.wait(10)  # the request is at GigaChat...
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # ...when the client goes away with a reset
            release.set()
            assert watcher.seen.wait(5), "the handler did not finish after the client left"
        finally:
            release.set()
    assert " 499 " in watcher.line or " 200 " in watcher.line  # 200: the answer left before the reset landed
    assert proxy.chat(HELLO)[0] == 200


# ---- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault,expected_status,expected_type", [
    (dict(status=422, body={"status": 422, "message": "Invalid params: temperature must be in range (0, +inf)"}),
     400, "invalid_request_error"),
    (dict(status=429), 429, "rate_limit_error"),
    (dict(status=500), 502, "api_error"),
    (dict(status=503), 503, "api_error"),
    (dict(status=404, body={"status": 404, "message": "No such model"}), 404, "invalid_request_error"),
    (dict(status=402), 402, "insufficient_quota"),
])
def test_upstream_json_errors_are_mapped(proxy, fake, fault, expected_status, expected_type):
    fail_every_attempt(fake, "status", **fault)
    status, headers, body = proxy.chat(HELLO)
    assert status == expected_status
    error = assert_openai_error(body)
    assert error["type"] == expected_type
    assert error["message"].startswith("GigaChat: ")
    if "body" in fault:
        assert fault["body"]["message"] in error["message"]


def test_upstream_html_error_becomes_502_with_excerpt(proxy, fake):
    fail_every_attempt(fake, "status", status=502, content_type="text/html",
                       body="<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>")
    status, headers, data = proxy.request("POST", "/v1/chat/completions", HELLO)
    assert status == 502
    assert headers["Content-Type"].startswith("application/json")
    error = assert_openai_error(json.loads(data))
    assert "502 Bad Gateway" in error["message"]
    assert "<" not in error["message"]


def test_upstream_garbage_becomes_502(proxy, fake):
    fake.add_fault("garbage", body="\x00\x01 definitely not json")
    status, _, body = proxy.chat(HELLO)
    assert status == 502
    assert assert_openai_error(body)["code"] == "upstream_bad_response"


def test_upstream_unreachable_is_502(start_proxy):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    proxy = start_proxy(GIGACHAT_BASE_URL="https://127.0.0.1:%d/api/v1" % port,
                        GIGACHAT_AUTH_URL="https://127.0.0.1:%d/api/v2/oauth" % port)
    status, _, body = proxy.chat(HELLO)
    assert status == 502
    error = assert_openai_error(body)
    assert "127.0.0.1" in error["message"]


def test_upstream_timeout_is_504(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_TIMEOUT="0.3")
    release = threading.Event()
    proxy.chat(HELLO)  # token fetched and connection warm
    fake.add_fault("hold", release=release, timeout=10)
    try:
        status, _, body = proxy.chat(HELLO)
    finally:
        release.set()
    assert status == 504
    assert assert_openai_error(body)["code"] == "upstream_timeout"


def test_upstream_closing_without_answer_is_502(proxy, fake):
    proxy.chat(HELLO)
    fail_every_attempt(fake, "cut", attempts=ATTEMPTS + 1)  # +1: the stale pooled connection is free
    status, _, body = proxy.chat(HELLO)
    assert status == 502
    assert_openai_error(body)


@pytest.mark.parametrize("body,param", [
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"model": 4, "messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_bad_requests_are_400_naming_the_field(proxy, fake, body, param):
    status, _, reply = proxy.chat(body)
    assert status == 400
    error = assert_openai_error(reply)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert fake.chat_requests() == []


@pytest.mark.parametrize("raw,fragment", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"42", "JSON object"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"", "empty"),
    (b"[" * 100000 + b"]" * 100000, "nested"),
])
def test_malformed_bodies_are_400(proxy, raw, fragment):
    status, _, data = proxy.request("POST", "/v1/chat/completions", raw)
    assert status == 400
    assert fragment in assert_openai_error(json.loads(data))["message"]


def test_unknown_route_is_404_and_wrong_method_405(proxy):
    status, _, body = proxy.json("GET", "/v1/nothing-here")
    assert status == 404 and assert_openai_error(body)["code"] == "not_found"
    status, headers, body = proxy.json("GET", "/v1/chat/completions")
    assert status == 405 and headers["Allow"] == "POST"
    assert assert_openai_error(body)["code"] == "method_not_allowed"
    status, headers, body = proxy.json("DELETE", "/v1/models")
    assert status == 405 and headers["Allow"] == "GET"


def test_body_over_the_limit_is_413_and_not_forwarded(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_MAX_BODY_MB="0.01")
    big = dict(HELLO, messages=[{"role": "user", "content": "x" * 20000}])
    status, _, body = proxy.chat(big)
    assert status == 413
    assert assert_openai_error(body)["code"] == "request_too_large"
    assert fake.chat_requests() == []


def test_missing_content_length_is_411(proxy):
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 411")
    finally:
        sock.close()


def test_chunked_request_body_is_accepted(proxy, fake):
    body = json.dumps(HELLO).encode()
    conn = proxy.connect()
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    for piece in (body[:10], body[10:]):
        conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 200
    assert json.loads(response.read())["choices"][0]["message"]["content"] == "Echo: hello there"
    conn.close()


def test_malformed_request_line_gets_json_not_html(proxy):
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    try:
        sock.sendall(b"GARBAGE\r\n\r\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400")
        assert b"application/json" in head
        assert_openai_error(json.loads(body))
    finally:
        sock.close()


# ---- keep-alive, models, health, logs -------------------------------------------------


def test_client_keep_alive_serves_many_requests_on_one_connection(proxy):
    conn = proxy.connect()
    for _ in range(5):
        status, _, _ = proxy.request("POST", "/v1/chat/completions", HELLO, conn=conn)
        assert status == 200
    status, _, data = proxy.request("GET", "/v1/nothing", conn=conn)
    assert status == 404
    assert proxy.request("GET", "/health", conn=conn)[0] == 200
    conn.close()


def test_upstream_connections_are_reused(proxy, fake):
    for _ in range(10):
        assert proxy.chat(HELLO)[0] == 200
    for _ in range(3):
        assert proxy.stream(HELLO)[2][-1] == "[DONE]"
    # One connection for OAuth, one for the API: no handshake per request.
    assert fake.tls_handshakes == 2
    assert fake.oauth_calls == 1


def test_models_are_listed_cached_and_include_aliases(proxy, fake):
    status, _, body = proxy.json("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert "GigaChat-2-Max" in ids and "Embeddings" in ids
    assert {"gigachat", "gigachat-pro", "gigachat-max"} <= set(ids)
    for item in body["data"]:
        assert item["object"] == "model" and isinstance(item["created"], int) and item["owned_by"]
    proxy.json("GET", "/v1/models")
    proxy.json("GET", "/v1/models/GigaChat-2-Pro")
    assert fake.models_calls == 1
    status, _, body = proxy.json("GET", "/v1/models/GigaChat-2-Pro")
    assert status == 200 and body["id"] == "GigaChat-2-Pro" and body["object"] == "model"
    status, _, body = proxy.json("GET", "/v1/models/gpt-9")  # any name a chat request accepts (issue 13)
    assert status == 200 and body["id"] == "gpt-9" and body["gigachat_model"] == proxy.server.config.model


def test_the_model_list_puts_shorthands_first_and_leaves_service_models_out(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_MODEL="GigaChat-2-Pro", GIGAPROXY_MODEL_MAP="claude-*=GigaChat-2-Max,gpt-4o=gigachat")
    status, _, body = proxy.json("GET", "/v1/models")
    assert status == 200
    ids = [m["id"] for m in body["data"]]
    assert ids[:5] == ["gigachat", "gigachat-pro", "gigachat-max", "gpt-4o", "GigaChat-2-Pro"]  # no glob listed
    kinds = [m["type"] for m in body["data"]]
    assert kinds == sorted(kinds)  # chat models, then embedders ("chat" < "embedder")
    assert ids[-2:] == ["Embeddings", "Embeddings-2"] and len(ids) == len(set(ids))
    assert "GigaFilter" not in ids and "GigaCheckClassification" not in ids
    served = {m["id"]: m["gigachat_model"] for m in body["data"]}
    assert served["gigachat-max"] == "GigaChat-2-Max" and served["gpt-4o"] == "GigaChat-2"
    assert served["GigaChat-2-Max"] == "GigaChat-2-Max" and served["Embeddings"] == "Embeddings"
    assert proxy.json("GET", "/v1/models/claude-opus-4")[2]["gigachat_model"] == "GigaChat-2-Max"


def wait_for_models_refresh(upstream):
    """Until no background model-list refresh is running (woken by its condition, no polling)."""
    with upstream._models_cond:
        assert upstream._models_cond.wait_for(lambda: not upstream._models_refreshing, 10)


def test_models_refresh_after_the_cache_time_and_survive_an_outage(proxy, fake, caplog):
    clock = [1000.0]
    upstream = proxy.server.upstream
    upstream._clock = lambda: clock[0]
    assert proxy.json("GET", "/v1/models")[0] == 200
    clock[0] += 301
    fail_every_attempt(fake, "status", path="/api/v1/models", status=503)
    status, _, body = proxy.json("GET", "/v1/models")
    assert status == 200 and len(body["data"]) > 3  # the cached list at once; the refresh runs behind it
    wait_for_models_refresh(upstream)
    assert fake.models_calls == 1  # the refresh got 503s: the cached list stays
    assert any("could not refresh the GigaChat model list" in r.getMessage() for r in caplog.records)
    clock[0] += 1
    assert proxy.json("GET", "/v1/models")[0] == 200
    wait_for_models_refresh(upstream)
    assert fake.models_calls == 1  # not tried again at once...
    clock[0] += gigaproxy.MODELS_RETRY_SECONDS
    assert proxy.json("GET", "/v1/models")[0] == 200
    wait_for_models_refresh(upstream)
    assert fake.models_calls == 2  # ...but a little later, and now it worked


def test_a_model_list_refresh_stalls_no_request(proxy, fake):
    """The issue's rule: a model-list refresh never stalls requests that do not need it."""
    clock = [1000.0]
    upstream = proxy.server.upstream
    upstream._clock = lambda: clock[0]
    assert proxy.json("GET", "/v1/models")[0] == 200
    clock[0] += 301
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", path="/api/v1/models", release=release, holding=holding, timeout=10)
    try:
        assert proxy.json("GET", "/v1/models")[0] == 200  # starts the refresh
        assert holding.wait(10)  # GigaChat holds it...
        assert proxy.json("GET", "/v1/models")[0] == 200  # ...while the cached list is served
        assert proxy.chat({"model": "GigaChat-2", "messages": [{"role": "user", "content": "hi"}]})[0] == 200
        assert upstream._models_refreshing  # still held: nothing above waited for it
    finally:
        release.set()
    wait_for_models_refresh(upstream)
    assert fake.models_calls == 2


def test_models_error_when_upstream_never_answered(proxy, fake):
    fail_every_attempt(fake, "status", path="/api/v1/models", status=500)
    status, _, body = proxy.json("GET", "/v1/models")
    assert status == 502
    assert_openai_error(body)


def test_health_does_not_call_upstream(proxy, fake):
    status, _, body = proxy.json("GET", "/health")
    assert status == 200 and body["status"] == "ok"
    assert fake.requests == []


def test_access_log_has_one_line_per_request_and_no_secret(proxy, fake, caplog):
    caplog.set_level(logging.INFO, logger="gigaproxy")
    # An access line is written after its answer has left: having the answer is not having the line.
    with log_arrival(caplog, "/v1/chat/completions", "upstream_id=") as chat_logged, \
            log_arrival(caplog, "/v1/nope", "upstream_id=") as nope_logged:
        proxy.chat(HELLO, headers={"Authorization": "Bearer sk-client-secret", "X-Request-ID": "rid-42"})
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(b"GET /v1/nope\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
        sock.close()
        assert chat_logged.wait(10) and nope_logged.wait(10), "an access line was never logged"
    lines = [r.getMessage() for r in caplog.records if r.name == "gigaproxy"]
    chat_lines = [line for line in lines if "/v1/chat/completions" in line]
    assert len(chat_lines) == 1
    line = chat_lines[0]
    assert "POST" in line and " 200 " in line and "model=GigaChat-2" in line and "upstream_id=rid-42" in line
    assert "ms" in line
    assert any("\\x1b" in line for line in lines) and not any("\x1b" in line for line in lines)
    text = "\n".join(lines)
    for secret in [fake.credentials, "sk-client-secret"] + list(fake._tokens):
        assert secret not in text


def test_server_header_and_version(proxy):
    import gigaproxy
    status, headers, body = proxy.json("GET", "/health")
    assert headers["Server"] == "gigaproxy/" + gigaproxy.__version__
    assert body["version"] == gigaproxy.__version__


def test_sse_payloads_helper_decodes_what_the_proxy_writes():
    import gigaproxy
    data = gigaproxy.sse_event({"a": "б"}) + gigaproxy.SSE_DONE
    assert sse_payloads(data) == [{"a": "б"}, "[DONE]"]
