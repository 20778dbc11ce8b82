"""gigaproxy's OpenAI Responses API over real sockets: the raw stream Codex parses (event lines,
sequence numbers, the closing response.completed) and the real openai SDK (installed outside
the repo): create, stream, a tool loop, previous_response_id, parse, retrieve and delete.

Against the fake GigaChat; the SDK's tests skip when it is not installed.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import pytest

STATE_ID = "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b"
EXEC = {"type": "function", "name": "exec_command", "description": "Runs a command", "strict": False,
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"],
                       "additionalProperties": False}}


def sse_events(data: bytes) -> List[Tuple[str, Dict[str, Any]]]:
    events = []
    for block in data.decode("utf-8").split("\n\n"):
        if block.strip():
            name, payload = block.split("\n")
            assert name.startswith("event: ") and payload.startswith("data: "), block
            events.append((name[7:], json.loads(payload[6:])))
    return events


def test_a_streamed_function_call_as_codex_reads_it(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "exec_command", "arguments": {"cmd": "ls"}}, "functions_state_id": STATE_ID},
        finish_reason="function_call")
    body = {"model": "gigachat-max", "stream": True, "store": False, "tools": [EXEC, {"type": "web_search"}],
            "tool_choice": "auto", "parallel_tool_calls": True, "reasoning": {"summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sys"}]},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list"}]}]}
    status, headers, data = proxy.request("POST", "/v1/responses", body,
                                          headers={"Accept": "text/event-stream", "Accept-Encoding": "zstd,gzip"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert headers.get("Content-Encoding") is None
    events = sse_events(data)
    names = [name for name, _ in events]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names[-2:] == ["response.output_item.done", "response.completed"]
    assert "response.function_call_arguments.delta" in names and "response.function_call_arguments.done" in names
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    assert all(e["type"] == name for name, e in events)
    item = events[-1][1]["response"]["output"][-1]
    assert item["type"] == "function_call" and item["call_id"] == "call_" + STATE_ID and item["name"] == "exec_command"
    assert json.loads(item["arguments"]) == {"cmd": "ls"}
    usage = events[-1][1]["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert fake.chat_requests()[-1]["messages"][0] == {"role": "system", "content": "sys"}
    assert proxy.request("GET", "/v1/responses/" + events[-1][1]["response"]["id"])[0] == 404  # store: false


def test_an_upstream_failure_mid_stream_is_response_failed(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "a b c"}, chunks=["a", " b", " c"])
    fake.add_fault("cut", after_events=1)
    status, _, data = proxy.request("POST", "/v1/responses", {"model": "gigachat", "stream": True, "input": "x"})
    events = sse_events(data)
    assert status == 200 and events[-1][0] == "response.failed"
    assert events[-1][1]["response"]["status"] == "failed" and events[-1][1]["response"]["error"]["message"]


# ---- the openai SDK -----------------------------------------------------------------------------


def client_for(proxy):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=30)


def test_openai_sdk_responses_create_retrieve_and_delete(proxy, fake):
    openai = pytest.importorskip("openai")
    client = client_for(proxy)
    response = client.responses.create(model="gigachat-max", input="Привет", instructions="be brief")
    assert response.output_text == "Echo: Привет" and response.status == "completed"
    assert response.model == "gigachat-max" and response.usage.total_tokens > 0
    assert fake.chat_requests()[-1]["messages"][0] == {"role": "system", "content": "be brief"}
    assert client.responses.retrieve(response.id).output_text == "Echo: Привет"
    assert [item.type for item in client.responses.input_items.list(response.id).data] == ["message"]
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_openai_sdk_responses_stream_and_final_response(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "раз два"}, chunks=["раз", " два"])
    with client_for(proxy).responses.stream(model="gigachat", input="считай") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "раз два" and final.output_text == "раз два"


def test_openai_sdk_responses_tool_loop_over_previous_response_id(proxy, fake):
    openai = pytest.importorskip("openai")
    client = client_for(proxy)
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "exec_command", "arguments": {"cmd": "echo 4"}}, "functions_state_id": STATE_ID},
        finish_reason="function_call")
    first = client.responses.create(model="gigachat-max", input="2+2?", tools=[EXEC])
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "exec_command" and json.loads(call.arguments) == {"cmd": "echo 4"}
    fake.enqueue_reply({"role": "assistant", "content": "4"})
    second = client.responses.create(model="gigachat-max", previous_response_id=first.id, tools=[EXEC],
                                      input=[{"type": "function_call_output", "call_id": call.call_id, "output": "four"}])
    assert second.output_text == "4"
    sent = fake.chat_requests()[-1]["messages"]
    assert sent[-2]["functions_state_id"] == STATE_ID and sent[-1] == {
        "role": "function", "name": "exec_command", "content": '{"result": "four"}'}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="gigachat", previous_response_id="resp_unknown", input="x")
    assert info.value.code == "previous_response_not_found"


def test_openai_sdk_responses_parse_with_a_pydantic_model(proxy, fake):
    pydantic = pytest.importorskip("pydantic")

    class City(pydantic.BaseModel):
        name: str
        population: int

    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "City", "arguments": {"name": "Oslo", "population": 709000}}}, finish_reason="function_call")
    parsed = client_for(proxy).responses.parse(model="gigachat-max", input="a city", text_format=City)
    assert parsed.output_parsed == City(name="Oslo", population=709000)
