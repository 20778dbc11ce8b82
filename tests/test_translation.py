"""Pure translation tests: OpenAI <-> GigaChat without sockets, clocks or randomness.

The bulk of the cases are fixture pairs under ``tests/fixtures/`` (tomli-style
input/expected files), discovered at collection time:

* ``requests/<case>.openai.json``    -> ``requests/<case>.gigachat.json``
  via ``to_gigachat_request(request, FIXTURE_DEFAULT_MODEL, ())``
* ``responses/<case>.gigachat.json`` -> ``responses/<case>.openai.json``
  via ``to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)``
* ``streams/<case>.gigachat.jsonl``  -> ``streams/<case>.openai.jsonl``
  (one upstream event / one expected chunk per line) via
  ``StreamTranslator(MODEL, COMPLETION_ID, CREATED, include_usage)``: every event
  is fed, then ``finish()``; ``include_usage`` is true for cases whose name ends
  in ``_with_usage``.

To add a case, drop a new pair of files in; no code change is needed.  Expected
files are written by hand from /work/shared/gigachat-api.md (§4-§6, §12) and
/work/shared/clients.md (§A), never generated from gigaproxy's output.

Two details are compared by meaning rather than by spelling, because any valid
JSON text is correct there: an OpenAI tool call's ``arguments`` string and a
GigaChat ``function`` message's ``content`` string are parsed before comparing
(both must still be strings).  Everything else is compared exactly.

The focused tests below the fixture tests cover rejections (ProxyError 400 with
the offending ``param``), model resolution, malformed upstream answers (502),
stream state-machine edge cases and the SSE reader/writer.
"""

from __future__ import annotations

import copy
import io
import json
import os
import sys
import uuid
from typing import Any, Callable, Dict, List, Sequence, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gigaproxy  # noqa: E402
from fake_gigachat import GigaChatError, validate_chat_request  # noqa: E402
from gigaproxy import (
    translate_chat_request,  # noqa: E402
    ProxyError,
    StreamTranslator,
    iter_sse_data,
    map_usage,
    resolve_model,
    sse_event,
    state_id_from_call_id,
    to_gigachat_request,
    to_openai_response,
)

FIXTURES = os.path.join(HERE, "fixtures")

# The operator's GIGACHAT_MODEL in request fixtures: a real model name that no alias maps to,
# so a fixture shows whether a client name resolved to an alias, itself, or this default.
FIXTURE_DEFAULT_MODEL = "GigaChat-2-Pro-preview"

# Fixed ids and time for responses and streams (principle 6: ids and time are parameters).
MODEL = "GigaChat-2-Max"
COMPLETION_ID = "chatcmpl-0123456789abcdef0123456789abcdef"
CREATED = 1700000000

STATE_A = "3f7a8c2e-5b1d-4e9a-9c6f-1a2b3c4d5e6f"
STATE_B = "9b2d4f6a-8c1e-4a3b-b5d7-0e1f2a3b4c5d"

# Top-level fields of a GigaChat v1 chat body (gigachat-api.md §4).
GIGACHAT_FIELDS = frozenset((
    "model", "messages", "temperature", "top_p", "n", "stream", "max_tokens",
    "repetition_penalty", "update_interval", "profanity_check", "function_call",
    "functions", "flags", "response_format", "reasoning_effort", "storage", "function_ranker",
))
# Fields that exist only in OpenAI's API (§4 last row, §12) and must never be forwarded.
OPENAI_ONLY = (
    "stop", "seed", "user", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
    "logit_bias", "parallel_tool_calls", "metadata", "store", "service_tier", "stream_options",
    "tools", "tool_choice", "max_completion_tokens", "prompt_cache_key",
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_jsonl(path: str) -> List[Any]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _cases(kind: str, input_suffix: str) -> List[str]:
    folder = os.path.join(FIXTURES, kind)
    return sorted(name[:-len(input_suffix)] for name in os.listdir(folder) if name.endswith(input_suffix))


REQUEST_CASES = _cases("requests", ".openai.json")
RESPONSE_CASES = _cases("responses", ".gigachat.json")
STREAM_CASES = _cases("streams", ".gigachat.jsonl")


class _ParsedJSON(object):
    """A JSON text that compares equal to another one with the same meaning."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self.value = json.loads(text)  # type: Any
            self.ok = True
        except ValueError:
            self.value, self.ok = None, False

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, _ParsedJSON):
            return NotImplemented
        if self.ok and other.ok:
            return bool(self.value == other.value)
        return self.text == other.text

    def __ne__(self, other: Any) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __repr__(self) -> str:
        return "json(%s)" % self.text


def canonical(obj: Any) -> Any:
    """Replace JSON-in-a-string fields by comparable parsed values (see the module docstring)."""
    if isinstance(obj, list):
        return [canonical(item) for item in obj]
    if not isinstance(obj, dict):
        return obj
    out = {}
    for key, value in obj.items():
        if key == "arguments" and isinstance(value, str):
            out[key] = _ParsedJSON(value)
        elif key == "content" and obj.get("role") == "function" and isinstance(value, str):
            out[key] = _ParsedJSON(value)
        else:
            out[key] = canonical(value)
    return out


def translate(request: Dict[str, Any], default: str = FIXTURE_DEFAULT_MODEL,
              known: Tuple[str, ...] = ()) -> Dict[str, Any]:
    return to_gigachat_request(request, default, known)


def base_request(**fields: Any) -> Dict[str, Any]:
    request = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hi"}]}  # type: Dict[str, Any]
    request.update(fields)
    return request


def translate_stream(events: Sequence[Any], include_usage: bool = False) -> List[Dict[str, Any]]:
    translator = StreamTranslator(MODEL, COMPLETION_ID, CREATED, include_usage)
    chunks = []  # type: List[Dict[str, Any]]
    for event in events:
        chunks.extend(translator.feed(event))
    chunks.extend(translator.finish())
    return chunks


def giga_answer(message: Dict[str, Any], finish: str = "stop", **extra: Any) -> Dict[str, Any]:
    answer = {"choices": [{"message": message, "index": 0, "finish_reason": finish}],
              "created": 1768996171, "model": "GigaChat-2-Max:2.0.28.2", "object": "chat.completion"}
    answer.update(extra)
    return answer


def giga_event(delta: Dict[str, Any], finish: Any = None, **extra: Any) -> Dict[str, Any]:
    choice = {"delta": delta, "index": 0}  # type: Dict[str, Any]
    if finish is not None:
        choice["finish_reason"] = finish
    event = {"choices": [choice], "created": 1768996176, "model": "GigaChat-2-Max:2.0.28.2",
             "object": "chat.completion"}
    event.update(extra)
    return event


def assert_gigachat_accepts(body: Dict[str, Any]) -> None:
    """The strict fake GigaChat (tests/fake_gigachat.py) accepts the body as the real service would."""
    wire = json.loads(json.dumps(body, ensure_ascii=False))
    try:
        validate_chat_request(wire, [{"id": body.get("model")}])
    except GigaChatError as exc:  # pragma: no cover - the message is the point
        pytest.fail("GigaChat would reject this body: %s %s" % (exc.status, exc.body))


def check_tool_calls(tool_calls: Any, streamed: bool) -> None:
    """Each tool call has what Cline and Roo need: id, type, name, a non-empty JSON-object string."""
    assert isinstance(tool_calls, list) and tool_calls
    for position, call in enumerate(tool_calls):
        if streamed:
            assert call["index"] == position
        assert isinstance(call["id"], str) and call["id"].startswith("call_")
        assert call["type"] == "function"
        assert isinstance(call["function"]["name"], str) and call["function"]["name"]
        arguments = call["function"]["arguments"]
        assert isinstance(arguments, str) and arguments.strip(), "arguments must be a non-empty string"
        assert isinstance(json.loads(arguments), dict)


def check_stream(chunks: List[Dict[str, Any]], include_usage: bool) -> None:
    """Invariants every translated stream must satisfy (clients.md §A.3)."""
    assert chunks, "a finished stream yields at least the finish chunk"
    for chunk in chunks:
        assert chunk["id"] == COMPLETION_ID
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["created"] == CREATED
        assert chunk["model"] == MODEL
    body = chunks[:-1] if include_usage else chunks
    if include_usage:
        last = chunks[-1]
        assert last["choices"] == []
        usage = last["usage"]
        assert set(usage) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
        for chunk in body:
            assert "usage" in chunk and chunk["usage"] is None
    else:
        for chunk in chunks:
            assert "usage" not in chunk or chunk["usage"] is None
            assert chunk["choices"], "no usage-only chunk without include_usage"
    roles = [i for i, c in enumerate(body) if "role" in c["choices"][0]["delta"]]
    assert roles == [0], "the role goes out on the first chunk only"
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    finishes = [c["choices"][0]["finish_reason"] for c in body]
    assert finishes[-1] is not None and all(f is None for f in finishes[:-1])
    assert body[-1]["choices"][0]["delta"] == {}, "the finish chunk is separate and carries no delta"
    for chunk in body:
        assert len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
        delta = chunk["choices"][0]["delta"]
        if "tool_calls" in delta:
            check_tool_calls(delta["tool_calls"], streamed=True)
            assert finishes[-1] == "tool_calls"


# --------------------------------------------------------------------------
# fixture pairs
# --------------------------------------------------------------------------
def test_fixture_sets_are_complete() -> None:
    """Every expected file has an input and vice versa, and each kind has cases."""
    pairs = (("requests", ".openai.json", ".gigachat.json"),
             ("responses", ".gigachat.json", ".openai.json"),
             ("streams", ".gigachat.jsonl", ".openai.jsonl"))
    for kind, input_suffix, expected_suffix in pairs:
        files = set(os.listdir(os.path.join(FIXTURES, kind)))
        inputs = {f[:-len(input_suffix)] for f in files if f.endswith(input_suffix)}
        expected = {f[:-len(expected_suffix)] for f in files if f.endswith(expected_suffix)}
        assert inputs and inputs == expected, kind
        assert files == {n + input_suffix for n in inputs} | {n + expected_suffix for n in expected}, kind
    assert len(REQUEST_CASES) >= 20 and len(RESPONSE_CASES) >= 8 and len(STREAM_CASES) >= 8


@pytest.mark.parametrize("case", REQUEST_CASES)
def test_request_fixture(case: str) -> None:
    request = _load_json(os.path.join(FIXTURES, "requests", case + ".openai.json"))
    expected = _load_json(os.path.join(FIXTURES, "requests", case + ".gigachat.json"))
    original = copy.deepcopy(request)
    actual = translate(request)
    assert request == original, "the client's request must not be modified"
    assert canonical(actual) == canonical(expected)
    assert set(actual) <= GIGACHAT_FIELDS
    for field in OPENAI_ONLY:
        assert field not in actual
    for message in actual["messages"]:
        if message["role"] == "function":
            assert isinstance(json.loads(message["content"]), dict)
    assert_gigachat_accepts(actual)


@pytest.mark.parametrize("case", REQUEST_CASES)
def test_request_fixture_expectation_is_valid_gigachat(case: str) -> None:
    """The hand-written expectation itself passes the strict fake: the fixtures are sound."""
    assert_gigachat_accepts(_load_json(os.path.join(FIXTURES, "requests", case + ".gigachat.json")))


@pytest.mark.parametrize("case", RESPONSE_CASES)
def test_response_fixture(case: str) -> None:
    answer = _load_json(os.path.join(FIXTURES, "responses", case + ".gigachat.json"))
    expected = _load_json(os.path.join(FIXTURES, "responses", case + ".openai.json"))
    original = copy.deepcopy(answer)
    actual = to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)
    assert answer == original
    assert canonical(actual) == canonical(expected)
    message = actual["choices"][0]["message"]
    if "tool_calls" in message:
        check_tool_calls(message["tool_calls"], streamed=False)
        assert actual["choices"][0]["finish_reason"] == "tool_calls"
    json.dumps(actual)  # serialisable as is


@pytest.mark.parametrize("case", STREAM_CASES)
def test_stream_fixture(case: str) -> None:
    events = _load_jsonl(os.path.join(FIXTURES, "streams", case + ".gigachat.jsonl"))
    expected = _load_jsonl(os.path.join(FIXTURES, "streams", case + ".openai.jsonl"))
    include_usage = case.endswith("_with_usage")
    chunks = translate_stream(events, include_usage)
    assert canonical(chunks) == canonical(expected)
    check_stream(chunks, include_usage)
    # Every chunk survives the wire: sse_event() then iter_sse_data() gives it back.
    wire = b"".join(sse_event(chunk) for chunk in chunks)
    decoded = [json.loads(data) for data in iter_sse_data(io.BytesIO(wire).read1)]
    assert decoded == chunks


# --------------------------------------------------------------------------
# requests: focused cases
# --------------------------------------------------------------------------
OPEN_WEBUI_IMAGE_MESSAGES = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg=="}},
    ]},
]


def test_open_webui_image_part_to_a_text_only_model_is_refused_with_400() -> None:
    request = base_request(messages=OPEN_WEBUI_IMAGE_MESSAGES, stream=True, stream_options={"include_usage": True})
    with pytest.raises(ProxyError) as info:
        translate(request)
    assert info.value.status == 400
    assert info.value.param == "model"
    assert info.value.body()["error"]["type"] == "invalid_request_error"
    assert info.value.body()["error"]["code"] == "model_not_multimodal"


def test_open_webui_image_part_to_a_vision_model_becomes_an_attachment_slot() -> None:
    request = base_request(model="gigachat-max", messages=OPEN_WEBUI_IMAGE_MESSAGES, stream=True)
    body, plan = translate_chat_request(request)
    user = body["messages"][1]
    assert user == {"role": "user", "content": "What is in this picture?", "attachments": []}
    assert len(plan.images) == 1
    message, image = plan.images[0]
    assert message is user
    assert image.mime == "image/png" and image.data.startswith(b"\x89PNG")


def _bad(messages: Any = None, **fields: Any) -> Dict[str, Any]:
    request = base_request(**fields)
    if messages is not None:
        request["messages"] = messages
    return request


def _assistant_call(call_id: str, arguments: str = "{}", name: str = "f") -> Dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]}


NO_MESSAGES = {"model": "GigaChat-2"}
NAN = float("nan")

REJECTIONS = [
    # messages
    ("messages_missing", NO_MESSAGES, "messages"),
    ("messages_null", dict(NO_MESSAGES, messages=None), "messages"),
    ("messages_string", _bad("hello"), "messages"),
    ("messages_object", _bad({"role": "user", "content": "hi"}), "messages"),
    ("messages_empty", _bad([]), "messages"),
    ("message_string", _bad(["hello"]), "messages[0]"),
    ("message_null_second", _bad([{"role": "user", "content": "a"}, None]), "messages[1]"),
    ("role_missing", _bad([{"content": "hi"}]), "messages[0].role"),
    ("role_unknown", _bad([{"role": "bot", "content": "hi"}]), "messages[0].role"),
    ("role_gemini_model", _bad([{"role": "user", "content": "a"}, {"role": "model", "content": "b"}]),
     "messages[1].role"),
    ("role_number", _bad([{"role": 1, "content": "hi"}]), "messages[0].role"),
    ("content_number", _bad([{"role": "user", "content": 42}]), "messages[0].content"),
    ("content_boolean", _bad([{"role": "user", "content": True}]), "messages[0].content"),
    ("content_object", _bad([{"role": "user", "content": {"type": "text", "text": "hi"}}]), "messages[0].content"),
    ("system_content_number", _bad([{"role": "system", "content": 1}, {"role": "user", "content": "a"}]),
     "messages[0].content"),
    ("part_number", _bad([{"role": "user", "content": [5]}]), "messages[0].content[0]"),
    ("part_text_not_string", _bad([{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     "messages[0].content[0].text"),
    ("part_image_url_text_only_model", _bad([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]), "model"),
    ("part_image_url_in_system", _bad([{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}, {"role": "user", "content": "a"}]),
     "messages[0].content[0].type"),
    ("part_file", _bad([{"role": "user", "content": [
        {"type": "text", "text": "summarise"},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]}]),
     "messages[0].content[1].type"),
    ("part_input_audio", _bad([{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]), "messages[0].content[0].type"),
    ("part_image_in_tool_result", _bad([
        {"role": "user", "content": "look"}, _assistant_call("call_1"),
        {"role": "tool", "tool_call_id": "call_1", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]),
     "messages[2].content[0].type"),
    # sampling parameters: wrong types (booleans are not numbers) and out of range
    ("temperature_string", _bad(temperature="0.7"), "temperature"),
    ("temperature_boolean", _bad(temperature=True), "temperature"),
    ("temperature_negative", _bad(temperature=-0.5), "temperature"),
    ("temperature_nan", _bad(temperature=NAN), "temperature"),
    ("temperature_infinite", _bad(temperature=float("inf")), "temperature"),
    ("top_p_string", _bad(top_p="1"), "top_p"),
    ("top_p_boolean", _bad(top_p=False), "top_p"),
    ("top_p_negative", _bad(top_p=-0.1), "top_p"),
    ("top_p_above_one", _bad(top_p=1.5), "top_p"),
    ("max_tokens_string", _bad(max_tokens="100"), "max_tokens"),
    ("max_tokens_boolean", _bad(max_tokens=True), "max_tokens"),
    ("max_tokens_zero", _bad(max_tokens=0), "max_tokens"),
    ("max_tokens_negative", _bad(max_tokens=-1), "max_tokens"),
    ("max_tokens_fraction", _bad(max_tokens=1.5), "max_tokens"),
    ("max_completion_tokens_string", _bad(max_completion_tokens="100"), "max_completion_tokens"),
    ("max_completion_tokens_boolean", _bad(max_completion_tokens=False), "max_completion_tokens"),
    ("max_completion_tokens_zero", _bad(max_completion_tokens=0), "max_completion_tokens"),
    ("max_completion_tokens_fraction", _bad(max_completion_tokens=2.5), "max_completion_tokens"),
    ("n_two_streamed", _bad(n=2, stream=True), "n"),
    ("n_too_many", _bad(n=9), "n"),
    ("n_zero", _bad(n=0), "n"),
    ("n_string", _bad(n="1"), "n"),
    ("n_boolean", _bad(n=True), "n"),
    ("n_fraction", _bad(n=1.5), "n"),
    ("stream_string", _bad(stream="true"), "stream"),
    ("stream_number", _bad(stream=1), "stream"),
    ("stream_options_string", _bad(stream=True, stream_options="yes"), "stream_options"),
    ("stream_options_include_usage_string", _bad(stream=True, stream_options={"include_usage": "yes"}),
     "stream_options.include_usage"),
    ("model_number", _bad(model=42), "model"),
    ("repetition_penalty_zero", _bad(repetition_penalty=0), "repetition_penalty"),
    ("update_interval_negative", _bad(update_interval=-1), "update_interval"),
    ("profanity_check_string", _bad(profanity_check="no"), "profanity_check"),
    # tools
    ("tools_not_array", _bad(tools={"type": "function"}), "tools"),
    ("tool_type_unsupported", _bad(tools=[{"type": "code_interpreter"}]), "tools[0].type"),
    ("tool_choice_unknown_function", _bad(tools=[{"type": "function", "function": {"name": "a"}}],
                                          tool_choice={"type": "function", "function": {"name": "b"}}),
     "tool_choice"),
    # tool-call history
    ("tool_call_arguments_invalid_json", _bad([
        {"role": "user", "content": "go"}, _assistant_call("call_1", "{\"path\": "),
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]),
     "messages[1].tool_calls[0].function.arguments"),
    ("tool_call_arguments_json_array", _bad([
        {"role": "user", "content": "go"}, _assistant_call("call_1", "[1, 2]"),
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]),
     "messages[1].tool_calls[0].function.arguments"),
    ("tool_result_unknown_call_id", _bad([
        {"role": "user", "content": "go"}, _assistant_call("call_1"),
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "tool", "tool_call_id": "call_9", "content": "ok"}]),
     "messages[3].tool_call_id"),
    ("tool_result_without_call", _bad([
        {"role": "user", "content": "go"}, {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]),
     "messages[1].tool_call_id"),
    ("tool_result_answered_twice", _bad([
        {"role": "user", "content": "go"}, _assistant_call("call_1"),
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "tool", "tool_call_id": "call_1", "content": "again"}]),
     "messages[3].tool_call_id"),
    ("tool_call_without_result_before_user", _bad([
        {"role": "user", "content": "go"}, _assistant_call("call_1"),
        {"role": "user", "content": "what happened?"}]),
     "messages[2]"),
    ("parallel_call_half_answered_before_user", _bad([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
        {"role": "user", "content": "next"}]),
     "messages[3]"),
]


@pytest.mark.parametrize("request_body,param", [(r, p) for _, r, p in REJECTIONS], ids=[i for i, _, _ in REJECTIONS])
def test_rejected_with_400_naming_the_field(request_body: Dict[str, Any], param: str) -> None:
    with pytest.raises(ProxyError) as info:
        translate(request_body)
    assert info.value.status == 400
    assert info.value.param == param
    error = info.value.body()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]


def test_tool_call_error_names_the_message_index() -> None:
    request = _bad([
        {"role": "system", "content": "s"},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_ok", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_ok", "content": "ok"},
        _assistant_call("call_bad", "{not json}"),
        {"role": "tool", "tool_call_id": "call_bad", "content": "ok"},
    ])
    with pytest.raises(ProxyError) as info:
        translate(request)
    assert info.value.status == 400
    assert info.value.param == "messages[4].tool_calls[0].function.arguments"
    assert "messages[4]" in info.value.message


def test_missing_result_error_names_the_call() -> None:
    with pytest.raises(ProxyError) as info:
        translate(_bad([{"role": "user", "content": "go"}, _assistant_call("call_lost"),
                        {"role": "user", "content": "and?"}]))
    assert info.value.status == 400
    assert "call_lost" in info.value.message


def test_temperature_zero_becomes_top_p_zero() -> None:
    body = translate(base_request(temperature=0))
    assert "temperature" not in body
    assert body["top_p"] == 0
    body = translate(base_request(temperature=0.0))
    assert "temperature" not in body and body["top_p"] == 0
    assert_gigachat_accepts(body)


def test_sampling_parameters_in_range_are_forwarded() -> None:
    body = translate(base_request(temperature=0.3, top_p=1, max_tokens=1, n=1))
    assert body["temperature"] == 0.3
    assert body["top_p"] == 1
    assert body["max_tokens"] == 1
    assert "n" not in body or body["n"] == 1
    assert_gigachat_accepts(body)


def test_stream_false_and_null_are_not_forwarded() -> None:
    assert "stream" not in translate(base_request(stream=False))
    assert "stream" not in translate(base_request(stream=None))
    assert translate(base_request(stream=True))["stream"] is True


def test_tool_choice_required_with_one_tool_forces_it() -> None:
    tool = {"type": "function", "function": {"name": "only", "parameters": {"type": "object", "properties": {}}}}
    body = translate(base_request(tools=[tool], tool_choice="required"))
    assert body["function_call"] == {"name": "only"}
    assert_gigachat_accepts(body)


def test_tool_choice_without_tools_sends_no_functions() -> None:
    body = translate(base_request(tool_choice="auto", tools=[]))
    assert "functions" not in body and "function_call" not in body


def test_tool_result_that_is_not_strict_json_is_wrapped() -> None:
    """Python's json.dumps writes NaN/Infinity, which are not JSON (RFC 8259).

    GigaChat requires the function result to be a JSON object serialised to a string
    (gigachat-api.md §4.1, 422 "invalid function result json string" otherwise), and the
    strict fake rejects such a body, so the result must be wrapped like any other
    non-object text.
    """
    request = base_request(messages=[
        {"role": "user", "content": "stats?"},
        _assistant_call("call_1", "{}", "stats"),
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"mean\": NaN, \"max\": Infinity}"},
    ])
    body = translate(request)
    result = body["messages"][2]
    assert result["role"] == "function" and result["name"] == "stats"
    parsed = json.loads(result["content"], parse_constant=lambda name: pytest.fail("non-JSON constant " + name))
    assert parsed == {"result": "{\"mean\": NaN, \"max\": Infinity}"}
    assert_gigachat_accepts(body)


def test_tool_result_shapes_each_become_a_json_object() -> None:
    for text, expected in [
        ("plain text", {"result": "plain text"}),
        ("", {"result": ""}),
        ("[1, 2]", {"result": [1, 2]}),
        ("\"quoted\"", {"result": "quoted"}),
        ("42", {"result": 42}),
        ("null", {"result": None}),
        ("{\"a\": {\"b\": [1]}}", {"a": {"b": [1]}}),
        ("  {\"padded\": true}\n", {"padded": True}),
    ]:
        body = translate(base_request(messages=[
            {"role": "user", "content": "go"}, _assistant_call("call_1"),
            {"role": "tool", "tool_call_id": "call_1", "content": text}]))
        assert json.loads(body["messages"][2]["content"]) == expected, text
        assert_gigachat_accepts(body)


def test_every_call_is_followed_by_its_own_result_in_call_order() -> None:
    calls = [{"id": "call_%d" % i, "type": "function",
              "function": {"name": "f%d" % i, "arguments": json.dumps({"i": i})}} for i in range(3)]
    request = base_request(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Doing three things.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"r\": 2}"},
        {"role": "tool", "tool_call_id": "call_0", "content": "{\"r\": 0}"},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"r\": 1}"},
    ])
    messages = translate(request)["messages"][1:]
    assert [m["role"] for m in messages] == ["assistant", "function"] * 3
    for i in range(3):
        call, result = messages[2 * i], messages[2 * i + 1]
        assert call["function_call"] == {"name": "f%d" % i, "arguments": {"i": i}}
        assert result["name"] == "f%d" % i
        assert json.loads(result["content"]) == {"r": i}
    # the assistant's text is kept once, not repeated for every call
    assert [m["content"] for m in messages[0::2]].count("Doing three things.") == 1


def test_openai_only_fields_never_reach_gigachat() -> None:
    request = base_request(
        stream=True, stream_options={"include_usage": True}, stop=["a", "b"], seed=1, user="u",
        logprobs=True, top_logprobs=3, presence_penalty=1.0, frequency_penalty=-1.0, logit_bias={"1": 5},
        parallel_tool_calls=False, metadata={"k": "v"}, store=True, service_tier="flex",
        tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="auto", max_completion_tokens=10)
    body = translate(request)
    for field in OPENAI_ONLY:
        assert field not in body, field
    assert set(body) <= GIGACHAT_FIELDS
    assert_gigachat_accepts(body)


def test_gigachat_only_fields_are_forwarded() -> None:
    body = translate(base_request(repetition_penalty=0.8, update_interval=0, profanity_check=True))
    assert body["repetition_penalty"] == 0.8
    assert body["update_interval"] == 0
    assert body["profanity_check"] is True
    assert_gigachat_accepts(body)


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------
DEFAULT = "GigaChat-2-Pro-preview"


@pytest.mark.parametrize("name,expected", [
    ("gigachat", "GigaChat-2"),
    ("gigachat-pro", "GigaChat-2-Pro"),
    ("gigachat-max", "GigaChat-2-Max"),
    ("GigaChat-2-Max", "GigaChat-2-Max"),
    ("gigachat-2-max", "GigaChat-2-Max"),
    ("GIGACHAT-2-PRO", "GigaChat-2-Pro"),
    ("gigachat-2", "GigaChat-2"),
    ("gigachat-3-ultra", "GigaChat-3-Ultra"),
    ("gigachat-2-reasoning", "GigaChat-2-Reasoning"),
    ("GigaChat-Pro", "GigaChat-Pro"),
    (" GigaChat-2-Max ", "GigaChat-2-Max"),
    ("gpt-4o", DEFAULT),
    ("gpt-4o-mini", DEFAULT),
    ("claude-3-5-sonnet", DEFAULT),
    ("claude-3-5-sonnet-20241022", DEFAULT),
    ("o3", DEFAULT),
    ("", DEFAULT),
    ("   ", DEFAULT),
    (None, DEFAULT),
])
def test_resolve_model(name: Any, expected: str) -> None:
    assert resolve_model(name, DEFAULT) == expected
    assert resolve_model(name, DEFAULT, ("GigaChat-2-Lite-beta",)) == expected


def test_resolve_model_uses_the_live_model_list() -> None:
    known = ("GigaChat-2-Lite-beta", "Kandinsky-Chat")
    assert resolve_model("gigachat-2-lite-beta", DEFAULT, known) == "GigaChat-2-Lite-beta"
    assert resolve_model("kandinsky-chat", DEFAULT, known) == "Kandinsky-Chat"
    assert resolve_model("kandinsky-chat", DEFAULT) == DEFAULT


def test_request_model_resolution() -> None:
    assert translate(base_request(model="gpt-4o"), "GigaChat-2-Max")["model"] == "GigaChat-2-Max"
    assert translate(base_request(model="claude-3-5-sonnet"), "GigaChat-2-Max")["model"] == "GigaChat-2-Max"
    assert translate(base_request(model="gigachat-max"), "GigaChat")["model"] == "GigaChat-2-Max"
    assert translate(base_request(model="gigachat-2-max"), "GigaChat")["model"] == "GigaChat-2-Max"
    assert translate(base_request(model="my-tuned"), "GigaChat", ("My-Tuned",))["model"] == "My-Tuned"
    no_model = base_request()
    del no_model["model"]
    assert translate(no_model, "GigaChat-2-Max")["model"] == "GigaChat-2-Max"


# --------------------------------------------------------------------------
# tool-call ids and functions_state_id
# --------------------------------------------------------------------------
@pytest.mark.parametrize("call_id,expected", [
    ("call_" + STATE_A, STATE_A),
    ("call_" + STATE_B, STATE_B),
    ("call_Xy12AbCdEf34GhIjKl56MnOp", None),   # an OpenAI id
    ("call_0123456789abcdef01234567", None),   # 24 hex digits (LiteLLM's style)
    ("call_", None),
    ("toolu_" + STATE_A, STATE_A),              # the Anthropic dialect's form of the same id
    ("toolu_01A09q90qw90lq917835lq9", None),    # an id Anthropic issued
    (STATE_A, None),                            # no prefix: not one we issued
    ("", None),
    (None, None),
    (42, None),
])
def test_state_id_from_call_id(call_id: Any, expected: Any) -> None:
    assert state_id_from_call_id(call_id) == expected


def test_state_id_only_from_ids_gigaproxy_issues() -> None:
    """Only the exact form gigaproxy issues (``call_`` + canonical dashed UUID) carries a state id.

    Other backends and clients generate ``call_<32 hex>`` ids (``call_`` + uuid4().hex);
    such an id was not issued by gigaproxy, so it must not be sent to GigaChat as a
    ``functions_state_id`` GigaChat never gave out (docstring: "inside a tool call id we issued").
    """
    hex_id = "call_" + uuid.UUID(STATE_A).hex
    assert state_id_from_call_id(hex_id) is None
    assert state_id_from_call_id("call_{" + STATE_A + "}") is None
    assert state_id_from_call_id("call_urn:uuid:" + STATE_A) is None


@pytest.mark.parametrize("text", [
    STATE_A, STATE_A.upper(), "{" + STATE_A + "}", "urn:uuid:" + STATE_A, uuid.UUID(STATE_A).hex,
    STATE_A[:-1], STATE_A + "0", "g" * 32, "", "-" * 36,
])
def test_canonical_uuid_agrees_with_the_uuid_module(text: str) -> None:
    """gigaproxy spells UUIDs without importing uuid (start-up time); it must read them as uuid does."""
    try:
        expected = str(uuid.UUID(text))  # type: Any
    except ValueError:
        expected = None
    assert gigaproxy.canonical_uuid(text) == expected


@pytest.mark.parametrize("text", ["+" + "f" * 31, "f" * 15 + "_" + "f" * 16, " " + "f" * 31])
def test_canonical_uuid_refuses_what_only_int_parsing_lets_through(text: str) -> None:
    """uuid.UUID reads the hex digits with int(), which also takes a sign, underscores and spaces."""
    assert gigaproxy.canonical_uuid(text) is None


def test_uuid4_is_a_random_version_4_uuid() -> None:
    seen = {gigaproxy.uuid4() for _ in range(200)}
    assert len(seen) == 200
    for text in seen:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_functions_state_id_round_trip_non_stream() -> None:
    """GigaChat's state id -> OpenAI tool call id -> back to functions_state_id on the next turn."""
    answer = giga_answer({"role": "assistant", "content": "",
                          "function_call": {"name": "get_weather", "arguments": {"city": "Москва"}},
                          "functions_state_id": STATE_B}, "function_call")
    response = to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)
    assistant = response["choices"][0]["message"]
    call = assistant["tool_calls"][0]
    follow_up = base_request(model=MODEL, messages=[
        {"role": "user", "content": "Погода в Москве?"},
        assistant,
        {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 5}"},
    ], tools=[{"type": "function", "function": {"name": "get_weather"}}])
    body = translate(follow_up)
    assert body["messages"][1] == {"role": "assistant", "content": "", "functions_state_id": STATE_B,
                                   "function_call": {"name": "get_weather", "arguments": {"city": "Москва"}}}
    assert body["messages"][2]["role"] == "function" and body["messages"][2]["name"] == "get_weather"
    assert_gigachat_accepts(body)


def test_functions_state_id_round_trip_stream() -> None:
    chunks = translate_stream([giga_event(
        {"role": "assistant", "content": "", "function_call": {"name": "ls", "arguments": {"dir": "/"}},
         "functions_state_id": STATE_A}, "function_call")])
    call = [c for c in chunks if "tool_calls" in c["choices"][0]["delta"]][0]["choices"][0]["delta"]["tool_calls"][0]
    assert state_id_from_call_id(call["id"]) == STATE_A
    body = translate(base_request(messages=[
        {"role": "user", "content": "list /"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function", "function": call["function"]}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "bin\netc"}]))
    assert body["messages"][1]["functions_state_id"] == STATE_A
    assert body["messages"][1]["function_call"] == {"name": "ls", "arguments": {"dir": "/"}}


# --------------------------------------------------------------------------
# responses: focused cases
# --------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [
    {},
    {"choices": []},
    {"choices": None},
    {"choices": "stop"},
    {"choices": [5]},
    {"status": 500, "message": "Internal Server Error"},
    [],
    None,
    "<html>502 Bad Gateway</html>",
], ids=["empty", "choices_empty", "choices_null", "choices_string", "choice_number", "error_body",
        "list", "null", "html"])
def test_malformed_answer_is_502(answer: Any) -> None:
    with pytest.raises(ProxyError) as info:
        to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)
    assert info.value.status == 502
    assert info.value.body()["error"]["type"] == "api_error"


def test_function_call_without_state_id_gets_a_stable_id_that_carries_no_state() -> None:
    answer = giga_answer({"role": "assistant", "content": "",
                          "function_call": {"name": "f", "arguments": {"x": 1}}}, "function_call")
    first = to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)
    again = to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)
    other = to_openai_response(answer, MODEL, "chatcmpl-fedcba9876543210fedcba9876543210", CREATED)
    call_id = first["choices"][0]["message"]["tool_calls"][0]["id"]
    assert call_id.startswith("call_") and len(call_id) > len("call_")
    assert call_id == again["choices"][0]["message"]["tool_calls"][0]["id"]
    assert call_id != other["choices"][0]["message"]["tool_calls"][0]["id"]
    assert state_id_from_call_id(call_id) is None
    check_tool_calls(first["choices"][0]["message"]["tool_calls"], streamed=False)
    assert first["choices"][0]["finish_reason"] == "tool_calls"


def test_function_call_with_invalid_state_id_gets_a_fallback_id() -> None:
    answer = giga_answer({"role": "assistant", "content": "", "functions_state_id": "not-a-uuid",
                          "function_call": {"name": "f", "arguments": {}}}, "function_call")
    call = to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)["choices"][0]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and state_id_from_call_id(call["id"]) is None
    assert call["function"]["arguments"] == "{}" or json.loads(call["function"]["arguments"]) == {}


def test_finish_reason_function_call_without_a_call_is_not_tool_calls() -> None:
    """OpenAI's ``tool_calls`` finish reason promises ``message.tool_calls``.

    GigaChat also reports ``function_call`` when a built-in function ran (gigachat-api.md §5);
    with no ``function_call`` object there is no tool call to hand the client, and a client that
    sees ``finish_reason == "tool_calls"`` iterates ``message.tool_calls`` (None here).
    """
    answer = giga_answer({"role": "assistant", "content": "<img src=\"abc\" fuse=\"true\"/>",
                          "functions_state_id": STATE_A}, "function_call")
    choice = to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)["choices"][0]
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "<img src=\"abc\" fuse=\"true\"/>"


def test_response_finish_reason_missing_is_stop() -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "x"}, "index": 0}],
              "created": 1, "model": "GigaChat-2:2.0", "object": "chat.completion"}
    assert to_openai_response(answer, MODEL, COMPLETION_ID, CREATED)["choices"][0]["finish_reason"] == "stop"


# --------------------------------------------------------------------------
# usage
# --------------------------------------------------------------------------
ZERO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
              "prompt_tokens_details": {"cached_tokens": 0}}


@pytest.mark.parametrize("usage,expected", [
    (None, ZERO_USAGE),
    ({}, ZERO_USAGE),
    ("17", ZERO_USAGE),
    ({"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20, "precached_prompt_tokens": 2},
     {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 2}}),
    ({"prompt_tokens": 17, "completion_tokens": 3},
     {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 0}}),
    ({"prompt_tokens": True, "completion_tokens": -3, "total_tokens": "20", "precached_prompt_tokens": 1.5},
     ZERO_USAGE),
    ({"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "system_tokens": 0},
     {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 0}}),
])
def test_map_usage(usage: Any, expected: Dict[str, Any]) -> None:
    assert map_usage(usage) == expected


# --------------------------------------------------------------------------
# streams: focused cases
# --------------------------------------------------------------------------
def test_stream_role_only_on_the_first_chunk() -> None:
    events = [giga_event({"role": "assistant", "content": "a"})] + \
             [giga_event({"role": "assistant", "content": c}) for c in "bcd"] + [giga_event({"content": ""}, "stop")]
    chunks = translate_stream(events)
    assert [("role" in c["choices"][0]["delta"]) for c in chunks] == [True, False, False, False, False]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "abcd"


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_without_finish_reason_is_502(include_usage: bool) -> None:
    translator = StreamTranslator(MODEL, COMPLETION_ID, CREATED, include_usage)
    out = translator.feed(giga_event({"role": "assistant", "content": "partial"}))
    assert out and out[0]["choices"][0]["finish_reason"] is None
    with pytest.raises(ProxyError) as info:
        translator.finish()
    assert info.value.status == 502


def test_empty_stream_is_502() -> None:
    with pytest.raises(ProxyError) as info:
        StreamTranslator(MODEL, COMPLETION_ID, CREATED, True).finish()
    assert info.value.status == 502


@pytest.mark.parametrize("event", [
    {"status": 500, "message": "Internal error"},
    {"choices": None, "created": 1},
    {"choices": "none"},
    [],
    None,
    "data",
], ids=["error_object", "choices_null", "choices_string", "list", "null", "string"])
def test_stream_event_without_choices_is_502(event: Any) -> None:
    translator = StreamTranslator(MODEL, COMPLETION_ID, CREATED, False)
    translator.feed(giga_event({"role": "assistant", "content": "a"}))
    with pytest.raises(ProxyError) as info:
        translator.feed(event)
    assert info.value.status == 502


def test_stream_events_after_finish_yield_nothing() -> None:
    translator = StreamTranslator(MODEL, COMPLETION_ID, CREATED, True)
    translator.feed(giga_event({"role": "assistant", "content": "x"}, "stop",
                               usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))
    assert translator.feed(giga_event({"content": "late"})) == []
    assert translator.feed(giga_event({"content": ""}, "length")) == []
    tail = translator.finish()
    assert len(tail) == 1 and tail[0]["choices"] == []
    assert tail[0]["usage"]["total_tokens"] == 2


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    chunks = translate_stream([giga_event({"role": "assistant", "content": "hi"}, "stop",
                                          usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})])
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


def test_stream_with_include_usage_but_no_upstream_usage_reports_zeros() -> None:
    chunks = translate_stream([giga_event({"role": "assistant", "content": "hi"}, "stop")], include_usage=True)
    check_stream(chunks, include_usage=True)
    assert chunks[-1]["usage"] == ZERO_USAGE


@pytest.mark.parametrize("arguments", [None, {}, ""], ids=["null", "empty_object", "empty_string"])
def test_stream_tool_call_arguments_are_never_empty(arguments: Any) -> None:
    """Cline emits a tool call only once it has id, name and a non-empty arguments string (§A.2)."""
    function_call = {"name": "list_tasks"}  # type: Dict[str, Any]
    if arguments is not None:
        function_call["arguments"] = arguments
    chunks = translate_stream([giga_event({"role": "assistant", "content": "", "function_call": function_call,
                                           "functions_state_id": STATE_A}, "function_call")])
    check_stream(chunks, include_usage=False)
    call = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {}


def test_stream_function_call_keeps_a_text_prelude() -> None:
    chunks = translate_stream([
        giga_event({"role": "assistant", "content": "Let me check."}),
        giga_event({"content": "", "function_call": {"name": "f", "arguments": {"a": 1}},
                    "functions_state_id": STATE_B}, "function_call"),
    ])
    check_stream(chunks, include_usage=False)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Let me check."}
    delta = chunks[1]["choices"][0]["delta"]
    assert list(delta) == ["tool_calls"]
    assert delta["tool_calls"][0]["id"] == "call_" + STATE_B
    assert chunks[2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


def test_stream_finish_function_call_without_a_call_is_not_tool_calls() -> None:
    """As for the non-stream answer: no tool_calls delta, so the finish reason cannot be tool_calls."""
    chunks = translate_stream([
        giga_event({"role": "assistant", "content": "<img src=\"abc\" fuse=\"true\"/>"}),
        giga_event({"content": "", "functions_state_id": STATE_A}, "function_call"),
    ])
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stream_translator_is_deterministic() -> None:
    events = _load_jsonl(os.path.join(FIXTURES, "streams", "function_call_with_usage.gigachat.jsonl"))
    assert translate_stream(events, True) == translate_stream(copy.deepcopy(events), True)


# --------------------------------------------------------------------------
# SSE reader and writer
# --------------------------------------------------------------------------
def _pieces_of(data: bytes, sizes: Sequence[int]) -> Callable[[], bytes]:
    """A read_some() that hands out ``data`` in the given odd-sized pieces, then b"" for ever."""
    state = {"pos": 0, "turn": 0}

    def read_some() -> bytes:
        size = sizes[state["turn"] % len(sizes)]
        state["turn"] += 1
        piece = data[state["pos"]:state["pos"] + size]
        state["pos"] += len(piece)
        return piece

    return read_some


SPLITS = [[1], [2, 3], [7, 1, 5], [4096]]

SSE_CASES = [
    ("spaced_and_unspaced",
     b'data: {"a":1}\n\ndata:{"b":2}\n\ndata: [DONE]\n\n',
     ['{"a":1}', '{"b":2}', "[DONE]"]),
    ("comments_and_other_fields",
     b': keep-alive\n\nevent: message\nid: 7\nretry: 100\ndata: {"a":1}\n\n:\n\ndata: [DONE]\n\n',
     ['{"a":1}', "[DONE]"]),
    ("crlf",
     b'data: {"a":1}\r\n\r\ndata:{"b":2}\r\n\r\n',
     ['{"a":1}', '{"b":2}']),
    ("multi_line_data",
     b'data: {"a":\ndata: 1}\n\ndata: line1\ndata:line2\r\n\r\n',
     ['{"a":\n1}', "line1\nline2"]),
    ("last_event_without_blank_line",
     b'data: {"a":1}\n\ndata: [DONE]',
     ['{"a":1}', "[DONE]"]),
    ("last_event_with_single_newline",
     b'data: {"a":1}\n',
     ['{"a":1}']),
    ("only_one_space_is_stripped",
     b'data:  two\n\ndata:\tthree\n\n',
     [" two", "\tthree"]),
    ("blank_lines_between_events",
     b'\n\n\ndata: x\n\n\n\ndata: y\n\n',
     ["x", "y"]),
    ("utf8_split_anywhere",
     'data: {"content":"Привет, мир"}\n\n'.encode("utf-8"),
     ['{"content":"Привет, мир"}']),
    ("empty_body", b"", []),
    ("comment_only_body", b": ping\n\n: ping\n", []),
]


@pytest.mark.parametrize("sizes", SPLITS, ids=lambda s: "split" + "-".join(map(str, s)))
@pytest.mark.parametrize("raw,expected", [(r, e) for _, r, e in SSE_CASES], ids=[i for i, _, _ in SSE_CASES])
def test_iter_sse_data(raw: bytes, expected: List[str], sizes: List[int]) -> None:
    assert list(iter_sse_data(_pieces_of(raw, sizes))) == expected


def test_iter_sse_data_is_lazy() -> None:
    """Each event is yielded as soon as its blank line arrives, before the rest is read."""
    pieces = iter([b'data: {"a"', b':1}\n', b"\ndata: {", b'"b":2}\n\n'])

    def read_some() -> bytes:
        try:
            return next(pieces)
        except StopIteration:
            raise AssertionError("read past the second event")

    events = iter_sse_data(read_some)
    assert next(events) == '{"a":1}'
    assert next(events) == '{"b":2}'


@pytest.mark.parametrize("pieces", [
    [b"data: " + b"x" * 200 + b"\n\n"],           # one line too long, in one piece
    [b"data: "] + [b"x" * 10] * 20,                # growing without an end of line
    [b"data: 1\n\ndata: " + b"x" * 30, b"x" * 40],  # the tail of a piece, then more
])
def test_iter_sse_data_refuses_an_oversized_line(monkeypatch: pytest.MonkeyPatch, pieces: List[bytes]) -> None:
    monkeypatch.setattr(gigaproxy, "MAX_SSE_LINE", 64)
    feed = iter(pieces)
    with pytest.raises(ProxyError) as info:
        list(iter_sse_data(lambda: next(feed, b"")))
    assert info.value.status == 502


def test_sse_event_encoding() -> None:
    assert sse_event({"a": 1, "b": [None, True]}) == b'data: {"a":1,"b":[null,true]}\n\n'
    encoded = sse_event({"content": "Привет\nмир", "x": "\u2028"})
    assert encoded.startswith(b"data: ") and encoded.endswith(b"\n\n")
    assert encoded.count(b"\n") == 2, "a newline inside a string must not split the data line"
    assert "Привет".encode("utf-8") in encoded, "UTF-8, not \\u escapes"
    assert json.loads(encoded[len(b"data: "):].decode("utf-8")) == {"content": "Привет\nмир", "x": "\u2028"}


def test_sse_round_trip_through_odd_splits() -> None:
    chunks = translate_stream(_load_jsonl(os.path.join(FIXTURES, "streams", "reasoning_with_usage.gigachat.jsonl")),
                              include_usage=True)
    wire = b"".join(sse_event(c) for c in chunks) + gigaproxy.SSE_DONE
    data = list(iter_sse_data(_pieces_of(wire, [3, 1, 2])))
    assert data[-1] == "[DONE]"
    assert [json.loads(d) for d in data[:-1]] == chunks


def test_translation_is_fast_and_pure() -> None:
    """Same input, same output, many times: no clock, no randomness."""
    request = _load_json(os.path.join(FIXTURES, "requests", "cline_tool_loop.openai.json"))
    first = translate(copy.deepcopy(request))
    for _ in range(200):
        assert translate(copy.deepcopy(request)) == first
