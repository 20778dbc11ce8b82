"""``python gigaproxy.py --check``: the doctor, driven against the fake GigaChat with each failure.

Every case runs ``gigaproxy.main(["--check"])`` in-process with an environment built from
scratch (nothing GIGACHAT_* from the machine, an empty working directory), except the
one subprocess run that checks a real process's stdout and its ASCII fallback.  Each
case asserts the exit code, the mark and text of the lines that matter (the failing
check names the likely cause and the setting that fixes it; the checks after it are
"not tried"), and that no secret reached stdout or stderr.  Loopback only: the one name
that must not resolve (``.invalid``, RFC 6761) is answered by a stub, not a DNS server.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import ssl
import subprocess
import sys
from typing import Any, Dict, List, Tuple

import pytest

import gigaproxy
from conftest import CAPTURED, SECRETS, clean_env, fake_env
from fake_connect_proxy import FakeConnectProxy
from fake_gigachat import CA_FILE, CHAT_PATH, CLIENT_CERT, CLIENT_KEY, OTHER_CA_FILE, FakeGigaChat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "gigaproxy.py")
MARKS = {"\u2713": "ok", "\u2717": "fail", "-": "skip", "OK": "ok", "FAIL": "fail", "SKIP": "skip"}
PROXY_USER, PROXY_PASSWORD = "proxy-user", "proxy-pass-6f1d0c"
WRONG_KEY = base64.b64encode(b"someone-else:0123456789abcdef0123").decode("ascii")
NOT_A_KEY = "plain-client-secret-8d2f"  # a Client Secret pasted where the Authorization key belongs
SECRETS.update([PROXY_PASSWORD, WRONG_KEY, NOT_A_KEY])


class Result:
    """What one ``--check`` run printed: the exit code, the check lines and the config rows."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err
        self.checks = []  # type: List[Tuple[str, str, str]]  # (ok/fail/skip, name, text)
        self.rows = {}  # type: Dict[str, Tuple[str, str]]  # variable -> (value, source)
        for line in out.splitlines():
            mark, _, rest = line.partition(" ")
            if mark in MARKS:
                name, _, text = rest.strip().partition(" ")
                self.checks.append((MARKS[mark], name, text.strip()))
            elif line.startswith("   "):
                name, _, rest = line.strip().partition(" ")
                value, _, source = rest.strip().rpartition("  (")
                self.rows[name] = (value.strip(), source.rstrip(")"))

    def states(self, name: str) -> List[str]:
        return [state for state, n, _ in self.checks if n == name]

    def text(self, name: str, state: str = "fail") -> str:
        """The text of the first ``name`` line in ``state``."""
        for s, n, text in self.checks:
            if n == name and s == state:
                return text
        raise AssertionError("no %s line for %s in:\n%s" % (state, name, self.out))

    @property
    def summary(self) -> str:
        return self.out.rstrip("\n").splitlines()[-1]


@pytest.fixture
def run_check(monkeypatch, tmp_path, capsys):
    """``run_check(env, *flags)``: main(["--check", *flags]) with exactly ``env`` set; returns a Result."""
    logger = logging.getLogger("gigaproxy")
    propagate = logger.propagate
    monkeypatch.chdir(tmp_path)

    def run(env: Dict[str, str], *flags: str) -> Result:
        for name in list(os.environ):
            if name.upper().startswith(("GIGACHAT_", "GIGAPROXY_")) or name.upper() in ("HTTPS_PROXY", "NO_PROXY"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = gigaproxy.main(["--check"] + list(flags))
        out, err = capsys.readouterr()
        CAPTURED.extend([out, err])  # the session-wide secret scan reads these too
        for secret in SECRETS:
            assert len(secret) < 8 or secret not in out + err, "a secret was printed"
        return Result(code, out, err)

    yield run
    for handler in list(logger.handlers):
        if getattr(handler, "_gigaproxy", False):
            logger.removeHandler(handler)
    logger.propagate = propagate


def issued_tokens(fake: FakeGigaChat) -> List[str]:
    return list(fake._tokens)


def assert_no_token_printed(result: Result, fake: FakeGigaChat) -> None:
    for secret in issued_tokens(fake) + [fake.credentials, fake.password]:
        assert secret not in result.out + result.err


@pytest.fixture
def closed_port():
    """A port with a bound socket that never listens: connecting to it is refused at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


# --------------------------------------------------------------------------
# all pass
# --------------------------------------------------------------------------
def test_all_checks_pass_against_the_fake(fake, run_check):
    result = run_check(fake_env(fake), "--port", "0")
    assert result.code == 0, result.out
    assert [(s, n) for s, n, _ in result.checks] == [
        ("ok", "config"), ("ok", "DNS"), ("ok", "TCP"), ("ok", "TLS"), ("ok", "DNS"), ("ok", "TCP"), ("ok", "TLS"),
        ("ok", "token"), ("ok", "models"), ("ok", "chat")]
    assert result.summary == "all 10 checks passed: start gigaproxy without --check"
    assert "chain verified by GIGACHAT_CA_BUNDLE_FILE=%s" % CA_FILE in result.text("TLS", "ok")
    assert "certificate for localhost, issued by gigaproxy test CA, valid until 2099-12-31" in result.text("TLS", "ok")
    assert "authorization key accepted for GIGACHAT_API_PERS" in result.text("token", "ok")
    assert "the token expires at" in result.text("token", "ok")
    assert result.text("models", "ok") == "%d models; GIGACHAT_MODEL=GigaChat-2 is among them" % len(fake.models)
    assert result.text("chat", "ok").startswith("GigaChat-2:2.0.28.2 answered in ")
    assert fake.oauth_calls == 1 and len(fake.chat_requests()) == 1
    assert_no_token_printed(result, fake)


def test_the_configuration_says_where_each_value_came_from(fake, run_check, tmp_path):
    (tmp_path / ".env").write_text("GIGACHAT_MODEL=GigaChat-2-Max\nGIGAPROXY_MAX_CONCURRENCY=7\n")
    result = run_check(fake_env(fake), "--port", "0")
    assert result.code == 0, result.out
    rows = result.rows
    assert rows["GIGACHAT_CREDENTIALS"] == ("(set, %d characters, hidden)" % len(fake.credentials), "env")
    assert rows["GIGACHAT_MODEL"] == ("GigaChat-2-Max", "env file .env")
    assert rows["GIGAPROXY_MAX_CONCURRENCY"] == ("7", "env file .env")  # not at its default: listed
    assert rows["GIGAPROXY_PORT"] == ("0", "flag --port")
    assert rows["GIGACHAT_SCOPE"] == ("GIGACHAT_API_PERS", "default")
    assert rows["HTTPS_PROXY"] == ("(not set)", "default")
    assert "GIGAPROXY_SHUTDOWN_GRACE" not in rows  # at its default: left out
    assert "1 from flags, 5 from the environment, 2 from the env file" in result.text("config", "ok")
    assert "GigaChat-2-Max" in result.text("models", "ok")


def test_settings_keep_the_spelling_that_was_used(tmp_path):
    env = {"GIGACHAT_AUTH_KEY": "a2V5OnNlY3JldA==", "https_proxy": "proxy:3128"}
    sources = {}  # type: Dict[str, str]
    config = gigaproxy.load_config(gigaproxy.build_parser().parse_args([]), env, cwd=str(tmp_path), sources=sources)
    rows = {name: (value, source) for name, value, source in gigaproxy.check_settings(config, sources)}
    assert rows["GIGACHAT_AUTH_KEY"] == ("(set, 16 characters, hidden)", "env")
    assert rows["https_proxy"] == ("http://proxy:3128", "env")
    assert rows["GIGAPROXY_PORT"] == ("4000", "default")
    assert "GIGACHAT_CREDENTIALS" not in rows and "HTTPS_PROXY" not in rows


def test_a_key_that_is_not_base64_is_pointed_out(fake, run_check):
    result = run_check(fake_env(fake, GIGACHAT_CREDENTIALS=NOT_A_KEY))
    assert result.code == 1
    assert "not base64 of client_id:client_secret" in result.rows["GIGACHAT_CREDENTIALS"][0]


def test_a_configuration_error_is_a_failed_check_not_a_crash(run_check):
    result = run_check({})
    assert result.code == 1
    assert result.states("config") == ["fail"]
    assert "GIGACHAT_CREDENTIALS" in result.text("config")
    assert result.summary.startswith("1 of 1 checks failed")


def test_a_ca_bundle_that_is_not_pem_fails_the_configuration(fake, run_check, tmp_path):
    junk = tmp_path / "corp-root.pem"
    junk.write_text("not a certificate\n")
    result = run_check(fake_env(fake, GIGACHAT_CA_BUNDLE_FILE=str(junk)))
    assert result.code == 1
    assert "not a readable PEM" in result.text("config") and "GIGACHAT_CA_BUNDLE_FILE" in result.text("config")
    assert fake.requests == []


# --------------------------------------------------------------------------
# credentials and scope
# --------------------------------------------------------------------------
def test_wrong_credentials(fake, run_check):
    result = run_check(fake_env(fake, GIGACHAT_CREDENTIALS=WRONG_KEY))
    assert result.code == 1
    text = result.text("token")
    assert "HTTP 401" in text and "credentials doesn't match db data" in text
    assert "fix: copy the Authorization key" in text and "GIGACHAT_CREDENTIALS" in text
    assert result.states("models") == result.states("chat") == ["skip"]
    assert result.summary.startswith("1 of 10 checks failed, 2 not tried")


def test_wrong_scope(fake, run_check):
    result = run_check(fake_env(fake, GIGACHAT_SCOPE="GIGACHAT_API_CORP"))
    assert result.code == 1
    text = result.text("token")
    assert "scope from db not fully includes consumed scope" in text
    assert "not issued for GIGACHAT_SCOPE=GIGACHAT_API_CORP" in text
    assert "fix: set GIGACHAT_SCOPE" in text and "GIGACHAT_API_PERS" in text
    assert result.states("models") == ["skip"]


def test_a_static_token_is_tried_by_the_model_list(fake, run_check):
    token = fake.issue_token()
    result = run_check(fake_env(fake, GIGACHAT_CREDENTIALS=None, GIGACHAT_ACCESS_TOKEN=token))
    assert result.code == 0, result.out
    assert "GIGACHAT_ACCESS_TOKEN is used as given" in result.text("token", "ok")
    assert len(result.states("DNS")) == 1  # no OAuth host to check
    assert result.rows["GIGACHAT_ACCESS_TOKEN"][0] == "(set, %d characters, hidden)" % len(token)


def test_a_rejected_static_token(fake, run_check):
    bogus = "expired-token-3c9d1e7a5b"
    SECRETS.add(bogus)
    result = run_check(fake_env(fake, GIGACHAT_CREDENTIALS=None, GIGACHAT_ACCESS_TOKEN=bogus))
    assert result.code == 1
    text = result.text("models")
    assert "rejected GIGACHAT_ACCESS_TOKEN" in text and "fix: set GIGACHAT_CREDENTIALS" in text
    assert result.states("chat") == ["fail"]


def test_mtls_client_certificate_is_the_credential(run_check):
    with FakeGigaChat(require_client_cert=True) as fake:
        env = fake_env(fake, GIGACHAT_CREDENTIALS=None, GIGACHAT_CERT_FILE=CLIENT_CERT, GIGACHAT_KEY_FILE=CLIENT_KEY)
        result = run_check(env)
        assert not fake.errors
    assert result.code == 0, result.out
    assert "the client certificate (GIGACHAT_CERT_FILE) is the credential" in result.text("token", "ok")
    assert fake.requests and all(r.client_cert for r in fake.requests)


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bundle", [OTHER_CA_FILE, None], ids=["unrelated-bundle", "no-bundle"])
def test_unknown_certificate_authority(fake, run_check, bundle):
    result = run_check(fake_env(fake, GIGACHAT_CA_BUNDLE_FILE=bundle))
    assert result.code == 1
    assert result.states("TLS") == ["fail", "fail"]
    text = result.text("TLS")
    assert "certificate not accepted" in text and "inspects TLS" in text
    if bundle:
        assert "fix: GIGACHAT_CA_BUNDLE_FILE=%s does not hold that root" % bundle in text
    else:
        assert "set GIGACHAT_CA_BUNDLE_FILE to its path" in text
    assert result.states("token") == result.states("models") == result.states("chat") == ["skip"]
    assert fake.oauth_calls == 0


def test_certificate_for_another_host_name(fake, run_check):
    # 127.1 is 127.0.0.1 to the resolver, but not a name the fake's certificate
    # (localhost, 127.0.0.1) is issued for.
    env = fake_env(fake, GIGACHAT_BASE_URL=fake.base_url.replace("127.0.0.1", "127.1"),
                   GIGACHAT_AUTH_URL=fake.auth_url.replace("127.0.0.1", "127.1"))
    result = run_check(env)
    assert result.code == 1
    assert result.states("DNS") == result.states("TCP") == ["ok", "ok"]
    text = result.text("TLS")
    assert "Hostname mismatch" in text and "issued for another host name" in text
    assert "fix: check the host name in GIGACHAT_AUTH_URL" in text


def test_an_expired_certificate_is_told_apart():
    # No expired certificate is committed; the verdict is a function of OpenSSL's verify code.
    error = ssl.SSLCertVerificationError(1, "certificate verify failed: certificate has expired")
    error.verify_code, error.verify_message = 10, "certificate has expired"
    config = gigaproxy.Config(credentials="x")
    what, cause, fix = gigaproxy.tls_problem(error, config, "gigachat.example", "GIGACHAT_BASE_URL")
    assert what == "certificate not accepted: certificate has expired"
    assert "expired" in cause and "clock" in cause and "date and time" in fix


def test_tls_verification_off_passes_and_says_so(fake, run_check):
    result = run_check(fake_env(fake, GIGACHAT_VERIFY_SSL_CERTS="false"))
    assert result.code == 0, result.out
    text = result.text("TLS", "ok")
    assert "verification is OFF (GIGACHAT_VERIFY_SSL_CERTS=false)" in text
    assert "would verify with GIGACHAT_CA_BUNDLE_FILE" in text


def test_the_bundled_root_is_named_when_it_verifies(fake, make_config):
    # Stand the test CA in for the Russian root: the doctor names the bundled root, not the system store.
    config = make_config(GIGACHAT_CA_BUNDLE_FILE=None)._replace(bundled_ca_file=CA_FILE)
    out = io.StringIO()
    assert gigaproxy.run_checks(config, {}, out) == 0, out.getvalue()
    CAPTURED.append(out.getvalue())
    assert "chain verified by the bundled Russian Trusted Root CA" in out.getvalue()


def test_the_system_store_is_named_when_it_verifies(fake, make_config, monkeypatch, build_ssl_context_uncached):
    # OpenSSL's default store honours SSL_CERT_FILE: the test CA becomes "the system store".
    monkeypatch.setattr(gigaproxy, "build_ssl_context", build_ssl_context_uncached)
    monkeypatch.setenv("SSL_CERT_FILE", CA_FILE)
    config = make_config(GIGACHAT_CA_BUNDLE_FILE=None)._replace(bundled_ca_file=OTHER_CA_FILE)
    out = io.StringIO()
    assert gigaproxy.run_checks(config, {}, out) == 0, out.getvalue()
    CAPTURED.append(out.getvalue())
    assert "chain verified by the system certificate store" in out.getvalue()


# --------------------------------------------------------------------------
# DNS and TCP
# --------------------------------------------------------------------------
def test_a_host_name_that_does_not_resolve(fake, run_check, monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".invalid"):  # RFC 6761: never resolves; no DNS server asked
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    result = run_check(fake_env(fake, GIGACHAT_AUTH_URL="https://nonexistent.invalid:9443/api/v2/oauth"))
    assert result.code == 1
    assert result.states("DNS") == ["fail", "ok"]
    text = result.text("DNS")
    assert "cannot resolve nonexistent.invalid (GIGACHAT_AUTH_URL): Name or service not known" in text
    assert "fix: check the host in GIGACHAT_AUTH_URL" in text and "HTTPS_PROXY" in text
    assert result.states("TCP") == result.states("TLS") == ["ok"]  # the API host is checked all the same
    assert result.states("token") == ["skip"] and "GIGACHAT_AUTH_URL is not reachable" in result.text("token", "skip")


def test_a_port_where_nothing_listens(fake, run_check, closed_port):
    base = "https://127.0.0.1:%d/api/v1" % closed_port
    result = run_check(fake_env(fake, GIGACHAT_BASE_URL=base))
    assert result.code == 1
    assert result.states("TCP") == ["ok", "fail"]
    text = result.text("TCP")
    assert "cannot connect to 127.0.0.1:%d: connection refused" % closed_port in text
    assert "fix: check the host and port in GIGACHAT_BASE_URL" in text
    assert result.states("token") == ["ok"]  # the OAuth host works
    assert result.states("models") == result.states("chat") == ["skip"]


# --------------------------------------------------------------------------
# HTTPS_PROXY
# --------------------------------------------------------------------------
def test_through_a_proxy_that_lets_us_through(fake, run_check):
    with FakeConnectProxy(auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        url = "http://%s:%s@127.0.0.1:%d" % (PROXY_USER, PROXY_PASSWORD, proxy.port)
        result = run_check(fake_env(fake, HTTPS_PROXY=url))
    assert result.code == 0, result.out
    assert result.rows["HTTPS_PROXY"] == ("http://***@127.0.0.1:%d" % proxy.port, "env")
    assert len(result.states("DNS")) == 1  # the proxy's own name, once; it resolves GigaChat's
    assert "proxy host 127.0.0.1 (HTTPS_PROXY)" in result.text("DNS", "ok")
    assert "through HTTPS_PROXY http://***@127.0.0.1:%d" % proxy.port in result.text("TCP", "ok")
    assert proxy.connects and set(proxy.connects) == {"127.0.0.1:%d" % fake.port}
    assert PROXY_USER not in result.out


@pytest.mark.parametrize("credentials", ["", "%s:wrong-password@" % PROXY_USER], ids=["none", "wrong"])
def test_a_proxy_that_wants_a_password(fake, run_check, credentials):
    with FakeConnectProxy(auth=(PROXY_USER, PROXY_PASSWORD)) as proxy:
        result = run_check(fake_env(fake, HTTPS_PROXY="http://%s127.0.0.1:%d" % (credentials, proxy.port)))
    assert result.code == 1
    text = result.text("TCP")
    assert "refused the tunnel to 127.0.0.1:%d: 407 Proxy Authentication Required" % fake.port in text
    assert ("rejected the user name or password" if credentials else "wants a user name and password") in text
    assert "fix: set HTTPS_PROXY=http://user:password@host:port" in text
    assert "wrong-password" not in result.out
    assert result.states("TLS") == [] and result.states("token") == ["skip"]


def test_a_proxy_that_does_not_allow_the_host(fake, run_check):
    with FakeConnectProxy() as proxy:  # it tunnels to loopback only: any other host is a 403
        env = fake_env(fake, GIGACHAT_AUTH_URL="https://ngw.gigachat.example:9443/api/v2/oauth",
                       GIGACHAT_BASE_URL="https://gigachat.gigachat.example/api/v1",
                       HTTPS_PROXY="http://127.0.0.1:%d" % proxy.port)
        result = run_check(env)
    assert result.code == 1
    text = result.text("TCP")
    assert "403 Forbidden" in text and "does not allow connections to ngw.gigachat.example:9443" in text
    assert "NO_PROXY" in text
    assert proxy.connects == []


def test_a_proxy_that_is_not_there(fake, run_check, closed_port):
    result = run_check(fake_env(fake, HTTPS_PROXY="http://127.0.0.1:%d" % closed_port))
    assert result.code == 1
    text = result.text("TCP")
    assert "cannot connect to the proxy http://127.0.0.1:%d (HTTPS_PROXY)" % closed_port in text
    assert "fix: check the host and port in HTTPS_PROXY" in text


def test_no_proxy_bypasses_the_proxy(fake, run_check, closed_port):
    result = run_check(fake_env(fake, HTTPS_PROXY="http://127.0.0.1:%d" % closed_port, NO_PROXY="127.0.0.1"))
    assert result.code == 0, result.out
    assert "connected to 127.0.0.1:%d" % fake.port in result.text("TCP", "ok")


# --------------------------------------------------------------------------
# models and chat
# --------------------------------------------------------------------------
def test_a_model_gigachat_does_not_list(fake, run_check):
    result = run_check(fake_env(fake, GIGACHAT_MODEL="GigaChat-9"))
    assert result.code == 1
    text = result.text("models")
    assert text.startswith("%d models, but GIGACHAT_MODEL=GigaChat-9 is not among them" % len(fake.models))
    assert "fix: set GIGACHAT_MODEL to one of: GigaChat, GigaChat-2, GigaChat-2-Pro" in text
    assert "Embeddings" not in text  # chat models only
    assert "No such model" in result.text("chat") and "set GIGACHAT_MODEL" in result.text("chat")


def test_a_gigaproxy_shorthand_is_not_a_gigachat_model(fake, run_check):
    result = run_check(fake_env(fake, GIGACHAT_MODEL="gigachat-max"))
    assert result.code == 1
    assert "a gigaproxy shorthand" in result.text("models")
    assert "fix: set GIGACHAT_MODEL=GigaChat-2-Max" in result.text("models")


@pytest.mark.parametrize("status, says", [
    (402, "no tokens left"),
    (500, "GigaChat, or a gateway in front of it, failed"),
    (429, "too many requests"),
])
def test_the_chat_fails(fake, run_check, status, says):
    fake.add_fault("status", CHAT_PATH, status=status)
    result = run_check(fake_env(fake))
    assert result.code == 1
    assert result.states("models") == ["ok"]
    text = result.text("chat")
    assert text.startswith("a one-line chat with GigaChat-2 failed: GigaChat: ") and says in text
    assert len([r for r in fake.requests if r.path == CHAT_PATH]) == 1  # --check never retries
    assert result.summary.startswith("1 of 10 checks failed:")


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
def test_a_stream_that_cannot_show_the_marks_gets_words(fake, make_config):
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    config = make_config(GIGACHAT_MODEL="GigaChat-9")
    assert gigaproxy.run_checks(config, {}, out) == 1
    out.flush()
    text = raw.getvalue().decode("ascii")
    CAPTURED.append(text)
    lines = text.splitlines()
    assert any(line.startswith("OK   token  ") for line in lines)
    assert any(line.startswith("FAIL models ") for line in lines)
    assert any(line.startswith("FAIL chat   ") for line in lines)  # no such model
    assert lines[-1].endswith("fix the first FAIL above, then run --check again")


def test_a_real_process_exits_0_and_prints_plain_text(fake, tmp_path):
    env = clean_env(PYTHONIOENCODING="ascii", **fake_env(fake))
    proc = subprocess.run([sys.executable, SCRIPT, "--check"], cwd=str(tmp_path), env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    out, err = proc.stdout.decode("ascii"), proc.stderr.decode("utf-8", "replace")
    CAPTURED.extend([out, err])
    assert proc.returncode == 0, out + err
    assert err == ""
    assert out.splitlines()[-1] == "all 10 checks passed: start gigaproxy without --check"
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(("gigaproxy", " ", "all"))] \
        == ["OK"] * 10
    for secret in [fake.credentials] + issued_tokens(fake):
        assert secret not in out + err
