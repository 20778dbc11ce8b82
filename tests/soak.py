"""Soak test for gigaproxy (issue 4, "Load"): not a CI test, and not collected by pytest.

    python tests/soak.py                       # 20,000 requests, 16 at a time
    python tests/soak.py --requests 2000 --concurrency 8 --max-seconds 120

Linux only: it reads /proc/<pid>/status and /proc/<pid>/fd of the proxy process.
Standard library only; everything stays on 127.0.0.1.

What it does:

1. Starts the strict fake GigaChat (tests/fake_gigachat.py) in this process and gigaproxy as a
   separate process (``python gigaproxy.py --port 0``, environment pointing at the fake, run in
   an empty temporary directory so no ``.env`` is picked up), and reads the port from its
   startup line "listening on http://127.0.0.1:<port>/v1".
2. Measures the proxy process cold ("start"), then sends a warm-up round (5% of --requests, at
   least 500) with the same mix and concurrency, closes every client connection, lets it
   settle and measures the BASELINE: the token is cached, the model list fetched and the
   upstream connection pool filled by then, so the baseline is the steady state to return to.
3. Sends --requests mixed requests from a pool of --concurrency threads, measuring at every
   10%: plain and streamed chats; chats that meet an injected upstream 429 (with and without
   Retry-After), a JSON 500, an HTML 502, a stream cut after a few events, and a garbage 200;
   clients that hang up mid-stream; and a few malformed bodies (400).  Injected faults are
   queued on the fake (first come, first served), so under concurrency a fault may land on
   another worker's request: the mix is statistical, not exact.
4. Closes every client connection, waits --settle seconds, measures AFTER, stops the proxy
   with SIGTERM and prints the status counts, requests per second and the measurements.

Exit status 0 only when all of these hold (the tolerances):

* threads after <= baseline threads + 2
* open fds after <= baseline fds + 4        (the upstream pool keeps <= 16 idle connections,
                                            filled during the warm-up already)
* RSS after <= baseline RSS + max(8 MiB, 20% of baseline)    (CPython keeps some freed memory
                                            in its arenas: ~3 MiB of growth that levels off was
                                            seen over 20,000 requests; a leak of 1 KiB per
                                            request, ~20 MiB, fails)
* no 500 reached a client, no traceback in the proxy's log, the proxy exited 0 on SIGTERM,
  the fake GigaChat recorded no internal error, and the run ended within --max-seconds.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

from fake_gigachat import FakeGigaChat  # noqa: E402

CHAT = "/v1/chat/completions"
HELLO = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there, soak"}]}
THREAD_SLACK = 2
FD_SLACK = 4
RSS_SLACK_BYTES = 8 << 20
RSS_SLACK_RATIO = 0.20
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")


# ---- the proxy process -------------------------------------------------------------------------


def proc_sample(pid: int) -> Dict[str, int]:
    """Threads, open file descriptors and RSS (bytes) of ``pid`` from /proc."""
    sample = {"threads": -1, "fds": -1, "rss": -1}
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("Threads:"):
                sample["threads"] = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                sample["rss"] = int(line.split()[1]) * 1024
    sample["fds"] = len(os.listdir("/proc/%d/fd" % pid))
    return sample


def show(label: str, sample: Dict[str, int], extra: str = "") -> None:
    print("%-14s threads=%-4d fds=%-4d rss=%7.1f MiB %s" % (
        label, sample["threads"], sample["fds"], sample["rss"] / 1048576.0, extra), flush=True)


class ProxyProcess(object):
    """gigaproxy.py run as a child process; its log is drained (and scanned) by a thread."""

    def __init__(self, fake: FakeGigaChat, workdir: str) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIGACHAT_", "GIGAPROXY_")) and k.lower() not in (
                   "https_proxy", "http_proxy", "all_proxy", "no_proxy")}
        env.update({
            "GIGACHAT_CREDENTIALS": fake.credentials,
            "GIGACHAT_BASE_URL": fake.base_url,
            "GIGACHAT_AUTH_URL": fake.auth_url,
            "GIGACHAT_CA_BUNDLE_FILE": fake.ca_file,
            "GIGAPROXY_RETRY_BACKOFF": "0.01",  # retries stay on, without slowing the soak
            "GIGAPROXY_LOG_LEVEL": "INFO",  # the startup line is at INFO
            "GIGAPROXY_SHUTDOWN_GRACE": "5",
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        })
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "gigaproxy.py"), "--port", "0"], cwd=workdir, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.process.pid
        self.lines = 0
        self.problems = []  # type: List[str]  log lines at ERROR or with a traceback
        self.levels = collections.Counter()  # type: collections.Counter
        self.port = self._read_port()
        self._drain = threading.Thread(target=self._drain_log, daemon=True)
        self._drain.start()

    def _read_port(self) -> int:
        deadline = time.monotonic() + 20
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline().decode("utf-8", "replace")
            if not line:
                raise SystemExit("gigaproxy exited before listening (exit %s)" % self.process.wait())
            self._note(line)
            match = LISTENING.search(line)
            if match:
                return int(match.group(1))
        raise SystemExit("gigaproxy did not log its port within 20 s")

    def _note(self, line: str) -> None:
        self.lines += 1
        for level in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            if " %s " % level in line:
                self.levels[level] += 1
                break
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback") or "Traceback" in line:
            if len(self.problems) < 20:
                self.problems.append(line.rstrip()[:300])

    def _drain_log(self) -> None:
        assert self.process.stderr is not None
        for raw in iter(self.process.stderr.readline, b""):
            self._note(raw.decode("utf-8", "replace"))

    def sample(self) -> Dict[str, int]:
        return proc_sample(self.pid)

    def stop(self) -> Optional[int]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
                return None
        self._drain.join(5)
        return self.process.returncode


# ---- clients -----------------------------------------------------------------------------------


class Clients(object):
    """One keep-alive HTTP connection per worker thread; all closed by ``close_all``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()
        self.lock = threading.Lock()
        self.open = []  # type: List[http.client.HTTPConnection]

    def conn(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.local.conn = conn
            with self.lock:
                self.open.append(conn)
        return conn

    def drop(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
            self.local.conn = None

    def close_all(self) -> None:
        with self.lock:
            conns, self.open = self.open, []
        for conn in conns:
            conn.close()


def chat(clients: Clients, body: Any, stream: bool = False) -> str:
    """One request over this worker's keep-alive connection; returns a status label."""
    data = body if isinstance(body, bytes) else json.dumps(dict(body, stream=True) if stream else body).encode()
    conn = clients.conn()
    try:
        conn.request("POST", CHAT, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as exc:
        clients.drop()
        return "client error %s" % type(exc).__name__
    if response.getheader("Connection", "").lower() == "close":
        clients.drop()
    label = str(response.status)
    if response.status == 200 and stream:
        text = payload.decode("utf-8", "replace")
        if text.rstrip().endswith("data: [DONE]"):
            label += " stream"
        elif '"error"' in text:
            label += " stream ended with an error event"
        else:
            label += " stream ended without [DONE] or an error event"
    return label


def hang_up_mid_stream(port: int) -> str:
    """A client that reads the start of a stream and disconnects."""
    body = json.dumps(dict(HELLO, stream=True)).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (CHAT.encode(), len(body), body))
        got = b""
        while b"\r\n\r\n" not in got or (got.startswith(b"HTTP/1.1 200") and b"data:" not in got):
            chunk = sock.recv(4096)
            if not chunk:
                return "hung up (the proxy closed first)"
            got += chunk
        status = got.split(b" ", 2)[1].decode("ascii", "replace")
        if status != "200":  # an injected fault meant for another worker landed here
            return "hung up after a %s" % status
        return "hung up mid-stream (200)"
    except OSError as exc:
        return "hung up (%s)" % type(exc).__name__
    finally:
        sock.close()


def make_job(rng: random.Random, fake: FakeGigaChat, clients: Clients) -> Callable[[], str]:
    """A random request of the mix (a closure run by a worker thread)."""
    roll = rng.random()
    if roll < 0.40:
        return lambda: chat(clients, HELLO)
    if roll < 0.63:
        return lambda: chat(clients, HELLO, stream=True)
    if roll < 0.69:
        headers = {"Retry-After": "0"} if rng.random() < 0.5 else None

        def rate_limited() -> str:
            for _ in range(3):  # one try and two retries: the client sees the 429
                fake.add_fault("status", status=429, headers=headers)
            return chat(clients, HELLO)
        return rate_limited
    if roll < 0.75:
        stream = rng.random() < 0.3

        def server_error() -> str:
            fake.add_fault("status", status=500)  # retried: the client usually sees 200
            return chat(clients, HELLO, stream=stream)
        return server_error
    if roll < 0.80:
        def html_502() -> str:
            for _ in range(3):
                fake.add_fault("status", status=502, content_type="text/html",
                               body="<html><body><h1>502 Bad Gateway</h1></body></html>")
            return chat(clients, HELLO)
        return html_502
    if roll < 0.86:
        after_events = rng.randint(1, 3)

        def cut_stream() -> str:
            fake.add_fault("cut", after_events=after_events)
            return chat(clients, HELLO, stream=True)
        return cut_stream
    if roll < 0.88:
        def garbage() -> str:
            fake.add_fault("garbage", body="<<<not json>>>")
            return chat(clients, HELLO)
        return garbage
    if roll < 0.96:
        def hang_up() -> str:
            fake.enqueue_reply(chunks=["word "] * 40, stream_delay=0.01)  # a stream that takes a while
            return hang_up_mid_stream(clients.port)
        return hang_up
    bad = rng.choice([b"{not json", b"[]", b'{"messages": 5}', b'{"model": "x", "messages": []}'])
    return lambda: chat(clients, bad)


def run_round(count: int, concurrency: int, rng: random.Random, fake: FakeGigaChat, clients: Clients,
              deadline: float, on_progress: Optional[Callable[[int], None]] = None) -> Tuple[collections.Counter, bool]:
    """Send ``count`` requests with ``concurrency`` workers; (status counts, finished in time)."""
    statuses = collections.Counter()  # type: collections.Counter
    lock = threading.Lock()
    done = [0]
    jobs = iter([make_job(rng, fake, clients) for _ in range(count)])
    in_time = [True]

    def worker() -> None:
        while True:
            if time.monotonic() > deadline:
                in_time[0] = False
                return
            with lock:
                job = next(jobs, None)
            if job is None:
                return
            try:
                label = job()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                label = "soak error %s: %s" % (type(exc).__name__, exc)
            with lock:
                statuses[label] += 1
                done[0] += 1
                finished = done[0]
            if on_progress is not None:
                on_progress(finished)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        for future in futures:
            future.result()
    return statuses, in_time[0]


# ---- main --------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000, help="requests in the measured round (default 20000)")
    parser.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before the last measurement")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="give up (and fail) after this long")
    parser.add_argument("--seed", type=int, default=20240601, help="random seed of the request mix")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/fd"):
        print("soak.py is Linux only: it reads /proc/<pid>/status and /proc/<pid>/fd", file=sys.stderr)
        return 2
    if args.requests < 10 or args.concurrency < 1:
        parser.error("--requests must be at least 10 and --concurrency at least 1")

    deadline = time.monotonic() + args.max_seconds
    rng = random.Random(args.seed)
    workdir = tempfile.mkdtemp(prefix="gigaproxy-soak-")
    failures = []  # type: List[str]
    try:
        with FakeGigaChat() as fake:
            proxy = ProxyProcess(fake, workdir)
            print("gigaproxy pid %d on 127.0.0.1:%d; fake GigaChat on %s; %d requests, %d clients"
                  % (proxy.pid, proxy.port, fake.base_url, args.requests, args.concurrency), flush=True)
            try:
                show("start", proxy.sample(), "(cold)")
                warm = max(500, args.requests // 20)
                clients = Clients(proxy.port)
                statuses, in_time = run_round(warm, args.concurrency, rng, fake, clients, deadline)
                clients.close_all()
                time.sleep(args.settle)
                baseline = proxy.sample()
                show("baseline", baseline, "(after %d warm-up requests, clients closed, %.0f s settle)"
                     % (warm, args.settle))
                if not in_time:
                    failures.append("the warm-up did not finish within --max-seconds")

                marks = [args.requests * i // 10 for i in range(1, 11)]
                started = time.monotonic()
                progress_lock = threading.Lock()

                def on_progress(finished: int) -> None:
                    if marks and finished >= marks[0]:
                        with progress_lock:
                            while marks and finished >= marks[0]:
                                marks.pop(0)
                                rate = finished / max(1e-9, time.monotonic() - started)
                                show("%3d%% %6d" % (finished * 100 // args.requests, finished), proxy.sample(),
                                     "%.0f req/s" % rate)

                clients = Clients(proxy.port)
                statuses, in_time = run_round(args.requests, args.concurrency, rng, fake, clients, deadline,
                                              on_progress)
                elapsed = time.monotonic() - started
                clients.close_all()
                if not in_time:
                    failures.append("the run did not finish within --max-seconds")
                time.sleep(args.settle)
                after = proxy.sample()
                show("after", after, "(clients closed, %.0f s settle)" % args.settle)
            finally:
                code = proxy.stop()
            fake_errors = list(fake.errors)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    total = sum(statuses.values())
    print("\n%d requests in %.1f s: %.0f requests/s" % (total, elapsed, total / max(elapsed, 1e-9)))
    print("status counts:")
    for label, count in sorted(statuses.items(), key=lambda item: (-item[1], item[0])):
        print("  %7d  %s" % (count, label))
    print("proxy log: %d lines (%s); exit code on SIGTERM: %s"
          % (proxy.lines, ", ".join("%s %d" % kv for kv in sorted(proxy.levels.items())), code))

    rss_limit = baseline["rss"] + max(RSS_SLACK_BYTES, int(baseline["rss"] * RSS_SLACK_RATIO))
    checks = [
        ("threads", after["threads"], baseline["threads"] + THREAD_SLACK),
        ("fds", after["fds"], baseline["fds"] + FD_SLACK),
        ("rss", after["rss"], rss_limit),
    ]
    for name, value, limit in checks:
        shown = (lambda v: "%.1f MiB" % (v / 1048576.0)) if name == "rss" else str
        verdict = "ok" if value <= limit else "NOT BACK NEAR BASELINE"
        print("%-8s after %-10s limit %-10s %s" % (name, shown(value), shown(limit), verdict))
        if value > limit:
            failures.append("%s after (%s) is over the limit (%s)" % (name, shown(value), shown(limit)))
    if total < args.requests:
        failures.append("only %d of %d requests ran" % (total, args.requests))
    bad = {label: n for label, n in statuses.items()
           if label.startswith(("500", "soak error")) or "without [DONE]" in label}
    if bad:
        failures.append("unexpected results: %s" % bad)
    if proxy.problems:
        failures.append("the proxy logged errors/tracebacks, first: %s" % proxy.problems[0])
    if code != 0:
        failures.append("the proxy exited with %s on SIGTERM" % code)
    if fake_errors:
        failures.append("the fake GigaChat failed: %s" % fake_errors[0][:300])
    if failures:
        print("\nFAIL:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK: threads, fds and RSS are back near the baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
