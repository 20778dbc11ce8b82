"""``--workers N``: several processes share one port (Linux only)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import sys
import threading
import http.client

import pytest

from conftest import fake_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1 .*2 workers")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="--workers is Linux-only")


def start_workers(fake, tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env.update(fake_env(fake))
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "gigaproxy.py"), "--port", "0", "--workers", "2"],
                               cwd=str(tmp_path), env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               text=True)
    lines = []
    found = threading.Event()
    port = []

    def read():
        for line in process.stderr:
            lines.append(line)
            match = LISTENING.search(line)
            if match:
                port.append(int(match.group(1)))
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert found.wait(20), "".join(lines)
    return process, port[0], lines, reader


def ask(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("POST", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                 {"Content-Type": "application/json"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_two_workers_share_the_port_and_stop_together(fake, tmp_path, stop_signal):
    process, port, lines, reader = start_workers(fake, tmp_path)
    try:
        statuses = [ask(port)[0] for _ in range(40)]  # "listening" is logged only once both listen
        assert statuses == [200] * 40
        assert fake.oauth_calls == 2  # each worker has its own token: both served requests
        process.send_signal(stop_signal)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    # The workers write each access line after its answer, and the reader thread may still be behind
    # when the parent has exited: the output is complete only once the reader has seen its end.
    reader.join(20)
    assert not reader.is_alive(), "stderr still open after the parent exited"
    text = "".join(lines)
    assert "Traceback" not in text
    pids = set(re.findall(r"\[(\d+)\] INFO 127\.0\.0\.1 POST", text))
    assert len(pids) == 2
    with pytest.raises(OSError):
        ask(port)  # nothing listens any more: no worker was left behind


def test_workers_refused_off_linux_has_one_line(monkeypatch):
    import gigaproxy
    monkeypatch.setattr(gigaproxy.sys, "platform", "win32")
    config = gigaproxy.load_config(gigaproxy.build_parser().parse_args(["--workers", "2"]),
                                   {"GIGACHAT_CREDENTIALS": "a2V5OnNlY3JldA=="}, cwd="/")
    with pytest.raises(gigaproxy.ConfigError) as info:
        gigaproxy._reserve_port(config)
    assert "needs Linux" in str(info.value)


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)  # a new connection: any worker may take it
    conn.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, json.loads(data)


def test_workers_share_the_responses_store(fake, tmp_path):
    """A response made by one worker is found by the other: GET, previous_response_id and DELETE
    all work whichever worker the kernel hands each new connection to."""
    def stores():
        tmp = tempfile.gettempdir()
        return {name for name in os.listdir(tmp) if name.startswith("gigaproxy-")
                and os.path.exists(os.path.join(tmp, name, "responses.sqlite3"))}

    before = stores()
    process, port, lines, reader = start_workers(fake, tmp_path)
    try:
        made = []
        for i in range(12):
            status, body = call(port, "POST", "/v1/responses", {"model": "gigachat", "input": "n%d" % i})
            assert status == 200 and body["status"] == "completed", body
            made.append(body["id"])
        assert len(stores() - before) == 1  # one private directory with the shared file
        for response_id in made + made:  # 24 new connections: both workers answer some (all but surely)
            status, body = call(port, "GET", "/v1/responses/" + response_id)
            assert status == 200 and body["id"] == response_id
        status, body = call(port, "POST", "/v1/responses", {"model": "gigachat", "input": "and then?",
                                                            "previous_response_id": made[0]})
        assert status == 200
        assert [m["content"] for m in fake.chat_requests()[-1]["messages"]][-3:] == ["n0", "Echo: n0", "and then?"]
        assert call(port, "DELETE", "/v1/responses/" + made[1])[0] == 200
        assert call(port, "GET", "/v1/responses/" + made[1])[0] == 404
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(20)
    text = "".join(lines)
    assert "Traceback" not in text
    assert len(set(re.findall(r"\[(\d+)\] INFO 127\.0\.0\.1 GET /v1/responses/", text))) == 2  # both workers found some
    assert stores() - before == set()  # removed when the workers stopped
