"""Hostile and broken input (issue 4): every case gets an OpenAI error body with the right
status (400/404/405/408/411/413/415), nothing bad reaches GigaChat, and the proxy keeps serving.

Most cases talk raw HTTP/1.1 over a socket (``Conn``) so that exactly the bytes under test
go out and the reply is parsed byte for byte: the status, the headers, the body, and
whether the proxy closed the connection.  After every refused request ``serving_problems``
checks that the proxy still serves: a normal chat on the SAME keep-alive connection unless
the proxy said ``Connection: close`` (a proxy that closes a connection without saying so
breaks every keep-alive client's next request), and a request on a NEW connection.

One module-scoped fake GigaChat and three proxies (defaults; GIGAPROXY_CLIENT_TIMEOUT=0.5;
GIGAPROXY_MAX_BODY_MB=0.05) serve every test, since starting a proxy costs ~0.2 s; tests
compare the fake's request counts before and after a case.  Tables of cases run in one test
each and a failing table lists every case that failed, not only the first.

The seeded fuzzer at the end mutates valid requests at the JSON and byte level and sends
FUZZ_SEEDS x FUZZ_CASES_PER_SEED of them over a few keep-alive connections; a failure names
the seed and case index, and ``fuzz_wire(seed, index)`` rebuilds that exact request.

Standard library only, Python 3.8+, loopback only; the whole file runs in ~12 s.
"""

from __future__ import annotations

import copy
import http.client
import json
import logging
import random
import re
import select
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

import gigaproxy
from conftest import Proxy, fake_env
from fake_gigachat import CHAT_PATH, FakeGigaChat

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

CHAT = "/v1/chat/completions"
CLIENT_TIMEOUT = 0.5  # GIGAPROXY_CLIENT_TIMEOUT for the tests that wait on a slow client
SLACK = 1.5  # seconds allowed past CLIENT_TIMEOUT before a stalled client must be cut off
LIMIT_MB = "0.05"  # GIGAPROXY_MAX_BODY_MB for the size tests: 52,428 bytes
HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}
ECHO = "Echo: hello there"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ERROR_KEYS = {"message", "type", "param", "code"}


# ---- a raw HTTP/1.1 client --------------------------------------------------------------


class Reply(object):
    """One parsed HTTP response."""

    def __init__(self, status: int, reason: str, headers: Dict[str, str], body: bytes, head: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names; repeated headers joined with ", "
        self.body = body
        self.head = head

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self) -> str:
        return "<Reply %d %r %r>" % (self.status, self.headers, self.body[:300])


class Conn(object):
    """A raw client connection to the proxy: exact bytes out, byte-exact parsing in."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        if self.eof:
            raise EOFError("the proxy closed the connection")
        data = self.sock.recv(262144)
        if not data:
            self.eof = True
            raise EOFError("the proxy closed the connection")
        self.buf += data

    def _line(self, limit: int = 1 << 20) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("no end of line in %r" % self.buf[:200])
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, size: int) -> bytes:
        while len(self.buf) < size:
            self._more()
        data, self.buf = self.buf[:size], self.buf[size:]
        return data

    def reply(self, head_only: bool = False, interim: bool = False) -> Reply:
        """Read one response; 1xx interim responses are skipped unless ``interim``."""
        while True:
            reply = self._reply(head_only)
            if interim or not 100 <= reply.status < 200:
                return reply

    def _reply(self, head_only: bool) -> Reply:
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError("not an HTTP status line: %r" % status_line[:200])
        status = int(parts[1])
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        headers = {}  # type: Dict[str, str]
        head = [status_line]
        while True:
            line = self._line()
            if not line:
                break
            head.append(line)
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            headers[key] = headers[key] + ", " + value.strip() if key in headers else value.strip()
        raw_head = b"\r\n".join(head)
        if head_only or 100 <= status < 200 or status in (204, 304):
            return Reply(status, reason, headers, b"", raw_head)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = []
            while True:
                size = int(self._line().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line():
                        pass  # trailers
                    break
                body.append(self._exact(size))
                if self._exact(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
            return Reply(status, reason, headers, b"".join(body), raw_head)
        if "content-length" in headers:
            return Reply(status, reason, headers, self._exact(int(headers["content-length"])), raw_head)
        while True:  # delimited by the end of the connection
            try:
                self._more()
            except EOFError:
                break
        body, self.buf = self.buf, b""
        return Reply(status, reason, headers, body, raw_head)

    def wait_closed(self, seconds: float) -> Tuple[bool, bytes]:
        """Wait up to ``seconds`` for the proxy to close; (closed, bytes received meanwhile)."""
        deadline = time.monotonic() + seconds
        got = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, got
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False, got
            except OSError:  # reset: closed too
                return True, got
            finally:
                self.sock.settimeout(5.0)
            if not data:
                self.eof = True
                return True, got
            got += data


def request_bytes(method: str, path: str, body: bytes = b"", headers: Sequence[Tuple[str, str]] = (),
                  content_type: Optional[str] = "application/json", length: bool = True) -> bytes:
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    if content_type is not None:
        lines.append("Content-Type: " + content_type)
    lines.extend("%s: %s" % pair for pair in headers)
    if length:
        lines.append("Content-Length: %d" % len(body))
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def post(body: Any, **kw: Any) -> bytes:
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, bytes):
        body = json.dumps(body).encode("utf-8")
    return request_bytes("POST", CHAT, body, **kw)


HELLO_BYTES = post(HELLO)
CHUNKED = [("Transfer-Encoding", "chunked")]


# ---- checks ------------------------------------------------------------------------------


def error_problems(reply: Reply, statuses: Sequence[int], param: Optional[str] = None) -> List[str]:
    """Why ``reply`` is not an OpenAI error with one of ``statuses`` (empty when it is)."""
    problems = []
    if reply.status not in statuses:
        problems.append("status %d, wanted %s" % (reply.status, "/".join(map(str, statuses))))
    low = reply.body.lower()
    if b"<html" in low or b"<!doctype" in low:
        problems.append("an HTML body")
    if not reply.headers.get("content-type", "").startswith("application/json"):
        problems.append("Content-Type %r" % reply.headers.get("content-type"))
    try:
        body = reply.json()
    except ValueError:
        return problems + ["a body that is not JSON: %r" % reply.body[:200]]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(error, dict) or set(error) != ERROR_KEYS:
        return problems + ["not an OpenAI error body: %r" % reply.body[:200]]
    if not isinstance(error["message"], str) or not error["message"]:
        problems.append("empty error.message")
    if not isinstance(error["type"], str) or not error["type"]:
        problems.append("bad error.type %r" % error["type"])
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            problems.append("error.%s is %r" % (key, error[key]))
    if param is not None and not (isinstance(error["param"], str) and error["param"].startswith(param)):
        problems.append("error.param %r does not name %s" % (error["param"], param))
    return problems


def assert_error(reply: Reply, *statuses: int) -> Dict[str, Any]:
    problems = error_problems(reply, statuses)
    assert not problems, "%s: %r" % ("; ".join(problems), reply)
    return reply.json()["error"]


def serving_problems(proxy: Any, conn: Optional[Conn], reply: Optional[Reply]) -> List[str]:
    """The proxy still serves: a new connection works, and ``conn`` too unless it was closed.

    A normal chat goes over ``conn`` when it stays open, and GET /health over a new connection
    (a chat when ``conn`` is closed or absent); the per-case cost stays a few milliseconds."""
    problems = []
    keep_alive = conn is not None and reply is not None and not reply.closes
    try:
        if keep_alive:
            status, _, data = proxy.request("GET", "/health")
            if status != 200:
                problems.append("GET /health on a new connection got %d %r" % (status, data[:200]))
        else:
            status, _, body = proxy.chat(HELLO)
            if status != 200 or body["choices"][0]["message"]["content"] != ECHO:
                problems.append("a normal request on a new connection got %d %r" % (status, body))
    except Exception as exc:  # noqa: BLE001 - reported, not hidden
        problems.append("a normal request on a new connection failed: %r" % exc)
    if keep_alive:
        assert conn is not None and reply is not None
        try:
            conn.send(HELLO_BYTES)
            again = conn.reply()
            if again.status != 200 or again.json()["choices"][0]["message"]["content"] != ECHO:
                problems.append("the same keep-alive connection then got %r" % again)
        except (OSError, EOFError, ValueError) as exc:
            problems.append("the %d reply did not say Connection: close, yet the same connection then "
                            "failed: %r" % (reply.status, exc))
    return problems


def assert_serving(proxy: Any, conn: Optional[Conn] = None, reply: Optional[Reply] = None) -> None:
    problems = serving_problems(proxy, conn, reply)
    assert not problems, "; ".join(problems)


def upstream_chats(fake: Any) -> int:
    """How many chat requests reached the fake GigaChat (valid or not)."""
    return len([r for r in fake.requests if r.path == CHAT_PATH])


class Table(object):
    """Runs many requests over one keep-alive connection and collects what went wrong."""

    def __init__(self, proxy: Any, fake: Any) -> None:
        self.proxy = proxy
        self.fake = fake
        self.conn = Conn(proxy.port)
        self.failures = []  # type: List[str]
        self.count = 0

    def send(self, label: str, data: bytes) -> Optional[Reply]:
        self.count += 1
        try:
            self.conn.send(data)
            reply = self.conn.reply()
        except (OSError, EOFError, ValueError) as exc:
            self.failures.append("%s: no reply (%r)" % (label, exc))
            self.reconnect()
            return None
        return reply

    def reconnect(self) -> None:
        self.conn.close()
        self.conn = Conn(self.proxy.port)

    def expect_error(self, label: str, data: bytes, statuses: Sequence[int],
                     param: Optional[str] = None) -> Optional[Reply]:
        """One refused request: an OpenAI error with one of ``statuses`` (naming ``param`` when
        given), nothing forwarded to GigaChat, and the proxy serving afterwards."""
        before = upstream_chats(self.fake)
        reply = self.send(label, data)
        if reply is None:
            return None
        problems = error_problems(reply, statuses, param)
        if upstream_chats(self.fake) != before:
            problems.append("it was forwarded to GigaChat")
        problems += serving_problems(self.proxy, self.conn, reply)
        if problems:
            self.failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
        if problems or reply.closes or self.conn.eof:
            self.reconnect()  # after a failure the connection may be out of step
        return reply

    def expect_success(self, label: str, data: bytes) -> Optional[Reply]:
        reply = self.send(label, data)
        if reply is None:
            return None
        problems = success_problems(reply)
        problems += serving_problems(self.proxy, self.conn, reply)
        if problems:
            self.failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
        if problems or reply.closes or self.conn.eof:
            self.reconnect()
        return reply

    def check(self) -> None:
        self.conn.close()
        assert not self.failures, "%d of %d cases failed:\n  %s" % (
            len(self.failures), self.count, "\n  ".join(f[:700] for f in self.failures))


@pytest.fixture(autouse=True)
def no_error_in_the_log(caplog):
    """Every test: gigaproxy logs no traceback and nothing at ERROR (caplog at DEBUG)."""
    caplog.set_level(logging.DEBUG, logger="gigaproxy")
    logger = logging.getLogger("gigaproxy")
    attached = not logger.propagate and caplog.handler not in logger.handlers
    if attached:  # gigaproxy.main() in another test may have turned propagation off
        logger.addHandler(caplog.handler)
    yield caplog
    if attached:
        logger.removeHandler(caplog.handler)
    bad = log_problems(caplog.get_records("call"))
    assert not bad, "gigaproxy logged %d error(s)/traceback(s), first: %s" % (len(bad), bad[0])


def log_problems(records: Sequence[logging.LogRecord]) -> List[str]:
    out = []
    for record in records:
        if not record.name.startswith("gigaproxy"):
            continue
        text = record.getMessage()
        if record.exc_info or record.levelno >= logging.ERROR or "Traceback" in text:
            exc = record.exc_info[1] if record.exc_info else None
            out.append("%s %s%s" % (record.levelname, text[:200], " [%s: %s]" % (type(exc).__name__, str(exc)[:200])
                                    if exc is not None else ""))
    return out


# One fake GigaChat and three proxies serve the whole module (they override conftest's per-test
# ``fake`` and ``proxy``): starting a proxy costs ~0.2 s (TLS contexts), and per test that would
# be most of this file's time budget.  Tests therefore compare counts before and after, never
# absolute ones, and every test checks that the fake recorded no internal error.


@pytest.fixture(scope="module")
def fake():
    with FakeGigaChat() as server:
        yield server
    assert not server.errors, server.errors


def _start(fake: FakeGigaChat, tmp_path_factory: Any, **env: str) -> Proxy:
    args = gigaproxy.build_parser().parse_args(["--port", "0"])
    config = gigaproxy.load_config(args, fake_env(fake, **env), cwd=str(tmp_path_factory.mktemp("cwd")))
    return Proxy(gigaproxy.make_server(config))


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory):
    """gigaproxy with its defaults."""
    handle = _start(fake, tmp_path_factory)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def slow_proxy(fake, tmp_path_factory):
    """A proxy that gives a client CLIENT_TIMEOUT seconds to send a whole request."""
    handle = _start(fake, tmp_path_factory, GIGAPROXY_CLIENT_TIMEOUT=str(CLIENT_TIMEOUT))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def small_proxy(fake, tmp_path_factory):
    """A proxy with a small body limit (GIGAPROXY_MAX_BODY_MB=LIMIT_MB)."""
    handle = _start(fake, tmp_path_factory, GIGAPROXY_MAX_BODY_MB=LIMIT_MB, GIGAPROXY_CLIENT_TIMEOUT="5")
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def no_fake_error(fake):
    seen = len(fake.errors)
    yield
    assert fake.errors[seen:] == [], "the fake GigaChat failed: %s" % fake.errors[seen:][:1]


def in_parallel(*calls: Callable[[], Any]) -> List[Any]:
    """Run ``calls`` in threads (slow-client cases wait out the same timeout side by side)."""
    results = [None] * len(calls)  # type: List[Any]

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # noqa: B036 - handed back to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# ---- success shapes (also used by the fuzzer) -------------------------------------------------


def success_problems(reply: Reply) -> List[str]:
    """Why ``reply`` is not a valid chat completion or a well-formed SSE stream."""
    ctype = reply.headers.get("content-type", "")
    if reply.status != 200:
        return ["status %d, wanted 200" % reply.status]
    if ctype.startswith("text/event-stream"):
        return stream_problems(reply.body)
    if not ctype.startswith("application/json"):
        return ["Content-Type %r" % ctype]
    try:
        body = reply.json()
    except ValueError:
        return ["a 200 body that is not JSON: %r" % reply.body[:200]]
    problems = []
    if not isinstance(body, dict) or body.get("object") != "chat.completion":
        return ["not a chat.completion: %r" % reply.body[:200]]
    if not isinstance(body.get("id"), str) or not body["id"].startswith("chatcmpl-"):
        problems.append("bad id %r" % body.get("id"))
    choices = body.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        return problems + ["bad choices %r" % choices]
    message = choices[0].get("message")
    if not isinstance(message, dict) or message.get("role") != "assistant":
        problems.append("bad message %r" % message)
    elif not isinstance(message.get("content"), (str, type(None))):
        problems.append("bad content %r" % message.get("content"))
    if not isinstance(choices[0].get("finish_reason"), str):
        problems.append("bad finish_reason %r" % choices[0].get("finish_reason"))
    if not isinstance(body.get("usage"), dict):
        problems.append("no usage")
    return problems


def stream_problems(data: bytes) -> List[str]:
    """An SSE body must be JSON chunk events ending in [DONE], or ending with an error event."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ["a stream that is not UTF-8"]
    payloads = []
    for event in text.split("\n\n"):
        lines = [line[5:].lstrip(" ") for line in event.split("\n") if line.startswith("data:")]
        if lines:
            payloads.append("\n".join(lines))
    if not payloads:
        return ["an empty stream"]
    problems = []
    for i, payload in enumerate(payloads):
        last = i == len(payloads) - 1
        if payload == "[DONE]":
            if not last:
                problems.append("[DONE] is not the last event")
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            problems.append("event %d is not JSON: %r" % (i, payload[:200]))
            continue
        if isinstance(event, dict) and "error" in event:
            if set(event) != {"error"} or not isinstance(event["error"], dict) or set(event["error"]) != ERROR_KEYS:
                problems.append("malformed error event %r" % payload[:200])
            if not last:
                problems.append("events after an error event")
        elif not isinstance(event, dict) or event.get("object") != "chat.completion.chunk" \
                or not isinstance(event.get("choices"), list):
            problems.append("event %d is not a chat.completion.chunk: %r" % (i, payload[:200]))
    final = payloads[-1]
    if final != "[DONE]" and not final.startswith('{"error"'):
        problems.append("the stream ends with neither [DONE] nor an error event: %r" % final[:200])
    return problems


# ---- bodies that are not a JSON object ----------------------------------------------------------


NOT_AN_OBJECT = [
    ("malformed JSON", b"{not json"),
    ("trailing comma", b'{"model": "gpt-4o", "messages": [],}'),
    ("extra closing brace", json.dumps(HELLO).encode() + b"}"),
    ("two objects", json.dumps(HELLO).encode() * 2),
    ("single quotes", b"{'model': 'gpt-4o'}"),
    ("unterminated string", b'{"model": "gpt-4o'),
    ("truncated", json.dumps(HELLO).encode()[:-3]),
    ("comment", b'/* hi */ {"model": "gpt-4o"}'),
    ("empty body", b""),
    ("whitespace body", b"  \r\n\t "),
    ("array", b"[]"),
    ("array of a request", json.dumps([HELLO]).encode()),
    ("string", b'"hello"'),
    ("number", b"42"),
    ("float", b"-1.5e3"),
    ("null", b"null"),
    ("true", b"true"),
    ("NaN alone", b"NaN"),
    ("a bare word", b"hello"),
    ("NUL bytes", b"\x00\x00\x00\x00"),
]


def test_bodies_that_are_not_a_json_object_are_400(proxy, fake):
    table = Table(proxy, fake)
    for label, raw in NOT_AN_OBJECT:
        table.expect_error(label, post(raw), [400])
    table.check()


# ---- wrong types in every field -----------------------------------------------------------------

WRONG = {
    "model": [7, 1.5, True, False, [], ["GigaChat"], {}, {"name": "GigaChat"}],
    "messages": [None, "hello", 7, 1.5, True, {}, {"role": "user", "content": "hi"}],
    "temperature": ["0.5", True, [], [0.5], {}, -1, 1e7],
    "top_p": ["0.5", True, [], {}, -0.1, 1.5],
    "max_tokens": ["10", 1.5, True, [], [10], {}, 0, -1],
    "max_completion_tokens": ["10", 1.5, True, [], {}, 0, -5],
    "n": ["1", 1.5, True, [], {}, 0, -1, 1000000],
    "stream": ["true", "yes", 1, 0, [], {}, [True]],
    "stream_options": ["include_usage", 1, True, [], ["include_usage"], {"include_usage": "yes"},
                       {"include_usage": 1}],
    "tools": ["get_weather", 1, True, {}, TOOLS[0], [1], ["get_weather"], [None], [[]],
              [{"type": "retrieval"}], [{"type": "function"}], [{"type": "function", "function": "get_weather"}],
              [{"type": "function", "function": {}}], [{"type": "function", "function": {"name": 5}}],
              [{"type": "function", "function": {"name": ""}}],
              [{"type": "function", "function": {"name": "f", "description": 5}}],
              [{"type": "function", "function": {"name": "f", "parameters": "object"}}],
              [{"type": "function", "function": {"name": "f", "parameters": 5}}],
              [{"type": "function", "function": {"name": "f", "parameters": []}}],
              [{"type": "function", "function": {"name": "f", "parameters": True}}]],
    "tool_choice": [5, 1.5, True, [], ["auto"], "sometimes", "", {}, {"type": "function"},
                    {"type": "function", "function": "get_weather"}, {"type": "function", "function": 5},
                    {"type": "function", "function": ["get_weather"]},
                    {"type": "function", "function": {"name": 5}},
                    {"type": "function", "function": {"name": "not_a_tool"}}],
    "response_format": ["json_object", 5, True, [], {}, {"type": 5}, {"type": ["json_object"]}, {"type": "yaml"},
                        {"type": "json_schema"}, {"type": "json_schema", "json_schema": "answer"},
                        {"type": "json_schema", "json_schema": {"name": "a", "schema": "object"}},
                        {"type": "json_schema", "json_schema": {"name": "a", "schema": [1]}}],
    "reasoning_effort": [5, True, [], {}, "extreme", ""],
    "repetition_penalty": ["1.1", True, [], {}, 0, -1],
    "update_interval": ["1", True, [], {}, -1],
    "profanity_check": ["true", 1, 0, [], {}],
    "functions": ["f", 5, [5], [{"name": 5}], [{"name": "f", "parameters": 5}]],
}


def test_wrong_types_in_every_top_level_field_are_400_naming_it(proxy, fake):
    table = Table(proxy, fake)
    for field, values in WRONG.items():
        for value in values:
            body = copy.deepcopy(HELLO)
            if field == "tool_choice":
                body["tools"] = TOOLS  # tool_choice is only read next to tools
            body[field] = value
            table.expect_error("%s=%s" % (field, json.dumps(value)[:80]), post(body), [400], param=field)
    table.check()


def _assistant_call(**call: Any) -> Dict[str, Any]:
    base = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    base.update(call)
    return {"role": "assistant", "content": None, "tool_calls": [base]}


def _messages(*messages: Any) -> Dict[str, Any]:
    return dict(HELLO, tools=TOOLS, messages=list(messages))


USER = {"role": "user", "content": "weather?"}
RESULT = {"role": "tool", "tool_call_id": "call_1", "content": '{"t": 5}'}

MESSAGE_CASES = [
    # (label, body, param prefix)
    ("empty messages", dict(HELLO, messages=[]), "messages"),
    ("message is a number", dict(HELLO, messages=[5]), "messages[0]"),
    ("message is a string", dict(HELLO, messages=["hello"]), "messages[0]"),
    ("message is null", dict(HELLO, messages=[None]), "messages[0]"),
    ("message is an array", dict(HELLO, messages=[[]]), "messages[0]"),
    ("message is empty", dict(HELLO, messages=[{}]), "messages[0]"),
    ("role missing", dict(HELLO, messages=[{"content": "hi"}]), "messages[0]"),
]
for _role in [None, 5, True, [], ["user"], {}, {"role": "user"}]:
    MESSAGE_CASES.append(("role=%s" % json.dumps(_role), dict(HELLO, messages=[{"role": _role, "content": "hi"}]),
                          "messages[0].role"))
for _role in ["robot", "", "USER", "Assistant", "model", "tool ", "functions", "\u0000", "r" * 10000]:
    MESSAGE_CASES.append(("unknown role %r" % _role[:20], dict(HELLO, messages=[{"role": _role, "content": "hi"}]),
                          "messages[0].role"))
for _content in [5, 1.5, True, {}, {"type": "text", "text": "hi"}, [5], [None], [[]], [{}],
                 [{"type": "text"}], [{"type": "text", "text": 5}], [{"type": "text", "text": None}],
                 [{"type": 5}], [{"type": ["text"], "text": "hi"}], [{"type": "audio", "audio": "x"}],
                 [{"type": "image_url", "image_url": 5}], [{"type": "image_url", "image_url": {"url": 5}}]]:
    for _role in ("user", "system", "assistant"):
        MESSAGE_CASES.append(("%s content=%s" % (_role, json.dumps(_content)),
                              dict(HELLO, messages=[USER, {"role": _role, "content": _content}]), "messages[1]"))
    MESSAGE_CASES.append(("tool content=%s" % json.dumps(_content),
                          _messages(USER, _assistant_call(), dict(RESULT, content=_content)), "messages[2]"))
for _calls in ["call", 5, True, {"id": "call_1"}, [5], [None], ["call_1"], [[]], [{}]]:
    MESSAGE_CASES.append(("tool_calls=%s" % json.dumps(_calls),
                          _messages(USER, {"role": "assistant", "content": None, "tool_calls": _calls}, RESULT),
                          "messages[1]"))
for _calls in [{}, 0, ""]:  # wrong types that are also falsy: still wrong, not "no tool calls"
    MESSAGE_CASES.append(("tool_calls=%s" % json.dumps(_calls),
                          _messages(USER, {"role": "assistant", "content": "ok", "tool_calls": _calls}, USER),
                          "messages[1].tool_calls"))
for _call in [dict(function="get_weather"), dict(function=5), dict(function=None), dict(function=[]),
              dict(function={"arguments": "{}"}), dict(function={"name": 5, "arguments": "{}"}),
              dict(function={"name": None, "arguments": "{}"}), dict(id=5), dict(id=None), dict(id=["call_1"]),
              dict(function={"name": "get_weather", "arguments": 5}),
              dict(function={"name": "get_weather", "arguments": True}),
              dict(function={"name": "get_weather", "arguments": ["city"]}),
              dict(function={"name": "get_weather", "arguments": "not json"}),
              dict(function={"name": "get_weather", "arguments": "[1, 2]"}),
              dict(function={"name": "get_weather", "arguments": "null"}),
              dict(function={"name": "get_weather", "arguments": '{"city": NaN}'}),
              dict(function={"name": "get_weather", "arguments": "[" * 100000})]:
    MESSAGE_CASES.append(("tool call %s" % json.dumps(_call)[:80], _messages(USER, _assistant_call(**_call), RESULT),
                          "messages[1]"))
for _call_id in [None, 5, True, ["call_1"], {"id": "call_1"}, "", "call_2"]:
    _result = dict(RESULT, tool_call_id=_call_id)
    if _call_id is None:
        del _result["tool_call_id"]
    MESSAGE_CASES.append(("tool_call_id=%s" % json.dumps(_call_id), _messages(USER, _assistant_call(), _result),
                          "messages[2]"))
MESSAGE_CASES.append(("tool result without a call", _messages(USER, RESULT), "messages[1]"))
MESSAGE_CASES.append(("tool call without a result", _messages(USER, _assistant_call()), "messages"))
for _name in [None, 5, [], {}, True]:
    _function = {"role": "function", "content": '{"t": 5}'}
    if _name is not None:
        _function["name"] = _name
    MESSAGE_CASES.append(("function message name=%s" % json.dumps(_name),
                          dict(HELLO, messages=[USER, _function]), "messages[1].name"))
for _legacy in ["get_weather", 5, [], {"name": 5}, {"arguments": "{}"}, {"name": "get_weather", "arguments": 5}]:
    MESSAGE_CASES.append(("legacy function_call=%s" % json.dumps(_legacy),
                          dict(HELLO, messages=[USER, {"role": "assistant", "content": "", "function_call": _legacy}]),
                          "messages[1]"))


def test_wrong_types_inside_messages_are_400_naming_the_message(proxy, fake):
    table = Table(proxy, fake)
    for label, body, param in MESSAGE_CASES:
        table.expect_error(label, post(body), [400], param=param)
    table.check()


def _tool_with(parameters: Any) -> Dict[str, Any]:
    return dict(HELLO, tools=[{"type": "function", "function": {"name": "f", "parameters": parameters}}])


SCHEMA_CASES = [
    ("required lists an object", {"type": "object", "properties": {"a": {"type": "string"}}, "required": [{"a": 1}]}),
    ("required lists a list", {"type": "object", "properties": {"a": {"type": "string"}}, "required": [["a"]]}),
    ("required is a string", {"type": "object", "properties": {"a": {"type": "string"}}, "required": "a"}),
    ("type list with a number", {"type": "object", "properties": {"a": {"type": ["string", 5]}}}),
    ("type list with an object", {"type": "object", "properties": {"a": {"type": ["string", {"x": 1}]}}}),
    ("type is an object", {"type": "object", "properties": {"a": {"type": {"x": 1}}}}),
    ("type is a number", {"type": 5}),
    ("allOf is a number", {"type": "object", "allOf": 5}),
    ("allOf is a string", {"type": "object", "allOf": "ab"}),
    ("allOf holds numbers", {"type": "object", "allOf": [1, 2]}),
    ("anyOf branch types unsortable", {"type": "object", "properties": {"a": {
        "anyOf": [{"type": "string"}, {"type": 5}, {"type": {"x": 1}}]}}}),
    ("anyOf is an object", {"type": "object", "properties": {"a": {"anyOf": {"type": "string"}}}}),
    ("a $defs entry that is a string", {"type": "object", "$defs": {"A": "x"},
                                        "properties": {"a": {"$ref": "#/$defs/A"}}}),
    ("a $defs entry that is a list", {"type": "object", "$defs": {"A": [1, 2]},
                                      "properties": {"a": {"$ref": "#/$defs/A"}}}),
    ("$ref is a number", {"type": "object", "properties": {"a": {"$ref": 5}}}),
    ("properties is a list", {"type": "object", "properties": [{"a": 1}]}),
    ("a property schema is a number", {"type": "object", "properties": {"a": 5}}),
    ("items is a number", {"type": "object", "properties": {"a": {"type": "array", "items": 5}}}),
    ("items is a list of numbers", {"type": "object", "properties": {"a": {"type": "array", "items": [5]}}}),
    ("enum of objects", {"type": "object", "properties": {"a": {"enum": [{"x": 1}, [1]]}}}),
    ("enum is a string", {"type": "object", "properties": {"a": {"type": "string", "enum": "abc"}}}),
    ("const is an object", {"type": "object", "properties": {"a": {"const": {"x": [1]}}}}),
    ("description is a number", {"type": "object", "description": 5, "properties": {"a": {"description": []}}}),
    ("format is a list", {"type": "object", "properties": {"a": {"type": "string", "format": ["date"]}}}),
    ("additionalProperties is a number", {"type": "object", "properties": {}, "additionalProperties": 5}),
]


def test_malformed_tool_schemas_are_normalised_or_refused(proxy, fake):
    """Tool parameter schemas are rewritten into what GigaChat accepts; one that is malformed
    inside may be refused (400) or normalised and served (200), never a 500."""
    table = Table(proxy, fake)
    for label, parameters in SCHEMA_CASES:
        reply = table.send(label, post(_tool_with(parameters)))
        if reply is None:
            continue
        problems = success_problems(reply) if reply.status == 200 else error_problems(reply, [400])
        problems += serving_problems(proxy, table.conn, reply)
        if problems:
            table.failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
        if problems or reply.closes or table.conn.eof:
            table.reconnect()
    table.check()


# ---- huge numbers, NaN and Infinity -------------------------------------------------------------


def _with(field_json: str, base: Optional[Dict[str, Any]] = None) -> bytes:
    """HELLO (or ``base``) with ``"field": <literal JSON text>`` spliced in, e.g. NaN or 10**400."""
    text = json.dumps(base or HELLO)
    return (text[:-1] + ", " + field_json + "}").encode("utf-8")


BIG = "1" + "0" * 400  # 10**400 as an integer literal
HUGE_NUMBERS = [
    ('"temperature": 1e308', "temperature"), ('"temperature": -1e308', "temperature"),
    ('"temperature": 1e309', "temperature"), ('"temperature": %s' % BIG, "temperature"),
    ('"temperature": NaN', "temperature"), ('"temperature": Infinity', "temperature"),
    ('"temperature": -Infinity', "temperature"),
    ('"top_p": 1e308', "top_p"), ('"top_p": %s' % BIG, "top_p"), ('"top_p": NaN', "top_p"),
    ('"top_p": -1e-308', "top_p"), ('"top_p": Infinity', "top_p"),
    ('"max_tokens": 2147483648', "max_tokens"), ('"max_tokens": 9223372036854775808', "max_tokens"),
    ('"max_tokens": %s' % BIG, "max_tokens"), ('"max_tokens": -%s' % BIG, "max_tokens"),
    ('"max_tokens": 1e308', "max_tokens"), ('"max_tokens": -0', "max_tokens"), ('"max_tokens": NaN', "max_tokens"),
    ('"max_tokens": Infinity', "max_tokens"), ('"max_tokens": 1%s' % ("0" * 5000), "max_tokens"),
    ('"max_completion_tokens": 4294967296', "max_completion_tokens"),
    ('"max_completion_tokens": %s' % BIG, "max_completion_tokens"),
    ('"n": %s' % BIG, "n"), ('"n": -0', "n"), ('"n": 1e308', "n"), ('"n": NaN', "n"),
    ('"repetition_penalty": 1e308', "repetition_penalty"), ('"repetition_penalty": %s' % BIG, "repetition_penalty"),
    ('"repetition_penalty": NaN', "repetition_penalty"), ('"repetition_penalty": -0', "repetition_penalty"),
    ('"update_interval": 1e308', "update_interval"), ('"update_interval": %s' % BIG, "update_interval"),
    ('"update_interval": Infinity', "update_interval"),
]


def test_huge_numbers_are_refused_before_gigachat(proxy, fake):
    """Numbers GigaChat would reject (beyond int32, beyond a float, NaN, Infinity, -0 where 0 is
    not allowed) are the proxy's 400, never forwarded."""
    table = Table(proxy, fake)
    for literal, param in HUGE_NUMBERS:
        table.expect_error(literal[:60], post(_with(literal)), [400])
    table.check()


def test_the_int32_boundary_itself_is_accepted(proxy, fake):
    status, _, body = proxy.chat(dict(HELLO, max_tokens=2147483647))
    assert status == 200, body
    assert fake.chat_requests()[-1]["max_tokens"] == 2147483647


NON_JSON_CONSTANTS = [
    ("NaN in a field the proxy ignores", _with('"seed": NaN')),
    ("Infinity in a field the proxy ignores", _with('"metadata": {"x": Infinity}')),
    ("-Infinity in the user field", _with('"user": -Infinity')),
    ("NaN in a tool schema", _with('"tools": [{"type": "function", "function": {"name": "f", "parameters": '
                                   '{"type": "object", "properties": {"a": {"type": "number", "minimum": NaN}}}}}]')),
    ("NaN in tool call arguments", json.dumps(_messages(USER, _assistant_call(function={
        "name": "get_weather", "arguments": {"city": "__NAN__"}}), RESULT)).replace('"__NAN__"', "NaN").encode()),
]


def test_nan_and_infinity_literals_anywhere_are_invalid_json(proxy, fake):
    """NaN/Infinity are not JSON (RFC 8259): the body is refused as invalid JSON wherever they
    appear, instead of being ignored or forwarded to GigaChat (which refuses such a body)."""
    table = Table(proxy, fake)
    for label, raw in NON_JSON_CONSTANTS:
        table.expect_error(label, post(raw), [400])
    table.check()


def test_minus_zero_where_zero_is_allowed_is_served(proxy, fake):
    status, _, body = proxy.json("POST", CHAT, _with('"temperature": -0.0'))
    assert status == 200, body
    assert fake.chat_requests()[-1]["top_p"] == 0


# ---- huge strings and deep nesting ----------------------------------------------------------------


def test_huge_strings_are_served_or_refused_cleanly(proxy, fake):
    table = Table(proxy, fake)
    big = "Ы" * (1 << 20)  # 1 Mi characters: 2 MiB of UTF-8, 6 MiB as \\u escapes
    reply = table.expect_success("1 Mi-character content", post(dict(HELLO, messages=[{"role": "user", "content": big}])))
    if reply is not None and reply.status == 200:
        assert reply.json()["choices"][0]["message"]["content"] == "Echo: " + big
    table.expect_success("1 MiB unknown key", post(dict(HELLO, **{"k" * (1 << 20): 1})))
    table.expect_success("1 MiB model name", post(dict(HELLO, model="gpt-" + "x" * (1 << 20))))
    table.expect_success("100 KB tool name", post(dict(HELLO, tools=[{"type": "function", "function": {
        "name": "f" * 100000, "parameters": {"type": "object", "properties": {}}}}])))
    table.expect_success("control characters", post(dict(HELLO, messages=[
        {"role": "user", "content": "".join(chr(c) for c in range(32)) + "\u2028\ufeff\U0001F600"}])))
    table.expect_error("1 MiB role", post(dict(HELLO, messages=[{"role": "x" * (1 << 20), "content": "hi"}])), [400])
    table.expect_error("1 MiB reasoning_effort", post(dict(HELLO, reasoning_effort="x" * (1 << 20))), [400])
    table.check()


DEPTH = 100000


def test_deeply_nested_json_is_400(proxy, fake):
    table = Table(proxy, fake)
    table.expect_error("100k arrays", post(b"[" * DEPTH + b"]" * DEPTH), [400])
    table.expect_error("100k objects", post(b'{"a":' * DEPTH + b"1" + b"}" * DEPTH), [400])
    table.expect_error("100k open arrays", post(b"[" * DEPTH), [400])
    table.expect_error("100k levels in an ignored field",
                       post(_with('"metadata": ' + "[" * DEPTH + "]" * DEPTH)), [400])
    table.expect_error("100k levels in a tool schema", post(_with(
        '"tools": [{"type": "function", "function": {"name": "f", "parameters": '
        + '{"type": "object", "properties": {"a": ' * (DEPTH // 2) + "{}" + "}}" * (DEPTH // 2) + "}}]")), [400])
    table.expect_error("100k levels inside tool call arguments (a string)", post(_messages(
        USER, _assistant_call(function={"name": "get_weather", "arguments": "[" * DEPTH + "]" * DEPTH}), RESULT)),
        [400])
    table.check()


def test_deeply_nested_tool_result_text_is_not_a_crash(proxy, fake):
    """A tool result is free text; one that is JSON nested 100k deep may be refused (400) or
    passed on as text (200), but never a 500."""
    table = Table(proxy, fake)
    for text in ("[" * DEPTH + "]" * DEPTH, '{"a":' * DEPTH + "1" + "}" * DEPTH, "[" * DEPTH):
        reply = table.send("deep tool result", post(_messages(USER, _assistant_call(), dict(RESULT, content=text))))
        if reply is not None:
            problems = success_problems(reply) if reply.status == 200 else error_problems(reply, [400])
            problems += serving_problems(proxy, table.conn, reply)
            if problems:
                table.failures.append("deep tool result %r...: %s -> %r" % (text[:10], "; ".join(problems), reply))
            if problems or reply.closes:
                table.reconnect()
    table.check()


def test_moderately_nested_tool_schema_is_served(proxy, fake):
    schema = {"type": "string"}  # type: Dict[str, Any]
    for _ in range(200):
        schema = {"type": "object", "properties": {"a": schema}}
    status, _, body = proxy.chat(dict(HELLO, tools=[{"type": "function", "function": {
        "name": "f", "parameters": schema}}]))
    assert status == 200, body


# ---- text encodings ----------------------------------------------------------------------------------


def _hello_with_content(raw: bytes) -> bytes:
    return b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "' + raw + b'"}]}'


BAD_ENCODINGS = [
    ("UTF-16 with BOM", json.dumps(HELLO).encode("utf-16")),
    ("UTF-32", json.dumps(HELLO).encode("utf-32")),
    ("lone 0xff", _hello_with_content(b"\xff")),
    ("lone continuation byte", _hello_with_content(b"\x80")),
    ("invalid two-byte sequence", _hello_with_content(b"\xc3\x28")),
    ("overlong slash", _hello_with_content(b"\xc0\xaf")),
    ("overlong NUL", _hello_with_content(b"\xc0\x80")),
    ("UTF-8-encoded surrogate", _hello_with_content(b"\xed\xa0\x80")),
    ("truncated three-byte sequence", _hello_with_content(b"\xe2\x82")),
    ("beyond U+10FFFF", _hello_with_content(b"\xf4\x90\x80\x80")),
    ("latin-1 text", _hello_with_content("naïve café".encode("latin-1"))),
    ("invalid UTF-8 in a key", b'{"\xff": 1, "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}'),
]

LONE_SURROGATES = [
    ("high surrogate in content", _hello_with_content(b"a\\ud800b")),
    ("low surrogate in content", _hello_with_content(b"\\udc00")),
    ("two high surrogates", _hello_with_content(b"\\ud800\\ud800")),
    ("reversed pair", _hello_with_content(b"\\udc00\\ud800")),
    ("surrogate in the system message", json.dumps(dict(HELLO, messages=[
        {"role": "system", "content": "\ud83d"}, {"role": "user", "content": "x"}])).encode()),
    ("surrogate in a streamed request", json.dumps(dict(HELLO, stream=True, messages=[
        {"role": "user", "content": "x\udfff"}])).encode()),
    ("surrogate in the model name", json.dumps(dict(HELLO, model="GigaChat\ud800")).encode()),
    ("surrogate in a tool name", json.dumps(dict(HELLO, tools=[{"type": "function", "function": {
        "name": "f\ud800", "parameters": {"type": "object", "properties": {}}}}])).encode()),
    ("surrogate in a tool description", json.dumps(dict(HELLO, tools=[{"type": "function", "function": {
        "name": "f", "description": "\udead", "parameters": {"type": "object", "properties": {}}}}])).encode()),
    ("surrogate in tool arguments", json.dumps(_messages(USER, _assistant_call(function={
        "name": "get_weather", "arguments": '{"city": "\\ud800"}'}), RESULT)).encode()),
    ("surrogate in a tool result", json.dumps(_messages(USER, _assistant_call(), dict(
        RESULT, content="\ud800"))).encode()),
    ("surrogate in an unknown role", json.dumps(dict(HELLO, messages=[{"role": "\ud800", "content": "x"}])).encode()),
]


def test_invalid_utf8_is_400(proxy, fake):
    table = Table(proxy, fake)
    for label, raw in BAD_ENCODINGS:
        table.expect_error(label, post(raw), [400])
    table.check()


def test_lone_surrogates_in_json_escapes_are_400(proxy, fake):
    """A \\uD800 escape without its pair decodes to a string no UTF-8 encoder accepts: the proxy
    refuses it as invalid text rather than failing (500) when it re-encodes the body for GigaChat."""
    table = Table(proxy, fake)
    for label, raw in LONE_SURROGATES:
        table.expect_error(label, post(raw), [400])
    table.check()


def test_utf8_bom_and_valid_astral_pairs_are_served(proxy, fake):
    table = Table(proxy, fake)
    table.expect_success("UTF-8 BOM", post(b"\xef\xbb\xbf" + json.dumps(HELLO).encode()))
    reply = table.expect_success("escaped pair", post(_hello_with_content(b"\\ud83d\\ude00")))
    assert reply is not None and reply.json()["choices"][0]["message"]["content"] == "Echo: \U0001F600"
    table.check()


# ---- body size -------------------------------------------------------------------------------------


def _body_of(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes."""
    empty = json.dumps(dict(HELLO, messages=[{"role": "user", "content": ""}])).encode()
    return json.dumps(dict(HELLO, messages=[{"role": "user", "content": "x" * (size - len(empty))}])).encode()


OVER = [1.2, 10, 100]  # multiples of the limit


def test_body_over_the_limit_gets_a_readable_413_from_http_client(small_proxy, fake):
    limit = small_proxy.server.config.max_body_bytes
    failures = []
    for factor in OVER:
        for expect in (False, True):
            label = "%gx the limit%s" % (factor, " with Expect: 100-continue" if expect else "")
            body = _body_of(int(limit * factor))
            headers = {"Content-Type": "application/json"}
            if expect:
                headers["Expect"] = "100-continue"
            conn = http.client.HTTPConnection("127.0.0.1", small_proxy.port, timeout=10)
            before = len(fake.requests)
            try:
                conn.request("POST", CHAT, body=body, headers=headers)
                response = conn.getresponse()
                reply = Reply(response.status, response.reason, {k.lower(): v for k, v in response.getheaders()},
                              response.read(), b"")
                problems = error_problems(reply, [413])
                if len(fake.requests) != before:
                    problems.append("the proxy sent something to GigaChat")
                if not problems and reply.json()["error"]["code"] != "request_too_large":
                    problems.append("code %r" % reply.json()["error"]["code"])
                if problems:
                    failures.append("%s: %s" % (label, "; ".join(problems)))
            except (OSError, http.client.HTTPException) as exc:
                failures.append("%s: the client could not read the 413 (%r)" % (label, exc))
            finally:
                conn.close()
    assert_serving(small_proxy)
    assert not failures, "\n".join(failures)


def _send_watching(sock: socket.socket, data: bytes) -> None:
    """Send like a careful client: stop once the server has answered or reset the connection."""
    sent = 0
    while sent < len(data):
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            return
        try:
            sent += sock.send(data[sent:sent + 65536])
        except OSError:  # EPIPE / ECONNRESET: the answer may still be waiting to be read
            return


def _not_a_clean_413(proxy, fake, label, send):
    """``send(conn)`` an oversized request on a new connection; what is wrong with the answer (a list).

    Wanted: a readable JSON 413, nothing sent to GigaChat, and the proxy still serving.
    """
    conn = Conn(proxy.port)
    before = len(fake.requests)
    try:
        send(conn)
        reply = conn.reply()
        problems = error_problems(reply, [413])
        if len(fake.requests) != before:
            problems.append("the proxy sent something to GigaChat")
        problems += serving_problems(proxy, conn, reply)
        return ["%s: %s -> %r" % (label, "; ".join(problems), reply)] if problems else []
    except (OSError, EOFError, ValueError) as exc:
        return ["%s: the client could not read the 413 (%r)" % (label, exc)]
    finally:
        conn.close()


def test_body_over_the_limit_gets_a_readable_413_on_a_raw_socket(small_proxy, fake):
    limit = small_proxy.server.config.max_body_bytes
    failures = []
    for factor in OVER:
        for careful in (False, True):
            label = "%gx the limit, %s" % (factor, "careful sender" if careful else "sendall then read")
            data = post(_body_of(int(limit * factor)))
            send = (lambda conn, data=data: _send_watching(conn.sock, data)) if careful else \
                (lambda conn, data=data: conn.send(data))
            failures += _not_a_clean_413(small_proxy, fake, label, send)
    assert_serving(small_proxy)
    assert not failures, "\n".join(failures)


def test_expect_100_continue_over_the_limit_is_413_before_the_body(small_proxy, fake):
    limit = small_proxy.server.config.max_body_bytes
    before = len(fake.requests)
    conn = Conn(small_proxy.port)
    conn.sock.settimeout(2.0)
    head = request_bytes("POST", CHAT, b"", [("Expect", "100-continue")], length=False)
    conn.send(head[:-2] + b"Content-Length: %d\r\n\r\n" % (limit * 100))
    reply = conn.reply()  # no body sent: the answer must come now, not a 100 Continue
    assert_error(reply, 413)
    assert reply.closes
    closed, _ = conn.wait_closed(2.0)
    assert closed, "the connection stayed open after the 413"
    conn.close()
    assert len(fake.requests) == before
    assert_serving(small_proxy)


def test_expect_100_continue_within_the_limit_gets_100_then_the_answer(small_proxy, fake):
    body = json.dumps(HELLO).encode()
    conn = Conn(small_proxy.port)
    conn.send(post(body, headers=[("Expect", "100-continue")])[:-len(body)])
    interim = conn.reply(interim=True)
    assert interim.status == 100, interim
    conn.send(body)
    reply = conn.reply()
    assert reply.status == 200 and not success_problems(reply), reply
    assert_serving(small_proxy, conn, reply)
    conn.close()


def test_chunked_body_over_the_limit_is_413(small_proxy, fake):
    limit = small_proxy.server.config.max_body_bytes
    failures = []
    for label, data in [
        ("one huge declared chunk", b"%x\r\n" % (limit * 100) + b"x" * 1000),
        ("many chunks adding up", b"".join(b"1000\r\n" + b"x" * 4096 + b"\r\n" for _ in range(limit // 4096 + 2))),
        ("a chunk size beyond 64 bits", b"ffffffffffffffffffffffff\r\n" + b"x" * 10),
    ]:
        head = request_bytes("POST", CHAT, b"", [("Transfer-Encoding", "chunked")], length=False)
        failures += _not_a_clean_413(small_proxy, fake, label, lambda conn, data=head + data: conn.send(data))
    assert_serving(small_proxy)
    assert not failures, "\n".join(failures)


# ---- Content-Length and Transfer-Encoding --------------------------------------------------------


def test_missing_content_length_is_411(proxy, fake):
    table = Table(proxy, fake)
    body = json.dumps(HELLO).encode()
    table.expect_error("POST without Content-Length or body", request_bytes("POST", CHAT, length=False), [411])
    table.expect_error("POST with a body but no Content-Length", request_bytes("POST", CHAT, body, length=False),
                       [411])
    table.check()


BAD_LENGTHS = [b"abc", b"-1", b"-0", b"1.5", b"1e3", b"0x10", b"+5", b"", b" ", b"5 5", b"5,5",
               b"\xb2", b"\xb9\xb2", b"5\x00", b"\xd9\xa3"]


def test_content_length_that_is_not_a_number_is_400(proxy, fake):
    """Includes latin-1 superscript digits (b"\\xb2" is "²"): str.isdigit() says yes, int() says no."""
    failures = []
    for value in BAD_LENGTHS:
        for method, extra, body in [("POST", [], b"{}"), ("POST", [("Expect", "100-continue")], b""),
                                    ("PUT", [], b"")]:
            label = "%s Content-Length: %r%s" % (method, value, " with Expect: 100-continue" if extra else "")
            head = request_bytes(method, CHAT, b"", extra, length=False)
            conn = Conn(proxy.port, timeout=5)
            before = upstream_chats(fake)
            try:
                conn.send(head[:-2] + b"Content-Length: " + value + b"\r\n\r\n" + body)
                reply = conn.reply()
                problems = error_problems(reply, [400] if method == "POST" else [400, 405])
                if upstream_chats(fake) != before:
                    problems.append("it was forwarded to GigaChat")
                problems += serving_problems(proxy, conn, reply)
                if problems:
                    failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
            except (OSError, EOFError, ValueError) as exc:
                failures.append("%s: no reply (%r)" % (label, exc))
            finally:
                conn.close()
    assert not failures, "%d of %d cases failed:\n  %s" % (len(failures), 3 * len(BAD_LENGTHS),
                                                           "\n  ".join(f[:500] for f in failures))


def test_conflicting_content_lengths_are_400(proxy, fake):
    """Two different Content-Length values: RFC 9112 §6.3 says the message is invalid (400)."""
    body = json.dumps(HELLO).encode()
    conn = Conn(proxy.port)
    head = request_bytes("POST", CHAT, b"", length=False)
    conn.send(head[:-2] + b"Content-Length: %d\r\nContent-Length: 2\r\n\r\n" % len(body) + body)
    before = upstream_chats(fake)
    reply = conn.reply()
    assert_error(reply, 400)
    assert upstream_chats(fake) == before
    assert_serving(proxy, conn, reply)
    conn.close()


def _stalled(port: int, data: bytes) -> Tuple[Optional[Reply], float, Conn, str]:
    """Send ``data`` and wait for the answer; (reply or None, seconds, connection, error)."""
    conn = Conn(port, timeout=CLIENT_TIMEOUT + SLACK + 3)
    started = time.monotonic()
    try:
        conn.send(data)
        return conn.reply(), time.monotonic() - started, conn, ""
    except (OSError, EOFError, ValueError) as exc:
        return None, time.monotonic() - started, conn, repr(exc)


def test_requests_that_stop_short_are_408_after_the_client_timeout(slow_proxy, fake):
    """A body shorter than its Content-Length, or a chunked body that stops, then the client
    waits: 408 (JSON) after GIGAPROXY_CLIENT_TIMEOUT, not before, not much later."""
    body = json.dumps(HELLO).encode()
    plain = request_bytes("POST", CHAT, b"", length=False)[:-2]
    chunked = request_bytes("POST", CHAT, b"", CHUNKED, length=False)
    cases = [
        ("Content-Length 100 more than sent", plain + b"Content-Length: %d\r\n\r\n" % (len(body) + 100) + body),
        ("Content-Length but no body", plain + b"Content-Length: %d\r\n\r\n" % len(body)),
        ("chunked without the last chunk", chunked + b"%x\r\n%s\r\n" % (len(body), body)),
        ("a chunk shorter than its size", chunked + b"%x\r\n%s" % (len(body) + 50, body)),
        ("a chunk without its CRLF and size line", chunked + b"%x\r\n%s" % (len(body), body)),
    ]
    before = upstream_chats(fake)
    results = in_parallel(*[(lambda data=data: _stalled(slow_proxy.port, data)) for _, data in cases])
    assert upstream_chats(fake) == before, "a partial request reached GigaChat"
    failures = []
    for (label, _), (reply, elapsed, conn, error) in zip(cases, results):
        if reply is None:
            failures.append("%s: no reply after %.2f s (%s)" % (label, elapsed, error))
        else:
            problems = error_problems(reply, [408])
            if not CLIENT_TIMEOUT * 0.8 <= elapsed <= CLIENT_TIMEOUT + SLACK:
                problems.append("answered after %.2f s" % elapsed)
            problems += serving_problems(slow_proxy, conn, reply)
            if problems:
                failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
        conn.close()
    assert not failures, "\n".join(failures)


def test_content_length_longer_than_promised(slow_proxy, fake):
    """The proxy reads exactly Content-Length bytes; what follows is the next request."""
    body = json.dumps(HELLO).encode()
    # the declared length ends inside the JSON: 400, then the rest is a broken next request
    conn = Conn(slow_proxy.port)
    conn.send(post(body)[:-len(body)].replace(b"Content-Length: %d" % len(body),
                                              b"Content-Length: %d" % (len(body) - 5)) + body)
    assert_error(conn.reply(), 400)
    closed, extra = conn.wait_closed(CLIENT_TIMEOUT + SLACK)
    assert closed, "the connection stayed open with a broken request in it"
    if extra:  # if the proxy answered the leftover bytes, it was with a JSON error
        leftover = Conn.__new__(Conn)
        leftover.buf, leftover.eof, leftover.sock = extra, True, conn.sock
        assert_error(leftover.reply(), 400, 408)
    conn.close()
    # the declared length covers the JSON: 200, then trailing garbage is a bad request line
    conn = Conn(slow_proxy.port)
    conn.send(post(body) + b"garbage\r\n\r\n")
    first = conn.reply()
    assert first.status == 200 and not success_problems(first), first
    second = conn.reply()
    assert_error(second, 400)
    assert second.closes
    conn.close()
    assert_serving(slow_proxy)


def _chunked(body: bytes, sizes: Sequence[int] = (10,), ext: bytes = b"", trailer: bytes = b"") -> bytes:
    out, at = [], 0
    for size in list(sizes) + [len(body)]:
        piece = body[at:at + size]
        if piece:
            out.append(b"%x%s\r\n%s\r\n" % (len(piece), ext, piece))
        at += len(piece)
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def test_valid_chunked_bodies_are_served(proxy, fake):
    table = Table(proxy, fake)
    body = json.dumps(HELLO).encode()
    head = request_bytes("POST", CHAT, b"", CHUNKED, length=False)
    table.expect_success("two chunks", head + _chunked(body))
    table.expect_success("one chunk", head + _chunked(body, ()))
    table.expect_success("one-byte chunks", head + _chunked(body, [1] * len(body)))
    table.expect_success("chunk extensions", head + _chunked(body, (7,), ext=b";name=value"))
    table.expect_success("a trailer", head + _chunked(body, (7,), trailer=b"X-Checksum: 1\r\n"))
    table.expect_success("upper-case hex and leading zeros",
                         head + b"%04X\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    table.expect_success("Chunked in capitals",
                         request_bytes("POST", CHAT, b"", [("Transfer-Encoding", "Chunked")], length=False)
                         + _chunked(body))
    table.check()


def test_malformed_chunked_bodies_are_400(slow_proxy, fake):
    """(With a short client timeout, so that a proxy waiting for more bytes fails fast.)"""
    proxy = slow_proxy
    table = Table(proxy, fake)
    body = json.dumps(HELLO).encode()
    head = request_bytes("POST", CHAT, b"", CHUNKED, length=False)
    for label, data in [
        ("size is not hex", b"zz\r\n" + body + b"\r\n0\r\n\r\n"),
        ("negative size", b"-5\r\nabcde\r\n0\r\n\r\n"),
        ("empty size line", b"\r\n" + body + b"\r\n0\r\n\r\n"),
        ("size with a space inside", b"1 0\r\n" + body[:16] + b"\r\n0\r\n\r\n"),
        ("JSON instead of chunks", body + b"\r\n"),
    ]:
        table.expect_error(label, head + data, [400])
    table.expect_error("size line of 2000 digits", head + b"1" * 2000 + b"\r\n", [400, 413])
    table.check()


# ---- Content-Type --------------------------------------------------------------------------------


UNSUPPORTED_TYPES = ["multipart/form-data; boundary=xyz", "application/xml", "text/xml", "text/html",
                     "application/octet-stream", "image/png", "application/x-yaml"]
ACCEPTED_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON; Charset=UTF-8",
                  "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                  "application/vnd.api+json", "application/merge-patch+json", None]


def test_pipelined_requests_in_one_packet_are_answered_in_order(proxy, fake):
    """Three requests sent in one write (heads, bodies, a GET between): three answers, in order.

    The server splits a head that arrived whole in memory; what follows it in the same
    packet must stay where the next request's reader finds it.
    """
    conn = Conn(proxy.port)
    try:
        first = dict(HELLO, messages=[{"role": "user", "content": "first"}])
        third = dict(HELLO, messages=[{"role": "user", "content": "third"}])
        conn.send(post(first) + request_bytes("GET", "/v1/models", content_type=None, length=False) + post(third))
        replies = [conn.reply() for _ in range(3)]
    finally:
        conn.close()
    assert [r.status for r in replies] == [200, 200, 200]
    assert "first" in replies[0].json()["choices"][0]["message"]["content"]
    assert replies[1].json()["object"] == "list"
    assert "third" in replies[2].json()["choices"][0]["message"]["content"]


def test_a_body_split_over_two_packets_is_read_whole(proxy, fake):
    """Head and half the body in one packet, the rest a moment later: one 200, the whole body upstream."""
    body = json.dumps(dict(HELLO, messages=[{"role": "user", "content": "x" * 3000}])).encode()
    data = post(body)
    cut = len(data) - len(body) // 2
    conn = Conn(proxy.port)
    try:
        conn.send(data[:cut])
        time.sleep(0.05)  # the second half is a separate packet, not in the first read
        conn.send(data[cut:])
        reply = conn.reply()
    finally:
        conn.close()
    assert reply.status == 200, reply
    assert fake.chat_requests()[-1]["messages"][0]["content"] == "x" * 3000


def test_unsupported_content_types_are_415(proxy, fake):
    table = Table(proxy, fake)
    body = json.dumps(HELLO).encode()
    for ctype in UNSUPPORTED_TYPES:
        table.expect_error(ctype, post(body, content_type=ctype), [415])
    table.expect_error("multipart with a 100 KB body", post(b"-" * 100000, content_type=UNSUPPORTED_TYPES[0]), [415])
    table.check()


def test_json_under_other_common_content_types_is_served(proxy, fake):
    table = Table(proxy, fake)
    body = json.dumps(HELLO).encode()
    for ctype in ACCEPTED_TYPES:
        table.expect_success(repr(ctype), post(body, content_type=ctype))
    table.check()


# ---- routes and methods ---------------------------------------------------------------------------


def test_unknown_routes_are_404(proxy, fake):
    table = Table(proxy, fake)
    for method, path in [("GET", "/v1/nothing"), ("POST", "/v2/chat/completions"),
                         ("POST", "/v1/chat/completions/extra"), ("POST", "/v1/chat"), ("GET", "/v1/v1/models"),
                         ("GET", "/%2e%2e/%2e%2e/etc/passwd"), ("GET", "/../../etc/passwd"),
                         ("POST", "/v1/images/generations"), ("GET", "/v1/" + "a" * 5000),
                         ("GET", "/v1/%00"), ("GET", "/v1/\x01\x7f"), ("GET", "/v1/%ff%fe")]:
        body = json.dumps(HELLO).encode() if method == "POST" else b""
        table.expect_error("%s %s" % (method, path[:40]), request_bytes(method, path, body), [404])
    table.check()
    # A model id is not a route: any name a chat request would accept is answered (issue 13),
    # saying which GigaChat model serves it; odd bytes in it are escaped, never echoed raw.
    for path in ("/v1/models/no-such-model", "/v1/models/%ff%fe"):
        status, _, body = proxy.json("GET", path)
        assert status == 200 and body["gigachat_model"] == proxy.server.config.model, (path, body)


def test_wrong_methods_are_405_with_allow(proxy, fake):
    table = Table(proxy, fake)
    body = json.dumps(HELLO).encode()
    for method, path, allow in [("GET", CHAT, "POST"), ("PUT", CHAT, "POST"), ("DELETE", CHAT, "POST"),
                                ("PATCH", CHAT, "POST"), ("OPTIONS", CHAT, "POST"), ("POST", "/v1/models", "GET"),
                                ("DELETE", "/v1/models", "GET"), ("POST", "/health", "GET"),
                                ("PUT", "/v1/models/GigaChat-2", "GET"), ("POST", "/", "GET")]:
        label = "%s %s" % (method, path)
        reply = table.expect_error(label, request_bytes(method, path, body), [405])
        if reply is not None and reply.headers.get("allow") != allow:
            table.failures.append("%s: Allow %r, wanted %r" % (label, reply.headers.get("allow"), allow))
    reply = table.expect_error("PUT with a 100 KB body", request_bytes("PUT", CHAT, b"x" * 100000), [405])
    table.check()


def test_head_on_a_post_route_is_405_without_a_body(proxy, fake):
    conn = Conn(proxy.port)
    conn.send(request_bytes("HEAD", CHAT, length=False, content_type=None))
    reply = conn.reply(head_only=True)
    assert reply.status == 405 and reply.headers.get("allow") == "POST"
    assert_serving(proxy, conn, reply)
    conn.close()


def test_unknown_methods_get_a_json_error(proxy, fake):
    table = Table(proxy, fake)
    for method in ("FOO", "TRACE", "CONNECT", "PROPFIND", "get"):
        table.expect_error(method, request_bytes(method, "/v1/models", length=False, content_type=None), [405, 501])
    table.check()


# ---- malformed request lines and headers ------------------------------------------------------------


def _raw_exchange(proxy: Any, data: bytes) -> Tuple[Optional[Reply], str]:
    conn = Conn(proxy.port, timeout=5)
    try:
        conn.send(data)
        return conn.reply(), ""
    except (OSError, EOFError, ValueError) as exc:
        return None, repr(exc)
    finally:
        conn.close()


BAD_HEADS = [
    ("request line over 64 KiB", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("request line of 1 MiB", b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("header line over 64 KiB", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"),
    ("200 headers", b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
     + b"\r\n"),
    ("POST with a header over 64 KiB", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000
     + b"\r\nContent-Length: 2\r\n\r\n{}"),
    ("garbage line", b"GARBAGE\r\n\r\n"),
    ("too many words", b"GET /v1/models HTTP/1.1 extra\r\n\r\n"),
    ("HTTP/2.0 (505 allowed)", b"GET /v1/models HTTP/2.0\r\nHost: x\r\n\r\n"),
    ("HTTP/9.9 (505 allowed)", b"GET /v1/models HTTP/9.9\r\n\r\n"),
    ("not HTTP", b"GET /v1/models FTP/1.0\r\n\r\n"),
    ("binary garbage line", bytes(range(1, 10)) + bytes(range(14, 256)) + b"\r\n\r\n"),
    ("a header without a colon", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
]


def test_malformed_heads_get_json_4xx_never_html(proxy, fake):
    failures = []
    for label, data in BAD_HEADS:
        reply, error = _raw_exchange(proxy, data)
        if reply is None:
            failures.append("%s: no reply (%s)" % (label, error))
            continue
        if reply.status == 200 and label == "a header without a colon":
            continue  # tolerated: the line is ignored
        problems = error_problems(reply, list(range(400, 500)) + ([505] if "505" in label else []))
        if problems:
            failures.append("%s: %s -> %r" % (label, "; ".join(problems), reply))
    assert_serving(proxy)
    assert not failures, "\n".join(failures)


# ---- slow clients ------------------------------------------------------------------------------------


def _trickle_until_closed(port: int, prefix: bytes, data: bytes) -> Tuple[float, bytes, bool]:
    """Send ``prefix``, then ``data`` a byte per 50 ms until the proxy closes the connection or
    CLIENT_TIMEOUT + SLACK pass; (seconds from the first byte, bytes received, closed)."""
    conn = Conn(port)
    bound = CLIENT_TIMEOUT + SLACK
    started = time.monotonic()
    got = b""
    closed = False
    try:
        conn.send(prefix)
        for i in range(len(data)):
            try:
                conn.sock.send(data[i:i + 1])
            except OSError:
                closed = True
                break
            closed, more = conn.wait_closed(0.05)
            got += more
            if closed or time.monotonic() - started > bound:
                break
        if not closed:
            closed, more = conn.wait_closed(max(0.0, bound - (time.monotonic() - started)))
            got += more
    finally:
        conn.close()
    return time.monotonic() - started, got, closed


def _parse(data: bytes) -> Reply:
    reader = Conn.__new__(Conn)
    reader.buf, reader.eof, reader.sock = data, True, None
    return reader.reply()


def test_slowloris_clients_are_cut_off_and_do_not_hold_up_others(slow_proxy, fake):
    """Clients that send their request head a byte per 50 ms are disconnected within
    GIGAPROXY_CLIENT_TIMEOUT (+ slack) of their first byte, with at most a JSON 408/400; meanwhile
    other clients are served at once."""
    head = post(HELLO)
    line_end = head.index(b"\r\n") + 2
    head_end = head.index(b"\r\n\r\n")
    cases = [("from the first byte", b"", head),
             ("after the request line", head[:line_end], head[line_end:]),
             ("inside the last header", head[:head_end - 3], head[head_end - 3:])]
    before = upstream_chats(fake)
    started = time.monotonic()
    results = []  # type: List[Any]
    runner = threading.Thread(target=lambda: results.extend(in_parallel(
        *[(lambda prefix=prefix, rest=rest: _trickle_until_closed(slow_proxy.port, prefix, rest))
          for _, prefix, rest in cases])))
    runner.start()
    time.sleep(0.1)  # the slow clients are connected and trickling
    status, _, body = slow_proxy.chat(HELLO)
    served_after = time.monotonic() - started
    runner.join(30)
    assert status == 200 and served_after < CLIENT_TIMEOUT, "a normal client waited %.2f s" % served_after
    assert upstream_chats(fake) == before + 1  # only the normal client's request
    failures = []
    for (label, _, _), (taken, got, closed) in zip(cases, results):
        if not closed:
            failures.append("%s: still open after %.2f s" % (label, taken))
        if got:  # an answer is optional; if there is one it is a JSON 408/400 saying Connection: close
            try:
                answer = _parse(got)
                problems = error_problems(answer, [400, 408])
                if not answer.closes:
                    problems.append("the connection was closed without Connection: close")
            except (EOFError, ValueError) as exc:
                problems = ["unparseable answer %r (%r)" % (got[:200], exc)]
            if problems:
                failures.append("%s: %s" % (label, "; ".join(problems)))
    assert_serving(slow_proxy)
    assert not failures, "\n".join(failures)


def test_a_body_that_never_finishes_is_408(slow_proxy, fake):
    """The head arrives at once, the body a byte per 50 ms: 408 (JSON) within
    GIGAPROXY_CLIENT_TIMEOUT (+ slack), then the connection is closed."""
    body = json.dumps(HELLO).encode()
    head = post(body)[:-len(body)]
    before = upstream_chats(fake)
    taken, got, closed = _trickle_until_closed(slow_proxy.port, head + body[:5], body[5:])
    assert upstream_chats(fake) == before
    assert got, "no answer, the connection was %s after %.2f s" % ("closed" if closed else "open", taken)
    reply = _parse(got)
    assert_error(reply, 408)
    assert closed, "the connection stayed open after the 408 (%.2f s)" % taken
    assert reply.closes, "the proxy closed the connection after its 408 without saying Connection: close"
    assert taken <= CLIENT_TIMEOUT + SLACK
    assert_serving(slow_proxy)


# ---- the seeded fuzzer ---------------------------------------------------------------------------------

FUZZ_SEEDS = (20240601, 4242, 777)
FUZZ_CASES_PER_SEED = 1000  # 3,000 cases in all
FUZZ_CONNECTIONS = 3

VALID_REQUESTS = [
    {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}],
     "temperature": 0.5, "max_tokens": 50},
    {"model": "gigachat", "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "user", "content": "hello"}]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "text", "text": "weather?"}]}],
     "tools": TOOLS, "tool_choice": "auto", "top_p": 0.9},
    {"model": "GigaChat-2-Max", "messages": [
        {"role": "developer", "content": "Use tools."}, {"role": "user", "content": "weather in Moscow?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Moscow\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"t\": -5}"},
        {"role": "user", "content": "thanks"}], "tools": TOOLS},
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "weather?"}], "tools": TOOLS,
     "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "give json"}],
     "response_format": {"type": "json_object"}, "max_completion_tokens": 100},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "give json"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": {
            "type": "object", "properties": {"a": {"type": "string"}, "b": {"type": ["integer", "null"]}},
            "required": ["a"]}}}},
    {"model": "gigachat-pro", "stream": True, "messages": [{"role": "user", "content": "json please"}],
     "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "array",
                                                                                           "items": {"type": "string"}}}},
     "reasoning_effort": "low", "repetition_penalty": 1.1, "profanity_check": False, "n": 1, "user": "u1"},
]

FIELDS = ["model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stream",
          "stream_options", "tools", "tool_choice", "response_format", "reasoning_effort", "repetition_penalty",
          "update_interval", "profanity_check", "functions", "function_call", "seed", "stop", "user",
          "role", "content", "tool_calls", "tool_call_id", "name", "type", "function", "arguments", "parameters",
          "properties", "required", "items", "anyOf", "allOf", "$ref", "$defs", "enum", "const", "json_schema",
          "schema", "include_usage", "text", "image_url", "description", "strict"]
ROLES = ["system", "developer", "user", "assistant", "tool", "function", "robot", "", "USER", None, 5, []]
STRINGS = ["", "auto", "none", "required", "function", "text", "json_object", "json_schema", "object", "string",
           "array", "null", "get_weather", "call_1", "GigaChat", "gpt-4o", "low", "high", "[DONE]", "{}", "[",
           '{"a": 1}', "NaN", "#/$defs/x", "web_search", "text2image", "mcp__git.status", "data: x\n\n"]
CHAR_RANGES = [(0x20, 0x7e), (0x00, 0x1f), (0x7f, 0x9f), (0xa0, 0x2ff), (0x400, 0x4ff), (0x4e00, 0x4e80),
               (0x2028, 0x2029), (0xfeff, 0xfeff), (0xfffd, 0xffff), (0x1f600, 0x1f64f), (0x10ffff, 0x10ffff),
               (0xd800, 0xdfff)]  # the last: lone surrogates, which only a \\u escape can carry


def _random_text(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(STRINGS)
    low, high = rng.choice(CHAR_RANGES)
    size = rng.choice([0, 1, 2, 5, 20, 200, 3000])
    piece = "".join(chr(rng.randint(low, high)) for _ in range(min(size, 24)))
    return (piece * (size // 24 + 1))[:size]  # long strings repeat a random piece (cheap to make)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(12 if depth < 4 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2, 7, 4096, 2 ** 31 - 1, 2 ** 31, 2 ** 63, -2 ** 63, 10 ** 30, 10 ** 400])
    if kind == 3:
        return rng.choice([0.0, -0.0, 0.5, 1.0, 1.5, -1e-9, 1e-308, 5e-324, 1e308, -1e308, 1e6, 3.14])
    if kind in (4, 5, 6, 7):
        return _random_text(rng)
    if kind in (8, 9):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS) if rng.random() < 0.7 else _random_text(rng): _random_value(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _containers(value: Any, out: List[Any]) -> List[Any]:
    """Every dict and list inside ``value`` (``value`` first)."""
    if isinstance(value, (dict, list)):
        out.append(value)
        for child in (value.values() if isinstance(value, dict) else value):
            _containers(child, out)
    return out


def _mutate_json(rng: random.Random, request: Dict[str, Any]) -> Tuple[Any, str]:
    """Apply 1-3 random structural mutations; returns (new value, what was done)."""
    root = copy.deepcopy(request)  # type: Any
    done = []
    for _ in range(rng.randint(1, 3)):
        containers = _containers(root, [])
        if not containers:
            root = _random_value(rng)
            done.append("replace the whole body")
            continue
        target = rng.choice(containers)
        op = rng.randrange(9)
        if isinstance(target, dict):
            key = rng.choice(list(target)) if target else None  # type: Any
        else:
            key = rng.randrange(len(target)) if target else None
        if op == 0 and key is not None:
            del target[key]
            done.append("drop %r" % (key,))
        elif op == 1 and key is not None:
            if isinstance(target, dict):
                target[rng.choice(FIELDS)] = copy.deepcopy(target.get(key))
            else:
                target.insert(rng.randrange(len(target) + 1), copy.deepcopy(target[key]))
            done.append("duplicate %r" % (key,))
        elif op in (2, 3) and key is not None:
            target[key] = _random_value(rng)
            done.append("replace %r with a random value" % (key,))
        elif op == 4 and key is not None:
            value = target[key]
            for _ in range(rng.choice([1, 2, 5, 50, 150])):
                value = [value] if rng.random() < 0.5 else {rng.choice(FIELDS): value}
            target[key] = value
            done.append("nest %r" % (key,))
        elif op == 5:
            if isinstance(target, dict):
                target[rng.choice(FIELDS)] = _random_value(rng)
                done.append("add a field")
            else:
                target.insert(rng.randrange(len(target) + 1), _random_value(rng))
                done.append("insert an element")
        elif op == 6 and isinstance(root, dict) and isinstance(root.get("messages"), list) and root["messages"]:
            message = rng.choice(root["messages"])
            if isinstance(message, dict):
                message["role"] = rng.choice(ROLES)
                done.append("random role")
        elif op == 7 and isinstance(root, dict) and isinstance(root.get("messages"), list) \
                and len(root["messages"]) > 1:
            rng.shuffle(root["messages"])
            done.append("shuffle messages")
        elif op == 8 and isinstance(target, dict):
            target[key if key is not None else rng.choice(FIELDS)] = _random_text(rng)
            done.append("random text in %r" % (key,))
    return root, ", ".join(done) or "nothing"


NUMBER_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"1" + b"0" * 400, b"1" + b"0" * 5000,
                 b"0.0000000000000000000000001", b"2147483648", b"-2147483649", b"1E+2", b"01", b"1.", b".5"]
GARBAGE = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\r\n",
           b"\\u", b"\\ud800", b"\\x41", b"/*", b"\t", b" " * 100, b"\xef\xbb\xbf"]


def _mutate_bytes(rng: random.Random, data: bytes) -> Tuple[bytes, str]:
    op = rng.randrange(6)
    if op == 0 or not data:
        cut = rng.randrange(len(data) + 1)
        return data[:cut], "truncate at %d" % cut
    if op == 1:
        out = bytearray(data)
        for _ in range(rng.randint(1, 5)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out), "flip bits"
    if op == 2:
        at = rng.randrange(len(data) + 1)
        junk = rng.choice(GARBAGE) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return data[:at] + junk + data[at:], "insert %r at %d" % (junk[:10], at)
    if op == 3:
        at = rng.randrange(len(data))
        return data[:at] + data[at + rng.randint(1, 20):], "delete at %d" % at
    if op == 4:
        digits = [i for i, c in enumerate(data) if 0x30 <= c <= 0x39]
        if digits:
            at = rng.choice(digits)
            token = rng.choice(NUMBER_TOKENS)
            return data[:at] + token + data[at + 1:], "number %r at %d" % (token[:12], at)
        return data + b" ", "append a space"
    at = rng.randrange(len(data))
    span = data[at:at + rng.randint(1, 200)]
    return data[:at] + span + data[at:], "repeat %d bytes at %d" % (len(span), at)


def _fuzz_case(rng: random.Random) -> Tuple[bytes, List[Tuple[str, str]], str]:
    """One fuzzed request: (body, extra headers, description)."""
    base = rng.choice(VALID_REQUESTS)
    roll = rng.random()
    if roll < 0.05:
        value, what = copy.deepcopy(base), "unchanged"  # a control: must succeed
    elif roll < 0.07:
        value, what = _random_value(rng), "a random JSON value"
    else:
        value, what = _mutate_json(rng, base)
    if rng.random() < 0.5:
        data = json.dumps(value, ensure_ascii=True).encode("ascii")
    else:
        data = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if roll >= 0.05 and rng.random() < 0.3:
        data, how = _mutate_bytes(rng, data)
        what += "; bytes: " + how
    headers = []  # type: List[Tuple[str, str]]
    if rng.random() < 0.1:
        headers.append(("X-Request-ID", "".join(chr(rng.randint(0x20, 0x7e)) for _ in range(rng.randrange(300)))))
    return data, headers, what


def _fuzz_request(rng: random.Random, data: bytes, headers: List[Tuple[str, str]]) -> bytes:
    ctype = rng.choice(["application/json", "application/json; charset=utf-8", "text/plain",
                        "application/x-www-form-urlencoded", None])
    if rng.random() < 0.1:
        head = request_bytes("POST", CHAT, b"", headers + CHUNKED, content_type=ctype, length=False)
        return head + _chunked(data, [rng.randint(1, 64) for _ in range(rng.randint(0, 5))])
    return request_bytes("POST", CHAT, data, headers, content_type=ctype)


def fuzz_wire(seed: int, index: int) -> bytes:
    """The exact request the fuzzer sent as case ``index`` of ``seed``, to reproduce a failure:
    ``python -c "import sys; sys.path[:0] = ['tests', '.']; import test_hostile as t; print(t.fuzz_wire(777, 12))"``
    """
    rng = random.Random(seed)
    wire = b""
    for _ in range(index + 1):
        data, headers, _ = _fuzz_case(rng)
        wire = _fuzz_request(rng, data, headers)
    return wire


def test_fuzz_cases_are_reproducible():
    assert fuzz_wire(FUZZ_SEEDS[0], 5) == fuzz_wire(FUZZ_SEEDS[0], 5)
    assert fuzz_wire(FUZZ_SEEDS[0], 5) != fuzz_wire(FUZZ_SEEDS[0], 6)


def test_seeded_fuzzer(proxy, fake, no_error_in_the_log):
    """FUZZ_SEEDS x FUZZ_CASES_PER_SEED mutated requests over FUZZ_CONNECTIONS keep-alive connections:
    no 500, no traceback or ERROR in the log, no hang, every reply a valid success or OpenAI error."""
    caplog = no_error_in_the_log
    started = time.monotonic()
    conns = [Conn(proxy.port) for _ in range(FUZZ_CONNECTIONS)]
    failures = {}  # type: Dict[str, List[str]]  signature -> examples
    statuses = {}  # type: Dict[int, int]
    upstream_5xx = []  # type: List[str]
    total = 0

    def fail(signature: str, seed: int, index: int, what: str, detail: str, data: bytes) -> None:
        failures.setdefault(signature, []).append(  # fuzz_wire(seed, index) gives the whole request
            "seed=%d case=%d [%s]: %s; request body %r" % (seed, index, what, detail[:400], data[:200]))

    for seed in FUZZ_SEEDS:
        rng = random.Random(seed)
        for index in range(FUZZ_CASES_PER_SEED):
            total += 1
            data, headers, what = _fuzz_case(rng)
            wire = _fuzz_request(rng, data, headers)
            slot = index % len(conns)
            conn = conns[slot]
            seen_requests = len(fake.requests)
            seen_records = len(caplog.records)
            try:
                conn.send(wire)
                reply = conn.reply()
            except socket.timeout:
                fail("no reply within 5 s (a hang)", seed, index, what, "", data)
                conn.close()
                conns[slot] = Conn(proxy.port)
                continue
            except (OSError, EOFError, ValueError) as exc:
                fail("no reply: %s" % type(exc).__name__, seed, index, what, repr(exc), data)
                conn.close()
                conns[slot] = Conn(proxy.port)
                continue
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            if reply.status == 200:
                problems = success_problems(reply)
            elif 400 <= reply.status < 500:
                problems = error_problems(reply, [reply.status])
            elif reply.status in (502, 503, 504):
                problems = error_problems(reply, [reply.status])
                refused = [r.status for r in fake.requests[seen_requests:] if r.status is None or r.status >= 500]
                if refused:
                    upstream_5xx.append("seed=%d case=%d: %d after GigaChat answered %s" % (
                        seed, index, reply.status, refused))
                else:
                    problems.append("a %d that GigaChat did not cause" % reply.status)
            else:
                problems = ["status %d" % reply.status]
            if what == "unchanged" and reply.status != 200:
                problems.append("a valid request failed")
            logged = log_problems(caplog.records[seen_records:])
            if logged:
                problems.append("logged: " + logged[0])
            if problems:
                cause = logged[0].split(" [", 1)[-1] if logged else problems[0]
                signature = "%d %s" % (reply.status, re.sub(r"\\u[0-9a-f]{4}|\d+", "N", cause)[:60])
                fail(signature, seed, index, what, "%s -> %r" % ("; ".join(problems), reply), data)
            if problems or reply.closes or conn.eof:
                conn.close()
                conns[slot] = Conn(proxy.port)
    for conn in conns:
        conn.close()
    elapsed = time.monotonic() - started
    summary = "%d cases in %.1f s, statuses %s" % (total, elapsed, sorted(statuses.items()))
    print(summary)
    assert total >= 3000
    assert statuses.get(200, 0) >= total // 20, "too few valid requests to mean anything: " + summary
    count = sum(len(v) for v in failures.values())
    assert not failures, "%d of %s failed, %d kinds (seed and case index reproduce each):\n%s" % (
        count, summary, len(failures), "\n".join(
            "  %dx %s\n    e.g. %s" % (len(examples), signature, examples[0][:700])
            for signature, examples in sorted(failures.items(), key=lambda item: -len(item[1]))))
    assert len(upstream_5xx) <= total // 100, "GigaChat refused too often: %s" % upstream_5xx[:5]
    assert_serving(proxy)
