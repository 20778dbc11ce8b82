"""The lean HTTP header parsing gigaproxy uses on both sides instead of the email parser."""

from __future__ import annotations

import io
import socket
import threading

import pytest

import gigaproxy
from gigaproxy import BadHeaders, Headers, read_header_lines


def lines(data):
    return read_header_lines(io.BytesIO(data).readline)


def test_headers_are_case_insensitive_and_keep_repeats():
    headers = Headers(lines(b"Content-Type: application/json\r\nX-A: 1\r\nx-a: 2\r\nEmpty:\r\n\r\nbody"))
    assert headers.get("content-TYPE") == "application/json"
    assert headers["X-A"] == "1" and headers.get_all("x-a") == ["1", "2"]
    assert headers.get("Empty") == "" and "empty" in headers
    assert headers.get("missing", "d") == "d" and headers.get_all("missing") is None
    assert headers.items()[0] == ("content-type", "application/json")


@pytest.mark.parametrize("data,status", [
    (b"No colon here\r\n\r\n", 400),
    (b"Bad Name: x\r\n\r\n", 400),
    (b"Name : x\r\n\r\n", 400),  # whitespace before the colon: a smuggling shape
    (b" folded: x\r\n\r\n", 400),
    (b"X: " + b"a" * 70000 + b"\r\n\r\n", 431),
    (b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
])
def test_bad_header_lines(data, status):
    with pytest.raises(BadHeaders) as info:
        lines(data)
    assert info.value.status == status


def test_headers_end_at_eof_too():
    assert lines(b"A: b\r\n") == [("a", "b")]


def serve_once(answer):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(answer)
        conn.close()
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def test_upstream_response_parsing_keeps_http_client_semantics():
    import http.client
    port = serve_once(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                      b"Transfer-Encoding: chunked\r\nX-Request-ID: r1\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.response_class = gigaproxy._UpstreamResponse
    conn.request("GET", "/")
    response = conn.getresponse()
    assert response.status == 200 and response.chunked and not response.will_close
    assert response.getheader("x-request-id") == "r1" and response.headers.get("Content-Type") == "text/event-stream"
    assert response.read() == b"hello"
    conn.close()


def test_upstream_bad_headers_become_an_http_exception():
    import http.client
    port = serve_once(b"HTTP/1.1 200 OK\r\nBroken header\r\n\r\n")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.response_class = gigaproxy._UpstreamResponse
    conn.request("GET", "/")
    with pytest.raises(http.client.HTTPException):
        conn.getresponse()
    conn.close()
