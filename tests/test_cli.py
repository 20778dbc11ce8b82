"""The command line: ``python gigaproxy.py ...`` as a user runs it.

Every subprocess gets an environment built from scratch (PATH and SYSTEMROOT only, plus
the variables under test: nothing GIGACHAT_* leaks in from the machine), a temporary
working directory without a ``.env``, no stdin, and a timeout.  Output is read by
threads so nothing can hang.  The upstream is never contacted: the configured GigaChat
URLs point at a closed local port.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gigaproxy  # noqa: E402
from conftest import clean_env  # noqa: E402

SCRIPT = os.path.join(ROOT, "gigaproxy.py")
KEY = "MDE5YTM2ZjYtYzQ2NC03MjJkLWE1ZmUtNWQ4ZDg0ZDc0YTJlOmFiY2RlZg=="
RUN_TIMEOUT = 20.0
START_TIMEOUT = 15.0
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/v1")

# A closed local port: nothing must try to reach it at startup, and if something did
# it would fail fast instead of touching the real network.
UNREACHABLE = {
    "GIGACHAT_BASE_URL": "https://127.0.0.1:9/api/v1",
    "GIGACHAT_AUTH_URL": "https://127.0.0.1:9/api/v2/oauth",
    "GIGACHAT_TIMEOUT": "2",
}

POSIX_SIGNALS = pytest.mark.skipif(os.name == "nt", reason="POSIX signals (SIGINT/SIGTERM delivery) only")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path):
    path = tmp_path / "cwd"
    path.mkdir()
    assert not (path / ".env").exists()
    return path


def run(args: List[str], env: Dict[str, str], cwd: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT] + list(args),
        cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=RUN_TIMEOUT, universal_newlines=True, encoding="utf-8", errors="replace",
    )


def assert_startup_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    """Exit code 2, nothing on stdout, exactly one line on stderr naming each of ``names``."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, "expected ONE line on stderr, got %d:\n%s" % (len(lines), proc.stderr)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == "", proc.stdout
    for name in names:
        assert name in lines[0], "the error line should name %s: %r" % (name, lines[0])
    return lines[0]


def _reset_sigint() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A terminal delivers Ctrl-C to a process whose SIGINT is at its default; a test runner
    # started in the background may have SIGINT ignored, which children would inherit.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Running:
    """A gigaproxy subprocess whose stdout/stderr are collected by reader threads."""

    def __init__(self, args: List[str], env: Dict[str, str], cwd: Any, module: bool = False) -> None:
        kwargs = {}  # type: Dict[str, Any]
        if os.name != "nt":
            kwargs["preexec_fn"] = _reset_sigint
        self.proc = subprocess.Popen(
            [sys.executable] + (["-m", "gigaproxy"] if module else [SCRIPT]) + list(args),
            cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            universal_newlines=True, encoding="utf-8", errors="replace", **kwargs
        )
        self.stdout = []  # type: List[str]
        self.stderr = []  # type: List[str]
        self._lines = queue.Queue()  # type: queue.Queue
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout, False), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr, True), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, sink: List[str], notify: bool) -> None:
        for line in iter(stream.readline, ""):
            sink.append(line)
            if notify:
                self._lines.put(line)
        stream.close()
        if notify:
            self._lines.put(None)

    def wait_for(self, pattern: Any, timeout: float = START_TIMEOUT) -> Any:
        """The first stderr line matching ``pattern`` (a compiled regex); fails on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail("no line matching %r within %.0fs; stderr so far:\n%s"
                            % (pattern.pattern, timeout, "".join(self.stderr)))
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                pytest.fail("gigaproxy exited (code %s) before %r; stderr:\n%s"
                            % (self.proc.returncode, pattern.pattern, "".join(self.stderr)))
            match = pattern.search(line)
            if match:
                return match

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit and for its output to be read; returns the exit code."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for reader in self._readers:
            reader.join(5)

    @property
    def stderr_text(self) -> str:
        return "".join(self.stderr)


@pytest.fixture
def launch():
    started = []  # type: List[Running]

    def start(args: List[str], env: Dict[str, str], cwd: Any, module: bool = False) -> Running:
        running = Running(args, env, cwd, module)
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


def good_env(**extra: str) -> Dict[str, str]:
    values = dict(UNREACHABLE, GIGACHAT_CREDENTIALS=KEY)
    values.update(extra)
    return clean_env(**values)


def get_health(port: int, conn: Optional[http.client.HTTPConnection] = None) -> http.client.HTTPConnection:
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/health")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200, (response.status, body)
    json.loads(body.decode("utf-8"))
    return conn


# --------------------------------------------------------------------------
# startup errors: exit code 2, one line, no traceback
# --------------------------------------------------------------------------
def test_missing_credentials(workdir):
    line = assert_startup_error(run([], clean_env(), workdir), "GIGACHAT_CREDENTIALS")
    assert line.lower().startswith("gigaproxy")


def test_missing_credentials_with_other_settings(workdir):
    proc = run(["--port", "0"], clean_env(GIGACHAT_SCOPE="GIGACHAT_API_B2B", **UNREACHABLE), workdir)
    assert_startup_error(proc, "GIGACHAT_CREDENTIALS")


@pytest.mark.parametrize("value", ["abc", "70000", "-5"])
def test_bad_port_env(workdir, value):
    assert_startup_error(run([], good_env(GIGAPROXY_PORT=value), workdir), "GIGAPROXY_PORT")


def test_bad_port_flag_out_of_range(workdir):
    proc = run(["--port", "70000"], good_env(), workdir)
    line = assert_startup_error(proc)
    assert "--port" in line or "GIGAPROXY_PORT" in line


@pytest.mark.parametrize("args,name", [
    (["--port", "abc"], "--port"),
    (["--log-level", "LOUD"], "--log-level"),
])
def test_bad_flag_value(workdir, args, name):
    """A mistyped flag value is bad configuration too: one line, exit 2 (issue 2, Configuration)."""
    proc = run(args, good_env(), workdir)
    assert_startup_error(proc, name)


def test_bad_boolean(workdir):
    proc = run(["--port", "0"], good_env(GIGACHAT_VERIFY_SSL_CERTS="maybe"), workdir)
    assert_startup_error(proc, "GIGACHAT_VERIFY_SSL_CERTS")


def test_bad_timeout(workdir):
    assert_startup_error(run(["--port", "0"], good_env(GIGACHAT_TIMEOUT="0"), workdir), "GIGACHAT_TIMEOUT")


def test_missing_ca_bundle(workdir, tmp_path):
    missing = str(tmp_path / "corp-root.pem")
    proc = run(["--port", "0"], good_env(GIGACHAT_CA_BUNDLE_FILE=missing), workdir)
    line = assert_startup_error(proc, "GIGACHAT_CA_BUNDLE_FILE")
    assert "corp-root.pem" in line


def test_ca_bundle_that_is_not_a_certificate(workdir, tmp_path):
    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("this is not a PEM file\n")
    proc = run(["--port", "0"], good_env(GIGACHAT_CA_BUNDLE_FILE=str(bogus)), workdir)
    assert_startup_error(proc, "GIGACHAT_CA_BUNDLE_FILE")


def test_contradictory_credentials(workdir):
    proc = run(["--port", "0"], good_env(GIGACHAT_AUTH_KEY="b3RoZXIta2V5"), workdir)
    line = assert_startup_error(proc, "GIGACHAT_AUTH_KEY")
    assert KEY not in line


def test_missing_explicit_env_file(workdir):
    proc = run(["--port", "0", "--env-file", "nowhere.env"], good_env(), workdir)
    line = assert_startup_error(proc)
    assert "nowhere.env" in line


def test_malformed_env_file(workdir):
    (workdir / ".env").write_text("GIGACHAT_MODEL=GigaChat-2\nnot a setting\n")
    proc = run(["--port", "0"], good_env(), workdir)
    line = assert_startup_error(proc, ".env")
    assert "line 2" in line


def test_port_already_in_use(workdir):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run(["--host", "127.0.0.1", "--port", str(port)], good_env(), workdir)
    line = assert_startup_error(proc)
    assert str(port) in line
    assert "--port" in line or "GIGAPROXY_PORT" in line


# --------------------------------------------------------------------------
# --help and --version
# --------------------------------------------------------------------------
def _flag_blocks(help_text: str) -> Dict[str, str]:
    """Map each option of the help's option list to its entry (wrapped lines joined, spaces collapsed)."""
    blocks = {}  # type: Dict[str, List[str]]
    entry = None  # type: Optional[List[str]]
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            entry = [line]
            head = line.strip().split("  ")[0]
            for flag in re.findall(r"--?[\w-]+", head):
                blocks[flag] = entry
        elif entry is not None and line.startswith("   "):
            entry.append(line)  # a wrapped continuation of the same entry
        else:
            entry = None
    return {flag: " ".join(" ".join(lines).split()) for flag, lines in blocks.items()}


def test_help(workdir):
    proc = run(["--help"], clean_env(), workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    text = proc.stdout
    flat = " ".join(text.split())
    blocks = _flag_blocks(text)
    expected = {
        "--host": ("GIGAPROXY_HOST", "127.0.0.1"),
        "--port": ("GIGAPROXY_PORT", "4000"),
        "--env-file": ("GIGAPROXY_ENV_FILE", ".env"),
        "--log-level": ("GIGAPROXY_LOG_LEVEL", "INFO"),
    }
    for flag, (env_name, default) in expected.items():
        assert flag in blocks, "--help does not list %s:\n%s" % (flag, text)
        assert env_name in blocks[flag], "%s: help should name %s: %r" % (flag, env_name, blocks[flag])
        assert default in blocks[flag], "%s: help should show the default %s: %r" % (flag, default, blocks[flag])
    assert "--version" in flat and "--help" in flat
    for name in ("GIGACHAT_CREDENTIALS", "GIGACHAT_AUTH_KEY", "GIGACHAT_SCOPE", "GIGACHAT_USER",
                 "GIGACHAT_PASSWORD", "GIGACHAT_ACCESS_TOKEN", "GIGACHAT_BASE_URL", "GIGACHAT_AUTH_URL",
                 "GIGACHAT_CA_BUNDLE_FILE", "GIGACHAT_VERIFY_SSL_CERTS", "GIGACHAT_CERT_FILE", "GIGACHAT_KEY_FILE",
                 "GIGACHAT_KEY_FILE_PASSWORD", "GIGACHAT_TIMEOUT", "GIGACHAT_MODEL", "GIGAPROXY_MAX_BODY_MB",
                 "HTTPS_PROXY", "NO_PROXY"):
        assert name in flat, "--help does not mention %s" % name
    for default in ("GIGACHAT_API_PERS", gigaproxy.DEFAULT_BASE_URL, gigaproxy.DEFAULT_AUTH_URL,
                    gigaproxy.DEFAULT_MODEL):
        assert default in flat, "--help does not show the default %s" % default


def test_help_needs_no_configuration(workdir):
    """--help works with nothing configured, and even with a broken configuration."""
    proc = run(["--help"], clean_env(GIGACHAT_VERIFY_SSL_CERTS="maybe"), workdir)
    assert proc.returncode == 0
    assert "GIGACHAT_CREDENTIALS" in proc.stdout


def test_version(workdir):
    proc = run(["--version"], clean_env(), workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "gigaproxy %s" % gigaproxy.__version__
    assert proc.stderr == ""


# --------------------------------------------------------------------------
# a running server: startup line, /health, Ctrl-C and SIGTERM
# --------------------------------------------------------------------------
def _start(launch: Any, workdir: Any, env: Optional[Dict[str, str]] = None) -> Any:
    running = launch(["--host", "127.0.0.1", "--port", "0"], env or good_env(), workdir)
    port = int(running.wait_for(LISTENING).group(1))
    assert port != 0
    return running, port


def test_starts_and_answers_health(launch, workdir):
    running, port = _start(launch, workdir)
    conn = get_health(port)
    conn.close()
    running.kill()  # and its readers have read all it wrote (the /health access line comes after the answer)
    assert KEY not in running.stderr_text


@POSIX_SIGNALS
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])  # Ctrl-C, and what service managers send
def test_a_stop_signal_exits_cleanly(launch, workdir, signame):
    running, port = _start(launch, workdir)
    conn = get_health(port)  # a keep-alive client connection stays open across the signal
    try:
        running.proc.send_signal(getattr(signal, signame))
        code = running.finish()
    finally:
        conn.close()
    assert code == 0, running.stderr_text
    assert "Traceback" not in running.stderr_text
    assert "KeyboardInterrupt" not in running.stderr_text
    assert KEY not in running.stderr_text


def test_python_dash_m_serves_the_same(launch, workdir):
    """``python -m gigaproxy`` (the README's faster start: Python caches the compiled file) works alike."""
    running = launch(["--host", "127.0.0.1", "--port", "0"], good_env(PYTHONPATH=ROOT), workdir, module=True)
    port = int(running.wait_for(LISTENING).group(1))
    get_health(port).close()
    running.kill()  # and its readers have read all it wrote
    assert "is not next to gigaproxy.py" not in running.stderr_text  # the bundled root is found beside the file


def test_dot_env_in_working_directory_is_used(launch, workdir):
    (workdir / ".env").write_text("# from the working directory\nGIGACHAT_CREDENTIALS=%s\n" % KEY)
    env = clean_env(**UNREACHABLE)  # no credentials in the environment
    running, port = _start(launch, workdir, env)
    get_health(port).close()
    running.kill()  # and its readers have read all it wrote
    assert KEY not in running.stderr_text


def test_same_start_without_dot_env_fails(workdir):
    """Without the .env (same environment as above), the same start fails for want of credentials."""
    assert_startup_error(run(["--port", "0"], clean_env(**UNREACHABLE), workdir), "GIGACHAT_CREDENTIALS")


# --------------------------------------------------------------------------
# main() in-process
# --------------------------------------------------------------------------
@pytest.fixture
def bare_process_env(monkeypatch, tmp_path):
    """Strip this process's GigaChat/proxy settings and run in an empty directory."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(("GIGACHAT_", "GIGAPROXY_")) or upper in ("HTTPS_PROXY", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_main_missing_credentials_returns_2(bare_process_env, capsys):
    assert gigaproxy.main([]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "GIGACHAT_CREDENTIALS" in lines[0]


def test_main_bad_port_returns_2(bare_process_env, capsys):
    bare_process_env.setenv("GIGACHAT_CREDENTIALS", KEY)
    assert gigaproxy.main(["--port", "70000"]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1, err
    assert KEY not in err


def test_main_bad_boolean_returns_2(bare_process_env, capsys):
    bare_process_env.setenv("GIGACHAT_CREDENTIALS", KEY)
    bare_process_env.setenv("GIGACHAT_VERIFY_SSL_CERTS", "perhaps")
    assert gigaproxy.main(["--port", "0"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "GIGACHAT_VERIFY_SSL_CERTS" in lines[0]


def test_main_version_returns_0(bare_process_env, capsys):
    assert gigaproxy.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "gigaproxy " + gigaproxy.__version__


def test_main_help_returns_0(bare_process_env, capsys):
    assert gigaproxy.main(["--help"]) == 0
    assert "GIGACHAT_CREDENTIALS" in capsys.readouterr().out


def test_main_does_not_raise_systemexit_on_bad_flag(bare_process_env, capsys):
    assert gigaproxy.main(["--no-such-flag"]) == 2
