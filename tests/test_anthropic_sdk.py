"""The real anthropic SDK (installed outside the repo) talks to gigaproxy's Anthropic Messages API,
and the stream's events leave gigaproxy in Anthropic's order (checked on the raw wire).

Against the fake GigaChat over real sockets; the SDK's tests skip when it is not installed.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest

from conftest import API_KEY

WRITE_TOOL = {"name": "Write", "description": "Writes a file", "input_schema": {
    "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
    "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["file_path", "content"], "additionalProperties": False}}
STATE_ID = "5b0c9d0e-8a71-4c53-9d1e-2f3a4b5c6d7e"


def sse_events(data: bytes) -> List[Tuple[str, Dict[str, Any]]]:
    """(event name, data) of each event of an Anthropic stream, as it came off the wire."""
    events = []
    for block in data.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ") and len(lines) == 2, block
        name, payload = lines[0][7:], json.loads(lines[1][6:])
        assert payload["type"] == name
        events.append((name, payload))
    return events


def post_stream(proxy, body: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    status, headers, data = proxy.request("POST", "/v1/messages?beta=true", dict(body, stream=True),
                                          headers={"anthropic-version": "2023-06-01",
                                                   "anthropic-beta": "claude-code-20250219,whatever-2099-01-01"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream"), data
    assert headers["request-id"].startswith("req_")
    return sse_events(data)


def test_a_streamed_tool_use_leaves_in_anthropics_event_order(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "Write", "arguments": {"file_path": "/tmp/x.txt", "content": "TOKEN9\n"}},
        "functions_state_id": STATE_ID}, finish_reason="function_call")
    events = post_stream(proxy, {"model": "claude-sonnet-4-5", "max_tokens": 32000, "tools": [WRITE_TOOL],
                                 "messages": [{"role": "user", "content": "write it"}]})
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1:-2] == ["content_block_start"] + ["content_block_delta"] * (len(names) - 5) + ["content_block_stop"]
    start = events[1][1]["content_block"]
    assert start == {"type": "tool_use", "id": "toolu_" + STATE_ID, "name": "Write", "input": {}}
    partial = "".join(e["delta"]["partial_json"] for n, e in events if n == "content_block_delta")
    assert json.loads(partial) == {"file_path": "/tmp/x.txt", "content": "TOKEN9\n"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-2][1]["usage"]["output_tokens"] > 0
    assert fake.chat_requests()[-1]["model"] == proxy.server.config.model  # claude-* goes to GIGACHAT_MODEL


def test_a_streamed_answer_with_thinking_has_a_thinking_block_then_a_text_block(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "Hi there", "reasoning_content": "think"},
                       chunks=["Hi", " there"])
    events = post_stream(proxy, {"model": "gigachat-max", "max_tokens": 100, "thinking": {"type": "adaptive"},
                                 "messages": [{"role": "user", "content": "hi"}]})
    blocks = [e["content_block"]["type"] for n, e in events if n == "content_block_start"]
    assert blocks == ["thinking", "text"]
    text = "".join(e["delta"].get("text", "") for n, e in events if n == "content_block_delta")
    assert text == "Hi there"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"


def test_errors_on_anthropic_routes_use_anthropics_envelope(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_API_KEY=API_KEY)
    status, headers, body = proxy.json("POST", "/v1/messages", {"model": "x", "max_tokens": 5, "messages": []})
    assert status == 401 and body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert headers["request-id"].startswith("req_")  # on every answer of these routes, a refusal too
    status, _, body = proxy.json("POST", "/v1/messages", {"model": "x", "messages": [{"role": "user", "content": "hi"}]},
                                 headers={"x-api-key": API_KEY})
    assert status == 400 and body["error"]["type"] == "invalid_request_error" and "max_tokens" in body["error"]["message"]
    fake.add_fault("status", status=503)
    fake.add_fault("status", status=503)
    fake.add_fault("status", status=503)
    status, headers, body = proxy.json("POST", "/v1/messages", {"model": "x", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"}]}, headers={"Authorization": "Bearer " + API_KEY})
    assert status == 529 and body["error"]["type"] == "overloaded_error" and headers["request-id"]


def test_claude_codes_probes_are_answered(proxy):
    assert proxy.request("HEAD", "/")[0] == 200
    assert proxy.request("HEAD", "/api/hello")[0] == 200


# ---- the anthropic SDK ------------------------------------------------------------------------


def client_for(proxy):
    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(base_url="http://127.0.0.1:%d" % proxy.port, api_key="unused", max_retries=0,
                               timeout=30)


def test_anthropic_sdk_messages_create(proxy, fake):
    message = client_for(proxy).messages.create(
        model="claude-sonnet-4-5", max_tokens=1024, system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Привет"}]}])
    assert message.type == "message" and message.role == "assistant" and message.model == "claude-sonnet-4-5"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Echo: Привет"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens > 0
    assert fake.chat_requests()[-1]["messages"][0] == {"role": "system", "content": "be brief"}


def test_anthropic_sdk_stream_and_final_message(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "раз два три"}, chunks=["раз", " два", " три"])
    with client_for(proxy).messages.stream(model="gigachat", max_tokens=100,
                                           messages=[{"role": "user", "content": "считай"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "раз два три" and final.content[0].text == "раз два три"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_anthropic_sdk_two_round_tool_loop(proxy, fake):
    client = client_for(proxy)
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "Write", "arguments": {"file_path": "/tmp/a.txt", "content": "A"}},
        "functions_state_id": STATE_ID}, finish_reason="function_call")
    messages = [{"role": "user", "content": "write A to /tmp/a.txt"}]  # type: List[Dict[str, Any]]
    first = client.messages.create(model="claude-sonnet-4-5", max_tokens=500, tools=[WRITE_TOOL], messages=messages)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "Write" and call.input == {"file_path": "/tmp/a.txt", "content": "A"}
    messages += [{"role": "assistant", "content": [c.model_dump() for c in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "File created successfully"}]}]
    fake.enqueue_reply({"role": "assistant", "content": "Done."})
    second = client.messages.create(model="claude-sonnet-4-5", max_tokens=500, tools=[WRITE_TOOL], messages=messages)
    assert second.content[0].text == "Done." and second.stop_reason == "end_turn"
    sent = fake.chat_requests()[-1]["messages"]
    assert sent[-2]["function_call"]["name"] == "Write" and sent[-2]["functions_state_id"] == STATE_ID
    assert sent[-1] == {"role": "function", "name": "Write", "content": '{"result": "File created successfully"}'}


def test_anthropic_sdk_count_tokens_and_models(proxy, fake):
    client = client_for(proxy)
    count = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hello"}])
    assert count.input_tokens > 0
    assert fake.requests[-1].path.endswith("/tokens/count")
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "gigachat-max" in ids and "GigaChat-2-Max" in ids and models.data[0].type == "model"
