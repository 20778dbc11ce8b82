"""Faults gigaproxy must ride out: retries, timeouts, disconnects, overload, shutdown."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time

import pytest

import gigaproxy
from conftest import Proxy, sse_payloads
from fake_connect_proxy import FakeConnectProxy

HELLO = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hello"}]}
CHAT = "/api/v1/chat/completions"


def chat_attempts(fake):
    return [r for r in fake.requests if r.path == CHAT]


# ---- retries --------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [
    dict(status=503),
    dict(status=500),
    dict(status=504, content_type="text/html", body="<html>Gateway Timeout</html>"),
    dict(status=502, content_type="text/html", body="<html><h1>502 Bad Gateway</h1></html>"),
    dict(status=429),
    dict(status=429, headers={"Retry-After": "0"}),
])
def test_transient_upstream_errors_are_retried(proxy, fake, fault):
    fake.add_fault("status", **fault)
    fake.add_fault("status", **fault)
    status, _, body = proxy.chat(HELLO)
    assert status == 200, body
    assert [r.status for r in chat_attempts(fake)] == [fault["status"], fault["status"], 200]


def test_retry_budget_is_bounded_and_429_stays_429(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_MAX_RETRIES="1")
    for _ in range(3):
        fake.add_fault("status", status=429, headers={"Retry-After": "0"})
    status, headers, body = proxy.chat(HELLO)
    assert status == 429
    assert headers["Retry-After"] == "0"
    assert body["error"]["type"] == "rate_limit_error"
    assert len(chat_attempts(fake)) == 2  # one try, one retry


def test_client_errors_are_not_retried(proxy, fake):
    fake.add_fault("status", status=422, body={"status": 422, "message": "Invalid params: nope"})
    assert proxy.chat(HELLO)[0] == 400
    assert len(chat_attempts(fake)) == 1


def test_retry_after_is_honoured(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_RETRY_BACKOFF="0")
    fake.add_fault("status", status=429, headers={"Retry-After": "1"})
    started = time.monotonic()
    assert proxy.chat(HELLO)[0] == 200
    assert time.monotonic() - started >= 1.0


def test_connection_dropped_before_an_answer_is_retried(proxy, fake):
    assert proxy.chat(HELLO)[0] == 200
    fake.add_fault("cut")  # the pooled connection: replaced at once
    fake.add_fault("cut")  # a fresh connection dropped too: a real retry
    assert proxy.chat(HELLO)[0] == 200


def test_connection_refused_is_retried_then_502(start_proxy, caplog):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proxy = start_proxy(GIGACHAT_BASE_URL="https://127.0.0.1:%d/api/v1" % port, GIGACHAT_CREDENTIALS=None,
                        GIGACHAT_ACCESS_TOKEN="static-token-for-refused-test")
    caplog.set_level(logging.INFO, logger="gigaproxy")
    status, _, body = proxy.chat(HELLO)
    assert status == 502 and body["error"]["code"] == "upstream_unreachable"
    assert len([r for r in caplog.records if "retrying GigaChat" in r.getMessage()]) == 2


def test_stream_is_retried_before_its_first_byte(proxy, fake):
    fake.add_fault("status", status=503)
    fake.enqueue_reply({"role": "assistant", "content": "a b"}, chunks=["a", " b"])
    status, _, events = proxy.stream(HELLO)
    assert status == 200
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == "a b"


def test_stream_is_not_retried_after_its_first_byte(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "a b c"}, chunks=["a", " b", " c"])
    fake.add_fault("cut", after_events=1)
    status, _, events = proxy.stream(HELLO)
    assert status == 200
    assert "error" in events[-1] and "[DONE]" not in events
    assert len(chat_attempts(fake)) == 1


def test_backoff_is_exponential_with_full_jitter(make_config, monkeypatch):
    config = make_config(GIGAPROXY_RETRY_BACKOFF="0.5", GIGAPROXY_MAX_RETRIES="3")
    upstream = gigaproxy.Upstream(config, None, None)
    slept = []
    monkeypatch.setattr(gigaproxy.time, "sleep", slept.append)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the worst case (gigaproxy imports random on retry)
    far = time.monotonic() + 100
    assert [upstream._may_retry(a, None, far, "x") for a in range(4)] == [True, True, True, False]
    assert slept == [0.5, 1.0, 2.0]
    monkeypatch.setattr(random, "uniform", lambda low, high: low)
    slept.clear()
    assert upstream._may_retry(0, 3.0, far, "x") and slept == [3.0]  # Retry-After is a floor
    assert not upstream._may_retry(0, 60.0, far, "x")  # too long: the client gets the 429
    assert not upstream._may_retry(0, 3.0, time.monotonic() + 1, "x")  # past the total deadline


def test_retry_after_http_date():
    future = time.time() + 5
    value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(future))
    assert 3 <= gigaproxy._retry_after(value) <= 6
    assert gigaproxy._retry_after("7") == 7.0
    assert gigaproxy._retry_after("soon") is None


# ---- timeouts -------------------------------------------------------------------------


def test_total_timeout_ends_a_hanging_answer(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_TOTAL_TIMEOUT="0.5")
    release = threading.Event()
    fake.add_fault("hold", release=release, timeout=10)
    started = time.monotonic()
    try:
        status, _, body = proxy.chat(HELLO)
    finally:
        release.set()
    assert status == 504 and body["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 3


def test_total_timeout_ends_a_stream_with_an_error_event(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_TOTAL_TIMEOUT="0.6")
    release = threading.Event()
    fake.enqueue_reply({"role": "assistant", "content": "a b"}, chunks=["a", " b"])
    fake.add_fault("hold", after_events=1, release=release, timeout=10)
    try:
        status, _, events = proxy.stream(HELLO)
    finally:
        release.set()
    assert status == 200
    assert events[-1]["error"]["code"] == "upstream_timeout"


def test_connect_timeout_through_a_silent_proxy(start_proxy):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP connection, never answers CONNECT
    try:
        proxy = start_proxy(HTTPS_PROXY="http://127.0.0.1:%d" % silent.getsockname()[1],
                            GIGAPROXY_CONNECT_TIMEOUT="0.3", GIGAPROXY_MAX_RETRIES="0")
        started = time.monotonic()
        status, _, body = proxy.chat(HELLO)
        assert status == 504
        assert "GIGAPROXY_CONNECT_TIMEOUT" in body["error"]["message"]
        assert time.monotonic() - started < 3
    finally:
        silent.close()


# ---- clients that leave, overload, shutdown -------------------------------------------


def fd_count():
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts file descriptors through /proc")
def test_a_hundred_clients_leaving_mid_stream_leave_nothing_behind(proxy, fake):
    assert proxy.chat(HELLO)[0] == 200  # warm: token and pooled connections exist
    baseline_threads, baseline_fds = threading.active_count(), fd_count()
    body = json.dumps(dict(HELLO, stream=True)).encode()
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    for i in range(100):
        words = ["w%d" % n for n in range(40)]
        fake.enqueue_reply({"role": "assistant", "content": " ".join(words)},
                           chunks=[w + " " for w in words], stream_delay=0.002)
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        sock.sendall(request)
        received = b""
        while b"data:" not in received:
            received += sock.recv(65536)
        sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (proxy.server._requests == 0 and threading.active_count() <= baseline_threads
                and fd_count() <= baseline_fds + 2):
            break
        time.sleep(0.02)
    assert proxy.server._requests == 0
    assert threading.active_count() <= baseline_threads
    assert fd_count() <= baseline_fds + 2  # at most a pooled connection pair more than before
    assert proxy.chat(HELLO)[0] == 200


def test_over_the_concurrency_cap_is_503_with_retry_after(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_MAX_CONCURRENCY="2")
    release = threading.Event()
    holders, results = [], []
    for _ in range(2):
        holding = threading.Event()
        fake.add_fault("hold", release=release, holding=holding, timeout=10)
        thread = threading.Thread(target=lambda: results.append(proxy.chat(HELLO)[0]))
        thread.start()
        holders.append(thread)
        assert holding.wait(10)
    try:
        status, headers, data = proxy.request("POST", "/v1/chat/completions", HELLO)
        assert status == 503
        assert headers["Retry-After"] == "1"
        assert json.loads(data)["error"]["code"] == "overloaded"
    finally:
        release.set()
        for thread in holders:
            thread.join(10)
    assert results == [200, 200]
    deadline = time.monotonic() + 5
    while proxy.server._connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.chat(HELLO)[0] == 200


def test_graceful_shutdown_finishes_the_stream_in_flight(make_config, fake):
    server = gigaproxy.make_server(make_config())
    port = server.server_address[1]
    runner = threading.Thread(target=gigaproxy.serve, args=(server,), daemon=True)
    runner.start()
    release, holding = threading.Event(), threading.Event()
    fake.enqueue_reply({"role": "assistant", "content": "a b"}, chunks=["a", " b"])
    fake.add_fault("hold", after_events=1, release=release, holding=holding, timeout=10)
    result = {}

    def client():
        handle = Proxy.__new__(Proxy)
        handle.port = port
        result["stream"] = handle.stream(HELLO)

    thread = threading.Thread(target=client)
    thread.start()
    assert holding.wait(10)
    server.shutdown()  # what SIGTERM does
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the listening socket closes...
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            break
        time.sleep(0.01)
    else:
        pytest.fail("still accepting connections after shutdown")
    assert runner.is_alive()  # ...while the stream in flight is waited for
    release.set()
    thread.join(10)
    runner.join(10)
    assert not runner.is_alive()
    status, _, events = result["stream"]
    assert status == 200 and events[-1] == "[DONE]"


def test_shutdown_grace_period_is_bounded(make_config, fake):
    server = gigaproxy.make_server(make_config(GIGAPROXY_SHUTDOWN_GRACE="0.3"))
    runner = threading.Thread(target=gigaproxy.serve, args=(server,), daemon=True)
    runner.start()
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", release=release, holding=holding, timeout=10)
    handle = Proxy.__new__(Proxy)
    handle.port = server.server_address[1]
    thread = threading.Thread(target=lambda: handle.request("POST", "/v1/chat/completions", HELLO))
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        server.shutdown()
        runner.join(5)
        assert not runner.is_alive()
        assert 0.25 <= time.monotonic() - started < 3
    finally:
        release.set()
        thread.join(10)
