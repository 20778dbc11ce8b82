"""Tests of the fake GigaChat itself (tests/fake_gigachat.py) and the test PKI (tests/certs).

Only http.client/ssl on loopback; no sleeps (threading.Event where timing matters).
Section numbers refer to /work/shared/gigachat-api.md.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import threading
import uuid
from typing import Any, Dict, List, Optional

import pytest

from fake_gigachat import (
    CA_FILE,
    CLIENT_CERT,
    CLIENT_KEY,
    CLIENT_KEY_ENCRYPTED,
    CLIENT_KEY_PASSWORD,
    OTHER_CA_FILE,
    FakeGigaChat,
)

CHAT = "/api/v1/chat/completions"
OAUTH = "/api/v2/oauth"
INVALID_JSON = "Your request contains invalid JSON syntax."
T0 = 1_700_000_000.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def client_context(cafile: str = CA_FILE, cert: bool = False) -> ssl.SSLContext:
    """What gigaproxy will do: trust only the given CA, check the hostname, strict X.509."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if cert:
        ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY)
    return ctx


DEFAULT_CONTEXT = client_context()


def connect(fake: FakeGigaChat, ctx: Optional[ssl.SSLContext] = None) -> http.client.HTTPConnection:
    if fake.tls:
        return http.client.HTTPSConnection("127.0.0.1", fake.port, timeout=5,
                                           context=ctx or DEFAULT_CONTEXT)
    return http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)


def call(fake: FakeGigaChat, method: str, path: str, body: Any = None,
         headers: Optional[Dict[str, str]] = None, token: Optional[str] = None,
         conn: Optional[http.client.HTTPConnection] = None) -> Response:
    own = conn is None
    conn = conn or connect(fake)
    hdrs = {}
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        if own:
            conn.close()


def chat_body(**fields: Any) -> Dict[str, Any]:
    body: Dict[str, Any] = {"model": "GigaChat",
                            "messages": [{"role": "user", "content": "hello big world"}]}
    body.update(fields)
    return body


def oauth(fake: FakeGigaChat, scope: Optional[str] = "GIGACHAT_API_PERS", key: Optional[str] = None,
          rquid: Optional[str] = "new", content_type: str = "application/x-www-form-urlencoded",
          scheme: str = "Basic") -> Response:
    headers = {"Authorization": "%s %s" % (scheme, fake.credentials if key is None else key),
               "Content-Type": content_type, "Accept": "application/json"}
    if rquid is not None:
        headers["RqUID"] = str(uuid.uuid4()) if rquid == "new" else rquid
    body = None if scope is None else "scope=" + scope
    return call(fake, "POST", OAUTH, body, headers)


def open_stream(fake: FakeGigaChat, token: str, **fields: Any):
    conn = connect(fake)
    conn.request("POST", CHAT, body=json.dumps(chat_body(stream=True, **fields)),
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json",
                          "Accept": "text/event-stream"})
    return conn, conn.getresponse()


def read_event(resp: http.client.HTTPResponse) -> Any:
    """Read one SSE event: a ``data: ...`` line and the blank line after it."""
    line = resp.readline()
    if not line:
        return None
    assert line.startswith(b"data: ") and line.endswith(b"\n"), line
    assert resp.readline() == b"\n"
    payload = line[len(b"data: "):-1]
    return "[DONE]" if payload == b"[DONE]" else json.loads(payload)


def read_events(resp: http.client.HTTPResponse) -> List[Any]:
    events = []
    while True:
        event = read_event(resp)
        if event is None:
            return events
        events.append(event)


@pytest.fixture
def fake():
    with FakeGigaChat() as instance:
        yield instance
    assert instance.errors == []


@pytest.fixture
def token(fake: FakeGigaChat) -> str:
    return fake.issue_token()


# --------------------------------------------------------------------------
# test PKI (tests/certs)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_server_cert_verifies_against_test_ca_only(fake, token, host):
    ctx = client_context()
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    conn = http.client.HTTPSConnection(host, fake.port, context=ctx, timeout=5)
    try:
        assert call(fake, "GET", "/api/v1/models", token=token, conn=conn).status == 200
        assert conn.sock.getpeercert()["subject"] == ((("organizationName", "gigaproxy tests"),),
                                                      (("commonName", "localhost"),))
    finally:
        conn.close()


def test_server_cert_rejected_by_unrelated_ca(fake):
    conn = connect(fake, client_context(OTHER_CA_FILE))
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/api/v1/models")
    conn.close()


def test_cert_files_exist_and_encrypted_key_needs_password():
    assert os.path.isabs(CA_FILE)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY_ENCRYPTED, password=CLIENT_KEY_PASSWORD)
    with pytest.raises(ssl.SSLError):
        ctx.load_cert_chain(CLIENT_CERT, CLIENT_KEY_ENCRYPTED, password="wrong")


# --------------------------------------------------------------------------
# construction, URLs, plain HTTP
# --------------------------------------------------------------------------
def test_urls_and_credentials(fake):
    assert fake.base_url == "https://127.0.0.1:%d/api/v1" % fake.port
    assert fake.auth_url == "https://127.0.0.1:%d/api/v2/oauth" % fake.port
    assert fake.ca_file == CA_FILE and os.path.isfile(fake.ca_file)
    client_id, _, secret = base64.b64decode(fake.credentials).decode().partition(":")
    assert client_id == "test-client" and len(secret) == 32
    other = FakeGigaChat()
    assert other.credentials != fake.credentials and other.password != fake.password


def test_plain_http_mode():
    with FakeGigaChat(tls=False) as fake:
        assert fake.base_url == "http://127.0.0.1:%d/api/v1" % fake.port
        resp = oauth(fake)
        assert resp.status == 200
        assert call(fake, "POST", CHAT, chat_body(), token=resp.json["access_token"]).status == 200
        assert fake.tls_handshakes == 0 and fake.connections_opened == 2


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        FakeGigaChat(expiry_format="minutes")
    with pytest.raises(ValueError):
        FakeGigaChat(tls=False, require_client_cert=True)


# --------------------------------------------------------------------------
# §2.1 OAuth
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, expected", [
    ("ms", {"access_token": str, "expires_at": int((T0 + 1800) * 1000)}),
    ("s", {"access_token": str, "expires_at": int(T0 + 1800)}),
    ("tok_exp", {"tok": str, "exp": int(T0 + 1800)}),
])
def test_oauth_expiry_formats(fmt, expected):
    with FakeGigaChat(expiry_format=fmt, clock=lambda: T0) as fake:
        resp = oauth(fake)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        data = resp.json
        assert set(data) == set(expected)
        token_key = "access_token" if "access_token" in data else "tok"
        assert isinstance(data[token_key], str) and len(data[token_key]) > 20
        for key, value in expected.items():
            if value is not str:
                assert data[key] == value
        assert call(fake, "GET", "/api/v1/models", token=data[token_key]).status == 200
        assert fake.oauth_calls == 1


def test_oauth_tokens_are_unique_and_lifetime_configurable():
    with FakeGigaChat(clock=lambda: T0, token_lifetime=60) as fake:
        first, second = oauth(fake).json, oauth(fake).json
        assert first["access_token"] != second["access_token"]
        assert first["expires_at"] == (T0 + 60) * 1000


@pytest.mark.parametrize("kwargs, status, body", [
    ({"key": "d3Jvbmc6a2V5"}, 401, {"code": 6, "message": "credentials doesn't match db data"}),
    ({"scheme": "Bearer"}, 401, {"code": 6, "message": "credentials doesn't match db data"}),
    ({"scope": ""}, 400, {"code": 5, "message": "scope is empty"}),
    ({"scope": None}, 400, {"code": 5, "message": "scope is empty"}),
    ({"scope": "GIGACHAT_API_CORP"}, 400,
     {"code": 7, "message": "scope from db not fully includes consumed scope"}),
])
def test_oauth_rejections(fake, kwargs, status, body):
    resp = oauth(fake, **kwargs)
    assert (resp.status, resp.json) == (status, body)
    assert fake.oauth_calls == 1 and fake.requests[-1].status == status


@pytest.mark.parametrize("kwargs", [
    {"rquid": None}, {"rquid": "not-a-uuid"}, {"rquid": "1234"},
    {"content_type": "application/json"},
])
def test_oauth_rqiud_and_content_type_are_required(fake, kwargs):
    resp = oauth(fake, **kwargs)
    assert resp.status == 400
    assert set(resp.json) == {"code", "message"}


def test_oauth_scope_is_configurable():
    with FakeGigaChat(scope="GIGACHAT_API_B2B") as fake:
        assert oauth(fake, scope="GIGACHAT_API_B2B").status == 200
        assert oauth(fake).json["code"] == 7


def test_oauth_calls_counted_across_threads(fake):
    results: List[int] = []
    threads = [threading.Thread(target=lambda: results.append(oauth(fake).status))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8 and fake.oauth_calls == 8


# --------------------------------------------------------------------------
# §2.2 user/password token
# --------------------------------------------------------------------------
def basic(user: str, password: str) -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(
        ("%s:%s" % (user, password)).encode()).decode()}


def test_user_password_token():
    with FakeGigaChat(user="alice", password="s3cret", clock=lambda: T0) as fake:
        resp = call(fake, "POST", "/api/v1/token", headers=basic("alice", "s3cret"))
        assert resp.status == 200
        assert set(resp.json) == {"tok", "exp"} and resp.json["exp"] == (T0 + 1800) * 1000
        assert call(fake, "POST", CHAT, chat_body(), token=resp.json["tok"]).status == 200
        bad = call(fake, "POST", "/api/v1/token", headers=basic("alice", "wrong"))
        assert (bad.status, bad.json) == (401, {"status": 401, "message": "Unauthorized"})
        assert call(fake, "POST", "/api/v1/token").status == 401
        assert fake.token_calls == 3 and fake.oauth_calls == 0


# --------------------------------------------------------------------------
# bearer tokens (§2, §3, §10)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer nope"}, {"Authorization": "Bearer "},
    {"Authorization": "Basic whatever"},
])
def test_bearer_required(fake, headers):
    resp = call(fake, "POST", CHAT, chat_body(), headers=headers)
    assert (resp.status, resp.json) == (401, {"status": 401, "message": "Unauthorized"})
    assert fake.chat_requests() == []


def test_token_expires_by_clock():
    now = [T0]
    with FakeGigaChat(clock=lambda: now[0], token_lifetime=100) as fake:
        tok = oauth(fake).json["access_token"]
        now[0] = T0 + 99.9
        assert call(fake, "GET", "/api/v1/models", token=tok).status == 200
        now[0] = T0 + 100
        resp = call(fake, "GET", "/api/v1/models", token=tok)
        assert (resp.status, resp.json) == (401, {"status": 401, "message": "Token has expired"})


def test_expire_tokens_spares_static_tokens():
    with FakeGigaChat(static_tokens=["forever"]) as fake:
        issued = fake.issue_token()
        fake.expire_tokens()
        assert call(fake, "GET", "/api/v1/models", token=issued).json["message"] == "Token has expired"
        assert call(fake, "GET", "/api/v1/models", token="forever").status == 200
        assert call(fake, "GET", "/api/v1/models", token=fake.issue_token()).status == 200


# --------------------------------------------------------------------------
# mTLS (§2.3)
# --------------------------------------------------------------------------
@pytest.fixture
def mtls_fake():
    with FakeGigaChat(require_client_cert=True) as instance:
        yield instance
    assert instance.errors == []


def test_mtls_without_client_cert_fails_handshake(mtls_fake):
    conn = connect(mtls_fake)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        conn.request("GET", "/api/v1/models")
        conn.getresponse().read()
    conn.close()
    assert mtls_fake.connections_opened == 1 and mtls_fake.tls_handshakes == 0
    assert mtls_fake.requests == []


@pytest.mark.parametrize("key, password", [(CLIENT_KEY, None),
                                           (CLIENT_KEY_ENCRYPTED, CLIENT_KEY_PASSWORD)])
def test_mtls_cert_is_the_credential(mtls_fake, key, password):
    ctx = client_context()
    ctx.load_cert_chain(CLIENT_CERT, key, password=password)
    resp = call(mtls_fake, "POST", CHAT, chat_body(), conn=connect(mtls_fake, ctx))
    assert resp.status == 200
    rec = mtls_fake.requests[-1]
    assert "authorization" not in rec.headers
    assert (("commonName", "gigaproxy test client"),) in rec.client_cert["subject"]


def test_mtls_with_bad_bearer_is_still_rejected(mtls_fake):
    conn = connect(mtls_fake, client_context(cert=True))
    assert call(mtls_fake, "GET", "/api/v1/models", token="bogus", conn=conn).status == 401
    good = call(mtls_fake, "GET", "/api/v1/models", token=mtls_fake.issue_token(), conn=conn)
    assert good.status == 200
    conn.close()


# --------------------------------------------------------------------------
# headers, routing, keep-alive (§3, §10, §11)
# --------------------------------------------------------------------------
def test_request_and_session_ids_echoed(fake, token):
    resp = call(fake, "GET", "/api/v1/models", token=token,
                headers={"X-Request-ID": "req-1", "X-Session-ID": "sess-1", "X-Client-ID": "cl-1"})
    assert resp.headers["x-request-id"] == "req-1"
    assert resp.headers["x-session-id"] == "sess-1"
    assert resp.headers["x-client-id"] == "cl-1"
    generated = call(fake, "GET", "/api/v1/models", token=token).headers
    assert uuid.UUID(generated["x-request-id"]).version == 4
    assert uuid.UUID(generated["x-session-id"]).version == 4
    assert generated["x-client-id"] is None


def test_error_responses_carry_ids_and_json_type(fake):
    resp = call(fake, "GET", "/api/v1/models", headers={"X-Request-ID": "r"})
    assert resp.headers["x-request-id"] == "r" and resp.headers["x-session-id"]
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert int(resp.headers["Content-Length"]) == len(resp.body)


def test_unknown_path_and_wrong_method(fake, token):
    for path in ("/", "/api/v1/nope", "/api/v2/chat/completions", "/api/v1/models/"):
        resp = call(fake, "GET", path, token=token)
        assert (resp.status, resp.json) == (404, {"status": 404, "message": "Not found"})
    assert call(fake, "GET", CHAT, token=token).status == 405
    assert call(fake, "GET", OAUTH).status == 405


def test_keep_alive_reuses_one_connection(fake, token):
    conn = connect(fake)
    for _ in range(4):
        assert call(fake, "GET", "/api/v1/models", token=token, conn=conn).status == 200
    assert call(fake, "POST", CHAT, chat_body(), token=token, conn=conn).status == 200
    assert call(fake, "GET", "/api/v1/models", conn=conn).status == 401  # errors keep it alive
    assert call(fake, "GET", "/api/v1/models", token=token, conn=conn).status == 200
    conn.close()
    assert (fake.connections_opened, fake.tls_handshakes) == (1, 1)
    call(fake, "GET", "/api/v1/models", token=token)
    assert (fake.connections_opened, fake.tls_handshakes) == (2, 2)


def test_chunked_request_body_is_accepted(fake, token):
    conn = connect(fake)
    body = json.dumps(chat_body()).encode()
    conn.request("POST", CHAT, body=iter([body[:10], body[10:]]), encode_chunked=True,
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json",
                          "Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 200
    conn.close()
    assert fake.chat_requests() == [chat_body()]


# --------------------------------------------------------------------------
# request recording
# --------------------------------------------------------------------------
def test_requests_are_recorded(fake, token):
    call(fake, "POST", CHAT + "?a=1&b=", chat_body(), token=token, headers={"X-Thing": "v"})
    call(fake, "POST", CHAT, chat_body(temperature=0), token=token)
    rec = fake.requests[0]
    assert (rec.method, rec.path, rec.query) == ("POST", CHAT, {"a": "1", "b": ""})
    assert rec.headers["x-thing"] == "v" and rec.headers["authorization"] == "Bearer " + token
    assert rec.body == json.dumps(chat_body()).encode() and rec.json == chat_body()
    assert rec.status == 200 and rec.valid
    assert fake.requests[1].status == 422 and not fake.requests[1].valid
    assert fake.chat_requests() == [chat_body()]


def test_reset(fake, token):
    call(fake, "GET", "/api/v1/models", token=token)
    fake.add_fault("status", status=500)
    fake.enqueue_reply({"content": "queued"})
    fake.reset()
    assert fake.requests == [] and fake.models_calls == 0 and fake.connections_opened == 0
    resp = call(fake, "POST", CHAT, chat_body(), token=token)  # token survives reset
    assert resp.status == 200
    assert resp.json["choices"][0]["message"]["content"] == "Echo: hello big world"


# --------------------------------------------------------------------------
# §4 chat validation
# --------------------------------------------------------------------------
FN = {"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}
CALL_TURN = [
    {"role": "user", "content": "weather?"},
    {"role": "assistant", "content": "", "function_call": {"name": "get_weather",
                                                           "arguments": {"city": "Moscow"}},
     "functions_state_id": str(uuid.uuid4())},
    {"role": "function", "name": "get_weather", "content": "{\"temp\": 5}"},
]

ACCEPTED = {
    "minimal": chat_body(),
    "system first": chat_body(messages=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "hi"}]),
    "function round trip": chat_body(messages=CALL_TURN, functions=[FN]),
    "message extras": chat_body(messages=[
        {"role": "user", "content": "look", "attachments": [], "name": "bob"},
        {"role": "assistant", "content": "ok", "reasoning_content": "hmm"},
        {"role": "user", "content": ""}]),
    "temperature": chat_body(temperature=0.001),
    "temperature int": chat_body(temperature=2),
    "top_p 0": chat_body(top_p=0),
    "top_p 1": chat_body(top_p=1.0),
    "n": chat_body(n=4),
    "max_tokens": chat_body(max_tokens=1),
    "repetition_penalty": chat_body(repetition_penalty=1.1),
    "update_interval": chat_body(update_interval=0),
    "profanity_check": chat_body(profanity_check=False),
    "stream false": chat_body(stream=False),
    "flags": chat_body(flags=["a", "b"]),
    "storage": chat_body(storage={"is_stateful": True}),
    "function_ranker": chat_body(function_ranker={"enabled": True, "top_n": 3}),
    "reasoning_effort": chat_body(model="GigaChat-2-Reasoning", reasoning_effort="low"),
    "functions null": chat_body(functions=None),
    "function_call auto": chat_body(functions=[FN], function_call="auto"),
    "function_call none": chat_body(functions=[FN], function_call="none"),
    "function_call forced": chat_body(functions=[FN], function_call={"name": "get_weather"}),
    "function_call builtin": chat_body(function_call={"name": "text2image"}),
    "function extras": chat_body(functions=[dict(FN, few_shot_examples=[],
                                                 return_parameters={"type": "object"})]),
    "response_format text": chat_body(response_format={"type": "text"}),
    "response_format schema": chat_body(response_format={
        "type": "json_schema", "schema": {"type": "object", "properties": {}}}),
    "response_format strict": chat_body(response_format={
        "type": "json_schema", "schema": {"type": "object", "properties": {}, "required": []},
        "strict": True}),
}


@pytest.mark.parametrize("body", list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_chat_accepts(fake, token, body):
    resp = call(fake, "POST", CHAT, body, token=token)
    assert resp.status == 200, resp.body
    assert fake.chat_requests() == [body]


def msgs(*messages: Dict[str, Any]) -> Dict[str, Any]:
    return chat_body(messages=list(messages))


USER = {"role": "user", "content": "hi"}
OPENAI_ONLY = ["stop", "tools", "tool_choice", "stream_options", "max_completion_tokens", "user",
               "seed", "presence_penalty", "frequency_penalty", "logprobs", "parallel_tool_calls",
               "logit_bias", "top_logprobs", "modalities"]

REJECTED = {
    # (body, status, substring of message)
    "content array (Cline)": (msgs({"role": "user", "content": [{"type": "text", "text": "x"}]}),
                              400, INVALID_JSON),
    "content object": (msgs({"role": "user", "content": {"text": "x"}}), 400, INVALID_JSON),
    "content number": (msgs({"role": "user", "content": 5}), 400, INVALID_JSON),
    "content null": (msgs({"role": "user", "content": None}), 422, "messages[0].content"),
    "content missing": (msgs({"role": "user"}), 422, "messages[0].content"),
    "model missing": ({"messages": [USER]}, 422, "model"),
    "model empty": (chat_body(model=""), 422, "model"),
    "model not string": (chat_body(model=1), 422, "model"),
    "model unknown": (chat_body(model="gpt-4o"), 404, "No such model"),
    "messages missing": ({"model": "GigaChat"}, 422, "messages"),
    "messages empty": (chat_body(messages=[]), 422, "messages"),
    "messages not array": (chat_body(messages={"role": "user"}), 422, "messages"),
    "message not object": (chat_body(messages=["hi"]), 422, "messages[0]"),
    "role tool": (msgs(USER, {"role": "tool", "content": "x"}), 422, "messages[1].role"),
    "role developer": (msgs({"role": "developer", "content": "x"}), 422, "role"),
    "role missing": (msgs({"content": "x"}), 422, "role"),
    "message tool_calls": (msgs(USER, {"role": "assistant", "content": "", "tool_calls": []}),
                           422, "unknown field 'tool_calls'"),
    "message tool_call_id": (msgs(dict(USER, tool_call_id="c1")), 422, "tool_call_id"),
    "system second": (msgs(USER, {"role": "system", "content": "s"}),
                      422, "system message must be the first message"),
    "two systems": (msgs({"role": "system", "content": "a"}, {"role": "system", "content": "b"}),
                    422, "system message must be the first message"),
    "name not string": (msgs(dict(USER, name=5)), 422, "name"),
    "attachments not array": (msgs(dict(USER, attachments="id")), 422, "attachments"),
    "functions_state_id not string": (msgs(dict(USER, functions_state_id=1)), 422, "functions_state_id"),
    "function without name": (msgs(CALL_TURN[0], CALL_TURN[1], {"role": "function", "content": "{}"}),
                              422, "name is required"),
    "function plain text": (msgs(CALL_TURN[0], CALL_TURN[1], dict(CALL_TURN[2], content="5 degrees")),
                            422, "invalid function result json string"),
    "function json string": (msgs(CALL_TURN[0], CALL_TURN[1], dict(CALL_TURN[2], content="\"x\"")),
                             422, "invalid function result json string"),
    "function json array": (msgs(CALL_TURN[0], CALL_TURN[1], dict(CALL_TURN[2], content="[1]")),
                            422, "invalid function result json string"),
    "call without result": (msgs(CALL_TURN[0], CALL_TURN[1]), 422,
                            "every assistant function call must have a result in history"),
    "call followed by user": (msgs(CALL_TURN[0], CALL_TURN[1], USER), 422,
                              "every assistant function call must have a result in history"),
    "call arguments string": (msgs(CALL_TURN[0], dict(CALL_TURN[1], function_call={
        "name": "get_weather", "arguments": "{\"city\": \"Moscow\"}"}), CALL_TURN[2]),
        422, "function_call"),
    "call without name": (msgs(CALL_TURN[0], dict(CALL_TURN[1], function_call={"arguments": {}}),
                               CALL_TURN[2]), 422, "function_call"),
    "call on user message": (msgs(dict(USER, function_call={"name": "f", "arguments": {}})),
                             422, "function_call"),
    "temperature 0": (chat_body(temperature=0), 422, "temperature must be in range (0, +inf)"),
    "temperature negative": (chat_body(temperature=-1), 422, "temperature must be in range (0, +inf)"),
    "temperature bool": (chat_body(temperature=True), 422, "temperature"),
    "temperature string": (chat_body(temperature="0.5"), 422, "temperature"),
    "temperature null": (chat_body(temperature=None), 422, "temperature"),
    "top_p above 1": (chat_body(top_p=1.5), 422, "top_p"),
    "top_p negative": (chat_body(top_p=-0.1), 422, "top_p"),
    "top_p bool": (chat_body(top_p=True), 422, "top_p"),
    "n 0": (chat_body(n=0), 422, "n must be"),
    "n 5": (chat_body(n=5), 422, "n must be"),
    "n float": (chat_body(n=1.0), 422, "n must be"),
    "max_tokens 0": (chat_body(max_tokens=0), 422, "max_tokens"),
    "max_tokens float": (chat_body(max_tokens=1.5), 422, "max_tokens"),
    "max_tokens bool": (chat_body(max_tokens=True), 422, "max_tokens"),
    "repetition_penalty 0": (chat_body(repetition_penalty=0), 422,
                             "repetition_penalty must be in range (0, +inf)"),
    "update_interval negative": (chat_body(update_interval=-1), 422, "update_interval"),
    "profanity_check string": (chat_body(profanity_check="yes"), 422, "profanity_check"),
    "stream int": (chat_body(stream=1), 422, "stream"),
    "flags string": (chat_body(flags="a"), 422, "flags"),
    "storage array": (chat_body(storage=[]), 422, "storage"),
    "function_ranker bool": (chat_body(function_ranker=True), 422, "function_ranker"),
    "reasoning_effort max": (chat_body(reasoning_effort="max"), 422, "reasoning_effort"),
    "functions object": (chat_body(functions=FN), 422, "functions"),
    "function no name": (chat_body(functions=[{"parameters": {}}]), 422, "functions[0].name"),
    "function no parameters": (chat_body(functions=[{"name": "f"}]), 422, "parameters"),
    "function parameters string": (chat_body(functions=[{"name": "f", "parameters": "{}"}]),
                                   422, "parameters"),
    "function strict (OpenAI)": (chat_body(functions=[dict(FN, strict=True)]), 422, "strict"),
    "function duplicated": (chat_body(functions=[FN, FN]), 422, "duplicated"),
    "function_call required": (chat_body(functions=[FN], function_call="required"), 422,
                               "function_call"),
    "function_call unknown name": (chat_body(functions=[FN], function_call={"name": "other"}),
                                   422, "function_call"),
    "function_call OpenAI shape": (chat_body(functions=[FN], function_call={
        "type": "function", "function": {"name": "get_weather"}}), 422, "function_call"),
    "response_format json_object": (chat_body(response_format={"type": "json_object"}),
                                    422, "response_format"),
    "response_format OpenAI shape": (chat_body(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {}}}), 422, "json_schema"),
    "response_format no schema": (chat_body(response_format={"type": "json_schema"}),
                                  422, "schema"),
    "response_format strict no required": (chat_body(response_format={
        "type": "json_schema", "schema": {"type": "object", "properties": {}}, "strict": True}),
        422, "required"),
    "response_format strict string": (chat_body(response_format={
        "type": "json_schema", "schema": {}, "strict": "yes"}), 422, "strict"),
}
REJECTED.update({"OpenAI field " + key: (chat_body(**{key: None}), 422, "'%s'" % key)
                 for key in OPENAI_ONLY})


@pytest.mark.parametrize("body, status, message", list(REJECTED.values()), ids=list(REJECTED))
def test_chat_rejects(fake, token, body, status, message):
    resp = call(fake, "POST", CHAT, body, token=token)
    assert resp.status == status, resp.body
    assert set(resp.json) == {"status", "message"} and resp.json["status"] == status
    assert message in resp.json["message"]
    if status == 422:
        assert resp.json["message"].startswith("Invalid params: ")
    assert fake.chat_requests() == [] and fake.requests[-1].status == status


@pytest.mark.parametrize("raw", [b"{", b"[]", b"\"x\"", b"null", b"{\"temperature\": NaN}", b""])
def test_chat_rejects_invalid_json(fake, token, raw):
    resp = call(fake, "POST", CHAT, raw, token=token, headers={"Content-Type": "application/json"})
    assert (resp.status, resp.json) == (400, {"status": 400, "message": INVALID_JSON})


def test_chat_requires_json_content_type(fake, token):
    resp = call(fake, "POST", CHAT, json.dumps(chat_body()), token=token,
                headers={"Content-Type": "text/plain"})
    assert resp.status == 400


def test_models_list_drives_model_check(fake, token):
    fake.models.append({"id": "GigaChat-3-Ultra", "object": "model",
                        "owned_by": "salutedevices", "type": "chat"})
    assert call(fake, "POST", CHAT, chat_body(model="GigaChat-3-Ultra"), token=token).status == 200
    fake.models[:] = [m for m in fake.models if m["id"] != "GigaChat"]
    assert call(fake, "POST", CHAT, chat_body(), token=token).status == 404


# --------------------------------------------------------------------------
# §4.2 function schemas and names (rules after gpt2giga's normaliser and the SPEC)
# --------------------------------------------------------------------------
def fn_with(parameters: Any, name: str = "get_weather") -> Dict[str, Any]:
    return {"name": name, "description": "Weather", "parameters": parameters}


def obj(**properties: Any) -> Dict[str, Any]:
    return {"type": "object", "properties": properties}


STR = {"type": "string"}

#: Schemas GigaChat is taken to refuse, each with the path the 422 message names.
SCHEMA_REJECTED = {
    "$ref": (obj(a={"$ref": "#/$defs/A"}), "properties.a: '$ref'"),
    "$defs": (dict(obj(a=STR), **{"$defs": {"A": STR}}), "parameters: '$defs'"),
    "definitions": (dict(obj(a=STR), definitions={"A": STR}), "parameters: 'definitions'"),
    "anyOf": (obj(a={"anyOf": [STR, {"type": "null"}]}), "properties.a: 'anyOf'"),
    "oneOf": (obj(a={"oneOf": [STR, {"type": "integer"}]}), "properties.a: 'oneOf'"),
    "allOf": (obj(a={"allOf": [obj(b=STR)]}), "properties.a: 'allOf'"),
    "type list": (obj(a={"type": ["string", "null"]}), "properties.a.type"),
    "root type list": ({"type": ["object", "null"], "properties": {}}, "parameters.type"),
    "const": (obj(a={"type": "string", "const": "x"}), "properties.a: 'const'"),
    "enum of numbers": (obj(a={"type": "integer", "enum": [1, 2, 3]}), "properties.a.enum"),
    "enum mixed": (obj(a={"type": "string", "enum": ["a", None]}), "properties.a.enum"),
    "enum of booleans": (obj(a={"enum": [True, False]}), "properties.a.enum"),
    "enum not a list": (obj(a={"type": "string", "enum": "a"}), "properties.a.enum"),
    "format uri": (obj(a={"type": "string", "format": "uri"}), "properties.a.format 'uri'"),
    "format email": (obj(a={"type": "string", "format": "email"}), "properties.a.format"),
    "format uuid": (obj(a={"type": "string", "format": "uuid"}), "properties.a.format"),
    "bare root object": ({"type": "object"}, "parameters: an object schema must have properties"),
    "bare nested object": (obj(a={"type": "object", "additionalProperties": STR}),
                           "properties.a: an object schema must have properties"),
    "properties not an object": ({"type": "object", "properties": []}, "parameters"),
    "deep in items": (obj(a={"type": "array", "items": obj(b={"anyOf": [STR]})}),
                      "properties.a.items.properties.b: 'anyOf'"),
    "in tuple items": (obj(a={"type": "array", "items": [STR, {"const": 1}]}),
                       "properties.a.items[1]: 'const'"),
    "in additionalProperties": (
        obj(a={"type": "object", "properties": {}, "additionalProperties": {"type": ["string", "null"]}}),
        "properties.a.additionalProperties.type"),
    "deep nesting": (obj(a=obj(b=obj(c={"type": "array", "items": {"type": "object"}}))),
                     "properties.a.properties.b.properties.c.items: an object schema"),
}

#: Schemas that pass: what a normaliser leaves behind, with harmless extra keywords.
SCHEMA_ACCEPTED = {
    "empty object": obj(),
    "no type at root": {"properties": {"a": STR}},
    "string enum": obj(a={"type": "string", "enum": ["pending", "done"]}),
    "allowed formats": obj(a={"type": "string", "format": "date"}, b={"type": "string", "format": "date-time"},
                           c={"type": "string", "format": "time"}),
    "additionalProperties false": dict(obj(a=STR), additionalProperties=False, required=["a"]),
    "additionalProperties schema": {"type": "object", "properties": {}, "additionalProperties": {"type": "integer"}},
    "array of objects": obj(edits={"type": "array", "items": obj(old=STR, new=STR), "minItems": 1}),
    "keywords left alone": obj(a={"type": "integer", "minimum": 1, "maximum": 5, "default": 2, "title": "A",
                                  "description": "d"}, b={"type": "string", "pattern": "^[a-z]+$"},
                               c={"type": "null"}),
    "$schema at root": dict(obj(a=STR), **{"$schema": "http://json-schema.org/draft-07/schema#"}),
    "boolean property schema": obj(a=True),
}


@pytest.mark.parametrize("parameters, where", list(SCHEMA_REJECTED.values()), ids=list(SCHEMA_REJECTED))
def test_function_schema_rejected(fake, token, parameters, where):
    resp = call(fake, "POST", CHAT, chat_body(functions=[fn_with(parameters)]), token=token)
    assert resp.status == 422, resp.body
    assert resp.json["message"].startswith("Invalid params: functions[0].parameters")
    assert where in resp.json["message"]
    assert fake.chat_requests() == []


@pytest.mark.parametrize("parameters", list(SCHEMA_ACCEPTED.values()), ids=list(SCHEMA_ACCEPTED))
def test_function_schema_accepted(fake, token, parameters):
    body = chat_body(functions=[fn_with(parameters)], function_call="auto")
    resp = call(fake, "POST", CHAT, body, token=token)
    assert resp.status == 200, resp.body
    assert fake.chat_requests() == [body]


def test_function_schema_checked_in_every_function(fake, token):
    good = fn_with(obj(a=STR), name="first")
    bad = fn_with(obj(a={"$ref": "#/x"}), name="second")
    resp = call(fake, "POST", CHAT, chat_body(functions=[good, bad]), token=token)
    assert resp.status == 422 and "functions[1].parameters.properties.a" in resp.json["message"]


@pytest.mark.parametrize("parameters, where", list(SCHEMA_REJECTED.values()), ids=list(SCHEMA_REJECTED))
def test_native_response_format_schema_rejected(fake, token, parameters, where):
    body = chat_body(response_format={"type": "json_schema", "schema": parameters})
    resp = call(fake, "POST", CHAT, body, token=token)
    assert resp.status == 422, resp.body
    assert resp.json["message"].startswith("Invalid params: response_format.schema")
    expected = "response_format.schema" + where[len("parameters"):] if where.startswith("parameters") else where
    assert expected in resp.json["message"]


def test_native_response_format_normalised_schema_accepted(fake, token):
    schema = dict(obj(answer={"type": "string", "enum": ["yes", "no"]}, when={"type": "string", "format": "date"}),
                  required=["answer"], additionalProperties=False)
    body = chat_body(response_format={"type": "json_schema", "schema": schema, "strict": True})
    assert call(fake, "POST", CHAT, body, token=token).status == 200


@pytest.mark.parametrize("name", [
    "read-file", "mcp.filesystem.read_file", "github/create_issue", "1st_tool", "получить_погоду",
    "has space", "trailing_newline\n", "", "web_search", "text2image", "text2model3d",
])
def test_function_name_rejected(fake, token, name):
    resp = call(fake, "POST", CHAT, chat_body(functions=[fn_with(obj(), name=name)]), token=token)
    assert resp.status == 422, (name, resp.body)
    assert resp.json["message"].startswith("Invalid params: functions[0].name")


@pytest.mark.parametrize("name", ["get_weather", "_private", "Bash", "mcp__github__create_issue", "f2",
                                  "user_web_search", "web_search_2", "x" * 100])
def test_function_name_accepted(fake, token, name):
    body = chat_body(functions=[fn_with(obj(), name=name)], function_call={"name": name})
    assert call(fake, "POST", CHAT, body, token=token).status == 200


def test_builtin_may_still_be_called_by_name_without_being_defined(fake, token):
    """§4.2/§7: built-ins are listed by name in function_call, never defined in functions."""
    assert call(fake, "POST", CHAT, chat_body(function_call={"name": "text2image"}), token=token).status == 200
    body = chat_body(functions=[fn_with(obj())], function_call={"name": "web_search"})
    assert call(fake, "POST", CHAT, body, token=token).status == 422


# --------------------------------------------------------------------------
# §5 chat replies
# --------------------------------------------------------------------------
def test_default_reply_is_deterministic_echo():
    with FakeGigaChat(clock=lambda: T0 + 0.7) as fake:
        body = msgs({"role": "system", "content": "be nice"}, {"role": "user", "content": "one two"},
                    {"role": "assistant", "content": "three"}, {"role": "user", "content": "four five"})
        resp = call(fake, "POST", CHAT, body, token=fake.issue_token())
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        assert resp.json == {
            "choices": [{"message": {"role": "assistant", "content": "Echo: four five"},
                         "index": 0, "finish_reason": "stop"}],
            "created": int(T0), "model": "GigaChat:2.0.28.2", "object": "chat.completion",
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                      "precached_prompt_tokens": 0}}


def test_enqueued_replies_are_fifo(fake, token):
    fake.enqueue_reply({"role": "assistant", "content": "first"})
    fake.enqueue_reply({"content": "second"}, finish_reason="length",
                       usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    answers = [call(fake, "POST", CHAT, chat_body(), token=token).json for _ in range(3)]
    assert [a["choices"][0]["message"]["content"] for a in answers] == [
        "first", "second", "Echo: hello big world"]
    assert answers[1]["choices"][0]["finish_reason"] == "length"
    assert answers[1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_enqueued_function_call_and_extra_choice_fields(fake, token):
    state = str(uuid.uuid4())
    message = {"role": "assistant", "content": "", "functions_state_id": state,
               "function_call": {"name": "get_weather", "arguments": {"city": "Moscow"}}}
    fake.enqueue_reply(message, finish_reason="function_call", custom="x")
    choice = call(fake, "POST", CHAT, chat_body(functions=[FN]), token=token).json["choices"][0]
    assert choice == {"message": message, "index": 0, "finish_reason": "function_call",
                      "custom": "x"}


def test_reply_not_consumed_by_rejected_request(fake, token):
    fake.enqueue_reply({"content": "kept"})
    assert call(fake, "POST", CHAT, chat_body(temperature=0), token=token).status == 422
    resp = call(fake, "POST", CHAT, chat_body(), token=token)
    assert resp.json["choices"][0]["message"]["content"] == "kept"


# --------------------------------------------------------------------------
# §6 streaming
# --------------------------------------------------------------------------
def test_stream_wire_format(fake, token):
    conn, resp = open_stream(fake, token)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.headers["x-request-id"] and resp.headers["x-session-id"]
    raw = resp.read()
    conn.close()
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"" and blocks[-2] == b"data: [DONE]"
    events = [json.loads(b[len(b"data: "):]) for b in blocks[:-2]]
    assert all(b.startswith(b"data: ") and b"\n" not in b for b in blocks[:-1])
    for event in events:
        assert event["object"] == "chat.completion" and event["model"] == "GigaChat:2.0.28.2"
        assert isinstance(event["created"], int) and "id" not in event
        assert event["choices"][0]["index"] == 0
    deltas = [e["choices"][0]["delta"] for e in events]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert "".join(d["content"] for d in deltas) == "Echo: hello big world"
    assert len(deltas) > 2
    last = events[-1]
    assert deltas[-1] == {"content": ""} and last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                             "precached_prompt_tokens": 0}
    assert all("finish_reason" not in e["choices"][0] and "usage" not in e for e in events[:-1])
    assert fake.chat_requests()[0]["stream"] is True


def test_stream_explicit_chunks_and_keep_alive_after_stream(fake, token):
    fake.enqueue_reply(chunks=["Hel", "lo", " there"], finish_reason="length")
    conn, resp = open_stream(fake, token)
    events = read_events(resp)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["Hel", "lo", " there", ""]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert call(fake, "GET", "/api/v1/models", token=token, conn=conn).status == 200
    conn.close()
    assert fake.connections_opened == 1


def test_stream_function_call(fake, token):
    call_obj = {"name": "get_weather", "arguments": {"city": "Moscow"}}
    state = str(uuid.uuid4())
    fake.enqueue_reply({"content": "", "function_call": call_obj, "functions_state_id": state},
                       finish_reason="function_call")
    conn, resp = open_stream(fake, token, functions=[FN])
    events = read_events(resp)
    conn.close()
    assert events[-1] == "[DONE]" and len(events) == 2
    choice = events[0]["choices"][0]
    assert choice["delta"] == {"content": "", "role": "assistant", "function_call": call_obj,
                               "functions_state_id": state}
    assert choice["finish_reason"] == "function_call" and events[0]["usage"]["total_tokens"] > 0


def test_stream_reasoning_before_content(fake, token):
    fake.enqueue_reply({"content": "42", "reasoning_content": "think hard"})
    conn, resp = open_stream(fake, token, model="GigaChat-2-Reasoning")
    deltas = [e["choices"][0]["delta"] for e in read_events(resp)[:-1]]
    conn.close()
    assert deltas == [{"reasoning_content": "think ", "role": "assistant"},
                      {"reasoning_content": "hard"}, {"content": "42"}, {"content": ""}]


def test_stream_errors_are_plain_json(fake, token):
    conn, resp = open_stream(fake, token, temperature=0)
    assert resp.status == 422 and resp.headers["Content-Type"].startswith("application/json")
    conn.close()


# --------------------------------------------------------------------------
# fault injection
# --------------------------------------------------------------------------
def test_fault_status_with_headers_then_normal(fake, token):
    fake.add_fault("status", status=429, headers={"Retry-After": "2"})
    conn = connect(fake)
    first = call(fake, "POST", CHAT, chat_body(), token=token, conn=conn)
    assert (first.status, first.json) == (429, {"status": 429, "message": "Too many requests"})
    assert first.headers["Retry-After"] == "2" and first.headers["x-request-id"]
    assert call(fake, "POST", CHAT, chat_body(), token=token, conn=conn).status == 200
    conn.close()
    assert fake.connections_opened == 1 and len(fake.chat_requests()) == 1


def test_fault_status_html_and_custom_bodies(fake, token):
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    fake.add_fault("status", status=502, body=html, content_type="text/html")
    fake.add_fault("status", status=500, body={"status": 500, "message": "boom"})
    fake.add_fault("status", status=503, body="down")
    first = call(fake, "POST", CHAT, chat_body(), token=token)
    assert (first.status, first.body.decode(), first.headers["Content-Type"]) == (502, html, "text/html")
    assert call(fake, "POST", CHAT, chat_body(), token=token).json["message"] == "boom"
    third = call(fake, "POST", CHAT, chat_body(), token=token)
    assert (third.status, third.body) == (503, b"down")


def test_fault_paths(fake, token):
    fake.add_fault("status", path=OAUTH, status=504)
    fake.add_fault("status", path="/api/v1/models", status=500)
    fake.add_fault("status", path="*", status=401)
    assert call(fake, "POST", CHAT, chat_body(), token=token).status == 401  # "*" matched first
    assert call(fake, "POST", CHAT, chat_body(), token=token).status == 200
    assert call(fake, "GET", "/api/v1/models", token=token).status == 500
    assert oauth(fake).status == 504 and oauth(fake).status == 200
    assert fake.oauth_calls == 1  # the faulted call never reached the endpoint


def test_fault_token_path(fake):
    fake.add_fault("status", path="/api/v1/token", status=500)
    assert call(fake, "POST", "/api/v1/token", headers=basic("user", fake.password)).status == 500
    assert call(fake, "POST", "/api/v1/token", headers=basic("user", fake.password)).status == 200


def test_fault_expire_tokens(fake):
    tok = oauth(fake).json["access_token"]
    fake.add_fault("expire_tokens")
    resp = call(fake, "POST", CHAT, chat_body(), token=tok)
    assert (resp.status, resp.json["message"]) == (401, "Token has expired")
    fresh = oauth(fake).json["access_token"]
    assert call(fake, "POST", CHAT, chat_body(), token=fresh).status == 200


def test_fault_hold_until_released(fake, token):
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", release=release, holding=holding)
    conn = connect(fake)
    conn.request("POST", CHAT, body=json.dumps(chat_body()),
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    assert holding.wait(5)
    conn.sock.setblocking(False)
    with pytest.raises(ssl.SSLWantReadError):  # nothing answered yet
        conn.sock.recv(1)
    conn.sock.settimeout(5)
    assert fake.requests[-1].status is None
    release.set()
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["choices"]
    conn.close()


def test_fault_hold_timeout(fake, token):
    fake.add_fault("hold", timeout=0.01)
    assert call(fake, "POST", CHAT, chat_body(), token=token).status == 200


def test_fault_hold_mid_stream_proves_per_event_flush(fake, token):
    release, holding = threading.Event(), threading.Event()
    fake.add_fault("hold", release=release, holding=holding, after_events=2)
    conn, resp = open_stream(fake, token)
    assert holding.wait(5)
    first_two = [read_event(resp), read_event(resp)]  # readable while the fake is held
    assert first_two[0]["choices"][0]["delta"]["role"] == "assistant"
    release.set()
    rest = read_events(resp)
    conn.close()
    assert rest[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"]["content"] for e in first_two + rest[:-1])
    assert text == "Echo: hello big world"


def test_fault_cut_stream(fake, token):
    fake.add_fault("cut", after_events=2)
    conn, resp = open_stream(fake, token)
    assert resp.status == 200
    events = [read_event(resp), read_event(resp)]
    assert all(isinstance(e, dict) for e in events)
    with pytest.raises(http.client.IncompleteRead):  # no terminating zero-size chunk
        resp.read()
    conn.close()
    assert fake.requests[-1].status == 200
    assert call(fake, "POST", CHAT, chat_body(stream=True), token=token).body.endswith(
        b"data: [DONE]\n\n")


def test_fault_cut_stream_before_any_event(fake, token):
    fake.add_fault("cut")
    conn, resp = open_stream(fake, token)
    assert resp.status == 200
    # Caveat for stream consumers: http.client's readline() on a chunked body treats
    # the truncation as a plain EOF; only the missing [DONE] tells (read() raises).
    assert read_events(resp) == []
    conn.close()


def test_fault_cut_non_stream(fake, token):
    fake.add_fault("cut")
    with pytest.raises((ConnectionError, ssl.SSLError, http.client.BadStatusLine)):
        call(fake, "POST", CHAT, chat_body(), token=token)
    assert fake.requests[-1].status is None
    assert call(fake, "POST", CHAT, chat_body(), token=token).status == 200
    assert fake.connections_opened == 2


def test_fault_garbage(fake, token):
    fake.add_fault("garbage")
    fake.add_fault("garbage", body="<oops>", content_type="text/plain")
    first = call(fake, "POST", CHAT, chat_body(), token=token)
    assert (first.status, first.body) == (200, b"not json")
    assert first.headers["Content-Type"] == "application/json; charset=utf-8"
    second = call(fake, "POST", CHAT, chat_body(), token=token)
    assert (second.body, second.headers["Content-Type"]) == (b"<oops>", "text/plain")


def test_add_fault_rejects_typos(fake):
    with pytest.raises(ValueError):
        fake.add_fault("explode")
    with pytest.raises(TypeError):
        fake.add_fault("hold", relase=threading.Event())
    with pytest.raises(TypeError):
        fake.add_fault("status")


# --------------------------------------------------------------------------
# §8 models and embeddings
# --------------------------------------------------------------------------
def test_models(fake, token):
    resp = call(fake, "GET", "/api/v1/models", token=token)
    assert resp.json["object"] == "list"
    ids = [m["id"] for m in resp.json["data"]]
    assert ids[:2] == ["GigaChat", "GigaChat-2"] and "GigaChat-2-Reasoning" in ids
    assert {m["type"] for m in resp.json["data"] if m["id"].startswith("Embeddings")} == {"embedder"}
    assert all(m["object"] == "model" and m["owned_by"] == "salutedevices" for m in resp.json["data"])
    one = call(fake, "GET", "/api/v1/models/GigaChat-2-Max", token=token)
    assert one.json == {"id": "GigaChat-2-Max", "object": "model", "owned_by": "salutedevices",
                        "type": "chat"}
    missing = call(fake, "GET", "/api/v1/models/gpt-4", token=token)
    assert (missing.status, missing.json) == (404, {"status": 404, "message": "No such model"})
    assert call(fake, "GET", "/api/v1/models/GigaChat").status == 401
    assert fake.models_calls == 1


def test_embeddings(fake, token):
    single = call(fake, "POST", "/api/v1/embeddings", {"input": "a b c", "model": "Embeddings"},
                  token=token).json
    batch = call(fake, "POST", "/api/v1/embeddings", {"input": ["a b c", "d"], "model": "Embeddings"},
                 token=token).json
    assert single["object"] == "list" and single["model"] == "Embeddings" and "usage" not in single
    item = single["data"][0]
    assert item["object"] == "embedding" and item["index"] == 0 and len(item["embedding"]) == 8
    assert item["usage"] == {"prompt_tokens": 3}
    assert batch["data"][0]["embedding"] == item["embedding"]
    assert batch["data"][1]["embedding"] != item["embedding"] and batch["data"][1]["index"] == 1


@pytest.mark.parametrize("body, status", [
    ({"input": "x"}, 422), ({"input": "x", "model": "nope"}, 404),
    ({"input": "x", "model": "GigaChat"}, 422), ({"input": [], "model": "Embeddings"}, 422),
    ({"input": [1], "model": "Embeddings"}, 422),
    ({"input": "x", "model": "Embeddings", "encoding_format": "float"}, 422),
])
def test_embeddings_rejects(fake, token, body, status):
    assert call(fake, "POST", "/api/v1/embeddings", body, token=token).status == status


# --------------------------------------------------------------------------
# lifecycle: clean stop, no leftover threads
# --------------------------------------------------------------------------
def test_stop_closes_idle_keep_alive_connections_and_joins_threads():
    before = threading.active_count()
    fake = FakeGigaChat().start()
    conn = connect(fake)
    assert call(fake, "GET", "/api/v1/models", token=fake.issue_token(), conn=conn).status == 200
    assert threading.active_count() == before + 2  # acceptor + one connection
    fake.stop()
    assert threading.active_count() == before
    assert conn.sock.recv(1) == b""  # the server closed it (EOF, no TLS close_notify)
    conn.close()
    fake.stop()  # idempotent
    with pytest.raises(ConnectionError):
        connect(fake).request("GET", "/")


def test_stop_while_holding_and_mid_stream():
    before = threading.active_count()
    fake = FakeGigaChat().start()
    token = fake.issue_token()
    holding_a, holding_b = threading.Event(), threading.Event()
    fake.add_fault("hold", holding=holding_a)  # no release: only stop() ends it
    conn_a = connect(fake)
    conn_a.request("POST", CHAT, body=json.dumps(chat_body()),
                   headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    assert holding_a.wait(5)
    fake.add_fault("hold", holding=holding_b, after_events=1)
    conn_b, resp_b = open_stream(fake, token)
    assert holding_b.wait(5) and read_event(resp_b)["choices"]
    fake.stop()
    assert threading.active_count() == before
    with pytest.raises((ConnectionError, ssl.SSLError, http.client.BadStatusLine)):
        conn_a.getresponse()
    with pytest.raises(http.client.IncompleteRead):
        resp_b.read()
    conn_a.close()
    conn_b.close()
    assert fake.errors == []


def test_stop_before_start_and_single_start():
    FakeGigaChat().stop()
    fake = FakeGigaChat()
    with fake:
        with pytest.raises(RuntimeError):
            fake.start()
