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


def read_response(raw, method="GET"):
    """gigaproxy's upstream response reader over ``raw`` bytes, as if they came from a socket."""
    return gigaproxy.UpstreamResponse(io.BufferedReader(io.BytesIO(raw)), method)


def test_upstream_response_skips_interim_answers_and_reads_a_chunked_body():
    response = read_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\nX-Request-ID: r1\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert (response.status, response.reason, response.will_close, response.done) == (200, "OK", False, False)
    assert response.headers.get("x-request-id") == "r1" and response.headers.get("Content-Type") == "text/event-stream"
    assert response.read() == b"hello"
    assert response.done and response.read() == b""


def all_pieces(response):
    """read_some() until the end of the body."""
    return list(iter(response.read_some, b""))


def test_upstream_stream_pieces_come_chunk_by_chunk_and_chunk_extensions_are_ignored():
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"4;ext=1\r\ndata\r\n9\r\n: 1\n\ndata\r\n3\r\n: 2\r\n2\r\n\n\n\r\n0\r\nX-Trailer: t\r\n\r\n")
    response = read_response(raw)
    assert all_pieces(response) == [b"data", b": 1\n\ndata", b": 2", b"\n\n"]
    assert response.done and not response.will_close


@pytest.mark.parametrize("raw,pieces", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdefXX", [b"abcdef"]),
    (b"HTTP/1.1 200 OK\r\n\r\nto the end", [b"to the end"]),
])
def test_upstream_read_some_without_chunks(raw, pieces):
    response = read_response(raw)
    assert all_pieces(response) == pieces and response.done


def test_upstream_read_some_does_not_wait_for_the_rest_of_a_chunk():
    """A chunk announced as 10 bytes, of which 4 are in: those 4 are passed on at once."""
    response = read_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\nabcd")
    assert response.read_some() == b"abcd"
    with pytest.raises(gigaproxy.UpstreamIncomplete):  # and then the connection ended
        response.read_some()


@pytest.mark.parametrize("raw,body,will_close", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcEXTRA", b"abc", False),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"", False),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", b"ok", True),
    (b"HTTP/1.1 200 OK\r\n\r\nto the end", b"to the end", True),            # no length: read to EOF
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", True),       # 1.0 closes by default
    (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", b"ok", False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", False),
    (b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\nx", b"x", False),            # no reason phrase
])
def test_upstream_body_framing(raw, body, will_close):
    response = read_response(raw)
    assert response.read() == body
    assert response.done and response.will_close == will_close


def test_upstream_head_answer_has_no_body():
    response = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD")
    assert response.done and response.read() == b""


def test_upstream_read_with_a_limit_stops_there():
    response = read_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789")
    assert response.read(4) == b"0123" and not response.done
    assert response.read() == b"456789" and response.done


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nBroken header\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",                       # cut short
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",  # bad size
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",  # no CRLF after data
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",        # cut inside a chunk
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",                # no last chunk
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 13 + b"\r\nabc",  # absurd size
])
def test_upstream_protocol_errors_are_upstream_protocol_errors(raw):
    with pytest.raises(gigaproxy.UpstreamProtocolError):
        read_response(raw).read()


def test_upstream_silence_is_upstream_closed():
    with pytest.raises(gigaproxy.UpstreamClosed):
        read_response(b"")
