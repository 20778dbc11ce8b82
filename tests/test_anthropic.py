"""The Anthropic Messages dialect, pure: requests -> chat -> GigaChat, answers and streams back.

No sockets, clocks or randomness: ids are parameters.  Request cases go through
``anthropic_to_chat`` and then the chat core's ``translate_chat_request``, and every
GigaChat body must pass the strict fake's validator.  Stream cases feed GigaChat events
through ``StreamTranslator`` (with usage, as the handler runs it for this dialect) into
``AnthropicStream`` and compare the exact event sequence; a small accumulator written
from Anthropic's streaming reference rebuilds the message, which must equal the
non-streamed answer for the same GigaChat reply.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import pytest

import gigaproxy  # importable through conftest.py, which puts the repository and tests/ on sys.path
from fake_gigachat import GigaChatError, validate_chat_request
from gigaproxy import (
    AnthropicStream,
    ChatPlan,
    ProxyError,
    StopFilter,
    StreamTranslator,
    anthropic_count_input,
    anthropic_error,
    anthropic_models_list,
    anthropic_shows_thinking,
    anthropic_to_chat,
    anthropic_tool_id,
    chat_to_anthropic,
    count_tokens_total,
    estimate_tokens,
    find_stop,
    state_id_from_call_id,
    to_openai_response,
    translate_chat_request,
)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "anthropic")
DEFAULT_MODEL = "GigaChat-2-Pro-preview"  # the operator's GIGACHAT_MODEL: no alias maps to it
CLIENT_MODEL = "claude-sonnet-4-5"
MESSAGE_ID = "msg_0123456789abcdef01234567"
COMPLETION_ID = "chatcmpl-0123456789abcdef0123456789abcdef"
CREATED = 1700000000
STATE_A = "3f7a8c2e-5b1d-4e9a-9c6f-1a2b3c4d5e6f"
STATE_B = "9b2d4f6a-8c1e-4a3b-b5d7-0e1f2a3b4c5d"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode("ascii")
USAGE = {"prompt_tokens": 17, "completion_tokens": 5, "total_tokens": 22}


def load(name: str) -> Any:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def giga_of(request: Dict[str, Any], model: str = DEFAULT_MODEL) -> Tuple[Dict[str, Any], ChatPlan]:
    """The GigaChat body and plan for an Anthropic request; the strict fake must accept the body."""
    body, plan = translate_chat_request(anthropic_to_chat(request), model, ())
    wire = json.loads(json.dumps(body, ensure_ascii=False))
    for message in wire["messages"]:
        if "attachments" in message:
            message["attachments"] = ["file-id"]  # the handler uploads the image and fills this in
    try:
        validate_chat_request(wire, [{"id": body["model"]}])
    except GigaChatError as exc:  # pragma: no cover - the message is the point
        pytest.fail("GigaChat would reject this body: %s %s" % (exc.status, exc.body))
    return body, plan


def req(messages: Any, **fields: Any) -> Dict[str, Any]:
    request = {"model": CLIENT_MODEL, "max_tokens": 1024, "messages": messages}
    request.update(fields)
    return request


def user(text: str = "Hi") -> Dict[str, Any]:
    return {"role": "user", "content": text}


def rejected(request: Any, **kwargs: Any) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        anthropic_to_chat(request, **kwargs)
    assert info.value.status == 400
    return info.value


# ---- the recorded Claude Code request --------------------------------------------------


def test_claude_code_turn_two() -> None:
    """Claude Code's real second turn (agent-wire/claude-code.md) becomes a body GigaChat takes."""
    request = load("claude_code_turn2.json")["body"]
    body, plan = giga_of(request)
    assert body["model"] == "GigaChat-2-Max"  # "gigachat-max" is an alias
    assert body["stream"] is True and body["max_tokens"] == 32000 and body["reasoning_effort"] == "high"
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "function"]
    system = messages[0]["content"]
    assert "x-anthropic-billing-header" not in system  # billing metadata, not an instruction
    assert system.startswith("You are a Claude agent, built on Anthropic's Claude Agent SDK.\n\n\nYou are an agent")
    assert system.endswith("\n\n# Environment\nYou have been invoked in the following environment: \n"
                           " - Primary working directory: /home/dev/project\n - Is a git repository: false\n"
                           " - Pla\u2026[9137 chars]")  # the mid-conversation system entry joins the prompt
    assert messages[1]["content"].startswith("<system-reminder>\n")
    assert messages[1]["content"].endswith("\nCreate the file /home/dev/project/out.txt containing exactly the "
                                           "text: TOKEN9")
    assert messages[2] == {"role": "assistant", "content": "", "function_call": {
        "name": "Write", "arguments": {"file_path": "/home/dev/project/out.txt", "content": "TOKEN9\n"}}}
    assert messages[3]["name"] == "Write"
    assert json.loads(messages[3]["content"]) == {"result": "File created successfully at: /home/dev/project/out.txt "
                                                  "(file state is current in your context \u2014 no need to Read "
                                                  "it back)"}
    assert [f["name"] for f in body["functions"]] == [
        "Agent", "Bash", "Edit", "ListAgents", "Read", "ReportFindings", "ScheduleWakeup", "Skill", "ToolSearch",
        "Workflow", "DeferredToolPlaceholder", "Write"]
    assert "$schema" not in json.dumps(body["functions"])
    assert body["functions"][-1]["parameters"]["required"] == ["file_path", "content"]
    assert body["function_call"] == "auto"
    for ignored in ("metadata", "thinking", "context_management", "output_config", "system", "tools"):
        assert ignored not in body
    assert plan.stop == () and not plan.images
    assert not anthropic_shows_thinking(request)  # display: "omitted"


def test_claude_code_turn_two_answer_streams_as_claude_code_reads_it() -> None:
    """GigaChat's text answer to that turn, streamed: the events Claude Code was seen to accept."""
    request = load("claude_code_turn2.json")["body"]
    events = run_stream([
        {"choices": [{"delta": {"role": "assistant", "content": "Created "}, "index": 0}]},
        {"choices": [{"delta": {"content": "out.txt."}, "index": 0}]},
        {"choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}], "usage": USAGE},
    ], show_thinking=anthropic_shows_thinking(request), model=request["model"])
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert events[0][1]["message"]["model"] == "gigachat-max"  # the name the client sent
    assert events[-2][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


# ---- requests: messages and content ----------------------------------------------------


def test_plain_request_exactly() -> None:
    chat = anthropic_to_chat(req([user("Hello")], system="Be brief.", temperature=0.5, top_p=0.9, top_k=40))
    assert chat == {"model": CLIENT_MODEL, "temperature": 0.5, "top_p": 0.9, "max_tokens": 1024,
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]}
    body, _ = giga_of(req([user("Hello")], system="Be brief.", temperature=0.5, top_p=0.9, top_k=40))
    assert body == {"model": DEFAULT_MODEL, "temperature": 0.5, "top_p": 0.9, "max_tokens": 1024,
                    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]}


def test_system_blocks_and_system_messages_make_one_first_system_message() -> None:
    body, _ = giga_of(req([
        user("one"), {"role": "system", "content": [{"type": "text", "text": "mid A"}]},
        {"role": "assistant", "content": "two"}, {"role": "system", "content": "mid B"}, user("three"),
    ], system=[{"type": "text", "text": "top 1", "cache_control": {"type": "ephemeral"}},
               {"type": "text", "text": "top 2"}]))
    assert body["messages"] == [
        {"role": "system", "content": "top 1\n\ntop 2\n\nmid A\n\nmid B"},
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"}]


def test_no_system_at_all() -> None:
    body, _ = giga_of(req([user()], system=[]))
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


def test_text_blocks_are_joined_and_thinking_is_dropped() -> None:
    body, _ = giga_of(req([
        {"role": "user", "content": [{"type": "text", "text": "a", "citations": None}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hidden", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "answer"}]},
        user("more"),
    ]))
    assert body["messages"] == [{"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "answer"},
                                {"role": "user", "content": "more"}]
    assert "hidden" not in json.dumps(body)


def test_server_tool_blocks_in_history_are_dropped() -> None:
    body, _ = giga_of(req([
        user("find it"),
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            {"type": "text", "text": "found"}]},
        user("thanks"),
    ]))
    assert [m["content"] for m in body["messages"]] == ["find it", "found", "thanks"]


def test_base64_and_url_images() -> None:
    request = req([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}])
    chat = anthropic_to_chat(request)
    assert chat["messages"][0]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64," + PNG}}
    body, plan = giga_of(request, model="GigaChat-2-Max")
    assert body["messages"][0]["content"] == "What is this?"
    assert len(plan.images) == 1 and plan.images[0][1].mime == "image/png"
    assert plan.images[0][1].data.startswith(b"\x89PNG")
    url = req([{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]}])
    _, plan = giga_of(url, model="GigaChat-2-Max")
    assert plan.images[0][1].url == "https://example.com/cat.jpg"


def test_several_images_in_one_turn_become_one_message_each() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}}
    body, plan = giga_of(req([{"role": "user", "content": [
        {"type": "text", "text": "first"}, image, {"type": "text", "text": "second"}, image]}]),
        model="GigaChat-2-Max")
    assert [m["content"] for m in body["messages"]] == ["first\nsecond", ""]
    assert len(plan.images) == 2 and all("attachments" in m for m in body["messages"])


def test_image_checks_are_the_chat_cores() -> None:
    gif = req([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": PNG}}]}])
    with pytest.raises(ProxyError) as info:
        translate_chat_request(anthropic_to_chat(gif), "GigaChat-2-Max")
    assert info.value.status == 400 and "image/gif" in info.value.message


def test_image_file_source_is_refused_by_field() -> None:
    exc = rejected(req([{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]))
    assert exc.param == "messages[0].content[1].source.type"


def test_documents_with_text_become_text() -> None:
    body, _ = giga_of(req([{"role": "user", "content": [
        {"type": "document", "title": "notes.txt", "source": {"type": "text", "media_type": "text/plain",
                                                              "data": "line one"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "chunk"}]}},
        {"type": "document", "source": {"type": "content", "content": "plain"}},
        {"type": "text", "text": "Summarise."}]}]))
    assert body["messages"][0]["content"] == "notes.txt\nline one\nchunk\nplain\nSummarise."


@pytest.mark.parametrize("source", [
    {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"},
    {"type": "url", "url": "https://example.com/a.pdf"},
    {"type": "file", "file_id": "file_1"},
])
def test_pdf_documents_are_a_clear_400(source: Dict[str, Any]) -> None:
    exc = rejected(req([{"role": "user", "content": [{"type": "document", "source": source}]}]))
    assert exc.param == "messages[0].content[0].source.type" and "as text" in exc.message


def test_search_result_and_tool_reference_become_text() -> None:
    body, _ = giga_of(req([
        user("go"),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "ToolSearch",
                                           "input": {"query": "git"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a", "content": [
            {"type": "tool_reference", "tool_name": "GitStatus"},
            {"type": "search_result", "title": "Doc", "source": "https://x", "content": [
                {"type": "text", "text": "body"}]}]}]},
    ], tools=[{"name": "ToolSearch", "input_schema": {"type": "object", "properties": {}}}]))
    assert json.loads(body["messages"][-1]["content"]) == {"result": "Tool GitStatus is available.\nDoc\nhttps://x\nbody"}


# ---- requests: tool use and results ----------------------------------------------------

TOOLS = [
    {"name": "get_weather", "description": "Weather for a city",
     "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}}},
]


def tool_turns(results: List[Dict[str, Any]], text: Optional[str] = None) -> List[Dict[str, Any]]:
    content = list(results) + ([{"type": "text", "text": text}] if text else [])
    return [
        user("Weather in Paris and the time in UTC?"),
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_" + STATE_A, "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_01XyZ", "name": "get_time", "input": {"zone": "UTC"}}]},
        {"role": "user", "content": content},
    ]


def test_parallel_tool_uses_answered_in_any_order_make_gigachat_pairs() -> None:
    body, _ = giga_of(req(tool_turns([
        {"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": "12:00"},
        {"type": "tool_result", "tool_use_id": "toolu_" + STATE_A, "content": [{"type": "text", "text": '{"t": 21}'}]},
    ], text="Thanks"), tools=TOOLS))
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Checking both.", "functions_state_id": STATE_A,
         "function_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"role": "function", "name": "get_weather", "content": '{"t": 21}'},
        {"role": "assistant", "content": "", "function_call": {"name": "get_time", "arguments": {"zone": "UTC"}}},
        {"role": "function", "name": "get_time", "content": '{"result": "12:00"}'},
        {"role": "user", "content": "Thanks"},
    ]


def test_tool_result_error_empty_and_image() -> None:
    body, plan = giga_of(req(tool_turns([
        {"type": "tool_result", "tool_use_id": "toolu_" + STATE_A, "content": "city unknown", "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": [
            {"type": "text", "text": "screenshot"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]},
    ]), tools=TOOLS), model="GigaChat-2-Max")
    functions = [m for m in body["messages"] if m["role"] == "function"]
    assert json.loads(functions[0]["content"]) == {"error": "city unknown"}
    assert json.loads(functions[1]["content"]) == {"result": "screenshot\n[1 image(s) in the next message]"}
    assert body["messages"][-1] == {"role": "user", "content": "[image from the result of toolu_01XyZ]",
                                    "attachments": []}
    assert len(plan.images) == 1
    empty, _ = giga_of(req(tool_turns([
        {"type": "tool_result", "tool_use_id": "toolu_" + STATE_A},
        {"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": []}]), tools=TOOLS))
    assert [json.loads(m["content"]) for m in empty["messages"] if m["role"] == "function"] == [
        {"result": ""}, {"result": ""}]


def test_a_missing_tool_result_is_the_cores_400_naming_the_id() -> None:
    with pytest.raises(ProxyError) as info:
        giga_of(req(tool_turns([{"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": "12:00"}]),
                    tools=TOOLS))
    assert info.value.status == 400 and "toolu_" + STATE_A in info.value.message


def test_toolu_ids_carry_gigachat_state_both_ways() -> None:
    call_id = "call_" + STATE_B
    assert anthropic_tool_id(call_id) == "toolu_" + STATE_B
    assert anthropic_tool_id("other") == "other"
    chat = anthropic_to_chat(req(tool_turns([
        {"type": "tool_result", "tool_use_id": "toolu_" + STATE_A, "content": "x"},
        {"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": "y"}]), tools=TOOLS))
    ids = [c["id"] for c in chat["messages"][1]["tool_calls"]]
    assert ids == ["toolu_" + STATE_A, "toolu_01XyZ"]  # the client's ids, verbatim
    assert state_id_from_call_id(ids[0]) == STATE_A and state_id_from_call_id(ids[1]) is None
    assert [m["tool_call_id"] for m in chat["messages"][2:4]] == ids


def test_tools_server_tools_left_out_and_deferred_tools_offered(caplog: Any) -> None:
    tools = [
        {"type": "custom", "name": "lookup", "description": "Find", "cache_control": {"type": "ephemeral"},
         "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                          "properties": {"q": {"type": "string"}}, "additionalProperties": False}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"name": "later", "input_schema": {"type": "object", "properties": {}}, "defer_loading": True},
        {"name": "bare"},
    ]
    with caplog.at_level(logging.DEBUG, logger="gigaproxy"):
        body, _ = giga_of(req([user()], tools=tools))
    assert body["functions"] == [
        {"name": "lookup", "description": "Find", "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                                                                 "additionalProperties": False}},
        {"name": "later", "parameters": {"type": "object", "properties": {}}},
        {"name": "bare", "parameters": {"type": "object", "properties": {}}},
    ]
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 4 and "'web_search_20250305'" in left_out[0]


@pytest.mark.parametrize("choice,function_call,instructed", [
    ({"type": "auto"}, "auto", False),
    ({"type": "none"}, "none", False),
    ({"type": "tool", "name": "get_time"}, {"name": "get_time"}, False),
    ({"type": "any"}, "auto", True),  # several tools: GigaChat cannot force "some function"
    ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
])
def test_tool_choice(choice: Dict[str, Any], function_call: Any, instructed: bool) -> None:
    body, _ = giga_of(req([user()], tools=TOOLS, tool_choice=choice))
    assert body["function_call"] == function_call
    assert (body["messages"][0]["role"] == "system") is instructed


def test_tool_choice_any_with_one_tool_forces_it() -> None:
    body, _ = giga_of(req([user()], tools=TOOLS[:1], tool_choice={"type": "any"}))
    assert body["function_call"] == {"name": "get_weather"}


@pytest.mark.parametrize("request_fields,param", [
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}}, "tool_choice.disable_parallel_tool_use"),
    ({"tools": {"name": "x"}}, "tools"),
    ({"tools": [{"name": ""}]}, "tools[0].name"),
    ({"tools": [{"input_schema": {}}]}, "tools[0].name"),
    ({"tools": [{"name": "x", "description": 5}]}, "tools[0].description"),
    ({"tools": [{"name": "x", "input_schema": "{}"}]}, "tools[0].input_schema"),
])
def test_bad_tools_name_the_field(request_fields: Dict[str, Any], param: str) -> None:
    assert rejected(req([user()], **request_fields)).param == param


def test_tool_choice_naming_an_unknown_tool_is_the_cores_400() -> None:
    with pytest.raises(ProxyError) as info:
        giga_of(req([user()], tools=TOOLS, tool_choice={"type": "tool", "name": "nope"}))
    assert info.value.param == "tool_choice"


# ---- requests: parameters ----------------------------------------------------------------


def test_max_tokens_is_required_except_for_counting() -> None:
    request = req([user()])
    del request["max_tokens"]
    exc = rejected(request)
    assert exc.param == "max_tokens" and exc.code == "missing_required_field"
    assert "max_tokens" not in anthropic_to_chat(request, require_max_tokens=False)


def test_max_tokens_is_clamped_not_refused() -> None:
    assert anthropic_to_chat(req([user()], max_tokens=32000))["max_tokens"] == 32000
    assert anthropic_to_chat(req([user()], max_tokens=10 ** 12))["max_tokens"] == gigaproxy.MAX_TOKENS_LIMIT


@pytest.mark.parametrize("value", [0, -5, "100", True, 1.5])
def test_bad_max_tokens_is_the_cores_400_naming_it(value: Any) -> None:
    with pytest.raises(ProxyError) as info:
        giga_of(req([user()], max_tokens=value))
    assert info.value.status == 400 and info.value.param == "max_tokens"


def test_temperature_zero_is_greedy_as_in_chat() -> None:
    body, _ = giga_of(req([user()], temperature=0))
    assert body["top_p"] == 0 and "temperature" not in body


def test_stop_sequences_are_emulated() -> None:
    _, plan = giga_of(req([user()], stop_sequences=["\n\nHuman:", "END"]))
    assert plan.stop == ("\n\nHuman:", "END")


@pytest.mark.parametrize("value,param", [
    ("END", "stop_sequences"), (["a", 5], "stop_sequences[1]"), (["a", "b", "c", "d", "e"], "stop_sequences"),
])
def test_bad_stop_sequences_name_the_field(value: Any, param: str) -> None:
    assert rejected(req([user()], stop_sequences=value)).param == param


@pytest.mark.parametrize("fields,effort", [
    ({}, None),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "low"),
    ({"thinking": {"type": "enabled", "budget_tokens": 8000}}, "medium"),
    ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, "high"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "output_config": {"effort": "high"}}, "high"),
    ({"thinking": {"type": "adaptive"}}, None),
    ({"thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "medium"}}, "medium"),
    ({"output_config": {"effort": "low"}}, "low"),
    ({"output_config": {"effort": "max"}}, "high"),
    ({"thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}, None),
])
def test_thinking_and_effort_become_reasoning_effort(fields: Dict[str, Any], effort: Optional[str]) -> None:
    body, _ = giga_of(req([user()], **fields))
    assert body.get("reasoning_effort") == effort


@pytest.mark.parametrize("fields,param", [
    ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
    ({"thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"thinking": "on"}, "thinking"),
    ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
    ({"output_config": "high"}, "output_config"),
])
def test_bad_thinking_names_the_field(fields: Dict[str, Any], param: str) -> None:
    assert rejected(req([user()], **fields)).param == param


@pytest.mark.parametrize("thinking,shown", [
    (None, False), ({"type": "enabled", "budget_tokens": 2000}, True), ({"type": "adaptive"}, True),
    ({"type": "adaptive", "display": "summarized"}, True), ({"type": "adaptive", "display": "omitted"}, False),
    ({"type": "disabled"}, False),
])
def test_which_requests_get_thinking_blocks(thinking: Any, shown: bool) -> None:
    request = req([user()]) if thinking is None else req([user()], thinking=thinking)
    assert anthropic_shows_thinking(request) is shown


def test_structured_output_uses_the_chat_path() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    body, plan = giga_of(req([user()], output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert plan.output == "json_schema" and body["function_call"] == {"name": plan.output_function}
    _, legacy = giga_of(req([user()], output_format={"type": "json_schema", "schema": schema}))
    assert legacy.output == "json_schema"
    assert rejected(req([user()], output_format={"type": "regex"})).param == "output_format.type"


def test_fields_gigachat_has_no_use_for_are_ignored() -> None:
    body, _ = giga_of(req([user()], metadata={"user_id": "u"}, service_tier="auto", container="c1", top_k=5,
                          context_management={"edits": []}, mcp_servers=[], inference_geo="eu", anything=1))
    assert body == {"model": DEFAULT_MODEL, "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]}


def test_streamed_requests_ask_for_usage() -> None:
    chat = anthropic_to_chat(req([user()], stream=True))
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert "stream_options" not in anthropic_to_chat(req([user()], stream=False))


@pytest.mark.parametrize("model,resolved", [
    ("claude-sonnet-4-5", DEFAULT_MODEL), ("claude-haiku-4-5-20251001", DEFAULT_MODEL),
    ("gigachat-max", "GigaChat-2-Max"), ("GigaChat-2-Pro", "GigaChat-2-Pro"),
])
def test_models_resolve_as_in_chat(model: str, resolved: str) -> None:
    body, _ = giga_of(req([user()], model=model))
    assert body["model"] == resolved


@pytest.mark.parametrize("body,param", [
    ([], "body"),
    ({"model": "m", "max_tokens": 5}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    (req(["hi"]), "messages[0]"),
    (req([{"role": "tool", "content": "x"}]), "messages[0].role"),
    (req([{"role": "user", "content": 5}]), "messages[0].content"),
    (req([{"role": "user", "content": ["x"]}]), "messages[0].content[0]"),
    (req([{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content[0].text"),
    (req([{"role": "user", "content": [{"type": "video"}]}]), "messages[0].content[0].type"),
    (req([{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]),
     "messages[0].content[0].type"),
    (req([{"role": "user", "content": [{"type": "tool_result"}]}]), "messages[0].content[0].tool_use_id"),
    (req([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "is_error": "no"}]}]),
     "messages[0].content[0].is_error"),
    (req([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 5}]}]),
     "messages[0].content[0].content"),
    (req([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": PNG}}]}]),
     "messages[0].content[0].source.media_type"),
    (req([{"role": "user", "content": [{"type": "document", "source": {"type": "text"}}]}]),
     "messages[0].content[0].source.data"),
    (req([user(), {"role": "assistant", "content": [{"type": "image", "source": {}}]}]),
     "messages[1].content[0].type"),
    (req([user(), {"role": "assistant", "content": [{"type": "tool_use", "name": "x", "input": {}}]}]),
     "messages[1].content[0].id"),
    (req([user(), {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "input": {}}]}]),
     "messages[1].content[0].name"),
    (req([user(), {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "x", "input": "{}"}]}]),
     "messages[1].content[0].input"),
    (req([user()], system=5), "system"),
    (req([user()], system=[{"type": "image"}]), "system[0].type"),
    (req([{"role": "system", "content": [{"type": "text", "text": 5}]}]), "messages[0].content[0].text"),
])
def test_bad_requests_name_the_anthropic_field(body: Any, param: str) -> None:
    assert rejected(body).param == param


# ---- answers -----------------------------------------------------------------------------


def answer(message: Dict[str, Any], finish_reason: str = "stop", usage: Any = USAGE) -> Dict[str, Any]:
    reply = {"choices": [{"message": dict({"role": "assistant"}, **message), "index": 0,
                          "finish_reason": finish_reason}], "created": CREATED, "model": "GigaChat-2-Max:2.0",
             "object": "chat.completion"}  # type: Dict[str, Any]
    if usage is not None:
        reply["usage"] = usage
    return reply


def message_of(reply: Dict[str, Any], plan: Optional[ChatPlan] = None, show_thinking: bool = True) -> Dict[str, Any]:
    chat = to_openai_response(reply, CLIENT_MODEL, COMPLETION_ID, CREATED, plan)
    return chat_to_anthropic(chat, CLIENT_MODEL, MESSAGE_ID, show_thinking)


ANTHROPIC_USAGE = {"input_tokens": 17, "output_tokens": 5, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0}


def test_text_answer_exactly() -> None:
    assert message_of(answer({"content": "Hello!"})) == {
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": CLIENT_MODEL,
        "content": [{"type": "text", "text": "Hello!"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": ANTHROPIC_USAGE}


def test_thinking_comes_first_with_a_signature() -> None:
    message = message_of(answer({"content": "42", "reasoning_content": "Let me think."}))
    assert message["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": gigaproxy.ANTHROPIC_THINKING_SIGNATURE},
        {"type": "text", "text": "42"}]
    assert isinstance(message["content"][0]["signature"], str) and message["content"][0]["signature"]
    hidden = message_of(answer({"content": "42", "reasoning_content": "Let me think."}), show_thinking=False)
    assert hidden["content"] == [{"type": "text", "text": "42"}]


def test_tool_use_answer_carries_the_state_and_the_clients_name() -> None:
    names = gigaproxy.ToolNames(["mcp__git.status"])
    reply = answer({"content": "", "function_call": {"name": names.to_gigachat("mcp__git.status"),
                                                     "arguments": {"path": "."}},
                    "functions_state_id": STATE_A}, "function_call")
    message = message_of(reply, ChatPlan(names))
    assert message["content"] == [{"type": "tool_use", "id": "toolu_" + STATE_A, "name": "mcp__git.status",
                                   "input": {"path": "."}}]
    assert message["stop_reason"] == "tool_use"
    # sent back, the id restores functions_state_id
    body, _ = giga_of(req([user(), {"role": "assistant", "content": message["content"]},
                           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_" + STATE_A,
                                                         "content": "clean"}]}],
                          tools=[{"name": "mcp__git.status", "input_schema": {"type": "object"}}]))
    assert body["messages"][1]["functions_state_id"] == STATE_A


def test_tool_use_without_state_gets_an_id_anyway() -> None:
    reply = answer({"content": "", "function_call": {"name": "get_time", "arguments": "{}"}}, "function_call")
    message = message_of(reply)
    assert [b["type"] for b in message["content"]] == ["tool_use"]
    assert message["content"][0]["id"] == "toolu_0123456789abcdef01234567" and message["content"][0]["input"] == {}


def test_tool_arguments_that_are_no_object_are_502() -> None:
    chat = to_openai_response(answer({"function_call": {"name": "f", "arguments": "[1]"}}, "function_call"),
                              CLIENT_MODEL, COMPLETION_ID, CREATED)
    with pytest.raises(ProxyError) as info:
        chat_to_anthropic(chat, CLIENT_MODEL, MESSAGE_ID)
    assert info.value.status == 502


@pytest.mark.parametrize("finish,stop_reason", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("blacklist", "refusal"), ("something_new", "end_turn"),
])
def test_stop_reasons(finish: str, stop_reason: str) -> None:
    assert message_of(answer({"content": "x"}, finish))["stop_reason"] == stop_reason


def test_stop_sequence_answer() -> None:
    message = message_of(answer({"content": "one\nEND\ntwo"}), ChatPlan(stop=("STOP", "END")))
    assert message["content"] == [{"type": "text", "text": "one\n"}]
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
    plain = message_of(answer({"content": "one two"}), ChatPlan(stop=("END",)))
    assert (plain["stop_reason"], plain["stop_sequence"]) == ("end_turn", None)


def test_missing_usage_is_zeros_and_empty_answer_has_no_blocks() -> None:
    message = message_of(answer({"content": ""}, usage=None))
    assert message["content"] == [] and message["usage"] == dict(ANTHROPIC_USAGE, input_tokens=0, output_tokens=0)


# ---- streams -----------------------------------------------------------------------------


def run_stream(events: List[Dict[str, Any]], plan: Optional[ChatPlan] = None, show_thinking: bool = True,
               model: str = CLIENT_MODEL) -> List[Tuple[str, Dict[str, Any]]]:
    """GigaChat events through StreamTranslator and AnthropicStream, as the handler runs them."""
    translator = StreamTranslator(model, COMPLETION_ID, CREATED, True, plan)
    adapter = AnthropicStream(model, MESSAGE_ID, show_thinking)
    out = []  # type: List[Tuple[str, Dict[str, Any]]]
    for event in events:
        for chunk in translator.feed(event):
            out += adapter.feed(chunk)
        if translator.stopped_early:
            break
    for chunk in translator.finish():
        out += adapter.feed(chunk)
    return out + adapter.finish()


def accumulate(events: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """The message a client builds from the events, per Anthropic's streaming reference."""
    message = None  # type: Any
    buffers = {}  # type: Dict[int, str]
    for name, data in events:
        assert data["type"] == name
        if name == "message_start":
            assert message is None
            message = json.loads(json.dumps(data["message"]))
        elif name == "content_block_start":
            assert data["index"] == len(message["content"])
            message["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            field = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature",
                     "input_json_delta": "partial_json"}[delta["type"]]
            if field == "partial_json":
                buffers[data["index"]] = buffers.get(data["index"], "") + delta["partial_json"]
            elif field == "signature":
                block["signature"] = delta["signature"]
            else:
                block[field] += delta[field]
        elif name == "content_block_stop":
            if data["index"] in buffers:
                message["content"][data["index"]]["input"] = json.loads(buffers[data["index"]])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    return message


def names(events: List[Tuple[str, Dict[str, Any]]]) -> List[str]:
    return [name for name, _ in events]


def delta_event(index: int, delta: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_event(index: int, block: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def stop_event(index: int) -> Tuple[str, Dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def start_event(usage_in: int = 0) -> Tuple[str, Dict[str, Any]]:
    return ("message_start", {"type": "message_start", "message": {
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": CLIENT_MODEL, "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage_in, "output_tokens": 0, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0}}})


def end_events(stop_reason: str, stop_sequence: Optional[str] = None,
               usage: Optional[Dict[str, int]] = None) -> List[Tuple[str, Dict[str, Any]]]:
    return [("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                               "usage": usage if usage is not None else ANTHROPIC_USAGE}),
            ("message_stop", {"type": "message_stop"})]


TEXT_EVENTS = [
    {"choices": [{"delta": {"role": "assistant", "content": "Hel"}, "index": 0}]},
    {"choices": [{"delta": {"content": "lo!"}, "index": 0}]},
    {"choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}], "usage": USAGE},
]


def test_stream_text_exactly() -> None:
    events = run_stream(TEXT_EVENTS)
    assert events == [
        start_event(),
        block_event(0, {"type": "text", "text": ""}),
        delta_event(0, {"type": "text_delta", "text": "Hel"}),
        delta_event(0, {"type": "text_delta", "text": "lo!"}),
        stop_event(0),
    ] + end_events("end_turn")
    assert accumulate(events) == message_of(answer({"content": "Hello!"}))


THINKING_EVENTS = [
    {"choices": [{"delta": {"role": "assistant", "reasoning_content": "Six "}, "index": 0}]},
    {"choices": [{"delta": {"reasoning_content": "times seven."}, "index": 0}]},
    {"choices": [{"delta": {"content": "42"}, "index": 0}]},
    {"choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}], "usage": USAGE},
]


def test_stream_thinking_then_text_exactly() -> None:
    events = run_stream(THINKING_EVENTS)
    assert events == [
        start_event(),
        block_event(0, {"type": "thinking", "thinking": "", "signature": ""}),
        delta_event(0, {"type": "thinking_delta", "thinking": "Six "}),
        delta_event(0, {"type": "thinking_delta", "thinking": "times seven."}),
        delta_event(0, {"type": "signature_delta", "signature": gigaproxy.ANTHROPIC_THINKING_SIGNATURE}),
        stop_event(0),
        block_event(1, {"type": "text", "text": ""}),
        delta_event(1, {"type": "text_delta", "text": "42"}),
        stop_event(1),
    ] + end_events("end_turn")
    assert accumulate(events) == message_of(answer({"content": "42", "reasoning_content": "Six times seven."}))


def test_stream_thinking_omitted() -> None:
    events = run_stream(THINKING_EVENTS, show_thinking=False)
    assert names(events) == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                             "message_delta", "message_stop"]
    assert events[1][1]["content_block"]["type"] == "text" and events[1][1]["index"] == 0


def test_stream_one_tool_use_exactly() -> None:
    events = run_stream([
        {"choices": [{"delta": {"role": "assistant", "content": ""}, "index": 0}]},
        {"choices": [{"delta": {"content": "", "function_call": {"name": "Write", "arguments": {
            "file_path": "/tmp/out.txt", "content": "TOKEN9\n"}}, "functions_state_id": STATE_A},
            "index": 0, "finish_reason": "function_call"}], "usage": USAGE},
    ])
    arguments = json.dumps({"file_path": "/tmp/out.txt", "content": "TOKEN9\n"}, ensure_ascii=False)
    assert events == [
        start_event(),
        block_event(0, {"type": "tool_use", "id": "toolu_" + STATE_A, "name": "Write", "input": {}}),
        delta_event(0, {"type": "input_json_delta", "partial_json": arguments}),
        stop_event(0),
    ] + end_events("tool_use")
    assert accumulate(events)["content"] == [{"type": "tool_use", "id": "toolu_" + STATE_A, "name": "Write",
                                              "input": {"file_path": "/tmp/out.txt", "content": "TOKEN9\n"}}]


def test_stream_text_then_tool_use_matches_the_plain_answer() -> None:
    call = {"name": "get_time", "arguments": {"zone": "UTC"}}
    events = run_stream([
        {"choices": [{"delta": {"role": "assistant", "content": "Let me check."}, "index": 0}]},
        {"choices": [{"delta": {"content": "", "function_call": call, "functions_state_id": STATE_B}, "index": 0,
                      "finish_reason": "function_call"}], "usage": USAGE},
    ])
    assert names(events) == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                             "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
                             "message_stop"]
    plain = message_of(answer({"content": "Let me check.", "function_call": call, "functions_state_id": STATE_B},
                              "function_call"))
    streamed = accumulate(events)
    # The chat core keeps a text prelude to a call when streaming; its plain answer drops it (content null).
    assert streamed["content"][0] == {"type": "text", "text": "Let me check."}
    assert dict(streamed, content=streamed["content"][1:]) == plain


def chunk(delta: Dict[str, Any], finish: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}  # type: Dict[str, Any]
    choice.update(extra)
    return {"id": COMPLETION_ID, "object": "chat.completion.chunk", "created": CREATED, "model": CLIENT_MODEL,
            "choices": [choice], "usage": None}


def test_stream_two_parallel_tool_uses_in_pieces() -> None:
    """Chat chunks with two tool calls (GigaChat sends one, other cores may send more), arguments in pieces."""
    adapter = AnthropicStream(CLIENT_MODEL, MESSAGE_ID)
    events = adapter.start()
    for piece in [
        chunk({"role": "assistant", "content": "Both:"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_" + STATE_A, "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_x1", "type": "function",
                               "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]}),
        chunk({}, "tool_calls"),
        {"id": COMPLETION_ID, "object": "chat.completion.chunk", "created": CREATED, "model": CLIENT_MODEL,
         "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}},
    ]:
        events += adapter.feed(piece)
    events += adapter.finish()
    assert events == [
        start_event(),
        block_event(0, {"type": "text", "text": ""}),
        delta_event(0, {"type": "text_delta", "text": "Both:"}),
        stop_event(0),
        block_event(1, {"type": "tool_use", "id": "toolu_" + STATE_A, "name": "get_weather", "input": {}}),
        delta_event(1, {"type": "input_json_delta", "partial_json": '{"city": '}),
        delta_event(1, {"type": "input_json_delta", "partial_json": '"Paris"}'}),
        stop_event(1),
        block_event(2, {"type": "tool_use", "id": "toolu_x1", "name": "get_time", "input": {}}),
        delta_event(2, {"type": "input_json_delta", "partial_json": '{"zone": "UTC"}'}),
        stop_event(2),
    ] + end_events("tool_use", usage={"input_tokens": 30, "output_tokens": 12, "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0})
    assert [b.get("input") for b in accumulate(events)["content"]] == [None, {"city": "Paris"}, {"zone": "UTC"}]


def test_stream_stop_sequence_across_chunks() -> None:
    events = run_stream([
        {"choices": [{"delta": {"role": "assistant", "content": "one EN"}, "index": 0}]},
        {"choices": [{"delta": {"content": "D two"}, "index": 0}]},
        {"choices": [{"delta": {"content": ""}, "index": 0, "finish_reason": "stop"}], "usage": USAGE},
    ], ChatPlan(stop=("END",)))
    assert events == [
        start_event(),
        block_event(0, {"type": "text", "text": ""}),
        delta_event(0, {"type": "text_delta", "text": "one "}),
        stop_event(0),
        # cut before GigaChat reported usage: no input count is made up, output is unknown
    ] + end_events("stop_sequence", "END", {"output_tokens": 0, "cache_creation_input_tokens": 0,
                                            "cache_read_input_tokens": 0})


def test_stream_max_tokens() -> None:
    events = run_stream([
        {"choices": [{"delta": {"role": "assistant", "content": "A long"}, "index": 0}]},
        {"choices": [{"delta": {"content": " story"}, "index": 0, "finish_reason": "length"}], "usage": USAGE},
    ])
    assert events[-2:] == end_events("max_tokens")
    assert accumulate(events)["content"] == [{"type": "text", "text": "A long story"}]


def test_stream_error_midway_is_an_error_event_and_the_end() -> None:
    adapter = AnthropicStream(CLIENT_MODEL, MESSAGE_ID)
    events = adapter.feed(chunk({"role": "assistant", "content": "Par"}))
    failure = ProxyError(502, "GigaChat's stream ended before the answer was complete", "api_error",
                         "upstream_stream_incomplete")
    events += adapter.fail(failure)
    assert names(events) == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert events[-1][1] == {"type": "error", "error": {
        "type": "api_error", "message": "GigaChat's stream ended before the answer was complete"}}
    assert adapter.feed(chunk({"content": "more"})) == [] and adapter.finish() == [] and adapter.ping() == []
    overloaded = AnthropicStream(CLIENT_MODEL, MESSAGE_ID)
    overloaded.start()
    assert overloaded.fail(ProxyError(503, "busy", "api_error"))[0][1]["error"]["type"] == "overloaded_error"


def test_stream_start_early_ping_and_an_empty_answer() -> None:
    adapter = AnthropicStream(CLIENT_MODEL, MESSAGE_ID, input_tokens=99)
    assert adapter.ping() == [start_event(99), ("ping", {"type": "ping"})]
    assert adapter.start() == []
    assert adapter.ping() == [("ping", {"type": "ping"})]
    assert adapter.finish() == end_events("end_turn", usage={"output_tokens": 0, "cache_creation_input_tokens": 0,
                                                             "cache_read_input_tokens": 0})
    assert adapter.finish() == []


def test_stream_is_deterministic() -> None:
    assert run_stream(THINKING_EVENTS) == run_stream(THINKING_EVENTS)


def test_events_are_encoded_with_their_names() -> None:
    adapter = AnthropicStream(CLIENT_MODEL, MESSAGE_ID)
    assert adapter.encode([("message_stop", {"type": "message_stop"})]) == \
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    encoded = adapter.encode([delta_event(0, {"type": "text_delta", "text": "\u041f\u0440\u0438\n"}),
                              ("ping", {"type": "ping"})])
    assert encoded == ('event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                       '"delta":{"type":"text_delta","text":"\u041f\u0440\u0438\\n"}}\n\n'
                       'event: ping\ndata: {"type":"ping"}\n\n').encode("utf-8")
    assert isinstance(adapter, gigaproxy.ChatStream)


# ---- errors, models, counting --------------------------------------------------------------


@pytest.mark.parametrize("status,expected_status,kind", [
    (400, 400, "invalid_request_error"), (401, 401, "authentication_error"), (402, 402, "billing_error"),
    (403, 403, "permission_error"), (404, 404, "not_found_error"), (405, 405, "invalid_request_error"),
    (413, 413, "request_too_large"), (429, 429, "rate_limit_error"), (500, 500, "api_error"),
    (502, 502, "api_error"), (503, 529, "overloaded_error"), (504, 504, "timeout_error"), (501, 501, "api_error"),
])
def test_error_envelope(status: int, expected_status: int, kind: str) -> None:
    assert anthropic_error(ProxyError(status, "what went wrong")) == (
        expected_status, {"type": "error", "error": {"type": kind, "message": "what went wrong"}})


MODELS = [{"id": "GigaChat-2", "created": 1700000000}, {"id": "GigaChat-2-Max", "created": 0},
          {"id": "gigachat-max"}]


def test_models_list_shape() -> None:
    assert anthropic_models_list(MODELS) == {
        "data": [
            {"type": "model", "id": "GigaChat-2", "display_name": "GigaChat-2", "created_at": "2023-11-14T22:13:20Z",
             "lifecycle": "active"},
            {"type": "model", "id": "GigaChat-2-Max", "display_name": "GigaChat-2-Max",
             "created_at": "1970-01-01T00:00:00Z", "lifecycle": "active"},
            {"type": "model", "id": "gigachat-max", "display_name": "gigachat-max",
             "created_at": "1970-01-01T00:00:00Z", "lifecycle": "active"}],
        "has_more": False, "first_id": "GigaChat-2", "last_id": "gigachat-max"}
    assert anthropic_models_list([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


def test_models_list_pages() -> None:
    page = anthropic_models_list(MODELS, limit="1")
    assert [m["id"] for m in page["data"]] == ["GigaChat-2"] and page["has_more"]
    page = anthropic_models_list(MODELS, limit=5, after_id="GigaChat-2")
    assert [m["id"] for m in page["data"]] == ["GigaChat-2-Max", "gigachat-max"] and not page["has_more"]
    page = anthropic_models_list(MODELS, limit=1, before_id="gigachat-max")
    assert [m["id"] for m in page["data"]] == ["GigaChat-2-Max"] and page["has_more"]
    for limit in ("0", "1001", "x", True, -1):
        with pytest.raises(ProxyError) as info:
            anthropic_models_list(MODELS, limit=limit)
        assert info.value.status == 400 and info.value.param == "limit"
    with pytest.raises(ProxyError) as info:
        anthropic_models_list(MODELS, after_id="nope")
    assert info.value.status == 404


def test_count_tokens_input() -> None:
    request = {"model": "claude-haiku-4-5", "system": "Be brief.", "tools": TOOLS[:1], "messages": tool_turns([
        {"type": "tool_result", "tool_use_id": "toolu_" + STATE_A, "content": "21C"},
        {"type": "tool_result", "tool_use_id": "toolu_01XyZ", "content": "12:00"}])}
    model, texts = anthropic_count_input(request, DEFAULT_MODEL)
    assert model == DEFAULT_MODEL
    assert anthropic_count_input(request, DEFAULT_MODEL, (), "function", (("claude-*", "GigaChat-2-Max"),)) == (
        "GigaChat-2-Max", texts)  # GIGAPROXY_MODEL_MAP applies as for messages
    assert texts[:3] == ["Be brief.", "Weather in Paris and the time in UTC?", "Checking both."]
    assert json.loads(texts[3]) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert texts[4] == '{"result": "21C"}'
    assert json.loads(texts[-1])["name"] == "get_weather" and len(texts) == 8  # each function by itself
    assert count_tokens_total([{"object": "tokens", "tokens": 3, "characters": 9},
                               {"object": "tokens", "tokens": 4, "characters": 12}]) == 7
    assert estimate_tokens(["abcd", "abcde"]) == 3
    for bad in ({"tokens": 3}, [{"tokens": "3"}], None):
        with pytest.raises(ProxyError) as info:
            count_tokens_total(bad)
        assert info.value.status == 502


def test_count_tokens_checks_the_request_like_messages_does() -> None:
    with pytest.raises(ProxyError) as info:
        anthropic_count_input({"model": "m", "messages": [{"role": "user", "content": 5}]})
    assert info.value.param == "messages[0].content"


# ---- the chat core's part: which stop sequence ended the answer ----------------------------


def test_find_stop_names_the_earliest_sequence() -> None:
    assert find_stop("abc STOP def END", ("END", "STOP")) == ("abc ", "STOP")
    assert find_stop("abc", ("END",)) == ("abc", None)
    assert find_stop("xENDING", ("ENDING", "END")) == ("x", "ENDING")  # same place: the first listed


def test_stop_filter_and_chat_answers_name_the_matched_sequence() -> None:
    stop_filter = StopFilter(("\n\n", "END"))
    assert stop_filter.feed("a E") == "a " and stop_filter.matched is None
    assert stop_filter.feed("ND b") == "" and stop_filter.matched == "END" and stop_filter.stopped
    chat = to_openai_response(answer({"content": "x END y"}), CLIENT_MODEL, COMPLETION_ID, CREATED,
                              ChatPlan(stop=("END",)))
    assert chat["choices"][0]["stop_reason"] == "END"
    plain = to_openai_response(answer({"content": "x y"}), CLIENT_MODEL, COMPLETION_ID, CREATED,
                               ChatPlan(stop=("END",)))
    assert "stop_reason" not in plain["choices"][0]
