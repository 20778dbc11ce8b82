"""A tiny corporate HTTP proxy for tests: only ``CONNECT host:port``.

Standard library only, Python 3.8+.  It listens on 127.0.0.1 (port 0, so the
OS picks a free port), serves every client connection in its own thread, and
tunnels raw bytes to *loopback* targets only -- it never dials out to the
network, and refuses any other host name before resolving it.

Usage::

    with FakeConnectProxy() as proxy:                       # no auth
        proxy.url           # "http://127.0.0.1:<port>"
        proxy.connects      # ["127.0.0.1:8443", ...] targets it tunnelled
        proxy.auth_headers  # [None, "Basic dXNlcjpw...", ...] one per request

    with FakeConnectProxy(auth=("user", "p@ss word")) as proxy:
        ...   # CONNECT without the right "Proxy-Authorization: Basic ..."
              # gets 407 + 'Proxy-Authenticate: Basic realm="test"'

Answers:
  * CONNECT to 127.0.0.0/8, ::1 or "localhost" -> "HTTP/1.1 200 Connection
    established", then bytes are relayed both ways until both sides are done
    (a half-close on one side is passed on as a half-close to the other);
  * CONNECT with missing/wrong credentials when ``auth`` is set -> 407;
  * CONNECT to any other host -> 403 (checked before any name resolution);
  * CONNECT whose target cannot be reached -> 502;
  * malformed request or target -> 400;
  * any other method -> 405 (with ``Allow: CONNECT``).
Every answer other than 200 carries ``Connection: close`` and the connection
is closed.

``stop()`` (also called by ``__exit__``) closes the listener and every client
and upstream socket, and joins every thread it started, so that afterwards
``threading.active_count()`` is back to what it was before ``start()``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import selectors
import socket
import threading
from typing import List, Optional, Set, Tuple

__all__ = ["FakeConnectProxy"]

_MAX_HEAD = 64 * 1024  # bytes allowed for the request line + headers
_HEAD_TIMEOUT = 10.0  # seconds a client may take to send its request head
_CONNECT_TIMEOUT = 5.0  # seconds to connect to the (loopback) target
_DRAIN_TIMEOUT = 1.0  # seconds to wait for the client to close after an error
_BUFSIZE = 64 * 1024
_JOIN_TIMEOUT = 5.0


def _is_loopback_target(host: str) -> bool:
    """True for 'localhost', 127.0.0.0/8 and ::1 -- decided without DNS."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: never resolved


def _split_target(target: str) -> Optional[Tuple[str, int]]:
    """'host:port' or '[v6]:port' -> (host, port); None if malformed."""
    if target.startswith("["):
        end = target.find("]")
        if end < 0 or target[end + 1 : end + 2] != ":":
            return None
        host, port_s = target[1:end], target[end + 2 :]
    else:
        host, sep, port_s = target.rpartition(":")
        if not sep or ":" in host:
            return None
    if not host or not port_s.isdigit():
        return None
    port = int(port_s)
    if not 0 < port < 65536:
        return None
    return host, port


class _Stopping(Exception):
    """Raised inside a connection thread when the proxy is stopping."""


class FakeConnectProxy:
    """A threaded CONNECT-only HTTP proxy on 127.0.0.1 for tests.

    Attributes (read them from the test thread; lists are only appended to):
      host, port, url   -- where it listens ("http://127.0.0.1:<port>")
      connects          -- "host:port" of every tunnel it established
      auth_headers      -- Proxy-Authorization value of every request it
                           parsed, in order (None when the header was absent)
      requests          -- (method, target) of every request it parsed
    """

    def __init__(
        self,
        auth: Optional[Tuple[str, str]] = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.auth = auth
        self.connects: List[str] = []
        self.auth_headers: List[Optional[str]] = []
        self.requests: List[Tuple[str, str]] = []

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: Set[threading.Thread] = set()
        self._socks: Set[socket.socket] = set()
        self._accept_thread: Optional[threading.Thread] = None
        self._stopped = False

        # Closing _wake_w makes _wake_r readable (EOF) for ever: every
        # selector in every thread watches _wake_r, so one close wakes all.
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(64)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            raise
        self.host, self.port = self._listener.getsockname()[:2]

    # ------------------------------------------------------------ public API
    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.port)

    def start(self) -> "FakeConnectProxy":
        if self._stopped:
            raise RuntimeError("FakeConnectProxy cannot be restarted")
        if self._accept_thread is None:
            t = threading.Thread(
                target=self._accept_loop, name="fake-connect-proxy-accept", daemon=True
            )
            self._accept_thread = t
            t.start()
        return self

    def stop(self) -> None:
        """Close the listener and every tunnel; join every thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake_w.close()  # wakes every selector
        with self._lock:
            socks = list(self._socks)
        for s in socks:  # also unblocks a sendall() stuck on a full buffer
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._accept_thread is not None:
            self._accept_thread.join(_JOIN_TIMEOUT)
        # The accept thread is gone, so no new connection thread can appear.
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(_JOIN_TIMEOUT)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            s.close()
        self._wake_r.close()

    def __enter__(self) -> "FakeConnectProxy":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------ internals
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                raise _Stopping()
            self._socks.add(sock)

    def _untrack_close(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    try:
                        conn, _addr = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        if self._stopping.is_set():
                            return
                        continue
                    conn.setblocking(True)
                    with self._lock:
                        if self._stopping.is_set():
                            conn.close()
                            return
                        self._socks.add(conn)
                        t = threading.Thread(
                            target=self._serve,
                            args=(conn,),
                            name="fake-connect-proxy-conn",
                            daemon=True,
                        )
                        self._threads.add(t)
                    t.start()
        finally:
            sel.close()

    def _wait_readable(self, sock: socket.socket, timeout: Optional[float]) -> bool:
        """Wait until sock is readable. False on timeout; raises _Stopping."""
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            ready = sel.select(timeout)
        for key, _ in ready:
            if key.fileobj is self._wake_r:
                raise _Stopping()
        return bool(ready)

    def _serve(self, conn: socket.socket) -> None:
        upstream: Optional[socket.socket] = None
        try:
            upstream = self._handle(conn)
        except (_Stopping, OSError):
            pass
        finally:
            if upstream is not None:
                self._untrack_close(upstream)
            self._untrack_close(conn)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _read_head(self, conn: socket.socket) -> Optional[Tuple[bytes, bytes]]:
        """Read up to the blank line. Returns (head, extra bytes) or None."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            if len(buf) > _MAX_HEAD:
                self._reply(conn, 400, "Bad Request", "request head too large\n")
                return None
            if not self._wait_readable(conn, _HEAD_TIMEOUT):
                return None
            chunk = conn.recv(_BUFSIZE)
            if not chunk:
                return None
            buf += chunk
        head, _, extra = buf.partition(b"\r\n\r\n")
        return head, extra

    def _handle(self, conn: socket.socket) -> Optional[socket.socket]:
        got = self._read_head(conn)
        if got is None:
            return None
        head, extra = got
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self._reply(conn, 400, "Bad Request", "malformed request line\n")
            return None
        method, target, _version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        proxy_auth = headers.get("proxy-authorization")
        with self._lock:
            self.requests.append((method, target))
            self.auth_headers.append(proxy_auth)

        if method.upper() != "CONNECT":
            self._reply(
                conn,
                405,
                "Method Not Allowed",
                "only CONNECT is supported\n",
                extra_headers=["Allow: CONNECT"],
            )
            return None
        if self.auth is not None and not self._auth_ok(proxy_auth):
            self._reply(
                conn,
                407,
                "Proxy Authentication Required",
                "proxy authentication required\n",
                extra_headers=['Proxy-Authenticate: Basic realm="test"'],
            )
            return None
        hostport = _split_target(target)
        if hostport is None:
            self._reply(conn, 400, "Bad Request", "CONNECT target must be host:port\n")
            return None
        host, port = hostport
        if not _is_loopback_target(host):  # refuse before any resolution
            self._reply(conn, 403, "Forbidden", "only loopback targets allowed\n")
            return None

        upstream = self._dial(host, port)
        if upstream is None:
            self._reply(conn, 502, "Bad Gateway", "cannot connect to %s\n" % target)
            return None
        self._track(upstream)
        with self._lock:
            self.connects.append(target)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if extra:  # bytes the client pipelined after the CONNECT head
            upstream.sendall(extra)
        self._relay(conn, upstream)
        return upstream

    def _auth_ok(self, value: Optional[str]) -> bool:
        assert self.auth is not None
        if not value:
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            got = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        want = ("%s:%s" % self.auth).encode("utf-8")
        return hmac.compare_digest(got, want)

    @staticmethod
    def _dial(host: str, port: int) -> Optional[socket.socket]:
        if host.lower().rstrip(".") == "localhost":
            candidates = ["127.0.0.1", "::1"]  # no resolver involved
        else:
            candidates = [host]
        for addr in candidates:
            try:
                return socket.create_connection((addr, port), timeout=_CONNECT_TIMEOUT)
            except OSError:
                continue
        return None

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        """Copy bytes both ways until both directions reached EOF."""
        a.settimeout(None)
        b.settimeout(None)
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel:
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            open_dirs = 2
            while open_dirs:
                for key, _ in sel.select():
                    src = key.fileobj
                    if src is self._wake_r:
                        return
                    assert isinstance(src, socket.socket)
                    try:
                        data = src.recv(_BUFSIZE)
                    except OSError:  # reset: the tunnel is over
                        return
                    dst = peer[src]
                    if data:
                        try:
                            dst.sendall(data)
                        except OSError:
                            return
                    else:  # half-close: pass it on
                        sel.unregister(src)
                        open_dirs -= 1
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass

    def _reply(
        self,
        conn: socket.socket,
        code: int,
        reason: str,
        body: str,
        extra_headers: Optional[List[str]] = None,
    ) -> None:
        payload = body.encode("utf-8")
        lines = ["HTTP/1.1 %d %s" % (code, reason)]
        lines += extra_headers or []
        lines += [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Length: %d" % len(payload),
            "Connection: close",
        ]
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        # Let the client read the answer before we close: half-close, then
        # drain what it may still send (a body we ignore) until it closes,
        # so that closing does not turn into a reset that loses our answer.
        try:
            conn.shutdown(socket.SHUT_WR)
            while self._wait_readable(conn, _DRAIN_TIMEOUT):
                if not conn.recv(_BUFSIZE):
                    break
        except OSError:
            pass
