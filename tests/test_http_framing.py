"""HTTP/1.1 framing through real sockets, on both sides of gigaproxy.

Five findings, each pinned by the tests named after it:

1. Request smuggling.  A request with both Content-Length and Transfer-Encoding gets a 400 and
   the connection is closed; a Transfer-Encoding other than ``chunked`` alone gets a 501 (or the
   400 RFC 9112 §6.3 prescribes when chunked is not the final coding) and a close; two
   Content-Length lines (even equal) or one that is not plain digits, a header name with
   whitespace before its colon and a folded (obs-fold) request header line get a 400 and a close.
   Every case carries a second request hidden behind the first (``SMUGGLED``): after a framing
   error nothing more is read, so it is never answered, and nothing reaches GigaChat.
2. Lenient chunked bodies.  After a chunk's data anything but CRLF, and a chunk-size line over
   1,024 bytes, are a 400 and a close; valid bodies with extensions and trailers are served.
3. Pool poisoning.  With GigaChat played by tests/misbehaving_upstream.py: bytes after a complete
   upstream response (a whole injected response, in the same write or a later one), or a 500
   whose body runs past its Content-Length, must not reach the next client; it gets its own
   answer, promptly, over a fresh upstream connection.
4. Cheap lockout.  With GIGAPROXY_MAX_CONCURRENCY=4, connections that never send a byte, or idle
   keep-alive connections, must not make a real client get a 503; a connection that sends nothing
   is closed after GIGAPROXY_CLIENT_TIMEOUT; four requests actually in flight still make a fifth
   connection get the fast 503 with Retry-After.
5. A folded (obs-fold) header line in an upstream response is unfolded (RFC 9112 §5.2), not a 502.

Then the plain protocol around them, where tests/test_hostile.py, test_server.py and
test_reliability.py do not already cover it: HTTP/1.0 (closed unless keep-alive is asked, a
stream not chunked), ``Connection: close``, ``Expect: 100-continue`` with a 1.5 MB body under
the default limit, HEAD on GET routes, clients that leave in the middle of sending a request,
and pipelined requests mixing a chunked body, a stream and a HEAD.  (Leaving mid-stream and
while GigaChat thinks, and the plain pipelining case, are in test_server.py,
test_reliability.py and test_hostile.py.)

The raw client (``Conn``, ``request_bytes``, ``post``) and the checks on replies come from
tests/test_hostile.py.  Standard library only, Python 3.8+, loopback only, no sleeps: waits
are events or blocking reads with a timeout.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from typing import Any, List, Sequence, Tuple

import pytest

from conftest import SECRETS, sse_payloads
from misbehaving_upstream import MisbehavingUpstream, whole_response
from test_hostile import (CHAT, CHUNKED, ECHO, HELLO, Conn, Reply, error_problems, post, request_bytes,
                          serving_problems, stream_problems, success_problems, upstream_chats)

TOKEN = "gp-static-token-for-the-misbehaving-upstream-7c1e"  # GIGACHAT_ACCESS_TOKEN: no OAuth
SECRETS.add(TOKEN)  # the suite-wide scan: it must never show up in a log line or a reply
HELLO_BYTES = json.dumps(HELLO).encode()
SMUGGLED = b"GET /v1/models?SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"  # hidden behind the request under test
CLOSE_WAIT = 1.0  # seconds a refused connection gets to close (a fixed proxy closes at once)
PROMPT = 2.0  # seconds within which "promptly" answered requests must be answered


def chunked(body: bytes) -> bytes:
    """``body`` as one chunk and the last chunk."""
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def content(reply: Reply) -> Any:
    return reply.json()["choices"][0]["message"]["content"]


def chat_about(text: str) -> dict:
    return dict(HELLO, messages=[{"role": "user", "content": text}])


def refusal_problems(port: int, data: bytes, statuses: Sequence[int]) -> List[str]:
    """Send ``data`` (a request with another hidden after it) on a new connection; what is wrong.

    Wanted: one OpenAI error with one of ``statuses`` that says ``Connection: close``, then the
    connection closes with nothing more sent (the hidden request is never answered).
    """
    conn = Conn(port)
    try:
        conn.send(data)
        reply = conn.reply()
    except (OSError, EOFError, ValueError) as exc:
        conn.close()
        return ["no answer (%r)" % exc]
    problems = error_problems(reply, statuses)
    if not reply.closes:
        problems.append("the answer does not say Connection: close")
    closed, more = conn.wait_closed(CLOSE_WAIT)
    more = conn.buf + more
    conn.close()
    if more:
        problems.append("the hidden request was answered too: %r" % more[:120])
    if not closed:
        problems.append("the connection stayed open")
    return ["%s -> %r" % ("; ".join(problems), reply)] if problems else []


def run_refusals(proxy: Any, fake: Any, cases: Sequence[Tuple[str, bytes, Sequence[int]]]) -> None:
    """Every case refused (see refusal_problems) and nothing forwarded to GigaChat; lists every failure."""
    failures = []
    for label, data, statuses in cases:
        before = upstream_chats(fake)
        problems = refusal_problems(proxy.port, data, statuses)
        if upstream_chats(fake) != before:
            problems.insert(0, "it was forwarded to GigaChat")
        if problems:
            failures.append("%s: %s" % (label, "; ".join(problems)))
    status, _, body = proxy.chat(HELLO)
    assert status == 200 and body["choices"][0]["message"]["content"] == ECHO, "the proxy stopped serving"
    assert not failures, "%d of %d cases failed:\n  %s" % (len(failures), len(cases), "\n  ".join(failures))


def chat_head(*headers: Tuple[str, Any]) -> bytes:
    """A chat request head with exactly ``headers`` after Host and Content-Type (raw: "Name : v" works)."""
    return request_bytes("POST", CHAT, b"", [(name, str(value)) for name, value in headers], length=False)


# ---- 1. request smuggling --------------------------------------------------------------------------------


def test_finding1_reported_smuggling_example_gets_one_400_and_a_close(proxy, fake):
    """The exact bytes of the report: today they get two 200s, the second for the hidden GET."""
    data = (b"POST /v1/tokens/count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 91\r\nTransfer-Encoding: xchunked\r\n\r\n"
            b'23\r\n{"model":"GigaChat","input":["hi"]}\r\n0\r\n\r\n'
            b"GET /v1/models?SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n")
    before = len([r for r in fake.requests if r.path.endswith("/tokens/count")])
    problems = refusal_problems(proxy.port, data, [400])
    assert not problems, problems[0]
    assert len([r for r in fake.requests if r.path.endswith("/tokens/count")]) == before


def test_a_body_on_a_route_that_reads_none_never_passes_for_the_next_request(proxy, fake):
    """GET /v1/models with a Content-Length (or chunked) body that holds a request: a front proxy
    sees one request; gigaproxy must not read the body as a second one (CL.0 smuggling)."""
    for label, head in [("Content-Length", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                         % len(SMUGGLED)),
                        ("chunked", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")]:
        body = SMUGGLED if label == "Content-Length" else chunked(SMUGGLED)
        conn = Conn(proxy.port)
        try:
            conn.send(head + body + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = conn.reply()
            assert first.status == 200 and first.json()["object"] == "list", (label, first)
            if not first.closes:  # kept open: the next answer is the health check's, not the hidden request's
                second = conn.reply()
                assert second.status == 200 and second.json()["status"] == "ok", (label, second)
        finally:
            conn.close()


@pytest.mark.parametrize("split", [False, True], ids=["the head in one packet", "the head in two packets"])
def test_a_bare_cr_in_the_head_is_400_and_close(proxy, fake, split):
    """The email parser behind http.server takes a lone CR for the end of a line: a header can
    hide behind one (X-A: a<CR>Content-Length: 5), or the head end early and its rest pass for
    a body that holds a request."""
    cases = [
        b"POST /v1/tokens/count HTTP/1.1\r\nHost: x\r\nX-A: a\rContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED,
        b"POST /v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\r\r\nContent-Length: %d\r\n\r\n" % len(SMUGGLED)
        + SMUGGLED,
    ]
    for data in cases:
        conn = Conn(proxy.port)
        try:
            if split:
                conn.send(data[:30])
                conn.send(data[30:])
            else:
                conn.send(data)
            reply = conn.reply()
            assert reply.status == 400 and reply.closes, reply
            assert not error_problems(reply, [400])
            with pytest.raises(EOFError):
                conn.reply()  # the hidden request is never answered
        finally:
            conn.close()


def test_content_length_with_trailing_whitespace_is_served(proxy, fake):
    conn = Conn(proxy.port)
    try:
        conn.send(request_bytes("POST", CHAT, b"", [("Content-Length", "%d " % len(HELLO_BYTES))], length=False)
                  + HELLO_BYTES)
        reply = conn.reply()
    finally:
        conn.close()
    assert reply.status == 200 and content(reply) == ECHO, reply


SMUGGLING_BODY = chunked(HELLO_BYTES) + SMUGGLED  # chunked: a request follows; by its length: one request
CL = ("Content-Length", len(SMUGGLING_BODY))

CL_AND_TE = [
    ("Transfer-Encoding: chunked", [CL, ("Transfer-Encoding", "chunked")]),
    ("Transfer-Encoding: xchunked", [CL, ("Transfer-Encoding", "xchunked")]),
    ("Transfer-Encoding: chunked, identity", [CL, ("Transfer-Encoding", "chunked, identity")]),
    ("Transfer-Encoding: gzip, chunked", [CL, ("Transfer-Encoding", "gzip, chunked")]),
    ("Transfer-Encoding: chunked before Content-Length", [("Transfer-Encoding", "chunked"), CL]),
    ("two Transfer-Encoding lines", [CL, ("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")]),
]


def test_finding1_content_length_with_transfer_encoding_is_400_and_close(proxy, fake):
    run_refusals(proxy, fake, [("Content-Length + " + label, chat_head(*headers) + SMUGGLING_BODY, [400])
                               for label, headers in CL_AND_TE])


# RFC 9112 §6.1: a transfer coding the server does not understand is a 501; §6.3: when chunked is not
# the final coding the length cannot be known, which is a 400.  Either refusal closes the connection.
TE_ONLY = [
    ("xchunked", [("Transfer-Encoding", "xchunked")], [400, 501]),
    ("gzip", [("Transfer-Encoding", "gzip")], [400, 501]),
    ("identity", [("Transfer-Encoding", "identity")], [400, 501]),
    ("chunked, identity", [("Transfer-Encoding", "chunked, identity")], [400, 501]),
    ("gzip, chunked", [("Transfer-Encoding", "gzip, chunked")], [501]),
    ("two lines: gzip, then chunked", [("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], [501]),
    ("two lines: chunked, then gzip", [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "gzip")], [400, 501]),
]


def test_finding1_transfer_encoding_other_than_chunked_is_501_and_close(proxy, fake):
    run_refusals(proxy, fake, [("Transfer-Encoding: " + label, chat_head(*headers) + SMUGGLING_BODY, statuses)
                               for label, headers, statuses in TE_ONLY])


N = len(HELLO_BYTES)
HIDDEN = HELLO_BYTES + SMUGGLED  # a body of N bytes, then the hidden request
BAD_LENGTHS = [
    ("two equal Content-Length lines", [("Content-Length", N), ("Content-Length", N)]),
    ("two different Content-Length lines", [("Content-Length", N), ("Content-Length", N + len(SMUGGLED))]),
    ("Content-Length: N, N", [("Content-Length", "%d, %d" % (N, N))]),
    ("Content-Length: +N", [("Content-Length", "+%d" % N)]),
    ("Content-Length:  N N", [("Content-Length", " %d %d" % (N, N))]),
    ("Content-Length: 0xN", [("Content-Length", "0x%x" % N)]),
]


def test_finding1_duplicate_or_non_digit_content_length_is_400_and_close(proxy, fake):
    run_refusals(proxy, fake, [(label, chat_head(*headers) + HIDDEN, [400])
                               for label, headers in BAD_LENGTHS])


HEADER_SYNTAX = [
    ("Content-Length : N (space before the colon)", [("Content-Length ", N)], HIDDEN),
    ("Content-Length<TAB>: N", [("Content-Length\t", N)], HIDDEN),
    ("Transfer-Encoding : chunked next to a Content-Length", [CL, ("Transfer-Encoding ", "chunked")], SMUGGLING_BODY),
    ("a folded header line", [("X-Note", "a\r\n b"), ("Content-Length", N)], HIDDEN),
    ("a tab-folded header line", [("Content-Length", N), ("X-Note", "a\r\n\tb")], HIDDEN),
    ("a folded Content-Length", [("Content-Length", "\r\n %d" % N)], HIDDEN),
    ("a folded Transfer-Encoding next to a Content-Length", [CL, ("Transfer-Encoding", "\r\n chunked")],
     SMUGGLING_BODY),
]


def test_finding1_whitespace_before_the_colon_and_folded_request_headers_are_400_and_close(proxy, fake):
    run_refusals(proxy, fake, [(label, chat_head(*headers) + rest, [400]) for label, headers, rest in HEADER_SYNTAX])


# ---- 2. lenient chunked bodies ---------------------------------------------------------------------------

CHUNKED_HEAD = request_bytes("POST", CHAT, b"", CHUNKED, length=False)
OVER_1024 = b"%x;" % N
OVER_1024 += b"e" * (1024 - len(OVER_1024))  # cut at 1,024 bytes, the data would start right after

BAD_CHUNKS = [
    ("a chunk 10 bytes longer than its size says", b"%x\r\n%s\r\n0\r\n\r\n" % (N - 10, HELLO_BYTES)),
    ("XX before the CRLF after the data", b"%x\r\n%sXX\r\n0\r\n\r\n" % (N, HELLO_BYTES)),
    ("a bare LF after the data", b"%x\r\n%s\n0\r\n\r\n" % (N, HELLO_BYTES)),
    ("the next size line right after the data", b"%x\r\n%s0\r\n\r\n" % (N, HELLO_BYTES)),
    ("a size line over 1,024 bytes whose cut-off rest is the data", OVER_1024 + HELLO_BYTES + b"\r\n0\r\n\r\n"),
]


def test_finding2_anything_but_crlf_after_chunk_data_and_long_size_lines_are_400_and_close(proxy, fake):
    run_refusals(proxy, fake, [(label, CHUNKED_HEAD + body + SMUGGLED, [400]) for label, body in BAD_CHUNKS])


def test_finding2_valid_chunked_bodies_with_extensions_and_trailers_are_still_served(proxy, fake):
    long_line = b"%x;" % N
    long_line += b"e" * (1000 - 2 - len(long_line)) + b"\r\n"  # a 1,000-byte size line, CRLF included
    cases = [
        ("extensions", b'%x;name=value;quoted="a b"\r\n%s\r\n0;last=1\r\n\r\n' % (N, HELLO_BYTES)),
        ("a trailer", b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n" % (N, HELLO_BYTES)),
        ("a 1,000-byte size line", long_line + HELLO_BYTES + b"\r\n0\r\n\r\n"),
        ("three chunks", b"a\r\n%s\r\n%x\r\n%s\r\n1\r\n%s\r\n0\r\n\r\n" % (
            HELLO_BYTES[:10], N - 11, HELLO_BYTES[10:-1], HELLO_BYTES[-1:])),
    ]
    failures = []
    conn = Conn(proxy.port)
    for label, body in cases:
        try:
            conn.send(CHUNKED_HEAD + body)
            reply = conn.reply()
        except (OSError, EOFError, ValueError) as exc:
            failures.append("%s: no answer (%r)" % (label, exc))
            conn.close()
            conn = Conn(proxy.port)
            continue
        problems = success_problems(reply) + serving_problems(proxy, conn, reply)
        if not problems and content(reply) != ECHO:
            problems.append("content %r" % content(reply))
        if problems:
            failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
        if problems or reply.closes or conn.eof:
            conn.close()
            conn = Conn(proxy.port)
    conn.close()
    assert not failures, "\n".join(failures)


# ---- 3. pool poisoning (GigaChat played by tests/misbehaving_upstream.py) --------------------------------


@pytest.fixture
def upstream():
    with MisbehavingUpstream() as server:
        yield server
    assert not server.errors, server.errors[0]


@pytest.fixture
def proxy_to(upstream, start_proxy):
    """start(**env): gigaproxy in front of ``upstream`` (plain HTTP, a static token, no retries unless set)."""

    def start(**env: str) -> Any:
        settings = dict(GIGACHAT_BASE_URL=upstream.base_url, GIGACHAT_ACCESS_TOKEN=TOKEN, GIGACHAT_CREDENTIALS=None,
                        GIGAPROXY_MAX_RETRIES="0")
        settings.update(env)
        return start_proxy(**settings)

    return start


def timed_chat(proxy: Any, text: str) -> Tuple[int, Any, float]:
    started = time.monotonic()
    status, _, body = proxy.chat(chat_about(text))
    return status, body, time.monotonic() - started


@pytest.mark.parametrize("extra,when", [
    (whole_response("INJECTED"), "same write"),
    (whole_response("INJECTED"), "next write"),
    (whole_response("INJECTED"), "while pooled"),
    (b"INJECTED", "same write"),
], ids=["a whole response in the same write", "a whole response in the next write",
        "a whole response once the connection sits in the pool", "stray bytes"])
def test_finding3_bytes_after_an_upstream_response_never_reach_the_next_client(upstream, proxy_to, extra, when):
    """The bytes arrive with the answer (so they may sit in the proxy's read buffer), or once the
    first client has its answer and the connection sits idle in the pool (only the socket has them)."""
    proxy = proxy_to()
    answered = threading.Event()
    injection = upstream.script(extra=extra, separately=when != "same write",
                                extra_after=answered if when == "while pooled" else None)
    status, body, _ = timed_chat(proxy, "first")
    answered.set()
    assert status == 200 and body["choices"][0]["message"]["content"] == "Echo: first", body
    assert injection.sent.wait(5)  # the extra bytes are out before the next request
    status, body, taken = timed_chat(proxy, "second")
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "Echo: second"  # its own answer, not "INJECTED"
    assert taken < PROMPT, "the next client waited %.2f s" % taken
    first, second = upstream.chat_requests()[-2:]
    assert second.json["messages"][-1]["content"] == "second"
    assert second.connection != first.connection, "the poisoned upstream connection was reused"


def test_finding3_a_500_whose_body_runs_past_its_length_does_not_poison_the_next_request(upstream, proxy_to):
    proxy = proxy_to()
    upstream.script(status=500, body=b"{}GARBAGE", content_length=2)
    status, body, _ = timed_chat(proxy, "first")
    assert 500 <= status < 600 and set(body) == {"error"}, body  # GigaChat's 500, reported as an error
    status, body, taken = timed_chat(proxy, "second")
    assert status == 200, body  # not a 502 from reading "GARBAGE" as a status line, nor a 504
    assert body["choices"][0]["message"]["content"] == "Echo: second"
    assert taken < PROMPT, "the next client waited %.2f s" % taken
    first, second = upstream.chat_requests()[-2:]
    assert second.connection != first.connection


def test_an_error_answer_cut_short_is_a_502_not_an_internal_error(upstream, proxy_to):
    """GigaChat's error body ends before its Content-Length: the client gets a gateway error."""
    proxy = proxy_to(GIGACHAT_TIMEOUT="2")
    upstream.script(status=500, body=b'{"message": "x"}', content_length=100)
    status, body, _ = timed_chat(proxy, "cut")
    assert status in (502, 504) and body["error"]["code"] != "internal_error", body


def test_finding3_the_retry_after_a_500_with_trailing_garbage_goes_over_a_fresh_connection(upstream, proxy_to):
    """With retries on (as by default), the 500 is retried and the client gets the retry's answer."""
    proxy = proxy_to(GIGAPROXY_MAX_RETRIES="2")
    upstream.script(status=500, body=b"{}GARBAGE", content_length=2)
    status, body, taken = timed_chat(proxy, "retried")
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == "Echo: retried"
    assert taken < PROMPT, "the client waited %.2f s" % taken
    failed, retried = upstream.chat_requests()[-2:]
    assert retried.connection != failed.connection


# ---- 4. cheap lockout ------------------------------------------------------------------------------------


def silent_connections(port: int, count: int) -> List[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def close_all(socks: Sequence[Any]) -> None:
    for sock in socks:
        sock.close()


def test_finding4_connections_that_never_send_a_byte_do_not_lock_out_a_real_client(start_proxy):
    proxy = start_proxy(GIGAPROXY_MAX_CONCURRENCY="4", GIGAPROXY_CLIENT_TIMEOUT="30")
    silent = silent_connections(proxy.port, 4)  # accepted before the real client: the proxy accepts in order
    try:
        status, body, taken = timed_chat(proxy, "real")
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "Echo: real"
        assert taken < PROMPT, "the real client waited %.2f s" % taken
    finally:
        close_all(silent)


def test_finding4_a_connection_that_sends_nothing_is_closed_after_the_client_timeout(start_proxy):
    timeout = 0.3
    proxy = start_proxy(GIGAPROXY_CLIENT_TIMEOUT=str(timeout))
    conn = Conn(proxy.port)
    started = time.monotonic()
    closed, got = conn.wait_closed(timeout + 1.5)
    taken = time.monotonic() - started
    conn.close()
    assert closed, "a connection that sent nothing was still open after %.2f s" % taken
    assert taken >= timeout * 0.8, "closed after %.2f s, before GIGAPROXY_CLIENT_TIMEOUT" % taken
    if got:  # an answer is optional; if there is one it is a JSON 408 saying Connection: close
        reader = Conn.__new__(Conn)
        reader.buf, reader.eof, reader.sock = got, True, None
        reply = reader.reply()
        assert not error_problems(reply, [408]) and reply.closes, reply


def test_finding4_idle_keep_alive_connections_do_not_lock_out_a_fifth_client(start_proxy):
    proxy = start_proxy(GIGAPROXY_MAX_CONCURRENCY="4", GIGAPROXY_CLIENT_TIMEOUT="30")
    idle = []
    try:
        for i in range(4):  # each completes one request and stays open
            conn = Conn(proxy.port)
            idle.append(conn)
            conn.send(post(chat_about("idle %d" % i)))
            reply = conn.reply()
            assert reply.status == 200 and not reply.closes, reply
        status, body, taken = timed_chat(proxy, "fifth")
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "Echo: fifth"
        assert taken < PROMPT, "the fifth client waited %.2f s" % taken
        # An idle connection the proxy closed to make room was closed cleanly (nothing sent on it);
        # one it kept still serves.
        for i, conn in enumerate(idle):
            try:
                conn.send(post(chat_about("again %d" % i)))
                reply = conn.reply()
            except socket.timeout:
                pytest.fail("idle connection %d: neither closed nor answered" % i)
            except (OSError, EOFError):
                assert conn.buf == b"", "idle connection %d was closed mid-answer: %r" % (i, conn.buf[:200])
                continue
            assert reply.status == 200 and content(reply) == "Echo: again %d" % i, reply
    finally:
        close_all([conn.sock for conn in idle])


def hold_requests(proxy: Any, fake: Any, count: int) -> Tuple[threading.Event, List[threading.Thread], List[int]]:
    """``count`` chats held at GigaChat (in flight) until the returned event is set."""
    release = threading.Event()
    threads, statuses = [], []  # type: List[threading.Thread], List[int]
    for _ in range(count):
        holding = threading.Event()
        fake.add_fault("hold", release=release, holding=holding, timeout=10)
        thread = threading.Thread(target=lambda: statuses.append(proxy.chat(HELLO)[0]))
        thread.start()
        threads.append(thread)
        assert holding.wait(10), "a held request did not reach GigaChat"
    return release, threads, statuses


def test_finding4_with_every_slot_busy_a_fifth_connection_still_gets_a_fast_503(start_proxy, fake):
    """Making room closes idle connections only: requests in flight are never dropped for a newcomer."""
    proxy = start_proxy(GIGAPROXY_MAX_CONCURRENCY="4")
    release, threads, statuses = hold_requests(proxy, fake, 4)
    try:
        conn = Conn(proxy.port)
        started = time.monotonic()
        conn.send(post(HELLO))
        reply = conn.reply()
        taken = time.monotonic() - started
        conn.close()
        assert not error_problems(reply, [503]), reply
        assert reply.headers.get("retry-after", "").isdigit(), reply
        assert taken < 1.0, "the 503 took %.2f s" % taken
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert statuses == [200] * 4


def test_finding4_three_busy_slots_and_a_silent_connection_do_not_lock_out_a_real_client(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_MAX_CONCURRENCY="4", GIGAPROXY_CLIENT_TIMEOUT="30")
    release, threads, statuses = hold_requests(proxy, fake, 3)
    silent = silent_connections(proxy.port, 1)
    try:
        status, body, taken = timed_chat(proxy, "real")
        assert status == 200, body
        assert taken < PROMPT, "the real client waited %.2f s" % taken
    finally:
        close_all(silent)
        release.set()
        for thread in threads:
            thread.join(10)
    assert statuses == [200] * 3


# ---- 5. folded header lines in an upstream response --------------------------------------------------------


@pytest.mark.parametrize("stream,header_lines", [
    (False, ["X-Request-ID: abc\r\n def"]),
    (False, ["Content-Type: application/json;\r\n charset=utf-8"]),
    (False, ["X-Request-ID: abc\r\n def\r\n\tghi", "X-Other: 1"]),
    (True, ["Content-Type: text/event-stream;\r\n\tcharset=utf-8"]),
    (True, ["Content-Type:\r\n text/event-stream"]),
], ids=["folded X-Request-ID", "folded Content-Type", "two continuation lines", "folded stream Content-Type",
        "stream Content-Type on the continuation line"])
def test_finding5_folded_upstream_header_lines_are_unfolded_not_502(upstream, proxy_to, stream, header_lines):
    proxy = proxy_to()
    upstream.script(header_lines=header_lines)
    if stream:
        status, _, events = proxy.stream(chat_about("folded"))
        assert status == 200, events
        assert events[-1] == "[DONE]", events
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        assert text == "Echo: folded"
    else:
        status, _, body = proxy.chat(chat_about("folded"))
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == "Echo: folded"
    assert len(upstream.chat_requests()) == 1


# ---- HTTP/1.0, Connection: close, Expect: 100-continue, HEAD ------------------------------------------------


def http10(method: str, path: str, body: bytes = b"", headers: Sequence[Tuple[str, str]] = ()) -> bytes:
    lines = ["%s %s HTTP/1.0" % (method, path)] + ["%s: %s" % pair for pair in headers]
    if body:
        lines += ["Content-Type: application/json", "Content-Length: %d" % len(body)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def test_http10_requests_are_answered_and_the_connection_closed(proxy, fake):
    for label, data, check in [
        ("GET /health", http10("GET", "/health"), lambda r: r.json()["status"] == "ok"),
        ("a chat", http10("POST", CHAT, HELLO_BYTES), lambda r: content(r) == ECHO),
    ]:
        conn = Conn(proxy.port)
        conn.send(data)
        reply = conn.reply()
        assert reply.status == 200 and check(reply), "%s: %r" % (label, reply)
        assert "transfer-encoding" not in reply.headers, "%s: chunked to an HTTP/1.0 client" % label
        closed, more = conn.wait_closed(CLOSE_WAIT)
        conn.close()
        assert closed and not more and not conn.buf, "%s: the HTTP/1.0 connection stayed open" % label


def test_http10_keep_alive_is_honoured_and_said(proxy, fake):
    """An HTTP/1.0 client keeps a connection only when the answer says ``Connection: keep-alive``
    (RFC 9112 §9.3, appendix C.2.2); one kept open without saying so is never reused."""
    conn = Conn(proxy.port)
    try:
        for i in range(2):
            conn.send(http10("POST", CHAT, json.dumps(chat_about("ka %d" % i)).encode(),
                             [("Connection", "keep-alive")]))
            reply = conn.reply()
            assert reply.status == 200 and content(reply) == "Echo: ka %d" % i, reply
            assert "transfer-encoding" not in reply.headers
            assert reply.headers.get("connection", "").lower() == "keep-alive", reply
    finally:
        conn.close()


def test_http10_stream_is_not_chunked_and_ends_with_the_connection(proxy, fake):
    """RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client; the stream ends when the connection does."""
    conn = Conn(proxy.port)
    conn.send(http10("POST", CHAT, json.dumps(dict(HELLO, stream=True)).encode()))
    reply = conn.reply()  # without Content-Length or chunked: read to the end of the connection
    conn.close()
    assert reply.status == 200 and reply.headers.get("content-type", "").startswith("text/event-stream"), reply
    assert "transfer-encoding" not in reply.headers, reply
    assert not stream_problems(reply.body), stream_problems(reply.body)
    events = sse_payloads(reply.body)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == ECHO


def test_connection_close_is_honoured_and_nothing_after_it_is_answered(proxy, fake):
    for label, body in [("a chat", HELLO), ("a stream", dict(HELLO, stream=True))]:
        conn = Conn(proxy.port)
        conn.send(post(body, headers=[("Connection", "close")]) + SMUGGLED)
        reply = conn.reply()
        assert not success_problems(reply), "%s: %r" % (label, reply)
        closed, more = conn.wait_closed(CLOSE_WAIT)
        conn.close()
        assert closed, "%s: the connection stayed open" % label
        assert not (conn.buf + more), "%s: the request after Connection: close was answered" % label
        # RFC 9112 §9.6: the server SHOULD say so in its final response (test_hostile holds every
        # answer to this: a client cannot tell a deliberate close from a dropped connection otherwise)
        assert reply.closes, "%s: closed, but the answer does not say Connection: close" % label


def big_chat() -> bytes:
    """A valid chat request of about 1.5 MB (the default limit is 50 MB)."""
    return json.dumps(chat_about("x" * (1536 * 1024))).encode()


def test_expect_100_continue_with_a_1_5_mb_body_is_answered_without_a_stall(proxy, fake):
    body = big_chat()
    conn = Conn(proxy.port, timeout=2.0)  # a stall past this is a failure, not a slow pass
    try:
        started = time.monotonic()
        conn.send(post(body, headers=[("Expect", "100-continue")])[:-len(body)])
        interim = conn.reply(interim=True)  # before any body byte is sent
        assert interim.status == 100, interim
        conn.send(body)
        reply = conn.reply()
        taken = time.monotonic() - started
    finally:
        conn.close()
    assert reply.status == 200 and content(reply) == "Echo: " + "x" * (1536 * 1024), reply.status
    assert taken < PROMPT, "took %.2f s" % taken
    assert fake.chat_requests()[-1]["messages"][-1]["content"] == "x" * (1536 * 1024)


def test_expect_100_continue_with_the_body_sent_at_once_is_answered(proxy, fake):
    """Clients may send the body without waiting for 100 Continue (curl does after 1 s)."""
    body = big_chat()
    conn = Conn(proxy.port, timeout=2.0)
    try:
        conn.send(post(body, headers=[("Expect", "100-continue")]) + request_bytes(
            "GET", "/health", content_type=None, length=False))
        reply = conn.reply()  # a 100 Continue, if sent, is skipped
        after = conn.reply()  # and the next request on the connection is read from the right place
    finally:
        conn.close()
    assert reply.status == 200 and content(reply) == "Echo: " + "x" * (1536 * 1024), reply.status
    assert after.status == 200 and after.json()["status"] == "ok", after


def test_head_on_get_routes_is_the_get_head_without_a_body(proxy, fake):
    """HEAD and then GET in one packet: if the HEAD answer carried a body, the GET answer would not parse."""
    for path in ("/health", "/v1/models", "/"):
        conn = Conn(proxy.port)
        try:
            conn.send(request_bytes("HEAD", path, content_type=None, length=False)
                      + request_bytes("GET", path, content_type=None, length=False))
            head = conn.reply(head_only=True)
            get = conn.reply()
        finally:
            conn.close()
        assert head.status == 200 and get.status == 200, (path, head, get)
        assert head.headers.get("content-type") == get.headers.get("content-type"), (path, head, get)
        if "content-length" in head.headers:
            assert int(head.headers["content-length"]) == len(get.body), (path, head, get)
        assert json.loads(get.body.decode("utf-8")), path


# ---- clients that leave mid-request, pipelining ------------------------------------------------------------


def test_clients_leaving_mid_request_do_not_disturb_others(proxy, fake):
    """Clients that close (or reset) half-way through a head or a body: nothing reaches GigaChat,
    and a client on a connection opened before them, and one after, are served."""
    body = HELLO_BYTES
    data = post(body)
    partial = [
        ("half a request line", data[:10], False),
        ("half the headers", data[:data.index(b"\r\n\r\n") - 5], False),
        ("the head and half the body", data[:len(data) - len(body) // 2], False),
        ("the head and half the body, then a reset", data[:len(data) - len(body) // 2], True),
        ("the head and half a chunk", CHUNKED_HEAD + b"%x\r\n%s" % (N, body[:N // 2]), False),
        ("the head and a chunk but not the last one", CHUNKED_HEAD + b"%x\r\n%s\r\n" % (N, body), True),
    ]
    kept = Conn(proxy.port)  # opened first, used after the others left
    try:
        kept.send(post(chat_about("before")))
        assert content(kept.reply()) == "Echo: before"
        before = upstream_chats(fake)
        for label, prefix, reset in partial:
            sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            sock.sendall(prefix)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        kept.send(post(chat_about("after")))
        reply = kept.reply()
        assert reply.status == 200 and content(reply) == "Echo: after", reply
        status, _, answer = proxy.chat(chat_about("new"))
        assert status == 200 and answer["choices"][0]["message"]["content"] == "Echo: new"
        assert upstream_chats(fake) == before + 2, "a partial request reached GigaChat"
    finally:
        kept.close()


def test_pipelined_chunked_body_stream_head_and_get_are_answered_in_order(proxy, fake):
    """Four requests in one write: a chunked chat, a streamed chat, HEAD /health, GET /v1/models."""
    one = json.dumps(chat_about("one")).encode()
    two = json.dumps(dict(chat_about("two"), stream=True)).encode()
    conn = Conn(proxy.port)
    try:
        conn.send(CHUNKED_HEAD + b"5\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (one[:5], len(one) - 5, one[5:])
                  + post(two)
                  + request_bytes("HEAD", "/health", content_type=None, length=False)
                  + request_bytes("GET", "/v1/models", content_type=None, length=False))
        first, second = conn.reply(), conn.reply()
        third = conn.reply(head_only=True)
        fourth = conn.reply()
    finally:
        conn.close()
    assert first.status == 200 and content(first) == "Echo: one", first
    assert second.status == 200 and not stream_problems(second.body), second
    events = sse_payloads(second.body)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]) == "Echo: two"
    assert third.status == 200 and third.body == b"", third
    assert fourth.status == 200 and fourth.json()["object"] == "list", fourth
