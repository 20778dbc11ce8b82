"""The OpenAI Responses dialect, pure: requests to chat (and on to GigaChat), chat answers
to ``response`` objects, the stream's events in order, errors, and the response store.

No sockets and no clock: ids and times are parameters, the store's clock is injected.
Requests go all the way through ``translate_chat_request`` where GigaChat's form is what
matters.  ``fixtures/responses_api/codex_turn2.json`` is Codex CLI's recorded second
request (shared/agent-wire/codex.md).  Expected values are written from OpenAI's API
reference and the openai SDK's types, not from gigaproxy's output.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Dict, List, Tuple

import pytest

import gigaproxy
from gigaproxy import (ProxyError, ResponsesStream, ResponseStore, SQLiteResponseStore, StreamTranslator,
                       chat_to_responses, input_items_page, item_references, response_input_items,
                       response_not_found, responses_error, responses_to_chat, translate_chat_request)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "responses_api")
RESP = "resp_0123abcd"
CREATED = 1760000000
STATE_ID = "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b"
PNG = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
       "RU5ErkJggg==")


def giga(request: Dict[str, Any], **kwargs: Any) -> Dict[str, Any]:
    """A Responses request all the way to GigaChat's body."""
    return translate_chat_request(responses_to_chat(request, **kwargs))[0]


def rejected(request: Any, param: str, **kwargs: Any) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        responses_to_chat(request, **kwargs)
    assert info.value.status == 400, info.value.message
    assert info.value.param == param, info.value.message
    return info.value


def chat_answer(message: Dict[str, Any], finish: str = "stop", usage: Any = None) -> Dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": CREATED, "model": "gigachat-max",
            "choices": [{"index": 0, "message": dict({"role": "assistant"}, **message), "logprobs": None,
                         "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                               "prompt_tokens_details": {"cached_tokens": 3}}}


def chunk(delta: Dict[str, Any], finish: Any = None) -> Dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED, "model": "gigachat-max",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], "usage": None}


USAGE_CHUNK = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": CREATED, "model": "gigachat-max",
               "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                                        "prompt_tokens_details": {"cached_tokens": 3}}}
RESPONSES_USAGE = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
                   "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18}


Events = List[Tuple[str, Dict[str, Any]]]


def run_stream(request: Dict[str, Any], chunks: List[Dict[str, Any]]) -> Tuple[ResponsesStream, Events]:
    stream = ResponsesStream(request, RESP, CREATED, "gigachat-max")
    events = stream.start()
    for piece in chunks:
        events += stream.feed(piece)
    events += stream.finish()
    return stream, events


def names(events: Events) -> List[str]:
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(data["type"] == name for name, data in events)
    return [name[len("response."):] for name, _ in events]


# ---- requests -> chat -> GigaChat ------------------------------------------------------------


def test_string_input_and_instructions():
    request = {"model": "gigachat-pro", "instructions": "Be brief.", "input": "Hello"}
    assert responses_to_chat(request) == {
        "model": "gigachat-pro",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]}
    assert giga(request) == {"model": "GigaChat-2-Pro", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]}


def test_recorded_codex_request():
    with open(os.path.join(FIXTURES, "codex_turn2.json"), encoding="utf-8") as fh:
        body = json.load(fh)["body"]
    chat = responses_to_chat(body)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["tool_choice"] == "auto"
    assert "reasoning_effort" not in chat  # reasoning: {"summary": "auto"} only
    out, plan = translate_chat_request(chat)
    assert out["model"] == "GigaChat-2-Max"
    assert out["stream"] is True
    messages = out["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "user", "assistant", "function"]
    developer = [part["text"] for item in body["input"][:2] for part in item["content"]]
    assert messages[0]["content"] == developer[0] + "\n\n" + developer[1] + "\n" + developer[2]
    assert messages[1]["content"].startswith("<environment_context>")
    assert messages[2]["content"] == body["input"][3]["content"][0]["text"]
    assert messages[3] == {"role": "assistant", "content": "", "function_call": {
        "name": "exec_command", "arguments": {"cmd": "printf '%s\\n' 'TOKEN123' > '/home/dev/project/out.txt'"}}}
    assert json.loads(messages[4]["content"]) == {"result": body["input"][5]["output"]}  # plain text wrapped
    assert messages[4]["name"] == "exec_command"
    assert [f["name"] for f in out["functions"]] == [
        "exec_command", "write_stdin", "request_user_input", "view_image", "multi_agent_v1__spawn_agent",
        "multi_agent_v1__send_input", "multi_agent_v1__wait", "multi_agent_v1__close_agent", "get_goal",
        "create_goal", "update_goal"]  # web_search (hosted) left out
    assert out["function_call"] == "auto"
    assert set(out["functions"][0]["parameters"]["properties"]) >= {"cmd", "workdir", "yield_time_ms"}
    assert plan.names.to_client("multi_agent_v1__wait") == "multi_agent_v1__wait"


def test_message_parts():
    request = {"input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Look:"}, {"type": "input_image", "image_url": PNG,
                                                                               "detail": "auto"}]},
        {"type": "message", "role": "assistant", "status": "completed", "id": "msg_1",
         "content": [{"type": "output_text", "text": "A dot.", "annotations": []},
                     {"type": "refusal", "refusal": "No more."}]},
        {"role": "user", "content": "Thanks"}], "model": "gigachat-max"}
    chat = responses_to_chat(request)
    assert chat["messages"] == [
        {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
        {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A dot."}, {"type": "text", "text": "No more."}]},
        {"role": "user", "content": "Thanks"}]
    out, plan = translate_chat_request(chat)
    assert out["messages"] == [{"role": "system", "content": "Rules."},
                               {"role": "user", "content": "Look:", "attachments": []},
                               {"role": "assistant", "content": "A dot.\nNo more."},
                               {"role": "user", "content": "Thanks"}]
    assert len(plan.images) == 1 and plan.images[0][1].mime == "image/png"  # the handler uploads it


@pytest.mark.parametrize("part, param", [
    ({"type": "input_image", "file_id": "file-abc"}, "input[0].content[0].file_id"),
    ({"type": "input_file", "file_data": "data:application/pdf;base64,AAAA", "filename": "a.pdf"},
     "input[0].content[0].type"),
    ({"type": "input_audio", "input_audio": {}}, "input[0].content[0].type"),
    ({"type": "video"}, "input[0].content[0].type"),
    ({"type": "input_text", "text": 5}, "input[0].content[0].text"),
    ({"type": "input_image", "image_url": 5}, "input[0].content[0].image_url"),
])
def test_unsupported_parts_are_a_400_naming_the_field(part, param):
    rejected({"input": [{"role": "user", "content": [part]}]}, param)


def test_bad_image_data_is_refused_by_the_chat_core():
    with pytest.raises(ProxyError) as info:
        giga({"input": [{"role": "user", "content": [{"type": "input_image",
                                                      "image_url": "data:image/gif;base64,R0lGOD=="}]}]})
    assert info.value.status == 400 and info.value.code == "unsupported_image_type"


def test_two_calls_then_two_outputs_become_gigachat_pairs():
    request = {"input": [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_a", "name": "weather",
         "arguments": "{\"city\":\"Oslo\"}", "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_b", "name": "weather",
         "arguments": "{\"city\":\"Rome\"}"},
        {"type": "function_call_output", "call_id": "call_a", "output": "{\"t\": 5}"},
        {"type": "function_call_output", "call_id": "call_b", "output": "sunny"}],
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}}}], "parallel_tool_calls": True}
    chat = responses_to_chat(request)
    assert chat["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Checking."}],
                                   "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
        {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]}
    assert chat["messages"][2:] == [{"role": "tool", "tool_call_id": "call_a", "content": "{\"t\": 5}"},
                                    {"role": "tool", "tool_call_id": "call_b", "content": "sunny"}]
    out = translate_chat_request(chat)[0]
    assert out["messages"][1:] == [
        {"role": "assistant", "content": "Checking.",
         "function_call": {"name": "weather", "arguments": {"city": "Oslo"}}},
        {"role": "function", "name": "weather", "content": "{\"t\": 5}"},
        {"role": "assistant", "content": "", "function_call": {"name": "weather", "arguments": {"city": "Rome"}}},
        {"role": "function", "name": "weather", "content": "{\"result\": \"sunny\"}"}]


def test_a_call_id_we_issued_carries_gigachats_state_back():
    request = {"input": [{"role": "user", "content": "2+2?"},
                         {"type": "function_call", "call_id": "call_" + STATE_ID, "name": "calc", "arguments": "{}"},
                         {"type": "function_call_output", "call_id": "call_" + STATE_ID, "output": "4"}],
               "tools": [{"type": "function", "name": "calc"}]}
    assert giga(request)["messages"][1]["functions_state_id"] == STATE_ID


def test_custom_tool_calls_and_their_outputs():
    request = {"input": [
        {"role": "user", "content": "Fix it"},
        {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_p", "name": "apply_patch",
         "input": "*** Begin Patch\n*** End Patch"},
        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"}],
        "tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.",
                   "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}}]}
    chat = responses_to_chat(request)
    function = chat["tools"][0]["function"]
    assert function["name"] == "apply_patch" and function["description"] == "Edit files."
    assert function["parameters"]["required"] == ["input"]
    assert function["parameters"]["properties"]["input"]["type"] == "string"
    assert "lark grammar:\nstart: begin_patch" in function["parameters"]["properties"]["input"]["description"]
    out = translate_chat_request(chat)[0]
    assert out["messages"][1:] == [
        {"role": "assistant", "content": "", "function_call": {"name": "apply_patch", "arguments": {
            "input": "*** Begin Patch\n*** End Patch"}}},
        {"role": "function", "name": "apply_patch", "content": "{\"result\": \"Done!\"}"}]


def test_namespaced_calls_in_history_use_the_flat_name():
    request = {"input": [{"role": "user", "content": "go"},
                         {"type": "function_call", "call_id": "c1", "name": "wait", "namespace": "agents",
                          "arguments": "{}"},
                         {"type": "function_call_output", "call_id": "c1", "output": "ok"}],
               "tools": [{"type": "namespace", "name": "agents", "description": "Sub-agents.",
                          "tools": [{"type": "function", "name": "wait", "description": "Wait."}]}]}
    out = giga(request)
    assert out["functions"][0]["name"] == "agents__wait"
    assert out["messages"][1]["function_call"]["name"] == "agents__wait"


def test_images_in_a_tool_output_follow_the_outputs_as_user_messages():
    request = {"model": "gigachat-max", "input": [
        {"role": "user", "content": "Show both"},
        {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{\"path\":\"a.png\"}"},
        {"type": "function_call", "call_id": "c2", "name": "view_image", "arguments": "{\"path\":\"b.png\"}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_image", "image_url": PNG}]},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "b:"},
                                                                      {"type": "input_image", "image_url": PNG}]},
        {"role": "user", "content": "Compare"}]}
    chat = responses_to_chat(request)
    assert chat["messages"][4:] == [  # as the Anthropic dialect does it (the chat core's _tool_result_parts)
        {"role": "user", "content": [{"type": "text", "text": "[image from the result of c1]"},
                                     {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "text", "text": "[image from the result of c2]"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
        {"role": "user", "content": "Compare"}]
    out, plan = translate_chat_request(chat)
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "function", "assistant", "function",
                                                    "user", "user", "user"]
    assert json.loads(out["messages"][2]["content"]) == {"result": "[1 image(s) in the next message]"}
    assert json.loads(out["messages"][4]["content"]) == {"result": "b:\n[1 image(s) in the next message]"}
    assert out["messages"][5]["content"] == "[image from the result of c1]\n[image from the result of c2]"
    assert len(plan.images) == 2


def test_item_references_are_resolved_from_stored_items():
    stored = {"msg_old": {"type": "message", "id": "msg_old", "role": "user",
                          "content": [{"type": "input_text", "text": "Remember 42"}]}}
    request = {"input": [{"type": "item_reference", "id": "msg_old"}, {"id": "msg_old"},
                         {"role": "user", "content": "Which number?"}]}
    assert item_references(request) == ["msg_old", "msg_old"]
    assert [m["content"] for m in giga(request, references=stored)["messages"]] == [
        "Remember 42", "Remember 42", "Which number?"]
    error = rejected(request, "input[0].id")
    assert error.code == "item_not_found"


def test_history_from_a_previous_response_comes_first():
    history = [{"type": "message", "id": "msg_a", "role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
               {"type": "function_call", "id": "fc_x", "call_id": "call_" + STATE_ID, "name": "calc",
                "arguments": "{\"e\":\"2+2\"}", "status": "completed"}]
    request = {"previous_response_id": "resp_prev", "instructions": "Use calc.",
               "input": [{"type": "function_call_output", "call_id": "call_" + STATE_ID, "output": "4"}],
               "tools": [{"type": "function", "name": "calc"}]}
    out = giga(request, history=history)
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "function"]
    assert out["messages"][0]["content"] == "Use calc."
    assert out["messages"][2]["functions_state_id"] == STATE_ID


def test_hosted_tools_are_left_out_with_a_debug_line(caplog):
    request = {"input": "hi", "tools": [
        {"type": "web_search", "external_web_access": True}, {"type": "web_search_preview"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "local_shell"},
        {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"},
        {"type": "image_generation"}, {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "mcp", "server_label": "x"}, {"type": "function", "name": "web_search"}],
        "tool_choice": "required"}
    with caplog.at_level(logging.DEBUG, logger="gigaproxy"):
        chat = responses_to_chat(request)
    assert [t["function"]["name"] for t in chat["tools"]] == ["web_search"]  # the client's own function
    assert sum("left out" in r.getMessage() for r in caplog.records) == 8
    out = translate_chat_request(chat)[0]
    assert out["functions"][0]["name"] != "web_search"  # GigaChat's built-in name is renamed by the core
    assert out["function_call"] == {"name": out["functions"][0]["name"]}  # required, one tool: forced
    only_hosted = responses_to_chat({"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "auto"})
    assert "tools" not in only_hosted and "tool_choice" not in only_hosted


TOOLS = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"},
         {"type": "custom", "name": "patch"},
         {"type": "namespace", "name": "ns", "description": "", "tools": [{"type": "function", "name": "c"}]}]


@pytest.mark.parametrize("choice, expected", [
    ("auto", "auto"), ("none", "none"), ("required", "required"),
    ({"type": "function", "name": "b"}, {"type": "function", "function": {"name": "b"}}),
    ({"type": "custom", "name": "patch"}, {"type": "function", "function": {"name": "patch"}}),
    ({"type": "function", "name": "c", "namespace": "ns"}, {"type": "function", "function": {"name": "ns__c"}}),
])
def test_tool_choice(choice, expected):
    assert responses_to_chat({"input": "x", "tools": TOOLS, "tool_choice": choice})["tool_choice"] == expected


def test_allowed_tools_narrow_the_offer():
    chat = responses_to_chat({"input": "x", "tools": TOOLS, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"},
                                                              {"type": "function", "name": "c", "namespace": "ns"}]}})
    assert [t["function"]["name"] for t in chat["tools"]] == ["a", "ns__c"]
    assert chat["tool_choice"] == "required"
    odd = responses_to_chat({"input": "x", "tools": TOOLS, "tool_choice": {
        "type": "allowed_tools", "tools": [{"type": "function", "name": "b", "namespace": 7}]}})
    assert [t["function"]["name"] for t in odd["tools"]] == ["b"] and odd["tool_choice"] == "auto"


@pytest.mark.parametrize("choice, param", [
    ({"type": "function", "name": "zzz"}, "tool_choice.name"),
    ({"type": "web_search_preview"}, "tool_choice.type"),
    ({"type": "allowed_tools", "mode": "sometimes", "tools": []}, "tool_choice.mode"),
    ({"type": "allowed_tools", "tools": "a"}, "tool_choice.tools"),
    ({"name": "a"}, "tool_choice.type"),
    ("sometimes", "tool_choice"),
])
def test_bad_tool_choice(choice, param):
    rejected({"input": "x", "tools": TOOLS, "tool_choice": choice}, param)


@pytest.mark.parametrize("tools, param", [
    ([{"type": "function"}], "tools[0].name"),
    ([{"type": "function", "name": ""}], "tools[0].name"),
    ([{"name": "f"}], "tools[0].type"),
    ([{"type": "function", "name": "f", "parameters": "x"}], "tools[0].parameters"),
    ([{"type": "function", "name": "f", "description": 1}], "tools[0].description"),
    ([{"type": "namespace", "name": "n", "tools": [{"type": "function", "name": 3}]}], "tools[0].tools[0].name"),
    ([{"type": "namespace", "name": "n"}], "tools[0].tools"),
    ([{"type": "custom", "name": "p", "format": "lark"}], "tools[0].format"),
    ("all", "tools"),
])
def test_bad_tools(tools, param):
    rejected({"input": "x", "tools": tools}, param)


def test_settings_map_to_chat():
    request = {"model": "GigaChat-2-Max", "input": "x", "max_output_tokens": 256, "temperature": 0.3, "top_p": 0.9,
               "reasoning": {"effort": "high", "summary": "detailed"}, "store": True, "include": [],
               "prompt_cache_key": "k", "service_tier": "auto", "metadata": {"a": "b"}, "client_metadata": {},
               "user": "u", "truncation": "auto", "background": False, "safety_identifier": "s",
               "parallel_tool_calls": False, "stream_options": {"include_obfuscation": False}}
    chat = responses_to_chat(request)
    assert chat == {"model": "GigaChat-2-Max", "messages": [{"role": "user", "content": "x"}], "temperature": 0.3,
                    "top_p": 0.9, "max_tokens": 256, "reasoning_effort": "high"}
    out = translate_chat_request(chat)[0]
    assert (out["max_tokens"], out["temperature"], out["top_p"], out["reasoning_effort"]) == (256, 0.3, 0.9, "high")
    assert "reasoning_effort" not in responses_to_chat({"input": "x", "reasoning": {"effort": "none"}})
    assert giga({"input": "x", "temperature": 0})["top_p"] == 0  # the chat rule for temperature 0


@pytest.mark.parametrize("request_, param", [
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": "9"}, "max_output_tokens"),
    ({"input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"input": "x", "reasoning": "high"}, "reasoning"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "x", "store": "yes"}, "store"),
    ({"input": "x", "metadata": []}, "metadata"),
    ({"input": "x", "instructions": ["x"]}, "instructions"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "a"}}}, "text.format.schema"),
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({}, "input"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
    ({"input": [{"type": "message", "role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]}, "input[0].arguments"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "custom_tool_call", "call_id": "c", "name": "f", "input": 1}]}, "input[0].input"),
    ({"input": ["x"]}, "input[0]"),
    ([], "body"),
])
def test_rejections_name_the_field(request_, param):
    rejected(request_, param)


def test_text_format_becomes_the_chat_structured_output():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = {"input": "x", "text": {"format": {"type": "json_schema", "name": "Answer", "schema": schema,
                                                 "strict": True}, "verbosity": "low"}}
    assert responses_to_chat(request)["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "Answer", "schema": schema, "strict": True}}
    out, plan = translate_chat_request(responses_to_chat(request))
    assert out["function_call"] == {"name": "Answer"} and plan.output_function == "Answer"
    json_object = translate_chat_request(responses_to_chat({"input": "x", "text": {"format": {"type": "json_object"}}}))
    assert json_object[1].output == "json_object"
    assert "response_format" not in responses_to_chat({"input": "x", "text": {"format": {"type": "text"}}})


def test_input_items_get_ids_and_parts():
    request = {"input": [{"role": "user", "content": "hi"}, {"type": "message", "role": "assistant", "content": "yo"},
                         {"type": "function_call_output", "call_id": "c", "output": "o", "id": "fco_mine"},
                         {"type": "item_reference", "id": "msg_s"}]}
    stored = {"msg_s": {"type": "message", "id": "msg_s", "role": "user", "status": "completed",
                        "content": [{"type": "input_text", "text": "s"}]}}
    assert response_input_items(request, "resp_77", stored) == [
        {"type": "message", "id": "msg_77_in0", "status": "completed", "role": "user",
         "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "message", "id": "msg_77_in1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "yo", "annotations": [], "logprobs": []}]},
        {"type": "function_call_output", "id": "fco_mine", "status": "completed", "call_id": "c", "output": "o"},
        stored["msg_s"]]
    assert response_input_items({"input": "hello"}, "resp_1") == [
        {"type": "message", "id": "msg_1_in0", "status": "completed", "role": "user",
         "content": [{"type": "input_text", "text": "hello"}]}]


# ---- chat answers -> response objects ---------------------------------------------------------


def test_text_answer_is_a_whole_response_object():
    request = {"model": "gigachat-max", "input": "hi", "instructions": "Be kind.", "temperature": 0.5,
               "max_output_tokens": 100, "metadata": {"k": "v"}, "store": False}
    assert chat_to_responses(chat_answer({"content": "Hello!"}), request, RESP, CREATED) == {
        "id": RESP, "object": "response", "created_at": CREATED, "status": "completed", "background": False,
        "error": None, "incomplete_details": None, "instructions": "Be kind.", "max_output_tokens": 100,
        "max_tool_calls": None, "model": "gigachat-max",
        "output": [{"type": "message", "id": "msg_0123abcd_0", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}]}],
        "parallel_tool_calls": True, "previous_response_id": None, "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None}, "safety_identifier": None, "service_tier": "default",
        "store": False, "temperature": 0.5, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_logprobs": None, "top_p": None, "truncation": "disabled", "usage": RESPONSES_USAGE,
        "user": None, "metadata": {"k": "v"}}


def test_reasoning_is_returned_when_a_summary_is_asked_for():
    answer = chat_answer({"content": "4", "reasoning_content": "2 and 2 make 4."})
    with_summary = chat_to_responses(answer, {"input": "x", "reasoning": {"summary": "auto"}}, RESP, CREATED)
    assert with_summary["output"][0] == {"type": "reasoning", "id": "rs_0123abcd_0",
                                         "summary": [{"type": "summary_text", "text": "2 and 2 make 4."}]}
    assert with_summary["output"][1]["id"] == "msg_0123abcd_1"
    assert with_summary["reasoning"] == {"effort": None, "summary": "auto"}
    without = chat_to_responses(answer, {"input": "x"}, RESP, CREATED)
    assert [item["type"] for item in without["output"]] == ["message"]


def test_a_gigachat_function_call_becomes_a_function_call_item():
    request = {"input": "2+2?", "tools": [{"type": "function", "name": "calc"}]}
    chat = responses_to_chat(request)
    _, plan = translate_chat_request(chat)
    answer = gigaproxy.to_openai_response(
        {"choices": [{"index": 0, "finish_reason": "function_call", "message": {
            "role": "assistant", "content": "", "functions_state_id": STATE_ID,
            "function_call": {"name": "calc", "arguments": {"e": "2+2"}}}}],
         "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "precached_prompt_tokens": 3}},
        "gigachat", "chatcmpl-1", CREATED, plan)
    response = chat_to_responses(answer, request, RESP, CREATED)
    assert response["output"] == [{"type": "function_call", "id": "fc_0123abcd_0", "call_id": "call_" + STATE_ID,
                                   "name": "calc", "arguments": "{\"e\": \"2+2\"}", "status": "completed"}]
    assert response["status"] == "completed" and response["usage"] == RESPONSES_USAGE
    assert response["model"] == "gigachat"  # the client's name, as the chat path echoes it


def test_namespace_and_custom_calls_are_named_as_the_client_named_them():
    answer = chat_answer({"content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "ns__c", "arguments": "{\"x\": 1}"}},
        {"id": "call_2", "type": "function", "function": {"name": "patch", "arguments": "{\"input\": \"*** Begin\"}"}},
    ]}, "tool_calls")
    output = chat_to_responses(answer, {"input": "x", "tools": TOOLS}, RESP, CREATED)["output"]
    assert output == [
        {"type": "function_call", "id": "fc_0123abcd_0", "call_id": "call_1", "name": "c", "arguments": "{\"x\": 1}",
         "status": "completed", "namespace": "ns"},
        {"type": "custom_tool_call", "id": "ctc_0123abcd_1", "call_id": "call_2", "name": "patch",
         "input": "*** Begin"}]


def test_text_before_a_call_is_a_message_item_first():
    answer = chat_answer({"content": "Let me check.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{}"}}]}, "tool_calls")
    output = chat_to_responses(answer, {"input": "x", "tools": TOOLS}, RESP, CREATED)["output"]
    assert [item["type"] for item in output] == ["message", "function_call"]


@pytest.mark.parametrize("finish, reason", [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_answer_is_incomplete(finish, reason):
    response = chat_to_responses(chat_answer({"content": "Once upon"}, finish), {"input": "x"}, RESP, CREATED)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": reason}
    assert response["output"][0]["status"] == "incomplete"


def test_echoed_settings():
    request = {"input": "x", "tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False,
               "text": {"format": {"type": "json_object"}}, "top_p": 0.5, "user": "u", "truncation": "auto",
               "previous_response_id": "resp_p", "reasoning": {"effort": "low"}, "max_tool_calls": 3}
    response = chat_to_responses(chat_answer({"content": "{}"}), request, RESP, CREATED)
    for key in ("tools", "tool_choice", "parallel_tool_calls", "text", "top_p", "user", "truncation",
                "previous_response_id", "max_tool_calls"):
        assert response[key] == request[key], key
    assert response["reasoning"] == {"effort": "low", "summary": None}
    assert response["store"] is True


# ---- the stream ---------------------------------------------------------------------------------


def test_stream_text():
    stream, events = run_stream({"input": "hi"}, [chunk({"role": "assistant", "content": ""}),
                                                  chunk({"content": "Hel"}), chunk({"content": "lo"}),
                                                  chunk({}, "stop"), USAGE_CHUNK])
    assert names(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                             "output_text.delta", "output_text.delta", "output_text.done", "content_part.done",
                             "output_item.done", "completed"]
    created = events[0][1]["response"]
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert events[2][1] == {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": {
        "type": "message", "id": "msg_0123abcd_0", "status": "in_progress", "role": "assistant", "content": []}}
    assert events[3][1]["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    assert events[4][1] == {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_0123abcd_0",
                            "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []}
    assert events[6][1]["text"] == "Hello" and events[7][1]["part"]["text"] == "Hello"
    assert events[8][1]["item"]["status"] == "completed"
    final = events[-1][1]["response"]
    assert final == stream.response
    assert final["status"] == "completed" and final["usage"] == RESPONSES_USAGE
    assert final["output"] == [{"type": "message", "id": "msg_0123abcd_0", "status": "completed",
                                "role": "assistant", "content": [{"type": "output_text", "text": "Hello",
                                                                  "annotations": [], "logprobs": []}]}]
    assert final == chat_to_responses(chat_answer({"content": "Hello"}), {"input": "hi"}, RESP, CREATED)


def test_stream_reasoning_then_text():
    request = {"input": "2+2?", "reasoning": {"summary": "auto", "effort": "medium"}}
    _, events = run_stream(request, [chunk({"role": "assistant", "reasoning_content": "Two and "}),
                                     chunk({"reasoning_content": "two."}), chunk({"content": "4"}),
                                     chunk({"content": ""}, "stop"), USAGE_CHUNK])
    assert names(events) == ["created", "in_progress",
                             "output_item.added", "reasoning_summary_part.added", "reasoning_summary_text.delta",
                             "reasoning_summary_text.delta", "reasoning_summary_text.done",
                             "reasoning_summary_part.done", "output_item.done",
                             "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
                             "content_part.done", "output_item.done", "completed"]
    assert events[3][1] == {"type": "response.reasoning_summary_part.added", "sequence_number": 3,
                            "item_id": "rs_0123abcd_0", "output_index": 0, "summary_index": 0,
                            "part": {"type": "summary_text", "text": ""}}
    assert events[6][1]["text"] == "Two and two."
    assert events[8][1]["item"] == {"type": "reasoning", "id": "rs_0123abcd_0",
                                    "summary": [{"type": "summary_text", "text": "Two and two."}]}
    assert events[9][1]["output_index"] == 1 and events[9][1]["item"]["id"] == "msg_0123abcd_1"
    # Without reasoning.summary the reasoning stays out.
    _, plain = run_stream({"input": "2+2?"}, [chunk({"reasoning_content": "hmm"}), chunk({"content": "4"}, "stop")])
    assert names(plain)[2:4] == ["output_item.added", "content_part.added"]


def test_stream_one_function_call_through_the_chat_core():
    request = {"input": "2+2?", "tools": [{"type": "function", "name": "calc"}]}
    _, plan = translate_chat_request(responses_to_chat(request))
    translator = StreamTranslator("gigachat", "chatcmpl-1", CREATED, True, plan)
    stream = ResponsesStream(request, RESP, CREATED, "gigachat")
    events = stream.start()
    for event in [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                  {"choices": [{"index": 0, "finish_reason": "function_call", "delta": {
                      "content": "", "functions_state_id": STATE_ID,
                      "function_call": {"name": "calc", "arguments": {"e": "2+2"}}}}],
                   "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                             "precached_prompt_tokens": 3}}]:
        for piece in translator.feed(event):
            events += stream.feed(piece)
    for piece in translator.finish():
        events += stream.feed(piece)
    events += stream.finish()
    assert names(events) == ["created", "in_progress", "output_item.added", "function_call_arguments.delta",
                             "function_call_arguments.done", "output_item.done", "completed"]
    item = {"type": "function_call", "id": "fc_0123abcd_0", "call_id": "call_" + STATE_ID, "name": "calc",
            "arguments": "", "status": "in_progress"}
    assert events[2][1]["item"] == item
    assert events[3][1] == {"type": "response.function_call_arguments.delta", "sequence_number": 3,
                            "item_id": "fc_0123abcd_0", "output_index": 0, "delta": "{\"e\": \"2+2\"}"}
    assert events[4][1]["arguments"] == "{\"e\": \"2+2\"}"
    assert events[5][1]["item"] == dict(item, arguments="{\"e\": \"2+2\"}", status="completed")
    assert stream.response["output"] == [events[5][1]["item"]] and stream.response["usage"] == RESPONSES_USAGE


def test_stream_a_custom_tool_call():
    request = {"input": "fix", "tools": TOOLS}
    _, events = run_stream(request, [
        chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_p", "type": "function",
                                                    "function": {"name": "patch", "arguments": "{\"input\": "}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"*** Begin Patch\"}"}}]}),
        chunk({}, "tool_calls"), USAGE_CHUNK])
    assert names(events) == ["created", "in_progress", "output_item.added", "custom_tool_call_input.delta",
                             "custom_tool_call_input.done", "output_item.done", "completed"]
    assert events[2][1]["item"] == {"type": "custom_tool_call", "id": "ctc_0123abcd_0", "call_id": "call_p",
                                    "name": "patch", "input": ""}
    assert events[3][1]["delta"] == events[4][1]["input"] == "*** Begin Patch"
    assert events[5][1]["item"]["input"] == "*** Begin Patch"


def test_stream_two_parallel_calls():
    request = {"input": "weather?", "tools": TOOLS}
    _, events = run_stream(request, [
        chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "a", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"x\":"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_c", "type": "function",
                               "function": {"name": "ns__c", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"), USAGE_CHUNK])
    assert names(events) == ["created", "in_progress",
                             "output_item.added", "function_call_arguments.delta", "function_call_arguments.delta",
                             "function_call_arguments.done", "output_item.done",
                             "output_item.added", "function_call_arguments.delta", "function_call_arguments.done",
                             "output_item.done", "completed"]
    assert events[5][1]["arguments"] == "{\"x\":1}"
    assert events[7][1]["output_index"] == 1
    assert events[10][1]["item"] == {"type": "function_call", "id": "fc_0123abcd_1", "call_id": "call_c",
                                     "name": "c", "namespace": "ns", "arguments": "{}", "status": "completed"}
    assert [item["call_id"] for item in events[-1][1]["response"]["output"]] == ["call_a", "call_c"]


def test_stream_cut_by_max_output_tokens_is_incomplete():
    request = {"input": "story", "max_output_tokens": 16}
    _, events = run_stream(request, [chunk({"role": "assistant", "content": "Once upon"}), chunk({}, "length"),
                                     USAGE_CHUNK])
    assert names(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                             "output_text.delta", "output_text.done", "content_part.done", "output_item.done",
                             "incomplete"]
    assert events[7][1]["item"]["status"] == "incomplete"
    final = events[-1][1]["response"]
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["max_output_tokens"] == 16


def test_a_finished_stream_is_kept_before_its_closing_events_are_made():
    """The handler stores a streamed response through ``keep``: before response.completed goes
    out, so a client that continues it at once on another connection finds it; a failed one
    is not kept."""
    kept = []  # type: List[Dict[str, Any]]

    def keep(response: Dict[str, Any]) -> None:
        kept.append(response)
        assert not closing, "kept after the closing events were made"

    closing = []  # type: Events
    stream = ResponsesStream({"input": "hi"}, RESP, CREATED, "gigachat-max", keep)
    stream.start()
    stream.feed(chunk({"role": "assistant", "content": "Hello"}, "stop"))
    closing += stream.finish()
    assert kept == [closing[-1][1]["response"]] and closing[-1][0] == "response.completed"
    failing = ResponsesStream({"input": "hi"}, RESP, CREATED, "gigachat-max", kept.append)
    failing.start()
    failing.fail(ProxyError(502, "cut"))
    assert len(kept) == 1


def test_stream_error_after_the_first_byte_is_response_failed():
    stream = ResponsesStream({"input": "hi"}, RESP, CREATED, "gigachat-max")
    events = stream.start() + stream.feed(chunk({"role": "assistant", "content": "Hel"}))
    events += stream.fail(ProxyError(502, "GigaChat's stream ended before the answer was complete", "api_error",
                                     "upstream_stream_incomplete"))
    assert names(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                             "output_text.delta", "failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error",
                               "message": "GigaChat's stream ended before the answer was complete"}
    assert failed["output"][0]["status"] == "incomplete" and failed["output"][0]["content"][0]["text"] == "Hel"
    assert stream.fail(ProxyError(502, "again")) == [] and stream.finish() == [] and stream.feed(chunk({})) == []
    assert isinstance(stream, gigaproxy.ChatStream)  # the handler's stream adapter interface
    assert stream.encode(events[-1:]).startswith(b"event: response.failed\ndata: {")
    limited = ResponsesStream({"input": "hi"}, RESP, CREATED)
    assert limited.fail(ProxyError(429, "slow down"))[-1][1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_stream_with_nothing_said_is_one_empty_message():
    _, events = run_stream({"input": "hi"}, [chunk({"role": "assistant", "content": ""}, "stop")])
    assert names(events) == ["created", "in_progress", "output_item.added", "content_part.added",
                             "output_text.done", "content_part.done", "output_item.done", "completed"]


def test_sse_event_names_the_event():
    assert gigaproxy.sse_event({"a": 1}, "response.created") == b'event: response.created\ndata: {"a":1}\n\n'
    assert gigaproxy.sse_event({"a": 1}) == b'data: {"a":1}\n\n'


# ---- errors and listings ----------------------------------------------------------------------


def test_errors_use_openais_envelope():
    status, body, headers = responses_error(ProxyError(429, "busy", "rate_limit_error", "rate_limit_exceeded",
                                                       headers={"Retry-After": "3"}))
    assert (status, headers) == (429, {"Retry-After": "3"})
    assert body == {"error": {"message": "busy", "type": "rate_limit_error", "param": None,
                              "code": "rate_limit_exceeded"}}
    previous = response_not_found("resp_x", "previous_response_id")
    assert (previous.status, previous.code, previous.param) == (400, "previous_response_not_found",
                                                                "previous_response_id")
    assert "resp_x" in previous.message and "store: false" in previous.message
    missing = response_not_found("resp_x")
    assert (missing.status, missing.code) == (404, "not_found")
    assert gigaproxy.response_deleted("resp_x") == {"id": "resp_x", "object": "response", "deleted": True}


def test_input_items_pages():
    items = [{"id": "i%d" % n} for n in range(5)]
    page = input_items_page(items)
    assert [i["id"] for i in page["data"]] == ["i4", "i3", "i2", "i1", "i0"]  # desc by default
    assert (page["object"], page["first_id"], page["last_id"], page["has_more"]) == ("list", "i4", "i0", False)
    page = input_items_page(items, after="i1", limit="2", order="asc")
    assert [i["id"] for i in page["data"]] == ["i2", "i3"] and page["has_more"] is True
    assert input_items_page([], order="asc") == {"object": "list", "data": [], "first_id": None, "last_id": None,
                                                 "has_more": False}
    for kwargs, param in (({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
                          ({"order": "up"}, "order"), ({"after": "nope"}, "after")):
        with pytest.raises(ProxyError) as info:
            input_items_page(items, **kwargs)
        assert info.value.status == 400 and info.value.param == param


# ---- the store -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def response(number: int, output_text: str = "ok") -> Dict[str, Any]:
    return {"id": "resp_%d" % number, "object": "response", "status": "completed", "output": [
        {"type": "message", "id": "msg_%d_0" % number, "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": output_text, "annotations": []}]}]}


def user_item(number: int, text: str = "hi") -> Dict[str, Any]:
    return {"type": "message", "id": "msg_%d_in0" % number, "status": "completed", "role": "user",
            "content": [{"type": "input_text", "text": text}]}


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    made = []

    def make(**kwargs: Any) -> ResponseStore:
        if request.param == "memory":
            store = ResponseStore(**kwargs)
        else:
            store = SQLiteResponseStore(str(tmp_path / gigaproxy.RESPONSE_STORE_FILENAME), **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_store_keeps_a_response_its_input_and_its_conversation(make_store):
    store = make_store()
    assert store.get("resp_1") is None and store.conversation("resp_1") is None
    store.put(response(1, "first"), [user_item(1, "one")])
    history = store.conversation("resp_1")
    store.put(response(2, "second"), [user_item(2, "two")], history)
    assert store.get("resp_2") == response(2, "second")
    assert store.input_items("resp_2") == [user_item(2, "two")]
    assert [item["id"] for item in store.conversation("resp_2")] == ["msg_1_in0", "msg_1_0", "msg_2_in0", "msg_2_0"]
    assert store.items(["msg_1_0", "msg_2_in0", "nope"]) == {"msg_1_0": response(1, "first")["output"][0],
                                                             "msg_2_in0": user_item(2, "two")}
    got = store.get("resp_2")
    got["output"].clear()  # what a caller does to its copy is not kept
    assert store.get("resp_2") == response(2, "second")
    assert len(store) == 2


def test_store_delete(make_store):
    store = make_store()
    store.put(response(1), [user_item(1)])
    assert store.delete("resp_1") is True
    assert store.get("resp_1") is None and store.items(["msg_1_0", "msg_1_in0"]) == {}
    assert store.delete("resp_1") is False
    assert len(store) == 0


def test_store_evicts_the_least_recently_used(make_store):
    store = make_store(max_entries=2)
    store.put(response(1), [user_item(1)])
    store.put(response(2), [user_item(2)])
    assert store.get("resp_1") is not None  # now resp_2 is the least recently used
    store.put(response(3), [user_item(3)])
    assert store.get("resp_2") is None and store.items(["msg_2_0"]) == {}
    assert store.get("resp_1") is not None and store.get("resp_3") is not None
    assert len(store) == 2


def test_store_keeps_within_its_size(make_store):
    """A bound in bytes too: conversations with images are large, and each keeps its history."""
    store = make_store(max_bytes=1)
    store.put(response(1), [user_item(1)])  # larger than the whole store: not kept
    assert store.get("resp_1") is None and len(store) == 0
    one = len(json.dumps(response(2), separators=(",", ":"))) * 4  # room for about two small responses
    store = make_store(max_bytes=one)
    for number in (2, 3, 4):
        store.put(response(number), [user_item(number)])
    assert store.get("resp_2") is None and store.items(["msg_2_0"]) == {}  # the least recently used went
    assert store.get("resp_4") is not None and 1 <= len(store) <= 2


def test_store_size_holds_when_later_responses_resend_the_same_items(make_store):
    """The SDK's tool loop (input += response.output) sends the same item ids again and again:
    the store's size must count each response once, whoever holds the shared items now."""
    shared = user_item(0, "x" * 1000)
    store = make_store(max_bytes=50000)
    for number in range(1, 61):
        store.put(response(number), [shared])
    assert 10 <= len(store) < 60 and store.get("resp_60") is not None
    for number in range(1, 61):
        store.delete("resp_%d" % number)
    assert len(store) == 0
    store.put(response(61), [shared])  # an emptied store has all its room again
    assert store.get("resp_61") is not None


def test_store_forgets_after_its_lifetime(make_store):
    clock = Clock()
    store = make_store(max_age=60.0, clock=clock)
    store.put(response(1), [user_item(1)])
    clock.now += 30
    store.put(response(2), [user_item(2)])
    clock.now += 31  # resp_1 is 61 s old, resp_2 31 s
    assert store.get("resp_1") is None and store.items(["msg_1_0"]) == {}
    assert store.get("resp_2") is not None  # a use does not extend the lifetime
    clock.now += 30
    assert store.items(["msg_2_0"]) == {}
    store.put(response(3), [user_item(3)])  # a put clears what expired
    assert len(store) == 1


def test_store_replaces_a_response_put_twice(make_store):
    store = make_store()
    store.put(response(1, "old"), [user_item(1)])
    store.put(response(1, "new"), [])
    assert store.get("resp_1")["output"][0]["content"][0]["text"] == "new"
    assert store.input_items("resp_1") == [] and len(store) == 1


def test_store_rejects_nonsense_bounds():
    with pytest.raises(ValueError):
        ResponseStore(max_entries=0)
    with pytest.raises(ValueError):
        ResponseStore(max_age=0)
    with pytest.raises(ValueError):
        ResponseStore(max_bytes=0)


def test_sqlite_store_is_shared_by_two_store_objects(tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    clock = Clock()
    first, second = SQLiteResponseStore(path, 2, 60.0, clock), SQLiteResponseStore(path, 2, 60.0, clock)
    try:
        first.put(response(1), [user_item(1)])
        assert second.get("resp_1") == response(1)  # made by one worker, continued by another
        assert second.conversation("resp_1") == [user_item(1)] + response(1)["output"]
        second.put(response(2), [user_item(2)])
        assert first.get("resp_1") is not None  # one shared order of use: resp_2 is the oldest now
        second.put(response(3), [user_item(3)])
        assert first.get("resp_2") is None and len(first) == len(second) == 2
        assert second.delete("resp_3") and first.get("resp_3") is None
        clock.now += 61
        assert first.get("resp_1") is None and second.items(["msg_1_0"]) == {}
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("room", [1000, 10])
def test_stores_are_thread_safe(make_store, room):
    store = make_store(max_entries=room)
    errors = []  # type: List[BaseException]

    def work(base: int) -> None:
        try:
            for n in range(base, base + 20):
                store.put(response(n), [user_item(n)])
                got = store.get("resp_%d" % n)
                assert got == response(n) or (got is None and room < 80)  # a starved thread may find it evicted
                store.conversation("resp_%d" % (n - 1))
                store.items(["msg_%d_0" % n])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(base,)) for base in (0, 100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(store) == min(room, 80)
    if room >= 80:
        assert all(store.get("resp_%d" % n) == response(n) for base in (0, 100, 200, 300)
                   for n in range(base, base + 20))


def test_private_dir_is_private_and_removed():
    path = gigaproxy.make_private_dir()
    try:
        assert os.path.isdir(path) and os.stat(path).st_mode & 0o077 == 0
        store = SQLiteResponseStore(os.path.join(path, gigaproxy.RESPONSE_STORE_FILENAME))
        store.put(response(1), [user_item(1)])
        store.close()
    finally:
        gigaproxy.remove_private_dir(path)
    assert not os.path.exists(path)
