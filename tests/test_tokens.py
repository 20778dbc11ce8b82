"""Tokens: OAuth, user/password, static and mTLS-only; expiry units; refresh; one fetch in flight."""

from __future__ import annotations

import threading
import uuid
from urllib.parse import parse_qs

import pytest

import gigaproxy
from conftest import fake_env, log_arrival
from fake_gigachat import CLIENT_CERT, CLIENT_KEY, FakeGigaChat

HELLO = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hi"}]}


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def manager(config, clock):
    transport = gigaproxy.Transport(config, gigaproxy.build_ssl_context(config, True), gigaproxy.build_ssl_context(config))
    return gigaproxy.TokenManager(config, transport, clock=clock), transport


def test_oauth_request_has_the_documented_shape(proxy, fake):
    assert proxy.chat(HELLO)[0] == 200
    oauth = [r for r in fake.requests if r.path == "/api/v2/oauth"]
    assert len(oauth) == 1
    headers = oauth[0].headers
    assert headers["authorization"] == "Basic " + fake.credentials
    uuid.UUID(headers["rquid"])
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(oauth[0].body.decode()) == {"scope": ["GIGACHAT_API_PERS"]}
    chat = [r for r in fake.requests if r.path == "/api/v1/chat/completions"][0]
    assert chat.headers["authorization"].startswith("Bearer ")
    assert "client-cert" not in chat.headers


def test_each_oauth_call_has_a_fresh_rquid(make_config, fake):
    clock = Clock(1_000_000.0)
    fake.clock = clock
    tokens, transport = manager(make_config(), clock)
    tokens.get()
    tokens.invalidate(tokens.get())
    tokens.get()
    ids = [r.headers["rquid"] for r in fake.requests if r.path == "/api/v2/oauth"]
    assert len(ids) == 2 and ids[0] != ids[1]
    transport.close()


@pytest.mark.parametrize("scope", ["GIGACHAT_API_B2B", "GIGACHAT_API_CORP"])
def test_other_scopes(tmp_path, scope):
    with FakeGigaChat(scope=scope) as fake:
        config = gigaproxy.load_config(gigaproxy.build_parser().parse_args([]),
                                       fake_env(fake, GIGACHAT_SCOPE=scope), cwd=str(tmp_path))
        tokens, transport = manager(config, Clock(0))
        tokens._clock = fake.clock
        assert tokens.get()
        transport.close()


@pytest.mark.parametrize("expiry_format", ["ms", "s", "tok_exp"])
def test_expiry_in_milliseconds_or_seconds_is_refreshed_before_it_ends(tmp_path, expiry_format):
    clock = Clock(1_700_000_000.0)
    with FakeGigaChat(expiry_format=expiry_format, clock=clock, token_lifetime=1800) as fake:
        config = gigaproxy.load_config(gigaproxy.build_parser().parse_args([]), fake_env(fake), cwd=str(tmp_path))
        tokens, transport = manager(config, clock)
        first = tokens.get()
        clock.now += 1700  # 100 s left: still used
        assert tokens.get() == first
        assert fake.oauth_calls == 1
        clock.now += 50  # 50 s left, inside the 60 s margin: refreshed before it expires...
        assert tokens.get() == first  # ...in the background: this token is still good, nobody waits
        wait_for_refresh(tokens, 2)
        second = tokens.get()
        assert second != first and fake.oauth_calls == 2
        transport.close()


def wait_for_refresh(tokens, fetches):
    """Until the token manager has finished ``fetches`` fetches (woken by its condition, no polling)."""
    with tokens._cond:
        assert tokens._cond.wait_for(lambda: tokens._generation >= fetches and not tokens._fetching, 10)


def test_requests_do_not_wait_for_a_refresh_ahead_of_expiry(start_proxy, fake):
    """The issue's rule: a token fetch never stalls requests that do not need it."""
    clock = Clock(1_700_000_000.0)
    fake.clock = clock
    proxy = start_proxy()
    tokens = proxy.server.upstream.tokens
    tokens._clock = clock
    assert proxy.chat(HELLO)[0] == 200
    first = tokens.get()
    clock.now += fake.token_lifetime - 30  # 30 s left: inside the margin
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", path="/api/v2/oauth", release=release, holding=holding, timeout=10)
    try:
        assert proxy.chat(HELLO)[0] == 200  # starts the refresh, answered with the current token
        assert holding.wait(10)  # the refresh is in flight, held by GigaChat...
        for _ in range(3):
            assert proxy.chat(HELLO)[0] == 200  # ...and requests go on meanwhile
        assert tokens.fetches == 2  # one refresh, however many requests saw the margin
    finally:
        release.set()
    wait_for_refresh(tokens, 2)
    assert tokens.get() != first and fake.oauth_calls == 2
    chats = [r for r in fake.requests if r.path == "/api/v1/chat/completions"]
    assert [r.headers["authorization"] for r in chats[1:5]] == ["Bearer " + first] * 4
    assert proxy.chat(HELLO)[0] == 200
    assert fake.requests[-1].headers["authorization"] == "Bearer " + tokens.get()


def test_a_failed_refresh_ahead_is_logged_and_retried_later(make_config, fake, caplog):
    clock = Clock(1_700_000_000.0)
    fake.clock = clock
    tokens, transport = manager(make_config(), clock)
    first = tokens.get()
    clock.now += fake.token_lifetime - 30
    fake.add_fault("status", path="/api/v2/oauth", status=503)
    with log_arrival(caplog, "could not refresh the GigaChat token") as warned:
        assert tokens.get() == first
        wait_for_refresh(tokens, 2)
        # The refresh thread logs its warning after it has published the failed fetch: wait for the line itself.
        assert warned.wait(10), "the failed refresh was never logged"
    assert any("could not refresh the GigaChat token" in r.getMessage() for r in caplog.records)
    assert tokens.get() == first and tokens.fetches == 2  # not again at once...
    clock.now += gigaproxy.TOKEN_RETRY_SECONDS
    assert tokens.get() == first  # ...but TOKEN_RETRY_SECONDS later, and that one works
    wait_for_refresh(tokens, 3)
    assert tokens.fetches == 3 and fake.oauth_calls == 2 and tokens.get() != first
    transport.close()


def wait_for_waiters(tokens, count):
    """Until ``count`` callers are blocked on the token manager's condition."""
    for _ in range(1000):
        if len(tokens._cond._waiters) == count:
            return
        threading.Event().wait(0.005)
    raise AssertionError("only %d waiters" % len(tokens._cond._waiters))


def test_fifty_requests_at_expiry_make_exactly_one_oauth_call(make_config, fake):
    clock = Clock(1_700_000_000.0)
    fake.clock = clock
    tokens, transport = manager(make_config(), clock)
    tokens.get()
    clock.now += 10_000  # expired
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", path="/api/v2/oauth", release=release, holding=holding, timeout=10)
    results, errors = [], []

    def worker():
        try:
            results.append(tokens.get())
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    assert holding.wait(10)  # one refresh is in flight...
    wait_for_waiters(tokens, 49)  # ...and the 49 others wait for it
    release.set()
    for t in threads:
        t.join(10)
    assert errors == []
    assert len(results) == 50 and len(set(results)) == 1
    assert fake.oauth_calls == 2  # the first token, then exactly one refresh for all 50
    assert tokens.fetches == 2
    transport.close()


def test_fifty_concurrent_requests_through_the_proxy_at_expiry(start_proxy, fake):
    proxy = start_proxy()
    assert proxy.chat(HELLO)[0] == 200
    fake.expire_tokens()
    fake.add_fault("status", path="/api/v1/chat/completions", status=401)
    statuses = []
    barrier = threading.Barrier(50)

    def worker():
        barrier.wait()
        statuses.append(proxy.chat(HELLO)[0])

    threads = [threading.Thread(target=worker) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 50
    assert fake.oauth_calls == 2


def test_a_failed_fetch_is_shared_by_its_waiters(make_config):
    tokens, transport = manager(make_config(), Clock(0))
    entered, release = threading.Event(), threading.Event()
    calls = []
    failure = gigaproxy.ProxyError(502, "could not get a GigaChat token", "api_error")

    def failing_fetch():
        calls.append(1)
        entered.set()
        release.wait(10)
        raise failure

    tokens._fetch = failing_fetch
    errors = []

    def worker():
        try:
            tokens.get()
        except gigaproxy.ProxyError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    assert entered.wait(10)
    wait_for_waiters(tokens, 9)
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1  # nobody retried behind the failed fetch
    assert errors == [failure] * 10
    transport.close()


def test_upstream_401_invalidates_and_retries_once(proxy, fake):
    assert proxy.chat(HELLO)[0] == 200
    fake.add_fault("expire_tokens")
    status, _, body = proxy.chat(HELLO)
    assert status == 200, body
    assert fake.oauth_calls == 2
    chats = [r for r in fake.requests if r.path == "/api/v1/chat/completions"]
    assert [r.status for r in chats] == [200, 401, 200]


def test_401_twice_reaches_the_client_as_401(proxy, fake):
    fake.add_fault("status", status=401)
    fake.add_fault("status", status=401)
    status, _, body = proxy.chat(HELLO)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert fake.oauth_calls == 2  # retried exactly once with a fresh token


def test_wrong_key_is_a_401_naming_the_variable_without_echoing_it(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_CREDENTIALS="d3Jvbmc6a2V5LXRoYXQtaXMtd3Jvbmc=")
    status, _, body = proxy.chat(HELLO)
    assert status == 401
    message = body["error"]["message"]
    assert "GIGACHAT_CREDENTIALS" in message
    assert "d3Jvbmc6a2V5LXRoYXQtaXMtd3Jvbmc=" not in message


def test_wrong_scope_is_a_401_naming_the_scope(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_SCOPE="GIGACHAT_API_CORP")
    status, _, body = proxy.chat(HELLO)
    assert status == 401
    assert "GIGACHAT_SCOPE" in body["error"]["message"]


def test_oauth_down_is_a_502_naming_the_auth_url(start_proxy, fake):
    proxy = start_proxy()
    fake.add_fault("status", path="/api/v2/oauth", status=503)
    status, _, body = proxy.chat(HELLO)
    assert status == 502
    assert fake.auth_url in body["error"]["message"]


def test_user_and_password(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_CREDENTIALS=None, GIGACHAT_USER=fake.user, GIGACHAT_PASSWORD=fake.password)
    assert proxy.chat(HELLO)[0] == 200
    assert fake.token_calls == 1 and fake.oauth_calls == 0


def test_wrong_password_names_the_variables(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_CREDENTIALS=None, GIGACHAT_USER=fake.user, GIGACHAT_PASSWORD="nope")
    status, _, body = proxy.chat(HELLO)
    assert status == 401
    assert "GIGACHAT_PASSWORD" in body["error"]["message"] and "nope" not in body["error"]["message"]


def test_static_token_alone(start_proxy, fake):
    token = fake.issue_token()
    proxy = start_proxy(GIGACHAT_CREDENTIALS=None, GIGACHAT_ACCESS_TOKEN=token)
    assert proxy.chat(HELLO)[0] == 200
    assert fake.oauth_calls == 0
    chat = [r for r in fake.requests if r.path == "/api/v1/chat/completions"][0]
    assert chat.headers["authorization"] == "Bearer " + token


def test_rejected_static_token_falls_back_to_the_key(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_ACCESS_TOKEN="stale-token")
    assert proxy.chat(HELLO)[0] == 200
    assert fake.oauth_calls == 1


def test_mtls_only_sends_no_authorization(tmp_path):
    with FakeGigaChat(require_client_cert=True) as fake:
        env = fake_env(fake, GIGACHAT_CREDENTIALS=None, GIGACHAT_CERT_FILE=CLIENT_CERT, GIGACHAT_KEY_FILE=CLIENT_KEY)
        config = gigaproxy.load_config(gigaproxy.build_parser().parse_args(["--port", "0"]), env, cwd=str(tmp_path))
        server = gigaproxy.make_server(config)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            import http.client
            import json
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            conn.request("POST", "/v1/chat/completions", json.dumps(HELLO), {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
            conn.close()
        finally:
            server.shutdown()
            server.server_close()
        chat = [r for r in fake.requests if r.path == "/api/v1/chat/completions"][0]
        assert "authorization" not in chat.headers
        assert chat.client_cert
        assert fake.oauth_calls == 0


@pytest.mark.parametrize("value,expected", [
    (1_706_026_848_841, 1_706_026_848.841),
    (1_695_128_118, 1_695_128_118.0),
    (0, None), (-5, None), (True, None), ("123", None), (None, None),
])
def test_expiry_units(value, expected):
    assert gigaproxy._expiry_to_seconds(value) == expected
