"""A plain-HTTP stand-in for GigaChat's API that can be scripted to break HTTP/1.1 framing.

    with MisbehavingUpstream() as upstream:
        upstream.base_url          # "http://127.0.0.1:<port>/api/v1": point GIGACHAT_BASE_URL here
        answer = upstream.script(extra=whole_response("INJECTED"))   # how the NEXT request is answered
        ...                        # answer.sent is set once the answer (and its extra bytes) are out
        upstream.requests          # every request read: Request(method, path, headers, body, connection)
        upstream.connections       # how many connections were accepted

gigaproxy talks to it with a static token (GIGACHAT_ACCESS_TOKEN=<anything>, no OAuth): a
plain ``http://`` base URL is accepted by load_config and used without TLS.

A raw socket server on 127.0.0.1, port 0, a thread per connection, HTTP/1.1 keep-alive: a
connection is served until the client closes it or says ``Connection: close``.  Requests
must carry a Content-Length (gigaproxy's always do).  Answers are written byte for byte as
scripted, which is the point: http.server would not send a folded header line or bytes
past the end of a response.

An unscripted request gets a good answer: ``POST /api/v1/chat/completions`` a GigaChat chat
completion (gigachat-api.md §5, §11) whose content is "Echo: " + the last user message, or
an event stream (§6) when the request says ``"stream": true``; ``GET /api/v1/models`` a model
list (§8); anything else a GigaChat 404 (§10).  ``script(...)`` queues how to answer the next
requests instead, first in first out:

* ``extra``: bytes sent right after the complete answer, in the same ``sendall`` or, with
  ``separately=True``, in a second one; with ``extra_after`` (an Event) too, the second one
  waits for that event (set it once the client has its answer: the bytes then reach a
  connection that sits idle in gigaproxy's pool);
* ``status``, ``body`` (bytes) and ``content_length`` (declared; need not match the body);
* ``header_lines``: raw header text, e.g. ``"X-Request-ID: abc\\r\\n def"`` (obs-fold); a line
  that names Content-Type or X-Request-ID replaces the default one.

Standard library only, Python 3.8+, no sleeps; a failure inside the server itself (a bug)
lands in ``errors``.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
import traceback
import uuid
from typing import Any, Deque, Dict, List, Optional, Sequence

CHAT_PATH = "/api/v1/chat/completions"
MODELS_PATH = "/api/v1/models"
SERVED_MODEL = "GigaChat:2.0.28.2"  # the served version GigaChat echoes in "model" (§5)
MODEL_IDS = ("GigaChat", "GigaChat-2", "GigaChat-2-Pro", "GigaChat-2-Max", "Embeddings")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


def chat_completion(content: str) -> Dict[str, Any]:
    """A non-stream GigaChat chat completion (§5): no id, a served model version, usage."""
    return {"choices": [{"message": {"role": "assistant", "content": content}, "index": 0, "finish_reason": "stop"}],
            "created": int(time.time()), "model": SERVED_MODEL, "object": "chat.completion",
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def event_stream(content: str) -> bytes:
    """The same answer as a GigaChat event stream (§6): two content chunks, the finish, [DONE]."""
    base = {"created": int(time.time()), "model": SERVED_MODEL, "object": "chat.completion"}
    half = len(content) // 2
    events = [dict(base, choices=[{"delta": {"role": "assistant", "content": content[:half]}, "index": 0}]),
              dict(base, choices=[{"delta": {"content": content[half:]}, "index": 0}]),
              dict(base, choices=[{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}],
                   usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})]
    return b"".join(b"data: " + json.dumps(e).encode("utf-8") + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def whole_response(content: str = "INJECTED") -> bytes:
    """A complete, valid HTTP/1.1 chat completion answer: bytes to inject after a real one."""
    body = json.dumps(chat_completion(content)).encode("utf-8")
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Request(object):
    """One request as the server read it."""

    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes, connection: int) -> None:
        self.method = method
        self.path = path  # without the query
        self.headers = headers  # lower-case names
        self.body = body
        self.connection = connection  # which accepted connection (1, 2, ...) carried it

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            return None

    def __repr__(self) -> str:
        return "<Request %s %s on connection %d %r>" % (self.method, self.path, self.connection, self.body[:100])


class Answer(object):
    """How one request is answered; see MisbehavingUpstream.script."""

    def __init__(self, status: int = 200, body: Optional[bytes] = None, content_length: Optional[int] = None,
                 header_lines: Sequence[str] = (), extra: bytes = b"", separately: bool = False,
                 extra_after: Optional[threading.Event] = None) -> None:
        self.status = status
        self.body = body
        self.content_length = content_length
        self.header_lines = list(header_lines)
        self.extra = extra
        self.separately = separately or extra_after is not None
        self.extra_after = extra_after  # the second sendall waits for it (set by stop() too)
        self.sent = threading.Event()  # set once the answer and its extra bytes have been written


class MisbehavingUpstream(object):
    """The server; see the module docstring."""

    def __init__(self) -> None:
        self.requests = []  # type: List[Request]
        self.connections = 0
        self.errors = []  # type: List[str]
        self.port = 0
        self._lock = threading.Lock()
        self._script = collections.deque()  # type: Deque[Answer]
        self._answers = []  # type: List[Answer]  # every scripted answer (stop() releases their waits)
        self._open = {}  # type: Dict[int, socket.socket]
        self._threads = []  # type: List[threading.Thread]
        self._stopping = False
        self._listener = None  # type: Optional[socket.socket]
        self._accepter = None  # type: Optional[threading.Thread]

    @property
    def base_url(self) -> str:
        return "http://127.0.0.1:%d/api/v1" % self.port

    def script(self, **kw: Any) -> Answer:
        """Queue how the next unanswered request is answered (keywords: see Answer)."""
        answer = Answer(**kw)
        with self._lock:
            self._script.append(answer)
            self._answers.append(answer)
        return answer

    def chat_requests(self) -> List[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == CHAT_PATH]

    # ---- lifecycle ---------------------------------------------------------------

    def start(self) -> "MisbehavingUpstream":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept_loop, name="misbehaving-accept", daemon=True)
        self._accepter.start()
        return self

    def stop(self) -> None:
        """Stop accepting, shut every open connection and join every thread (idempotent)."""
        with self._lock:
            if self._stopping or self._listener is None:
                self._stopping = True
                return
            self._stopping = True
        try:  # a blocking accept() is woken by a connection, not by closing its socket
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        except OSError:
            pass
        assert self._accepter is not None
        self._accepter.join(5)
        self._listener.close()
        with self._lock:
            open_sockets, threads = list(self._open.values()), list(self._threads)
            waiting = [a.extra_after for a in self._answers if a.extra_after is not None]
        for event in waiting:
            event.set()  # a thread waiting to send extra bytes finishes now
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading it
            except OSError:
                pass
        for thread in threads:
            thread.join(5)

    def __enter__(self) -> "MisbehavingUpstream":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ---- serving -----------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopping:
                    sock.close()
                    return
                self.connections += 1
                number = self.connections
                self._open[number] = sock
                thread = threading.Thread(target=self._serve, args=(number, sock),
                                          name="misbehaving-conn-%d" % number, daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, number: int, sock: socket.socket) -> None:
        reader = sock.makefile("rb")
        try:
            while True:
                request = self._read_request(reader, number)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                    answer = self._script.popleft() if self._script else Answer()
                self._answer(sock, request, answer)
                if request.headers.get("connection", "").lower() == "close":
                    return
        except OSError:
            pass  # the client went away, or stop() shut the socket
        except Exception:  # noqa: BLE001 - a bug in this server: the test reports it
            with self._lock:
                self.errors.append(traceback.format_exc())
        finally:
            reader.close()
            sock.close()
            with self._lock:
                self._open.pop(number, None)

    @staticmethod
    def _read_request(reader: Any, number: int) -> Optional[Request]:
        line = reader.readline(65537)
        if not line:
            return None  # the client closed the connection
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError("not an HTTP/1.x request line: %r" % line[:100])
        headers = {}  # type: Dict[str, str]
        while True:
            line = reader.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers.get("content-length", "0")))
        return Request(method, target.split("?", 1)[0], headers, body, number)

    @staticmethod
    def _good_answer(request: Request, status: int) -> Any:
        """(content type, body) of a normal answer to ``request``."""
        if status != 200:
            return "application/json", json.dumps({"status": status, "message": REASONS.get(status, "Error")}).encode()
        if request.path == MODELS_PATH:
            return "application/json", json.dumps({"object": "list", "data": [
                {"id": m, "object": "model", "owned_by": "salutedevices", "type": "chat"} for m in MODEL_IDS]}).encode()
        if request.path != CHAT_PATH or not isinstance(request.json, dict):
            return "application/json", json.dumps({"status": 404, "message": "Not found"}).encode()
        users = [m.get("content") for m in request.json.get("messages") or [] if m.get("role") == "user"]
        content = "Echo: %s" % (users[-1] if users else "")
        if request.json.get("stream") is True:
            return "text/event-stream", event_stream(content)
        return "application/json", json.dumps(chat_completion(content)).encode("utf-8")

    def _answer(self, sock: socket.socket, request: Request, answer: Answer) -> None:
        content_type, body = self._good_answer(request, answer.status)
        if answer.body is not None:
            body = answer.body
        scripted = {line.partition(":")[0].strip().lower() for line in answer.header_lines}
        lines = ["HTTP/1.1 %d %s" % (answer.status, REASONS.get(answer.status, "Status"))]
        if "content-type" not in scripted:
            lines.append("Content-Type: %s; charset=utf-8" % content_type)
        if "x-request-id" not in scripted:
            lines.append("X-Request-ID: %s" % uuid.uuid4())
        lines.append("Content-Length: %d" % (len(body) if answer.content_length is None else answer.content_length))
        lines.extend(answer.header_lines)
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        if answer.separately:
            sock.sendall(data)
            if answer.extra_after is not None:
                answer.extra_after.wait(30)
            if answer.extra:
                sock.sendall(answer.extra)
        else:
            sock.sendall(data + answer.extra)
        answer.sent.set()
