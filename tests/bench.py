#!/usr/bin/env python3
"""Benchmark: gigaproxy against a fast fake GigaChat, side by side with the fake alone.

Run from the repository root (standard library only, Python 3.8+)::

    python tests/bench.py              # full run: ~2.5 minutes on 2 cores
    python tests/bench.py --quick      # a ~20 s smoke run
    python tests/bench.py --profile    # cProfile of gigaproxy under load, top 30 functions
    python tests/bench.py --workers 2  # plus a row for gigaproxy --workers 2 (needs 3+ cores to mean much)
    python tests/bench.py --compare-rev dbd94d9       # gigaproxy.py vs. the file as of commit dbd94d9
    python tests/bench.py --compare old.py --proxy new.py   # any two files (default --proxy: ./gigaproxy.py)

The name does not start with ``test_``: pytest never collects this file.

**Linux-only parts** (marked "Linux" below and in the code): CPU time, RSS and thread
counts (/proc and the per-process CPU clock), CPU pinning (sched_setaffinity), children
dying with this script (prctl PR_SET_PDEATHSIG) and ``--spin``.  On other POSIX systems
the run works and those figures print as n/a; Windows is not supported (select on pipes).

Processes (all on 127.0.0.1, all started and stopped by this script)
----------------------------------------------------------------------
* **fake GigaChat** (``--_role fake``): a minimal thread-per-connection raw-socket HTTP/1.1
  server, plain HTTP and HTTPS (tests/certs/server.pem, CA tests/certs/ca.pem) on two
  ports, keep-alive, TCP_NODELAY, pre-built answers: ``POST /api/v2/oauth`` (token),
  ``POST /api/v1/chat/completions`` (a fixed small JSON answer, or with ``"stream":true``
  a chunked SSE stream in GigaChat's format, gigachat-api.md §6: ``--chunks`` content
  events ``--chunk-interval-ms`` apart, then the finish event with usage and
  ``data: [DONE]``), ``GET /api/v1/models``.  It is not tests/fake_gigachat.py: that one
  validates every request and is far too slow to stay out of the measurement.
  Every content delta carries ``w<i>:<time.monotonic_ns()>`` taken just before the send,
  so the client can tell how long each chunk took to reach it (one machine, one clock).
* **gigaproxy**: ``python gigaproxy.py --port 0`` (a copy of the repository's file, or of
  ``--proxy PATH``, taken when the run starts into a temporary directory of its own with
  russian_trusted_root_ca.pem beside it, so that edits made meanwhile do not mix
  versions; its sha256 is printed) with GIGACHAT_CREDENTIALS,
  GIGACHAT_BASE_URL / GIGACHAT_AUTH_URL at the fake and GIGACHAT_CA_BUNDLE_FILE for
  HTTPS; its port is read from the "listening on http://127.0.0.1:<port>/v1" log line
  (its log goes to a temporary file, at its default level INFO: the access log is part
  of the cost).  A fresh proxy is started for every repetition.
* **load generator** (``--_role loadgen``): a separate process; one thread and one
  keep-alive raw-socket connection per simulated client; the workers connect and make
  one unmeasured warm-up request, then start together and run for ``--duration``
  seconds (or a request count).  The orchestrating process only starts things, sends
  the load generator one JSON command per cell and prints the results.

Pinning (Linux): with 2+ cores the proxy runs on the first allowed core, and the fake,
the load generator and this script on the others (``os.sched_setaffinity``); what was
done is printed.  With ``--workers N`` > 1 the multi-process proxy is not pinned.
``--spin`` (Linux) adds a SCHED_IDLE busy loop on every core: it takes no CPU from the
measured processes but keeps virtual CPUs from halting between requests, which on some
hypervisors adds milliseconds of wake-up latency to every cross-process hop.

What is measured, per cell (non-stream c=1, 8, 32; stream c=1, 16)
------------------------------------------------------------------
Each cell runs once through the proxy and once straight at the fake (the *baseline*,
same scheme as the proxy's upstream: with ``--tls`` the client speaks TLS to the fake),
interleaved, in ``--reps`` repetitions; the table shows medians over repetitions, and
"added" figures are the median of the per-repetition differences proxy - baseline.

* req/s: completed requests / wall time of the measuring window.
* latency p50 / p99: request sent -> whole answer read (non-stream) or stream end.
* TTFB (streams): request sent -> the first ``data:`` event read.
* chunk delay: the time a chunk was read by the client minus the fake's stamp in it
  (the per-chunk delay the proxy adds: buffering, Nagle, translation).
* CPU per request / per stream (Linux): user+system CPU time of the proxy process
  (its whole process tree with --workers) over the window, read from the process's
  CPU-time clock (ns; /proc/<pid>/stat ticks as a fallback), divided by the requests
  completed.  The same is read for the fake and the load generator, and
  "gen core" is (fake + load generator CPU) / wall time: near 100 % would mean the load
  side, not the proxy, was the bottleneck.  It is printed for every cell.
* RSS (Linux, /proc/<pid>/status VmRSS): idle (0.5 s after the first answered request),
  the peak under 32 concurrent streams, and threads/RSS around a 20,000-request run
  (16 clients, each reconnecting every 100 requests so threads come and go).
* cold start: ``Popen`` -> the first chat completion answered (token fetch included),
  next to the start-up time of a bare ``python -c pass``.  Cold start and idle RSS are
  measured twice: ``python gigaproxy.py`` (Python compiles the file at every start) and
  ``python -m gigaproxy`` (the bytecode cached in __pycache__ by an earlier run; the
  script compiles it first with py_compile, as a first run would).  Next to them, the
  RSS of a bare Python TLS client (the modules gigaproxy cannot do without and one TLS
  connection): the floor any Python proxy starts from.
* kernel share: the proxy's system time / its CPU time in a cell (/proc/<pid>/stat).
* conns to fake: connections the fake accepted during a cell; through the proxy these
  are the upstream connections (TLS handshakes) gigaproxy opened, i.e. how well its
  keep-alive pool works.
* wake-up tax (Linux): the CPU a fixed bit of Python work costs back to back vs. once
  every 5 ms on the proxy's core; on virtual machines the second is several times the
  first, and every stream chunk pays it (the fake too).

Comparing two files (``--compare PATH``, or ``--compare-rev REV`` for ``git show
REV:gigaproxy.py``): the second file is copied and run exactly like the first (own
temporary directory and CA bundle beside it, sha256 printed), and every repetition runs
both: both start (cold start, idle RSS, ``-m``; which one starts first alternates), both
stay up on the proxy's core, and each cell runs three times, through the file under test
("new"), through the other (labelled REV, or "other") and straight at the fake (one
baseline shared by both); the order of the three goes through all six permutations from
cell to cell and repetition to repetition, so neither proxy always goes first or right
after the baseline.  The report has a row per file, plus a "new vs other" row in the
summary table and in every cell of the per-cell table, and a one-line summary: req/s as %
of the other's and CPU per request/stream as a ratio (the median over repetitions of
each repetition's ratio), added latency, TTFB, chunk delay, cold start and idle RSS as
differences new - other (likewise the median of per-repetition differences).  The
stream-32 peak, the soak run and ``--workers`` run for each file, one after the other;
``--profile`` profiles each file (``<prefix>.<label>.nonstream.prof`` ...).  A full run
takes about 4 minutes on 2 cores (``--quick``: ~35 s).  Without a second file the output
is what it was.

``--profile`` runs gigaproxy under cProfile instead, for a non-stream c=8 and a stream
c=16 cell (one proxy each), stops it with SIGINT so that the profile is written, and
prints the top 30 functions by cumulative and by own time.  ``python -m cProfile``
only sees the main thread (before 3.12), while gigaproxy works in one thread per
connection, so the proxy is started through this script (``--_role profiled-proxy``):
it imports gigaproxy, gives every thread its own ``cProfile.Profile(time.thread_time)``
(CPU time, not wall time, so waiting in recv() or for the GIL is not counted), runs
``gigaproxy.main(["--port", "0", ...])`` and merges all threads into one .prof file.
On 3.12+ one profiler covers all threads (sys.monitoring), with wall-clock timing.
"""

import argparse
import base64
import json
import os
import py_compile
import re
import select
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GIGAPROXY = os.path.join(REPO, "gigaproxy.py")  # copied to a temporary directory for each run
BUNDLED_CA = os.path.join(REPO, "russian_trusted_root_ca.pem")
CERTS = os.path.join(HERE, "certs")
CA_FILE = os.path.join(CERTS, "ca.pem")
SERVER_CERT = os.path.join(CERTS, "server.pem")
SERVER_KEY = os.path.join(CERTS, "server.key")
IS_LINUX = sys.platform.startswith("linux")
HOST = "127.0.0.1"
CREDENTIALS = base64.b64encode(b"bench-client:bench-secret").decode("ascii")
TOKEN = "bench-access-token"
MODEL = "GigaChat-2"

STAMP_RE = re.compile(rb"w\d+:(\d+) ")
LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")


# ==== /proc readers (Linux-only; they return None elsewhere) ==================================

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, ...]."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()


def proc_tree(pid, tree):
    """``pid``, plus its descendants when ``tree`` (a multi-process proxy)."""
    if not tree:
        return [pid]
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(_stat_fields(int(name))[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def proc_cpu(pid, tree=False):
    """CPU seconds (user + system, every thread, living or ended) of a process (tree).

    Read from the process's CPU-time clock, in nanoseconds: clock_gettime() on the
    clock id clock_getcpuclockid(pid) would return, ((~pid) << 3) | CPUCLOCK_SCHED (2),
    a Linux ABI; /proc/<pid>/stat (utime + stime, 10 ms ticks) if that fails.
    """
    if not IS_LINUX or not pid:
        return None
    total = 0.0
    for p in proc_tree(pid, tree):
        try:
            total += time.clock_gettime_ns(((~p) << 3) | 2) / 1e9
            continue
        except (OSError, OverflowError, AttributeError):
            pass
        try:
            fields = _stat_fields(p)
            total += (int(fields[11]) + int(fields[12])) / float(CLK_TCK)  # utime, stime: fields 14, 15
        except (OSError, ValueError, IndexError):
            pass
    return total


def proc_ticks(pid):
    """(user, system) CPU clock ticks of a process so far (Linux /proc/<pid>/stat), or None."""
    if not IS_LINUX or not pid:
        return None
    try:
        fields = _stat_fields(pid)
        return int(fields[11]), int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def proc_mem(pid, tree=False):
    """(VmRSS in MiB, thread count) of a process (tree), or (None, None)."""
    if not IS_LINUX or not pid:
        return None, None
    rss_kb, threads = 0, 0
    for p in proc_tree(pid, tree):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss_kb += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return rss_kb / 1024.0, threads


# ==== HTTP client (load generator and cold-start probe) ========================================

def http_request_bytes(path, body, port, extra_headers=""):
    return ("POST %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: gigaproxy-bench\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (path, HOST, port, len(body), extra_headers)).encode("ascii") + body


class Client:
    """One keep-alive connection; ``request()`` returns timings in ns from the send."""

    def __init__(self, port, tls_context=None, timeout=30.0):
        sock = socket.create_connection((HOST, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_context is not None:
            sock = tls_context.wrap_socket(sock, server_hostname=HOST)
        self.sock = sock
        self.buf = b""
        self.t_last = 0  # monotonic_ns when the last recv() returned
        self.open = True

    def close(self):
        self.open = False
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv(self):
        data = self.sock.recv(262144)
        self.t_last = time.monotonic_ns()
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data

    def request(self, raw, expect_chunks=0):
        """Send ``raw``; return (latency, ttfb or None, [chunk delays]) in ns.

        ``expect_chunks`` > 0: the answer must be a stream ending in [DONE] with that
        many stamped content chunks.
        """
        t0 = time.monotonic_ns()
        self.sock.sendall(raw)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._recv()
        head, self.buf = self.buf[:end], self.buf[end + 4:]
        status = int(head[9:12])
        lower = head.lower()
        ttfb, delays, done = None, [], False
        if b"\r\ntransfer-encoding: chunked" in lower:
            sse = b""
            while True:
                i = self.buf.find(b"\r\n")
                while i < 0:
                    self._recv()
                    i = self.buf.find(b"\r\n")
                size = int(self.buf[:i].split(b";")[0], 16)
                if size == 0:
                    while len(self.buf) < i + 4:  # the CRLF ending the (empty) trailer
                        self._recv()
                    self.buf = self.buf[i + 4:]
                    break
                need = i + 2 + size + 2
                while len(self.buf) < need:
                    self._recv()
                t = self.t_last
                sse += self.buf[i + 2:i + 2 + size]
                self.buf = self.buf[need:]
                while True:
                    j = sse.find(b"\n\n")
                    if j < 0:
                        break
                    event, sse = sse[:j], sse[j + 2:]
                    if event.startswith(b"data:"):
                        if ttfb is None:
                            ttfb = t - t0
                        if b"[DONE]" in event:
                            done = True
                        m = STAMP_RE.search(event)
                        if m:
                            delays.append(t - int(m.group(1)))
            body = b""
        else:
            m = re.search(rb"\r\ncontent-length: *(\d+)", lower)
            length = int(m.group(1)) if m else 0
            while len(self.buf) < length:
                self._recv()
            body, self.buf = self.buf[:length], self.buf[length:]
        latency = time.monotonic_ns() - t0
        if b"\r\nconnection: close" in lower:
            self.close()
        if status != 200:
            raise RuntimeError("HTTP %d: %r" % (status, body[:300]))
        if expect_chunks:
            if not done or len(delays) != expect_chunks:
                raise RuntimeError("incomplete stream: %d of %d chunks, [DONE] %s" % (len(delays), expect_chunks, done))
        elif b'"content"' not in body:
            raise RuntimeError("answer without content: %r" % body[:300])
        return latency, ttfb, delays


def client_tls_context():
    ctx = ssl.create_default_context(cafile=CA_FILE)
    return ctx


def chat_body(stream, gigachat_format):
    """A small chat request: OpenAI's shape for the proxy, GigaChat's for the fake."""
    body = {"model": MODEL, "messages": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "Count from one to fifty, one number per line."}]}
    if stream:
        body["stream"] = True
    if gigachat_format:
        body["update_interval"] = 0
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


# ==== role: fake GigaChat =======================================================================

def run_fake(argv):
    """A minimal, fast GigaChat: thread per connection, pre-built answers, stamped stream chunks."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=50)
    ap.add_argument("--interval-ms", type=float, default=5.0)
    args = ap.parse_args(argv)
    interval_ns = int(args.interval_ms * 1e6)
    created = int(time.time())
    model = "GigaChat-2:2.0.28.2"

    def answer(body, content_type="application/json", status="200 OK"):
        return (("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nx-request-id: bench-request\r\n\r\n"
                 % (status, content_type, len(body))).encode("ascii") + body)

    chat_answer = answer(json.dumps({
        "choices": [{"message": {"content": "Hello! How can I help you today?", "role": "assistant"},
                     "index": 0, "finish_reason": "stop"}],
        "created": created, "model": model, "object": "chat.completion",
        "usage": {"prompt_tokens": 17, "completion_tokens": 9, "total_tokens": 26, "precached_prompt_tokens": 0},
    }, separators=(",", ":")).encode("utf-8"))
    models_answer = answer(json.dumps({"object": "list", "data": [
        {"id": m, "object": "model", "owned_by": "salutedevices", "type": "chat"}
        for m in ("GigaChat-2", "GigaChat-2-Pro", "GigaChat-2-Max")]}).encode("utf-8"))
    unauthorized = answer(b'{"status":401,"message":"Unauthorized"}', status="401 Unauthorized")
    not_found = answer(b'{"status":404,"message":"Not found"}', status="404 Not Found")
    stream_head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
                   b"x-request-id: bench-request\r\n\r\n")
    first_event = ('data: {"choices":[{"delta":{"content":"w%%d:%%d lorem ipsum dolor","role":"assistant"},'
                   '"index":0}],"created":%d,"model":"%s","object":"chat.completion"}\n\n' % (created, model))
    next_event = ('data: {"choices":[{"delta":{"content":"w%%d:%%d lorem ipsum dolor"},"index":0}],'
                  '"created":%d,"model":"%s","object":"chat.completion"}\n\n' % (created, model))
    last_event = ('data: {"choices":[{"delta":{"content":""},"index":0,"finish_reason":"stop"}],"created":%d,'
                  '"model":"%s","object":"chat.completion","usage":{"prompt_tokens":17,"completion_tokens":%d,'
                  '"total_tokens":%d,"precached_prompt_tokens":0}}\n\n'
                  % (created, model, args.chunks * 4, args.chunks * 4 + 17)).encode("ascii")

    def chunk(data):
        return b"%x\r\n%s\r\n" % (len(data), data)

    stream_tail = chunk(last_event) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"

    def stream(sock):
        start = time.monotonic_ns()
        sock.sendall(stream_head + chunk((first_event % (0, time.monotonic_ns())).encode("ascii")))
        for i in range(1, args.chunks + 1):
            delay = start + i * interval_ns - time.monotonic_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            if i == args.chunks:
                sock.sendall(stream_tail)
            else:
                sock.sendall(chunk((next_event % (i, time.monotonic_ns())).encode("ascii")))

    def serve(sock, tls_context):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(120)
            if tls_context is not None:
                sock = tls_context.wrap_socket(sock, server_side=True)
            buf = b""
            while True:
                end = buf.find(b"\r\n\r\n")
                while end < 0:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                    end = buf.find(b"\r\n\r\n")
                head, buf = buf[:end], buf[end + 4:]
                lower = head.lower()
                m = re.search(rb"\r\ncontent-length: *(\d+)", lower)
                length = int(m.group(1)) if m else 0
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                method, path = head.split(b" ", 2)[:2]
                if path == b"/api/v2/oauth" and method == b"POST":
                    token = json.dumps({"access_token": TOKEN, "expires_at": int((time.time() + 1800) * 1000)})
                    sock.sendall(answer(token.encode("ascii")))
                elif b"\r\nauthorization: bearer " not in lower:
                    sock.sendall(unauthorized)
                elif path == b"/api/v1/chat/completions" and method == b"POST":
                    if b'"stream":true' in body:
                        stream(sock)
                    else:
                        sock.sendall(chat_answer)
                elif path == b"/api/v1/models" and method == b"GET":
                    sock.sendall(models_answer)
                else:
                    sock.sendall(not_found)
                if b"\r\nconnection: close" in lower:
                    return
        except (OSError, ValueError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    accepted = [0]
    accepted_lock = threading.Lock()  # two accept threads (HTTP and HTTPS) count

    def accept_loop(listener, tls_context):
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            with accepted_lock:
                accepted[0] += 1
            threading.Thread(target=serve, args=(sock, tls_context), daemon=True).start()

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(SERVER_CERT, SERVER_KEY)
    ports = []
    for context in (None, tls):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, 0))
        listener.listen(1024)
        ports.append(listener.getsockname()[1])
        threading.Thread(target=accept_loop, args=(listener, context), daemon=True).start()
    print("FAKE http=%d https=%d" % tuple(ports), flush=True)
    for line in sys.stdin:  # until the orchestrator closes our stdin (or dies)
        if line.strip() == "stats":
            print("accepted=%d" % accepted[0], flush=True)
    return 0


# ==== role: load generator ======================================================================

def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def run_cell(cmd):
    """One measuring window; see the module docstring.  Returns a dict of results."""
    port, conc = cmd["port"], cmd["conc"]
    raw = http_request_bytes(cmd["path"], cmd["body"].encode("utf-8"), port, cmd.get("headers", ""))
    expect = cmd["chunks"] if cmd["stream"] else 0
    ctx = client_tls_context() if cmd["tls"] else None
    duration, total = cmd.get("duration"), cmd.get("requests")
    reconnect_every = cmd.get("reconnect_every") or 0
    watch, tree, fake_pid = cmd.get("proxy_pid"), cmd.get("tree", False), cmd.get("fake_pid")
    barrier = threading.Barrier(conc + 1, timeout=60)
    go = threading.Event()
    window = {}
    results = []
    lock = threading.Lock()

    def worker(index):
        res = {"lat": [], "ttfb": [], "delay": [], "n": 0, "errors": 0, "error": None}
        client = None
        try:
            client = Client(port, ctx)
            client.request(raw, expect)  # warm-up, not measured
        except Exception as exc:  # noqa: BLE001 - reported in the results
            res["errors"] += 1
            res["error"] = repr(exc)
            client = None
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        go.wait()
        quota = (total // conc + (1 if index < total % conc else 0)) if total else None
        on_connection = 0
        while True:
            if quota is not None:
                if res["n"] + res["errors"] >= quota:
                    break
            elif time.monotonic() >= window["end"]:
                break
            try:
                if client is None or not client.open or (reconnect_every and on_connection >= reconnect_every):
                    if client is not None:
                        client.close()
                    client = Client(port, ctx)
                    on_connection = 0
                latency, ttfb, delays = client.request(raw, expect)
            except Exception as exc:  # noqa: BLE001 - counted as an error
                res["errors"] += 1
                res["error"] = res["error"] or repr(exc)
                if client is not None:
                    client.close()
                client = None
                if res["errors"] > 50:
                    break
                time.sleep(0.01)
                continue
            on_connection += 1
            res["n"] += 1
            res["lat"].append(latency)
            if ttfb is not None:
                res["ttfb"].append(ttfb)
            res["delay"].extend(delays)
        finished = time.monotonic()
        if client is not None:
            client.close()
        with lock:
            window["last"] = max(window.get("last", finished), finished)
            results.append(res)

    sampled = {"rss": None, "threads": None}
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.wait(0.05):
            rss, threads = proc_mem(watch, tree)
            if rss is not None:
                sampled["rss"] = max(sampled["rss"] or 0, rss)
                sampled["threads"] = max(sampled["threads"] or 0, threads)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(conc)]
    for t in threads:
        t.start()
    barrier.wait()
    proxy_cpu0, fake_cpu0, own0 = proc_cpu(watch, tree), proc_cpu(fake_pid), os.times()
    start = time.monotonic()
    window["end"] = start + (duration or 1e9)
    sampling = None
    if cmd.get("sample") and watch:
        sampling = threading.Thread(target=sampler, daemon=True)
        sampling.start()
    go.set()
    for t in threads:
        t.join(max(5.0, (duration or 0) + 120.0))
    elapsed = window.get("last", time.monotonic()) - start
    proxy_cpu1, fake_cpu1, own1 = proc_cpu(watch, tree), proc_cpu(fake_pid), os.times()
    stop_sampling.set()
    if sampling is not None:
        sampling.join()

    lat = sorted(x for r in results for x in r["lat"])
    ttfb = sorted(x for r in results for x in r["ttfb"])
    delay = sorted(x for r in results for x in r["delay"])
    n = sum(r["n"] for r in results)
    errors = sum(r["errors"] for r in results) + (conc - len(results))
    ms = (lambda v: None if v is None else v / 1e6)
    return {
        "n": n,
        "errors": errors,
        "error": next((r["error"] for r in results if r["error"]), None),
        "elapsed": elapsed,
        "rps": n / elapsed if elapsed > 0 else None,
        "p50": ms(percentile(lat, 0.5)), "p99": ms(percentile(lat, 0.99)),
        "ttfb50": ms(percentile(ttfb, 0.5)), "ttfb99": ms(percentile(ttfb, 0.99)),
        "delay50": ms(percentile(delay, 0.5)), "delay99": ms(percentile(delay, 0.99)),
        "delaymax": ms(delay[-1] if delay else None),
        "proxy_cpu": None if proxy_cpu0 is None else proxy_cpu1 - proxy_cpu0,
        "fake_cpu": None if fake_cpu0 is None else fake_cpu1 - fake_cpu0,
        "gen_cpu": (own1[0] + own1[1]) - (own0[0] + own0[1]),
        "rss_max": sampled["rss"], "threads_max": sampled["threads"],
    }


def run_loadgen(argv):
    """Serve cells: one JSON command per stdin line, one JSON result per stdout line."""
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd.get("op") == "quit":
            break
        try:
            reply = run_cell(cmd)
        except Exception as exc:  # noqa: BLE001 - the orchestrator reports it
            reply = {"fatal": repr(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


# ==== role: gigaproxy under cProfile ===========================================================

def run_profiled_proxy(argv):
    """``gigaproxy.main(argv)`` with every thread profiled; the merged stats go to --out."""
    import cProfile
    import pstats
    out = argv[argv.index("--out") + 1]
    proxy_argv = argv[argv.index("--") + 1:]
    sys.path.insert(0, argv[argv.index("--dir") + 1])
    import gigaproxy
    profiles = []
    lock = threading.Lock()
    if sys.version_info < (3, 12):
        # A profiler hooks only the thread that enabled it: one per thread, CPU-time clock.
        original_run = threading.Thread.run

        def profiled_run(self):
            profile = cProfile.Profile(time.thread_time)
            with lock:
                profiles.append(profile)
            profile.enable()
            try:
                original_run(self)
            finally:
                profile.disable()

        threading.Thread.run = profiled_run
        main_profile = cProfile.Profile(time.thread_time)
    else:
        # sys.monitoring: one profiler sees every thread and a second one cannot start.
        main_profile = cProfile.Profile()
    profiles.insert(0, main_profile)
    main_profile.enable()
    try:
        code = gigaproxy.main(proxy_argv)
    finally:
        main_profile.disable()
        time.sleep(0.2)  # let connection threads that are ending record their last calls
        stats = None
        with lock:
            for profile in profiles:
                profile.create_stats()
                if not profile.stats:
                    continue
                if stats is None:
                    stats = pstats.Stats(profile)
                else:
                    stats.add(profile)
        if stats is not None:
            stats.dump_stats(out)
    return code


# ==== orchestrator ==============================================================================

class LineReader:
    """Lines from a child's stdout pipe, with a timeout (select on the raw fd)."""

    def __init__(self, proc, what):
        self.proc, self.what, self.fd, self.buf = proc, what, proc.stdout.fileno(), b""

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("%s gave no answer within %.0f s" % (self.what, timeout))
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                data = os.read(self.fd, 65536)
                if not data:
                    raise RuntimeError("%s exited (code %s)" % (self.what, self.proc.poll()))
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8")


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def git_show(rev, path):
    """``git show REV:PATH`` in the repository, as bytes; None if git or the file is missing."""
    try:
        out = subprocess.run(["git", "show", "%s:%s" % (rev, path)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=60)
    except OSError:
        return None
    return out.stdout if out.returncode == 0 else None


def proxy_sources(args):
    """The gigaproxy files of this run: [(label, where from, gigaproxy.py bytes, CA bundle bytes or None)].

    The first is the file under test (``--proxy``, default the repository's gigaproxy.py),
    labelled "new"; with ``--compare PATH`` or ``--compare-rev REV`` a second one follows.
    Each comes with the russian_trusted_root_ca.pem beside it (at that revision for
    ``--compare-rev``), or the repository's if there is none.  Everything is read now,
    before anything starts, so that edits made during the run change nothing.
    """
    bundled = read_file(BUNDLED_CA) if os.path.exists(BUNDLED_CA) else None

    def beside(path):
        ca = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(BUNDLED_CA))
        return read_file(ca) if os.path.exists(ca) else bundled

    def from_path(label, path):
        if not os.path.isfile(path):
            raise SystemExit("bench.py: no such file: %s" % path)
        what = "gigaproxy.py (working tree)" if os.path.abspath(path) == GIGAPROXY else os.path.abspath(path)
        return label, what, read_file(path), beside(path)

    sources = [from_path("new", args.proxy or GIGAPROXY)]
    if args.compare:
        sources.append(from_path("other", args.compare))
    elif args.compare_rev:
        data = git_show(args.compare_rev, "gigaproxy.py")
        if data is None:
            raise SystemExit("bench.py: 'git show %s:gigaproxy.py' failed" % args.compare_rev)
        label = args.compare_rev if args.compare_rev != "new" else "other"
        sources.append((label, "git show %s:gigaproxy.py" % args.compare_rev, data,
                        git_show(args.compare_rev, os.path.basename(BUNDLED_CA)) or bundled))
    return sources


class Bench:
    def __init__(self, args, sources):
        self.args = args
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="gigaproxy-bench-")
        # One run measures one version of each file, even if it is being edited meanwhile:
        # every file runs from its own copy (with the CA bundle beside it, as in the repository).
        self.subjects = []
        compare = len(sources) > 1
        for index, (label, what, data, ca) in enumerate(sources):
            script_dir = os.path.join(self.tmp, "snapshot" if index == 0 else "snapshot-%d" % index)
            os.mkdir(script_dir)
            script = os.path.join(script_dir, "gigaproxy.py")
            with open(script, "wb") as f:
                f.write(data)
            if ca is not None:
                with open(os.path.join(script_dir, os.path.basename(BUNDLED_CA)), "wb") as f:
                    f.write(ca)
            self.subjects.append({
                "label": label, "what": what, "dir": script_dir, "script": script,
                "fingerprint": gigaproxy_fingerprint(script),
                # what progress lines and the per-cell table call it: "proxy" when there is one
                "name": label if compare else "proxy"})
        self.script_dir, self.script = self.subjects[0]["dir"], self.subjects[0]["script"]
        self.fingerprint = self.subjects[0]["fingerprint"]
        self.proxy_core, self.other_cores = None, None
        self.libc = None
        self.proxy_count = 0
        self.proxies = []  # started gigaproxy instances (dicts from start_proxy)
        self.notes = []

    # -- processes --------------------------------------------------------------------------

    def setup_cpus(self):
        """Linux: the proxy on the first allowed core, everything else on the others."""
        if not hasattr(os, "sched_getaffinity"):
            self.say("CPU pinning: not available on this platform (Linux-only); nothing pinned")
            return
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            self.say("CPU pinning: only %d core available; nothing pinned (proxy and load share it)" % len(cores))
            return
        self.proxy_core, self.other_cores = {cores[0]}, set(cores[1:])
        os.sched_setaffinity(0, self.other_cores)  # this process, hence the fake and the load generator
        self.say("CPU pinning: gigaproxy on CPU %d; fake GigaChat, load generator and this script on CPU %s"
                 % (cores[0], ",".join(str(c) for c in cores[1:])))
        try:
            import ctypes
            self.libc = ctypes.CDLL(None, use_errno=True)
        except (OSError, ImportError):
            self.libc = None

    def start_spinners(self):
        """--spin (Linux): a SCHED_IDLE busy loop on every allowed core.

        Idle-class tasks run only when nothing else wants the core, so they take no
        time from the measured processes; they keep a virtual CPU from halting between
        requests, which on some hypervisors adds milliseconds of wake-up latency that
        has nothing to do with the code under test.
        """
        if not (IS_LINUX and hasattr(os, "sched_setscheduler")):
            self.say("--spin: needs Linux (SCHED_IDLE); ignored")
            return
        cores = sorted(os.sched_getaffinity(0) | (self.proxy_core or set()))
        code = ("import os\nos.sched_setaffinity(0, {%d})\n"
                "os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True: pass\n")
        for core in cores:
            self.spawn([sys.executable, "-c", code % core], stdin=subprocess.DEVNULL)
        self.say("--spin: a SCHED_IDLE busy loop on CPU %s keeps the cores from idling"
                 % ",".join(str(c) for c in cores))

    def wakeup_tax(self):
        """CPU cost of the same small piece of Python work run back to back vs. once every 5 ms.

        Streams (and requests at c=1) wake the proxy for a little work many times a
        second; on virtual machines every such wake-up can cost several times the work
        itself (cold caches, frequency, hypervisor exits).  This puts a number on it for
        the proxy's core, so that CPU per chunk can be read against what the machine
        charges any process for the same pattern.
        """
        code = ("import json, time\n"
                "ev = b'{\"choices\":[{\"delta\":{\"content\":\"lorem ipsum\"},\"index\":0}],\"created\":1,"
                "\"model\":\"GigaChat-2\",\"object\":\"chat.completion\"}'\n"
                "def work():\n"
                "    for _ in range(4):\n"
                "        json.dumps(json.loads(ev))\n"
                "out = []\n"
                "for gap in (0, 0.005):\n"
                "    c0 = time.process_time()\n"
                "    for i in range(200):\n"
                "        work()\n"
                "        if gap: time.sleep(gap)\n"
                "    out.append((time.process_time() - c0) / 200 * 1e6)\n"
                "print('%.1f %.1f' % tuple(out))\n")
        proc = self.spawn([sys.executable, "-c", code], cores=self.proxy_core, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE)
        out = proc.communicate(timeout=60)[0].decode("ascii", "replace").split()
        self.procs.remove(proc)
        try:
            return float(out[0]), float(out[1])
        except (IndexError, ValueError):
            return None, None

    def python_start(self):
        """Seconds from Popen to the exit of a bare ``python -c pass`` on the proxy's core."""
        t0 = time.monotonic()
        proc = self.spawn([sys.executable, "-c", "pass"], cores=self.proxy_core, cwd=self.tmp,
                          env=self.proxy_env(), stdin=subprocess.DEVNULL)
        proc.wait(30)
        self.procs.remove(proc)
        return time.monotonic() - t0

    def tls_floor_rss(self):
        """VmRSS (MiB) of a minimal Python TLS client: what any Python proxy holds before its own code.

        ``python -c``: the modules gigaproxy cannot do without (ssl, socket, threading,
        json, logging, argparse) and one verified TLS connection to the fake, then idle.
        """
        _, port, _ = self.upstream()
        code = ("import argparse, json, logging, socket, ssl, sys, threading\n"
                "c = ssl.create_default_context(cafile=%r)\n"
                "s = socket.create_connection(('127.0.0.1', %d))\n"
                "s = c.wrap_socket(s, server_hostname='127.0.0.1') if %r else s\n"
                "print('ready', flush=True)\n"
                "sys.stdin.read()\n" % (CA_FILE, port, self.args.tls))
        proc = self.spawn([sys.executable, "-c", code], cores=self.proxy_core, cwd=self.tmp, env=self.proxy_env(),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            proc.stdout.readline()
            time.sleep(0.2)
            return proc_mem(proc.pid)[0]
        finally:
            proc.stdin.close()
            proc.wait(10)
            self.procs.remove(proc)

    def say(self, text):
        print(text, flush=True)
        self.notes.append(text)

    def _preexec(self, cores):
        libc = self.libc

        def preexec():
            # Background jobs inherit an ignored SIGINT; the children must stop on ours.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if cores is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(0, cores)  # Linux
            if libc is not None:
                libc.prctl(1, signal.SIGKILL)  # Linux: PR_SET_PDEATHSIG, die with this script
        return preexec if os.name == "posix" else None

    def spawn(self, argv, cores=None, **kw):
        proc = subprocess.Popen(argv, preexec_fn=self._preexec(cores), **kw)
        self.procs.append(proc)
        return proc

    def start_helpers(self):
        me = os.path.abspath(__file__)
        self.fake = self.spawn([sys.executable, me, "--_role", "fake", "--chunks", str(self.args.chunks),
                                "--interval-ms", str(self.args.chunk_interval_ms)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.fake_out = LineReader(self.fake, "the fake GigaChat")
        line = self.fake_out.readline(15)
        m = re.match(r"FAKE http=(\d+) https=(\d+)", line)
        if not m:
            raise RuntimeError("unexpected output from the fake: %r" % line)
        self.fake_http, self.fake_https = int(m.group(1)), int(m.group(2))
        self.loadgen = self.spawn([sys.executable, me, "--_role", "loadgen"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.loadgen_out = LineReader(self.loadgen, "the load generator")

    def fake_accepted(self):
        """Connections the fake has accepted so far (for the proxy: upstream connections opened)."""
        self.fake.stdin.write(b"stats\n")
        self.fake.stdin.flush()
        return int(self.fake_out.readline(10).split("=")[1])

    def upstream(self):
        tls = self.args.tls
        return tls, (self.fake_https if tls else self.fake_http), ("https" if tls else "http")

    def proxy_env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIGACHAT_", "GIGAPROXY_")) and k.lower() not in
               ("https_proxy", "http_proxy", "all_proxy", "no_proxy")}
        tls, port, scheme = self.upstream()
        env["GIGACHAT_CREDENTIALS"] = CREDENTIALS
        env["GIGACHAT_BASE_URL"] = "%s://%s:%d/api/v1" % (scheme, HOST, port)
        env["GIGACHAT_AUTH_URL"] = "%s://%s:%d/api/v2/oauth" % (scheme, HOST, port)
        if tls:
            env["GIGACHAT_CA_BUNDLE_FILE"] = CA_FILE
        if self.args.proxy_log_level:
            env["GIGAPROXY_LOG_LEVEL"] = self.args.proxy_log_level
        return env

    def start_proxy(self, subject=None, workers=None, profile_out=None, module=False):
        """Start gigaproxy; returns a dict with the process, port and cold-start timings.

        ``subject``: which copy (one of ``self.subjects``; default the file under test).
        ``module``: as ``python -m gigaproxy`` (found through PYTHONPATH), which runs the
        bytecode Python cached in __pycache__ instead of compiling the file at every start.
        """
        subject = subject or self.subjects[0]
        self.proxy_count += 1
        log_path = os.path.join(self.tmp, "proxy-%d.log" % self.proxy_count)
        argv = [sys.executable, subject["script"], "--port", "0"]
        env = self.proxy_env()
        if module:
            argv = [sys.executable, "-m", "gigaproxy", "--port", "0"]
            env["PYTHONPATH"] = subject["dir"]
        if profile_out:
            argv = [sys.executable, os.path.abspath(__file__), "--_role", "profiled-proxy", "--out", profile_out,
                    "--dir", subject["dir"], "--", "--port", "0"]
        if workers:
            argv += ["--workers", str(workers)]
        cores = self.proxy_core if not (workers and workers > 1) else None
        log_file = open(log_path, "wb")
        t0 = time.monotonic()
        proc = self.spawn(argv, cores=cores, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                          cwd=self.tmp, env=env)
        log_file.close()
        proxy = {"proc": proc, "pid": proc.pid, "tree": bool(workers and workers > 1), "name": subject["name"]}
        self.proxies.append(proxy)  # from now on cleanup() stops it, workers included
        port = None
        with open(log_path, "rb") as log:
            seen = b""
            while port is None:
                seen += log.read()
                m = LISTEN_RE.search(seen.decode("utf-8", "replace"))
                if m:
                    port = int(m.group(1))
                    break
                if proc.poll() is not None or time.monotonic() - t0 > 30:
                    raise RuntimeError("gigaproxy did not start (exit code %s); its log:\n%s"
                                       % (proc.poll(), seen.decode("utf-8", "replace")[-3000:]))
                time.sleep(0.0005)
        t_listen = time.monotonic()
        while True:  # with --workers the line can come before the workers listen
            try:
                client = Client(port)
                break
            except ConnectionRefusedError:
                if proc.poll() is not None or time.monotonic() - t0 > 30:
                    raise
                time.sleep(0.002)
        client.request(http_request_bytes("/v1/chat/completions", chat_body(False, False), port))
        t_first = time.monotonic()
        client.close()
        proxy.update(port=port, log=log_path, listen_s=t_listen - t0, cold_s=t_first - t0)
        return proxy

    def stop_proxy(self, proxy, timeout=30.0):
        """SIGINT (what Ctrl-C sends; it also makes the profiled proxy write its profile).

        A multi-process proxy gets SIGTERM, which its parent passes on to the workers (a
        SIGINT to the parent alone does not reach them); any process of its tree still
        there afterwards is killed by pid.
        """
        proc = proxy["proc"]
        family = proc_tree(proc.pid, True) if proxy["tree"] and IS_LINUX and proc.poll() is None else []
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if proxy["tree"] else signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in family[1:]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)
        if proxy in self.proxies:
            self.proxies.remove(proxy)

    def cleanup(self):
        for proxy in list(self.proxies):
            self.stop_proxy(proxy, timeout=5.0)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    if proc.stdin:
                        proc.stdin.close()
                except OSError:
                    pass
                try:
                    proc.send_signal(signal.SIGINT)
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- cells --------------------------------------------------------------------------------

    def cell(self, target, stream, conc, duration=None, requests=None, proxy=None, sample=False,
             reconnect_every=0):
        """Run one cell through the proxy (``target="proxy"``) or straight at the fake."""
        tls, fake_port, _ = self.upstream()
        cmd = {"op": "cell", "stream": stream, "conc": conc, "duration": duration, "requests": requests,
               "chunks": self.args.chunks, "fake_pid": self.fake.pid, "sample": sample,
               "reconnect_every": reconnect_every}
        if target == "proxy":
            cmd.update(port=proxy["port"], tls=False, path="/v1/chat/completions",
                       body=chat_body(stream, False).decode("utf-8"), proxy_pid=proxy["pid"], tree=proxy["tree"])
        else:
            cmd.update(port=fake_port, tls=tls, path="/api/v1/chat/completions",
                       body=chat_body(stream, True).decode("utf-8"), headers="Authorization: Bearer %s\r\n" % TOKEN)
        accepted = self.fake_accepted()
        ticks = proc_ticks(proxy["pid"]) if target == "proxy" and not proxy["tree"] else None
        self.loadgen.stdin.write((json.dumps(cmd) + "\n").encode("utf-8"))
        self.loadgen.stdin.flush()
        budget = (duration or 0) + (requests or 0) / 50.0 + 120
        result = json.loads(self.loadgen_out.readline(budget))
        result["fake_conns"] = self.fake_accepted() - accepted
        result["sys_share"] = None
        after = proc_ticks(proxy["pid"]) if ticks else None
        if ticks and after and sum(after) - sum(ticks) >= 20:  # 10 ms ticks: too few say nothing
            result["sys_share"] = (after[1] - ticks[1]) / float(sum(after) - sum(ticks))
        if "fatal" in result:
            raise RuntimeError("load generator failed: %s" % result["fatal"])
        if result["errors"]:
            who = proxy["name"] if target == "proxy" else target
            self.say("  ! %s %s c=%d: %d errors, first: %s" % (who, "stream" if stream else "non-stream", conc,
                                                                result["errors"], result["error"]))
        return result


# ==== the full run ===============================================================================

CELLS = [("ns", 1), ("ns", 8), ("ns", 32), ("s", 1), ("s", 16)]


def cell_name(kind, conc):
    return "%s c=%d" % ("stream" if kind == "s" else "non-stream", conc)


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit="", digits=2, sign=False):
    if value is None:
        return "n/a"
    text = ("%+.*f" if sign else "%.*f") % (digits, value)
    return text + unit


def gigaproxy_has_workers_flag(script):
    out = subprocess.run([sys.executable, script, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=30, cwd=os.path.dirname(script)).stdout.decode("utf-8", "replace")
    return "--workers" in out


def gigaproxy_fingerprint(script):
    import hashlib
    with open(script, "rb") as f:
        data = f.read()
    return "gigaproxy.py sha256 %s, %d lines" % (hashlib.sha256(data).hexdigest()[:12], data.count(b"\n"))


def gigaproxy_version(script):
    out = subprocess.run([sys.executable, script, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=30, cwd=os.path.dirname(script)).stdout.decode("utf-8", "replace").strip()
    return out or "gigaproxy"


# With --compare, the order of the three runs of a cell (n: the file under test, o: the other
# file, f: the fake alone) goes through all six permutations, one step per cell and per
# repetition: n and o swap places at every step and the baseline moves through first,
# middle, last, so neither proxy always runs first, or right after the baseline.
COMPARE_ORDERS = ["fno", "ofn", "nof", "fon", "nfo", "onf"]


def full_run(bench):
    args = bench.args
    reps, duration = args.reps, args.duration
    subjects = bench.subjects
    compare = len(subjects) > 1
    for subject in subjects:
        subject["workers"] = None
        if args.workers:
            whose = "" if not compare else " (%s)" % subject["label"]
            if gigaproxy_has_workers_flag(subject["script"]):
                subject["workers"] = args.workers
                bench.say("--workers %d%s: gigaproxy supports it; an extra row runs %d workers (not pinned)"
                          % (args.workers, whose, args.workers))
            else:
                bench.say("--workers%s: not available yet (gigaproxy --help has no --workers flag); one process only"
                          % whose)
        subject["version"] = gigaproxy_version(subject["script"])
        if compare:
            bench.say("%s = %s: %s, %s" % (subject["label"], subject["what"], subject["version"],
                                           subject["fingerprint"]))
    # Per file: its cells and start-up/memory figures; every list holds one entry per repetition.
    runs = {s["label"]: {"cells": {c: [] for c in CELLS}, "multi": {c: [] for c in CELLS if c[0] == "ns" and c[1] > 1},
                         "starts": [], "idle_rss": [], "idle_threads": [], "loaded_idle_rss": [], "stream32": [],
                         "module_starts": [], "module_rss": [], "soak": None}
            for s in subjects}
    fake = {c: [] for c in CELLS}  # the baseline: one run per cell and repetition, shared by both files
    bare, floor_rss = [], []
    width = max([5] + [len(s["name"]) for s in subjects])
    t_begin = time.monotonic()
    tax = bench.wakeup_tax()
    for subject in subjects:
        py_compile.compile(subject["script"], doraise=True)  # the __pycache__ a first `python -m gigaproxy` leaves
    for rep in range(reps):
        turn = subjects if rep % 2 == 0 else subjects[::-1]  # with --compare, who starts first alternates
        bare.append(bench.python_start())
        floor_rss.append(bench.tls_floor_rss())
        proxies = {}
        for subject in turn:
            R = runs[subject["label"]]
            mproxy = bench.start_proxy(subject, module=True)
            R["module_starts"].append(mproxy["cold_s"])
            time.sleep(0.5)
            R["module_rss"].append(proc_mem(mproxy["pid"])[0])
            bench.stop_proxy(mproxy)
            proxy = proxies[subject["label"]] = bench.start_proxy(subject)
            R["starts"].append((proxy["listen_s"], proxy["cold_s"]))
            time.sleep(0.5)
            rss, threads = proc_mem(proxy["pid"])
            R["idle_rss"].append(rss)
            R["idle_threads"].append(threads)
            bench.say("rep %d/%d: %s up on port %d, first answer %.0f ms after start, idle RSS %s MiB"
                      % (rep + 1, reps, subject["label"] if compare else "gigaproxy", proxy["port"],
                         proxy["cold_s"] * 1000, fmt(rss, digits=1)))
        for subject in turn:  # warm-up: token, pool, code paths
            bench.cell("proxy", False, 32, duration=0.5, proxy=proxies[subject["label"]])
        bench.cell("fake", False, 32, duration=0.5)
        for index, (kind, conc) in enumerate(CELLS):
            if compare:
                by_letter = {"n": subjects[0], "o": subjects[1], "f": None}
                order = [by_letter[x] for x in COMPARE_ORDERS[(rep * len(CELLS) + index) % len(COMPARE_ORDERS)]]
            else:
                order = [None, subjects[0]] if rep % 2 == 0 else [subjects[0], None]
            for subject in order:
                if subject is None:
                    r = bench.cell("fake", kind == "s", conc, duration=duration)
                    fake[(kind, conc)].append(r)
                else:
                    r = bench.cell("proxy", kind == "s", conc, duration=duration, proxy=proxies[subject["label"]])
                    runs[subject["label"]]["cells"][(kind, conc)].append(r)
                bench.say("  %-*s %-14s %8.1f req/s  p50 %7.2f ms  p99 %7.2f ms%s%s"
                          % (width, "fake" if subject is None else subject["name"], cell_name(kind, conc),
                             r["rps"] or 0, r["p50"] or 0, r["p99"] or 0,
                             "  ttfb %.2f ms" % r["ttfb50"] if r["ttfb50"] is not None else "",
                             "  proxy CPU %.3f ms/req" % (r["proxy_cpu"] * 1000 / r["n"])
                             if r["proxy_cpu"] is not None and r["n"] else ""))
        for subject in turn:
            R, proxy = runs[subject["label"]], proxies[subject["label"]]
            r = bench.cell("proxy", True, 32, duration=min(duration, 2.0), proxy=proxy, sample=True)
            R["stream32"].append(r)
            time.sleep(0.3)
            R["loaded_idle_rss"].append(proc_mem(proxy["pid"])[0])
            if rep == reps - 1 and args.soak:
                R["soak"] = soak_run(bench, proxy)
            bench.stop_proxy(proxy)
        for subject in turn:
            workers = subject["workers"]
            if workers and workers > 1:
                multi = runs[subject["label"]]["multi"]
                mproxy = bench.start_proxy(subject, workers=workers)
                bench.cell("proxy", False, 32, duration=0.5, proxy=mproxy)
                for key in multi:
                    r = bench.cell("proxy", False, key[1], duration=duration, proxy=mproxy)
                    multi[key].append(r)
                    bench.say("  %s%d workers %-14s %8.1f req/s"
                              % (subject["label"] + " " if compare else "", workers, cell_name(*key), r["rps"] or 0))
                bench.stop_proxy(mproxy)
    print_report(bench, runs, fake, bare, floor_rss, tax, time.monotonic() - t_begin)


def soak_run(bench, proxy):
    """Threads and RSS around N requests (16 clients, reconnecting every 100 requests)."""
    total = bench.args.soak
    warm = max(1, total // 10)
    snaps = [("before", proc_mem(proxy["pid"]))]
    t0 = time.monotonic()
    r1 = bench.cell("proxy", False, 16, requests=warm, proxy=proxy, sample=True, reconnect_every=100)
    time.sleep(0.3)
    snaps.append(("after %d" % warm, proc_mem(proxy["pid"])))
    r2 = bench.cell("proxy", False, 16, requests=total - warm, proxy=proxy, sample=True, reconnect_every=100)
    time.sleep(0.3)
    snaps.append(("after %d" % total, proc_mem(proxy["pid"])))
    time.sleep(1.0)
    snaps.append(("1 s later", proc_mem(proxy["pid"])))
    return {"snaps": snaps, "peak_threads": max(r1["threads_max"] or 0, r2["threads_max"] or 0),
            "peak_rss": max(r1["rss_max"] or 0, r2["rss_max"] or 0), "errors": r1["errors"] + r2["errors"],
            "n": r1["n"] + r2["n"], "seconds": time.monotonic() - t0,
            "cpu_per_req": (r2["proxy_cpu"] / r2["n"]) if r2["proxy_cpu"] is not None and r2["n"] else None}


def per_unit_cpu_ms(r):
    if r["proxy_cpu"] is None or not r["n"]:
        return None
    return r["proxy_cpu"] * 1000.0 / r["n"]


def ratio(a, b):
    return a / b if a is not None and b else None


def difference(a, b):
    return a - b if a is not None and b is not None else None


def print_report(bench, runs, F, bare, floor_rss, tax, seconds):
    args = bench.args
    subjects = bench.subjects
    compare = len(subjects) > 1
    chunks = args.chunks

    def m(key, field, target):
        return med([r[field] for r in target[key]])

    def added(P, key, field):
        return med([p[field] - f[field] for p, f in zip(P[key], F[key])
                    if p[field] is not None and f[field] is not None])

    def cpu(P, key):
        return med([per_unit_cpu_ms(r) for r in P[key]])

    def span(values, digits):
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        low, high = ("%.*f" % (digits, min(values))), ("%.*f" % (digits, max(values)))
        return (low if low == high else low + "–" + high) + " ms"

    def joined(values, digits=0):
        return " / ".join(fmt(v, digits=digits) for v in values)

    print()
    print("=" * 100)
    if compare:
        new, other = subjects
        print("%s vs. %s vs. the fake GigaChat directly: medians of %d interleaved repetitions, %.1f s per cell, "
              "%s upstream," % (new["label"], other["label"], args.reps, args.duration,
                                "HTTPS" if args.tls else "plain HTTP"))
        print("%d-chunk streams %.0f ms apart; Python %s; %d CPUs; whole run %.0f s"
              % (chunks, args.chunk_interval_ms, sys.version.split()[0], os.cpu_count() or 0, seconds))
        for subject in subjects:
            print("%s = %s: %s, %s" % (subject["label"], subject["what"], subject["version"], subject["fingerprint"]))
    else:
        print("%s vs. the fake GigaChat directly: medians of %d interleaved repetitions, %.1f s per cell, %s upstream,"
              % (subjects[0]["version"], args.reps, args.duration, "HTTPS" if args.tls else "plain HTTP"))
        print("%d-chunk streams %.0f ms apart; Python %s; %d CPUs; whole run %.0f s; %s"
              % (chunks, args.chunk_interval_ms, sys.version.split()[0], os.cpu_count() or 0, seconds,
                 bench.fingerprint))
    for note in bench.notes:
        if note.startswith(("CPU pinning", "--workers", "--spin")):
            print(note)
    print()

    print("| | req/s, c=1 / 8 / 32 | added p50 latency, c=1 | added TTFB, stream c=1 / c=16 | CPU per request "
          "| CPU per %d-chunk stream | idle RSS | cold start |" % chunks)
    print("|---|---|---|---|---|---|---|---|")
    for subject in subjects:
        R = runs[subject["label"]]
        P = R["cells"]
        print("| %s | %s | %s | %s / %s | %s | %s | %s; -m: %s | %s; -m: %s |" % (
            ("%s: %s" % (subject["label"], subject["version"])) if compare else subject["version"] + " (this run)",
            joined([m(("ns", c), "rps", P) for c in (1, 8, 32)]), fmt(added(P, ("ns", 1), "p50"), " ms", 2, True),
            fmt(added(P, ("s", 1), "ttfb50"), "", 2, True), fmt(added(P, ("s", 16), "ttfb50"), " ms", 2, True),
            span([cpu(P, ("ns", c)) for c in (1, 8, 32)], 2), span([cpu(P, ("s", c)) for c in (1, 16)], 1),
            fmt(med(R["idle_rss"]), " MiB", 1), fmt(med(R["module_rss"]), " MiB", 1),
            fmt(med([s[1] for s in R["starts"]]), " s", 3), fmt(med(R["module_starts"]), " s", 3)))
    print("| fake GigaChat directly (baseline) | %s | p50 %s | TTFB %s / %s | - | - | - | - |" % (
        joined([m(("ns", c), "rps", F) for c in (1, 8, 32)]), fmt(m(("ns", 1), "p50", F), " ms", 2),
        fmt(m(("s", 1), "ttfb50", F), "", 2), fmt(m(("s", 16), "ttfb50", F), " ms", 2)))
    print("| issue #6 target | >= 1500 at c=8 and 32 | <= +1 ms | <= +1 / <= +5 ms | <= 0.7 ms | <= 3 ms "
          "| <= 20 MB | <= 0.15 s |")
    if compare:
        # new vs other: the median over repetitions of each repetition's ratio (req/s, CPU) or difference.
        A, B = runs[new["label"]], runs[other["label"]]

        def vs(key, field, how):
            return med([how(a[field], b[field]) for a, b in zip(A["cells"][key], B["cells"][key])])

        def cpu_vs(key):
            return med([ratio(per_unit_cpu_ms(a), per_unit_cpu_ms(b))
                        for a, b in zip(A["cells"][key], B["cells"][key])])

        def start_vs(name, pick=lambda v: v):
            return med([difference(pick(a), pick(b)) for a, b in zip(A[name], B[name])])

        def pct(values):
            return " / ".join(fmt(v and v * 100, "%", 0) for v in values)

        def times(values):
            return " / ".join(fmt(v, "x", 2) for v in values)

        rps = pct([vs(("ns", c), "rps", ratio) for c in (1, 8, 32)])
        p50 = fmt(vs(("ns", 1), "p50", difference), " ms", 2, True)
        ttfb = (fmt(vs(("s", 1), "ttfb50", difference), "", 2, True) + " / "
                + fmt(vs(("s", 16), "ttfb50", difference), " ms", 2, True))
        cpu_req, cpu_stream = times([cpu_vs(("ns", c)) for c in (1, 8, 32)]), times([cpu_vs(("s", c)) for c in (1, 16)])
        rss = (fmt(start_vs("idle_rss"), " MiB", 1, True), fmt(start_vs("module_rss"), " MiB", 1, True))
        cold = (fmt(start_vs("starts", lambda s: s[1]), " s", 3, True), fmt(start_vs("module_starts"), " s", 3, True))
        print("| %s vs %s: new / other, new - other | %s | %s | %s | %s | %s | %s; -m: %s | %s; -m: %s |"
              % ((new["label"], other["label"], rps, p50, ttfb, cpu_req, cpu_stream) + rss + cold))
    for subject in subjects:
        multi = runs[subject["label"]]["multi"]
        if subject["workers"] and any(multi.values()):
            print("| %s --workers %d (not pinned) | - / %s | | | | | | |"
                  % (subject["label"] if compare else "gigaproxy", subject["workers"],
                     " / ".join(fmt(med([r["rps"] for r in multi[k]]), digits=0) for k in sorted(multi))))
    print()
    if compare:
        print("%s vs %s (median over the repetitions of each one's ratio or difference, both measured in it):"
              % (new["label"], other["label"]))
        print("  req/s c=1 / 8 / 32 = %s, CPU per request c=1 / 8 / 32 = %s, per stream c=1 / 16 = %s,"
              % (rps, cpu_req, cpu_stream))
        print("  added p50 (c=1) %s, added TTFB (stream c=1 / 16) %s, cold start %s (-m: %s), idle RSS %s (-m: %s)"
              % ((p50, ttfb) + cold + rss))
        print()
    print("CPU per request: the range over c=1 / 8 / 32; per stream: over c=1 / 16 (see the per-cell table).")
    print("Idle RSS and cold start: 'python gigaproxy.py' (compiles the file at every start), then '-m': 'python -m")
    print("gigaproxy' with the bytecode Python cached in __pycache__ on an earlier run.")
    if compare:
        print("The '%s vs %s' rows: req/s as %% of the other's, CPU as a ratio, times and RSS as differences;"
              % (new["label"], other["label"]))
        print("each the median of the per-repetition figures (both files ran in every repetition, order rotated).")
    print()
    print("Per cell (proxy value, then the baseline, then the difference; CPU = the proxy's, per request or stream;")
    print("'kernel share' = the part of the proxy's CPU spent in the kernel (system time: socket calls, and on")
    print("loopback the receiving side's TCP work too); 'proxy core' = proxy CPU / wall time; 'gen core' = (fake +")
    print("load generator CPU) / wall time on their core;")
    print("'conns to fake' = connections the fake accepted during the cell, warm-up included: through the proxy,")
    print("the upstream connections (TLS handshakes) gigaproxy opened; directly, one per client):")
    print()
    print("| cell | | req/s | p50 ms | p99 ms | TTFB p50 / p99 ms | chunk delay p50 / p99 / max ms | CPU ms "
          "| kernel share | proxy core | gen core | fake CPU ms | conns to fake | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in CELLS:
        stream = key[0] == "s"
        rows = [(subject["name"], runs[subject["label"]]["cells"]) for subject in subjects] + [("fake", F)]
        for index, (label, data) in enumerate(rows):
            rs = data[key]
            is_proxy = data is not F
            print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                cell_name(*key) if index == 0 else "", label,
                fmt(m(key, "rps", data), digits=0), fmt(m(key, "p50", data)), fmt(m(key, "p99", data)),
                (fmt(m(key, "ttfb50", data)) + " / " + fmt(m(key, "ttfb99", data))) if stream else "",
                (" / ".join(fmt(m(key, f, data), digits=3) for f in ("delay50", "delay99", "delaymax")))
                if stream else "",
                fmt(cpu(data, key), digits=3 if not stream else 2) if is_proxy else "",
                fmt(med([r["sys_share"] * 100 for r in rs if r.get("sys_share") is not None]), "%", 0)
                if is_proxy else "",
                fmt(med([r["proxy_cpu"] / r["elapsed"] * 100 for r in rs if r["proxy_cpu"] is not None]), "%", 0)
                if is_proxy else "",
                fmt(med([(r["fake_cpu"] + r["gen_cpu"]) / r["elapsed"] * 100 for r in rs
                         if r["fake_cpu"] is not None]), "%", 0),
                fmt(med([r["fake_cpu"] * 1000 / r["n"] for r in rs if r["fake_cpu"] is not None and r["n"]]),
                    digits=3),
                fmt(med([r["fake_conns"] for r in rs]), digits=0),
                sum(r["errors"] for r in rs)))
        for subject in subjects:
            P = runs[subject["label"]]["cells"]
            print("| | %s | %s | %s | %s | %s | %s | | | | | | | |" % (
                subject["label"] + " added" if compare else "added",
                fmt(added(P, key, "rps"), "", 0, True), fmt(added(P, key, "p50"), "", 2, True),
                fmt(added(P, key, "p99"), "", 2, True),
                (fmt(added(P, key, "ttfb50"), "", 2, True) + " / " + fmt(added(P, key, "ttfb99"), "", 2, True))
                if stream else "",
                (" / ".join(fmt(added(P, key, f), "", 3, True) for f in ("delay50", "delay99", "delaymax")))
                if stream else ""))
        if compare:
            print("| | %s vs %s | %s | %s | %s | %s | %s | %s | | | | | | |" % (
                new["label"], other["label"], fmt(vs(key, "rps", ratio) and vs(key, "rps", ratio) * 100, "%", 0),
                fmt(vs(key, "p50", difference), "", 2, True), fmt(vs(key, "p99", difference), "", 2, True),
                (fmt(vs(key, "ttfb50", difference), "", 2, True) + " / "
                 + fmt(vs(key, "ttfb99", difference), "", 2, True)) if stream else "",
                (" / ".join(fmt(vs(key, f, difference), "", 3, True) for f in ("delay50", "delay99", "delaymax")))
                if stream else "", fmt(cpu_vs(key), "x", 2)))
    for subject in subjects:
        R = runs[subject["label"]]
        starts, stream32, soak = R["starts"], R["stream32"], R["soak"]
        module_starts = R["module_starts"]
        print()
        print("Memory, threads, start-up (%s):" % ("%s, %s" % (subject["label"], subject["what"]) if compare
                                                   else "gigaproxy"))
        print("  idle RSS (0.5 s after the first answer): %s MiB, %s threads; idle after the cells: %s MiB"
              % (fmt(med(R["idle_rss"]), digits=1), fmt(med(R["idle_threads"]), digits=0),
                 fmt(med(R["loaded_idle_rss"]), digits=1)))
        print("  under 32 concurrent streams: peak RSS %s MiB, peak %s threads (%s streams/s, chunk delay p99 %s ms)"
              % (fmt(med([r["rss_max"] for r in stream32]), digits=1),
                 fmt(med([r["threads_max"] for r in stream32]), digits=0),
                 fmt(med([r["rps"] for r in stream32]), digits=1),
                 fmt(med([r["delay99"] for r in stream32]), digits=3)))
        print("  cold start: 'listening' logged after %s s, first chat completion answered after %s s "
              "(median of %d; %s)%s"
              % (fmt(med([s[0] for s in starts]), digits=3), fmt(med([s[1] for s in starts]), digits=3), len(starts),
                 ", ".join("%.3f" % s[1] for s in starts), "" if compare else ";"))
        if not compare:
            print("              a bare 'python -c pass' takes %s s here (the floor for any Python program)"
                  % fmt(med(bare), digits=3))
        print("  'python -m gigaproxy' (bytecode cached): first answer after %s s (%s), idle RSS %s MiB"
              % (fmt(med(module_starts), digits=3), ", ".join("%.3f" % v for v in module_starts),
                 fmt(med(R["module_rss"]), digits=1)))
        if not compare:
            print_floor(floor_rss)
        if soak:
            print("  %d-request run (16 clients, new connection every 100 requests; %.1f s, %d errors, %s ms CPU/req):"
                  % (soak["n"], soak["seconds"], soak["errors"],
                     fmt(soak["cpu_per_req"] and soak["cpu_per_req"] * 1000, digits=3)))
            for label, (rss, threads) in soak["snaps"]:
                print("    %-12s RSS %s MiB, %s threads" % (label, fmt(rss, digits=1), fmt(threads, digits=0)))
            print("    peak during the run: RSS %s MiB, %s threads"
                  % (fmt(soak["peak_rss"], digits=1), fmt(soak["peak_threads"], digits=0)))
            first, last = soak["snaps"][1][1], soak["snaps"][-1][1]
            if first[0] is not None:
                flat = last[0] - first[0] <= 1.0 and last[1] <= soak["snaps"][0][1][1]
                print("    flat? %s (RSS %+.1f MiB from warm to end; threads back to %d)"
                      % ("yes" if flat else "NO", last[0] - first[0], last[1]))
        if not compare:
            print_tax(tax)
    if compare:
        print()
        print("The machine:")
        print("  a bare 'python -c pass' takes %s s here (the floor for any Python program's start)"
              % fmt(med(bare), digits=3))
        print_floor(floor_rss)
        print_tax(tax)
    cells = [r for subject in subjects for rs in runs[subject["label"]]["cells"].values() for r in rs]
    gen = [(r["fake_cpu"] + r["gen_cpu"]) / r["elapsed"] for r in cells if r["fake_cpu"] is not None and r["elapsed"]]
    fake_only = [r["fake_cpu"] / r["elapsed"] for r in cells if r["fake_cpu"] is not None]
    if gen:
        print()
        print("Load side: during proxy cells the fake used at most %.0f %% of a core, fake + load generator at most "
              "%.0f %% of their core." % (max(fake_only) * 100, max(gen) * 100))
        print("(Baseline cells run the load side flat out by design: their req/s is the fake + load generator limit.)")
        busy = [r for r in cells if r["fake_cpu"] is not None and (r["fake_cpu"] + r["gen_cpu"]) / r["elapsed"] > 0.85]
        if busy:
            print("WARNING: in %d proxy cell runs the load side was above 85 %% of its core: those figures may be "
                  "limited by the load generator, not by gigaproxy." % len(busy))


def print_floor(floor_rss):
    print("  the floor: a bare Python TLS client (ssl, socket, threading, json, logging, argparse, one TLS")
    print("  connection, idle) holds %s MiB here before any code of its own" % fmt(med(floor_rss), digits=1))


def print_tax(tax):
    if tax[0] is not None:
        print("  machine: a small piece of Python work (4 JSON decode+encode) costs %.0f us of CPU back to back and "
              "%.0f us when run once every 5 ms on the proxy's core (x%.1f): the wake-up tax every stream chunk pays"
              % (tax[0], tax[1], tax[1] / tax[0]))


# ==== --profile ====================================================================================

def profile_run(bench):
    for subject in bench.subjects:
        profile_one(bench, subject)


def profile_one(bench, subject):
    import pstats
    args = bench.args
    compare = len(bench.subjects) > 1
    base = args.profile_out[:-5] if args.profile_out.endswith(".prof") else args.profile_out
    if compare:
        base += "." + re.sub(r"[^\w.-]", "_", subject["label"])
    for tag, stream, conc in (("nonstream", False, 8), ("stream", True, 16)):
        out = "%s.%s.prof" % (base, tag)
        if os.path.exists(out):
            os.remove(out)
        proxy = bench.start_proxy(subject, profile_out=out)
        bench.cell("proxy", stream, conc, duration=0.5, proxy=proxy)
        r = bench.cell("proxy", stream, conc, duration=args.duration, proxy=proxy)
        time.sleep(0.5)  # the load generator has closed its connections: let their threads end
        bench.stop_proxy(proxy)
        what = "streams" if stream else "requests"
        print()
        print("=" * 100)
        print("cProfile of %s, %s c=%d: %d %s in %.1f s (+ warm-up and start-up) -> %s"
              % ("%s (%s)" % (subject["label"], subject["what"]) if compare else "gigaproxy",
                 "stream" if stream else "non-stream", conc, r["n"], what, r["elapsed"], out))
        print("%s; Python %s" % (subject["fingerprint"], sys.version.split()[0]))
        print("proxy CPU under the profiler: %s ms per %s (%.0f req/s, p50 %.2f ms)"
              % (fmt(per_unit_cpu_ms(r), digits=3), what[:-1], r["rps"] or 0, r["p50"] or 0))
        print("clock: %s" % ("per-thread CPU time (time.thread_time)" if sys.version_info < (3, 12)
                             else "wall clock, one profiler for all threads (Python 3.12+): blocking calls count "
                             "and stacks of different threads mix; profile with Python <= 3.11 for CPU attribution"))
        if not os.path.exists(out):
            print("no profile was written (see the proxy log)")
            continue
        stats = pstats.Stats(out, stream=sys.stdout)
        stats.strip_dirs()
        print("-" * 40 + " top 30 by cumulative time " + "-" * 40)
        stats.sort_stats("cumulative").print_stats(30)
        print("-" * 40 + " top 30 by own (total) time " + "-" * 39)
        stats.sort_stats("tottime").print_stats(30)


# ==== command line ================================================================================

def build_parser():
    ap = argparse.ArgumentParser(description="Benchmark gigaproxy against a fast fake GigaChat (see the docstring).")
    ap.add_argument("--quick", action="store_true", help="short cells and 1 repetition: a smoke run")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 3; 1 with --quick)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per cell (default 3; 1 with --quick)")
    ap.add_argument("--tls", dest="tls", action="store_true", default=True, help="HTTPS to the fake (default)")
    ap.add_argument("--no-tls", dest="tls", action="store_false", help="plain HTTP to the fake")
    ap.add_argument("--workers", type=int, default=None,
                    help="also run gigaproxy --workers N (if its --help has that flag)")
    ap.add_argument("--soak", type=int, default=None,
                    help="requests in the threads/RSS run (default 20000; 2000 with --quick; 0 = skip)")
    ap.add_argument("--spin", action="store_true",
                    help="Linux: keep every core busy with a SCHED_IDLE loop (no idle wake-up latency)")
    ap.add_argument("--chunks", type=int, default=50, help="content chunks per stream (default 50)")
    ap.add_argument("--chunk-interval-ms", type=float, default=5.0, help="ms between stream chunks (default 5)")
    ap.add_argument("--proxy-log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default=None,
                    help="GIGAPROXY_LOG_LEVEL for the proxy (default: its own default, INFO)")
    ap.add_argument("--proxy", metavar="PATH", default=None,
                    help="the gigaproxy file under test (default: the repository's gigaproxy.py)")
    other = ap.add_mutually_exclusive_group()
    other.add_argument("--compare", metavar="PATH", default=None,
                       help="also run this second gigaproxy .py file, interleaved, and compare the two")
    other.add_argument("--compare-rev", metavar="REV", default=None,
                       help="--compare with gigaproxy.py as of git revision REV ('git show REV:gigaproxy.py')")
    ap.add_argument("--profile", action="store_true",
                    help="profile gigaproxy under load instead (cProfile); with --compare, both files")
    ap.add_argument("--profile-out", default="/tmp/gigaproxy.prof",
                    help="profile file prefix: writes <prefix>.nonstream.prof and <prefix>.stream.prof "
                    "(with --compare: <prefix>.<label>.nonstream.prof and so on, label new or the other's)")
    return ap


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_role"]:
        role, rest = argv[1], argv[2:]
        try:
            return {"fake": run_fake, "loadgen": run_loadgen, "profiled-proxy": run_profiled_proxy}[role](rest)
        except KeyboardInterrupt:
            return 130
    args = build_parser().parse_args(argv)
    args.reps = args.reps or (1 if args.quick else 3)
    args.duration = args.duration or (1.0 if args.quick else 3.0)
    if args.soak is None:
        args.soak = 2000 if args.quick else 20000
    if not IS_LINUX:
        print("note: CPU, RSS and thread figures and CPU pinning need Linux (/proc, sched_setaffinity); "
              "they show as n/a here")

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    bench = Bench(args, proxy_sources(args))
    try:
        bench.setup_cpus()
        if args.spin:
            bench.start_spinners()
        bench.start_helpers()
        if args.profile:
            profile_run(bench)
        else:
            full_run(bench)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping every process this benchmark started", file=sys.stderr)
        return 130
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
