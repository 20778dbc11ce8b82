"""Tests for tests/fake_connect_proxy.py (loopback only, no sleeps)."""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import socket
import socketserver
import sys
import threading
from typing import Iterator, Optional, Tuple

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # also works under --import-mode=importlib
    sys.path.insert(0, _HERE)

from fake_connect_proxy import FakeConnectProxy  # noqa: E402

TIMEOUT = 5.0


# --------------------------------------------------------------- helpers
class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return  # client half-closed: we close after echoing all
            self.request.sendall(data)


class _ThreadingTCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False  # server_close() joins the handler threads


class _HelloHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ("hello from %s" % self.path).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _ThreadingHTTP(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = False


def _serve(server: socketserver.BaseServer) -> Iterator[int]:
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        t.join(TIMEOUT)


@pytest.fixture
def echo_port() -> Iterator[int]:
    yield from _serve(_ThreadingTCP(("127.0.0.1", 0), _EchoHandler))


@pytest.fixture
def http_port() -> Iterator[int]:
    yield from _serve(_ThreadingHTTP(("127.0.0.1", 0), _HelloHandler))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def _recv_until_eof(sock: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def _read_head(sock: socket.socket) -> Tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "proxy closed before sending a full response head: %r" % buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _connect(
    proxy: FakeConnectProxy, target: str, auth: Optional[str] = None, extra: bytes = b""
) -> Tuple[socket.socket, bytes, bytes]:
    """Send CONNECT; return (socket, response head, bytes after the head)."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)
    req = "CONNECT %s HTTP/1.1\r\nHost: %s\r\n" % (target, target)
    if auth is not None:
        req += "Proxy-Authorization: %s\r\n" % auth
    sock.sendall((req + "\r\n").encode() + extra)
    head, rest = _read_head(sock)
    return sock, head, rest


def _status(head: bytes) -> int:
    return int(head.split(b"\r\n", 1)[0].split()[1])


def _proxy_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("fake-connect-proxy")]


# --------------------------------------------------------------- tunnels
def test_tunnel_to_echo_server_with_half_close(echo_port: int) -> None:
    with FakeConnectProxy() as proxy:
        assert proxy.url == "http://127.0.0.1:%d" % proxy.port
        target = "127.0.0.1:%d" % echo_port
        sock, head, rest = _connect(proxy, target)
        with sock:
            assert head.startswith(b"HTTP/1.1 200 Connection established")
            assert rest == b""
            payload = b"ping\x00\xff" * 50000  # ~300 KB, several buffers
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            sender.join(TIMEOUT)
            sock.shutdown(socket.SHUT_WR)  # half-close must reach the echo server
            assert _recv_until_eof(sock) == payload
        assert proxy.connects == [target]
        assert proxy.auth_headers == [None]
        assert proxy.requests == [("CONNECT", target)]


def test_bytes_pipelined_after_connect_head_are_forwarded(echo_port: int) -> None:
    with FakeConnectProxy() as proxy:
        sock, head, rest = _connect(proxy, "127.0.0.1:%d" % echo_port, extra=b"early")
        with sock:
            assert _status(head) == 200
            sock.shutdown(socket.SHUT_WR)
            assert rest + _recv_until_eof(sock) == b"early"


def test_localhost_target_is_allowed(echo_port: int) -> None:
    with FakeConnectProxy() as proxy:
        sock, head, _ = _connect(proxy, "localhost:%d" % echo_port)
        with sock:
            assert _status(head) == 200
            sock.sendall(b"x")
            sock.shutdown(socket.SHUT_WR)
            assert _recv_until_eof(sock) == b"x"
        assert proxy.connects == ["localhost:%d" % echo_port]


def test_http_client_tunnel_to_http_server(http_port: int) -> None:
    with FakeConnectProxy() as proxy:
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=TIMEOUT)
        conn.set_tunnel("127.0.0.1", http_port)
        try:
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"hello from /v1/models"
        finally:
            conn.close()
        assert proxy.connects == ["127.0.0.1:%d" % http_port]


# --------------------------------------------------------------- auth
AUTH = ("user", "p@ss word")


def test_407_without_credentials(echo_port: int) -> None:
    with FakeConnectProxy(auth=AUTH) as proxy:
        sock, head, _ = _connect(proxy, "127.0.0.1:%d" % echo_port)
        with sock:
            assert _status(head) == 407
            assert b'\r\nProxy-Authenticate: Basic realm="test"' in head
            assert b"\r\nConnection: close" in head
            _recv_until_eof(sock)  # the proxy closes the connection
        assert proxy.connects == []
        assert proxy.auth_headers == [None]


@pytest.mark.parametrize(
    "value",
    [
        _basic("user", "wrong"),
        _basic("other", "p@ss word"),
        "Bearer " + base64.b64encode(b"user:p@ss word").decode(),
        "Basic !!!not-base64!!!",
        "Basic",
    ],
)
def test_407_with_wrong_credentials(echo_port: int, value: str) -> None:
    with FakeConnectProxy(auth=AUTH) as proxy:
        sock, head, _ = _connect(proxy, "127.0.0.1:%d" % echo_port, auth=value)
        with sock:
            assert _status(head) == 407
            assert b'Proxy-Authenticate: Basic realm="test"' in head
        assert proxy.connects == []
        assert proxy.auth_headers == [value]


def test_200_with_right_credentials(http_port: int) -> None:
    value = _basic(*AUTH)
    with FakeConnectProxy(auth=AUTH) as proxy:
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=TIMEOUT)
        conn.set_tunnel("127.0.0.1", http_port, headers={"Proxy-Authorization": value})
        try:
            conn.request("GET", "/ok")
            assert conn.getresponse().read() == b"hello from /ok"
        finally:
            conn.close()
        assert proxy.auth_headers == [value]
        assert proxy.connects == ["127.0.0.1:%d" % http_port]


# --------------------------------------------------------------- refusals
def test_403_for_non_loopback_target_without_resolving(monkeypatch) -> None:
    looked_up = []
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection

    def spy_getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1"):
            looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def spy_create_connection(address, *args, **kwargs):
        if address[0] not in ("127.0.0.1", "localhost", "::1"):
            looked_up.append(address[0])
            raise AssertionError("would dial %r" % (address,))
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", spy_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", spy_create_connection)
    with FakeConnectProxy() as proxy:
        for target in ("example.invalid:443", "10.0.0.1:443", "[2001:db8::1]:443"):
            sock, head, _ = _connect(proxy, target)
            with sock:
                assert _status(head) == 403, target
                _recv_until_eof(sock)
        assert proxy.connects == []
    assert looked_up == []


def test_403_is_checked_after_auth() -> None:
    with FakeConnectProxy(auth=AUTH) as proxy:
        sock, head, _ = _connect(proxy, "example.invalid:443")
        with sock:
            assert _status(head) == 407
        sock, head, _ = _connect(proxy, "example.invalid:443", auth=_basic(*AUTH))
        with sock:
            assert _status(head) == 403


def test_405_for_other_methods() -> None:
    with FakeConnectProxy() as proxy:
        conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=TIMEOUT)
        try:
            conn.request("POST", "http://127.0.0.1:1/x", body=b"{}")
            resp = conn.getresponse()
            assert resp.status == 405
            assert resp.getheader("Allow") == "CONNECT"
            resp.read()
        finally:
            conn.close()
        assert proxy.requests == [("POST", "http://127.0.0.1:1/x")]
        assert proxy.connects == []


@pytest.mark.parametrize("target", ["127.0.0.1", "127.0.0.1:notaport", "127.0.0.1:0", ":443"])
def test_400_for_malformed_target(target: str) -> None:
    with FakeConnectProxy() as proxy:
        sock, head, _ = _connect(proxy, target)
        with sock:
            assert _status(head) == 400


def test_502_when_target_refuses() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with FakeConnectProxy() as proxy:
        sock, head, _ = _connect(proxy, "127.0.0.1:%d" % port)
        with sock:
            assert _status(head) == 502
        assert proxy.connects == []


# --------------------------------------------------------------- shutdown
# These tests use a bare listening socket served from the test thread, so the
# only threads that come and go are the proxy's own.
@pytest.fixture
def bare_listener() -> Iterator[socket.socket]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    lst.settimeout(TIMEOUT)
    with lst:
        yield lst


def test_stop_closes_open_tunnels_and_leaves_no_threads(bare_listener) -> None:
    baseline = threading.active_count()
    proxy = FakeConnectProxy().start()
    port = bare_listener.getsockname()[1]
    tunnel, head, _ = _connect(proxy, "127.0.0.1:%d" % port)
    assert _status(head) == 200
    upstream, _ = bare_listener.accept()
    upstream.settimeout(TIMEOUT)
    tunnel.sendall(b"abc")  # the tunnel stays open: nobody closes
    got = b""
    while got != b"abc":
        got += upstream.recv(16)
    idle = socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)
    partial = socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT)
    partial.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n")  # head never finished
    assert len(_proxy_threads()) >= 2

    proxy.stop()
    proxy.stop()  # idempotent

    assert _proxy_threads() == []
    assert threading.active_count() == baseline
    for s in (tunnel, idle, partial, upstream):  # every side sees the close
        with s:
            try:
                assert _recv_until_eof(s) == b""
            except ConnectionResetError:
                pass
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=TIMEOUT).close()


def test_context_manager_restores_thread_count(bare_listener) -> None:
    baseline = threading.active_count()
    port = bare_listener.getsockname()[1]
    with FakeConnectProxy() as proxy:
        for i in range(3):
            tunnel, head, _ = _connect(proxy, "127.0.0.1:%d" % port)
            upstream, _ = bare_listener.accept()
            upstream.settimeout(TIMEOUT)
            with tunnel, upstream:
                assert _status(head) == 200
                upstream.sendall(b"hi %d" % i)
                upstream.shutdown(socket.SHUT_WR)
                assert _recv_until_eof(tunnel) == b"hi %d" % i
        assert len(proxy.connects) == 3
    assert _proxy_threads() == []
    assert threading.active_count() == baseline


def test_cannot_restart_after_stop() -> None:
    proxy = FakeConnectProxy()
    proxy.start()
    proxy.stop()
    with pytest.raises(RuntimeError):
        proxy.start()


def test_stop_without_start_closes_listener() -> None:
    proxy = FakeConnectProxy()
    port = proxy.port
    proxy.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
