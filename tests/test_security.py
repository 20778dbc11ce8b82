"""Inbound API key, safe binding, and what is (not) forwarded upstream."""

from __future__ import annotations

import hmac
import socket

import pytest

import gigaproxy
from conftest import API_KEY

HELLO = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def locked(start_proxy):
    return start_proxy(GIGAPROXY_API_KEY=API_KEY)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": "Bearer " + API_KEY[:-1]},
    {"Authorization": "Basic " + API_KEY},
    {"x-api-key": API_KEY + "x"},
    {"Authorization": "Bearer "},
])
def test_every_route_needs_the_key(locked, fake, headers):
    for method, path, body in (("POST", "/v1/chat/completions", HELLO), ("GET", "/v1/models", None),
                               ("GET", "/v1/models/gigachat", None), ("GET", "/", None),
                               ("GET", "/v1/no-such-route", None), ("POST", "/chat/completions", HELLO)):
        status, response_headers, reply = locked.json(method, path, body, headers=headers)
        assert status == 401, (method, path)
        assert reply["error"]["code"] == "invalid_api_key"
        assert response_headers["WWW-Authenticate"] == "Bearer"
    assert fake.requests == []


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer " + API_KEY},
    {"authorization": "bearer " + API_KEY},
    {"x-api-key": API_KEY},
    {"api-key": API_KEY},
])
def test_the_key_opens_every_route(locked, headers):
    assert locked.chat(HELLO, headers=headers)[0] == 200
    assert locked.json("GET", "/v1/models", headers=headers)[0] == 200


def test_health_needs_no_key(locked, fake):
    assert locked.json("GET", "/health")[0] == 200
    assert locked.json("GET", "/v1/health")[0] == 200


def test_a_rejected_request_keeps_the_connection_usable(locked):
    conn = locked.connect()
    assert locked.request("POST", "/v1/chat/completions", HELLO, conn=conn)[0] == 401
    status, _, _ = locked.request("POST", "/v1/chat/completions", HELLO, conn=conn,
                                  headers={"Authorization": "Bearer " + API_KEY})
    assert status == 200
    conn.close()


def test_the_inbound_key_is_never_forwarded(locked, fake):
    locked.chat(HELLO, headers={"x-api-key": API_KEY, "X-Session-ID": "s-1"})
    locked.chat(HELLO, headers={"Authorization": "Bearer " + API_KEY})
    for request in fake.requests:
        assert API_KEY not in str(request.headers)
        assert "x-api-key" not in request.headers
    chats = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert chats[0].headers["x-session-id"] == "s-1"


def test_the_key_comparison_is_constant_time(monkeypatch, locked):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # gigaproxy imports hmac where it checks the key
    locked.chat(HELLO, headers={"x-api-key": "guess"})
    assert calls and calls[0][1] == API_KEY.encode()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "myhost.corp"])
def test_an_open_bind_without_a_key_refuses_to_start(make_config, host):
    with pytest.raises(gigaproxy.ConfigError) as info:
        make_config("--host", host)
    message = str(info.value)
    assert "GIGAPROXY_API_KEY" in message and "GIGAPROXY_ALLOW_UNAUTHENTICATED=true" in message
    assert "\n" not in message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_key(make_config, host):
    assert make_config("--host", host).host == host


def test_an_open_bind_with_a_key_or_explicit_permission(make_config):
    assert make_config("--host", "0.0.0.0", GIGAPROXY_API_KEY=API_KEY).api_key == API_KEY
    assert make_config("--host", "0.0.0.0", GIGAPROXY_ALLOW_UNAUTHENTICATED="yes").allow_unauthenticated


def test_an_open_bind_refusal_from_the_command_line(tmp_path):
    import subprocess
    import sys
    env = {"PATH": "/usr/bin:/bin", "GIGACHAT_CREDENTIALS": "a2V5OnNlY3JldA=="}
    result = subprocess.run([sys.executable, gigaproxy.__file__, "--host", "0.0.0.0", "--port", "0"],
                            cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "GIGAPROXY_API_KEY" in lines[0]


def test_binding_ipv6_loopback(start_proxy, make_config):
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6")
    proxy = start_proxy(make_config("--host", "::1"))
    assert proxy.server.server_address[0] == "::1"
