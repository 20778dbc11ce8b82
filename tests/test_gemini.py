"""Pure tests of the Gemini API dialect: Gemini request -> chat -> GigaChat, chat answer ->
GenerateContentResponse, GigaChat stream -> Gemini chunks -> wire bytes, errors, countTokens,
embeddings and models.  No sockets, clocks or randomness.

Expected values are written by hand from Google's Gemini API reference and
/work/shared/agent-wire/gemini-cli.md (what Gemini CLI and google-genai send and need).
Inputs under ``fixtures/gemini/``: ``gemini_cli_tool_loop.request.json`` is the recorded
Gemini CLI request from that file, with the one placeholder string its trimming left among
the function declarations removed; ``google_genai_*.request.json`` are what google-genai
3.6.1 (Python) put on the wire against a stand-in server: automatic function calling with a
plain function, a Pydantic response schema beside a Schema-typed declaration (both with the
snake_case keywords the SDK sends: ``any_of``, ``max_items``, ``property_ordering``), and a
chat whose streamed first answer its history keeps as one model turn per chunk.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from fake_gigachat import DEFAULT_MODELS, validate_chat_request  # noqa: E402
from gigaproxy import (  # noqa: E402
    ChatPlan,
    GeminiStream,
    ProxyError,
    StreamTranslator,
    chat_to_gemini,
    gemini_count_request,
    gemini_count_response,
    gemini_embed_request,
    gemini_embed_response,
    gemini_error,
    gemini_include_thoughts,
    gemini_json_array,
    gemini_model_info,
    gemini_models,
    gemini_path,
    gemini_sse,
    gemini_to_chat,
    gigachat_texts,
    merge_choices,
    normalize_schema,
    to_openai_response,
    translate_chat_request,
)

FIXTURES = os.path.join(HERE, "fixtures", "gemini")
DEFAULT = "GigaChat-2-Pro-preview"  # the operator's GIGACHAT_MODEL: what gemini-* names resolve to
MODEL = "GigaChat-2-Max"
COMPLETION_ID = "chatcmpl-0123456789abcdef0123456789abcdef"
CREATED = 1700000000
VERSION = "GigaChat-2-Max:2.0.28.2"
RESPONSE_ID = "resp-0123456789"
STATE = "3f7a8c2e-5b1d-4e9a-9c6f-1a2b3c4d5e6f"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode("ascii")


def load(name: str) -> Any:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def to_giga(request: Dict[str, Any], model: str = "gemini-2.5-pro",
            default: str = DEFAULT) -> Tuple[Dict[str, Any], ChatPlan]:
    """The whole request path: Gemini -> chat -> GigaChat, checked the way GigaChat checks."""
    body, plan = translate_chat_request(gemini_to_chat(request, model), default)
    validate_chat_request(json.loads(json.dumps(body)), DEFAULT_MODELS)
    return body, plan


def user(*parts: Dict[str, Any]) -> Dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model_turn(*parts: Dict[str, Any]) -> Dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def call(name: str, args: Dict[str, Any], call_id: Optional[str] = None) -> Dict[str, Any]:
    out = {"functionCall": {"name": name, "args": args}}  # type: Dict[str, Any]
    if call_id is not None:
        out["functionCall"]["id"] = call_id
    return out


def answer(name: str, result: Dict[str, Any], call_id: Optional[str] = None) -> Dict[str, Any]:
    out = {"functionResponse": {"name": name, "response": result}}  # type: Dict[str, Any]
    if call_id is not None:
        out["functionResponse"]["id"] = call_id
    return out


def rejected(request: Dict[str, Any]) -> ProxyError:
    with pytest.raises(ProxyError) as info:
        to_giga(request)
    assert info.value.status == 400
    return info.value


HELLO = {"contents": [user({"text": "hi"})]}


# --------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------
def test_recorded_gemini_cli_request() -> None:
    """The tool loop Gemini CLI sent: system as a user-role instruction, a call under the CLI's own
    id and its answer, thinkingConfig with a budget, JSON-Schema parameters."""
    body, plan = to_giga(load("gemini_cli_tool_loop.request.json"))
    assert body == load("gemini_cli_tool_loop.gigachat.json")
    assert plan.stop == () and plan.n == 1 and plan.output is None


def test_chat_request_of_the_recorded_request() -> None:
    chat = gemini_to_chat(load("gemini_cli_tool_loop.request.json"), "gemini-2.5-pro")
    assert chat["model"] == "gemini-2.5-pro"
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert chat["messages"][1]["content"][1] == {"type": "text", "text": "Create the file /home/dev/project/"
                                                 "e2e_gemini.txt containing exactly the text: E2E-gemini-1a2b3c4d"}
    call_id = chat["messages"][2]["tool_calls"][0]["id"]
    assert chat["messages"][3]["tool_call_id"] == call_id
    assert "write_file_1796541181499_0" not in json.dumps(chat)  # the CLI's id is not ours: not forwarded
    assert "topK" not in json.dumps(chat) and "top_k" not in chat


def test_recorded_google_genai_automatic_function_calling() -> None:
    """The SDK's second request: our call id echoed, the answer without an id, snake_case schema keys."""
    body, _ = to_giga(load("google_genai_afc.request.json"))
    assert body == {
        "model": DEFAULT,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Moscow?"},
            {"role": "assistant", "content": "", "function_call": {"name": "get_weather",
                                                                   "arguments": {"city": "Moscow"}},
             "functions_state_id": STATE},
            {"role": "function", "name": "get_weather", "content": '{"result": {"temp": 3, "unit": "C"}}'},
        ],
        "temperature": 0.2,
        "functions": [{"name": "get_weather", "description": "Current weather in a city.", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "default": None}},
            "required": ["city"]}}],
        "function_call": "auto",
    }


SCHEMA_ITEM = {
    "type": "object", "title": "Item",
    "properties": {
        "name": {"maxLength": 10, "minLength": 1, "title": "Name", "type": "string"},
        "tags": {"items": {"type": "string"}, "maxItems": 3, "title": "Tags", "type": "array"},
        "color": {"enum": ["red", "blue"], "title": "Color", "type": "string"},
        "either": {"title": "Either", "type": "integer", "description": "may also be: string"},
        "note": {"title": "Note", "type": "string"},
    },
    "required": ["name", "tags", "color", "either"],
}


def test_recorded_google_genai_schemas() -> None:
    request = load("google_genai_schemas.request.json")
    assert gemini_include_thoughts(request)
    body, plan = to_giga(request)
    assert body["functions"] == [{"name": "lookup", "description": "Look up an item.", "parameters": {
        "type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"}, "n": {"type": "integer", "description": "may also be: string"},
            "ids": {"items": {"type": "string"}, "maxItems": 2, "type": "array"}}}}]
    assert body["function_call"] == "none" and body["reasoning_effort"] == "low"
    assert plan.output == "json_object"  # mode NONE: not even the answer function may be called (the chat path's rule)
    del request["toolConfig"], request["tools"]
    body, plan = to_giga(request)
    assert plan.output == "json_schema" and body["function_call"] == {"name": plan.output_function}
    assert body["functions"][0]["parameters"] == SCHEMA_ITEM


def test_recorded_google_genai_chat_history() -> None:
    """A streamed answer comes back as one model turn per chunk: one assistant message again."""
    body, _ = to_giga(load("google_genai_chat_history.request.json"))
    assert body["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."},
                                {"role": "user", "content": "and?"}]


def test_model_turns_in_a_row_end_in_the_call() -> None:
    """A streamed answer with a call: text chunks, then the closing chunk with the text's end and the call."""
    request = {"contents": [user({"text": "write it"}), model_turn({"text": "I will writ"}),
                            model_turn({"text": "e it."}, call("write_file", {"p": "a"}, "call_" + STATE)),
                            user(answer("write_file", {"output": "ok"}, "call_" + STATE))]}
    body, _ = to_giga(request)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "I will write it.", "function_call": {"name": "write_file",
                                                                               "arguments": {"p": "a"}},
         "functions_state_id": STATE},
        {"role": "function", "name": "write_file", "content": '{"output": "ok"}'}]


def test_router_classifier_request() -> None:
    """Gemini CLI's model router: two user turns in a row, JSON mode with an UPPERCASE schema."""
    request = {
        "contents": [user({"text": "history summary"}), user({"text": "Which model for: hello?"})],
        "systemInstruction": {"role": "user", "parts": [{"text": "You route requests."}]},
        "generationConfig": {"temperature": 0, "maxOutputTokens": 1024, "responseMimeType": "application/json",
                             "responseJsonSchema": {
                                 "type": "OBJECT", "required": ["reasoning", "model_choice"],
                                 "properties": {"reasoning": {"type": "STRING"},
                                                "model_choice": {"type": "STRING", "enum": ["flash", "pro"]},
                                                "confidence": {"type": "NUMBER"}}}},
    }
    body, plan = to_giga(request)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "user"]
    assert body["top_p"] == 0 and "temperature" not in body and body["max_tokens"] == 1024
    assert plan.output == "json_schema" and plan.unwrap is None
    function = body["functions"][0]
    assert body["function_call"] == {"name": function["name"]} == {"name": plan.output_function}
    assert function["parameters"] == {
        "type": "object", "required": ["reasoning", "model_choice"],
        "properties": {"reasoning": {"type": "string"}, "model_choice": {"type": "string", "enum": ["flash", "pro"]},
                       "confidence": {"type": "number"}}}


def test_system_instruction_forms() -> None:
    for system in ({"parts": [{"text": "a"}, {"text": "b"}]}, {"role": "system", "parts": [{"text": "a\nb"}]},
                   "a\nb"):
        body, _ = to_giga({"systemInstruction": system, "contents": [user({"text": "hi"})]})
        assert body["messages"][0] == {"role": "system", "content": "a\nb"}
    error = rejected({"systemInstruction": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]},
                      "contents": HELLO["contents"]})
    assert error.param == "systemInstruction.parts[0]"


def test_snake_case_and_single_part_objects() -> None:
    """Google's parser takes snake_case names and a lone object for a repeated field (its curl examples)."""
    request = {"system_instruction": {"parts": {"text": "You are a cat."}},
               "contents": {"parts": {"text": "Hello there"}},
               "generation_config": {"max_output_tokens": 50, "stop_sequences": ["x"],
                                     "thinking_config": {"thinking_budget": 0}}}
    body, plan = to_giga(request)
    assert body["messages"] == [{"role": "system", "content": "You are a cat."},
                                {"role": "user", "content": "Hello there"}]
    assert body["max_tokens"] == 50 and plan.stop == ("x",) and "reasoning_effort" not in body


def test_thoughts_and_signatures_are_dropped() -> None:
    request = {"contents": [
        user({"text": "q1"}),
        model_turn({"text": "thinking...", "thought": True}, {"text": "a", "thoughtSignature": "c2tpcA=="},
                   {"text": "1"}),
        model_turn({"text": "only a thought", "thought": True}),
        model_turn({"text": "", "thoughtSignature": "c2tpcA=="}),
        user({"text": "q2"}),
    ]}
    body, _ = to_giga(request)
    assert body["messages"] == [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                                {"role": "user", "content": "q2"}]


def test_inline_image_becomes_a_chat_image() -> None:
    request = {"contents": [user({"text": "what is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}})]}
    chat = gemini_to_chat(request, "gemini-2.5-flash")
    assert chat["messages"][0]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64," + PNG}}
    body, plan = to_giga(request, default="GigaChat-2-Max")
    assert body["messages"] == [{"role": "user", "content": "what is this?", "attachments": []}]
    (_, image), = plan.images
    assert image.data == base64.b64decode(PNG) and image.mime == "image/png"


def test_inline_image_in_url_safe_base64_without_padding() -> None:
    data = b"\xfb\xff\xfe" + b"\x00" * 8
    request = {"contents": [user({"inline_data": {"mime_type": "image/jpeg",
                                                  "data": base64.urlsafe_b64encode(data).decode().rstrip("=")}})]}
    _, plan = to_giga(request, default="GigaChat-2-Max")
    assert plan.images[0][1].data == data


def test_inline_text_file_becomes_text() -> None:
    text = "строка один\nline two"
    request = {"contents": [user({"text": "summarise"}, {"inlineData": {
        "mimeType": "text/plain", "data": base64.b64encode(text.encode("utf-8")).decode()}})]}
    body, _ = to_giga(request)
    assert body["messages"][0]["content"] == "summarise\n" + text


@pytest.mark.parametrize("part,param", [
    ({"inlineData": {"mimeType": "application/pdf", "data": PNG}}, "contents[0].parts[0].inlineData.mimeType"),
    ({"inlineData": {"mimeType": "audio/mp3", "data": PNG}}, "contents[0].parts[0].inlineData.mimeType"),
    ({"inlineData": {"data": PNG}}, "contents[0].parts[0].inlineData.mimeType"),
    ({"inlineData": {"mimeType": "text/plain", "data": "!!!"}}, "contents[0].parts[0].inlineData.data"),
    ({"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/a.pdf"}},
     "contents[0].parts[0].fileData.mimeType"),
    ({"fileData": {"mimeType": "image/png"}}, "contents[0].parts[0].fileData.fileUri"),
])
def test_media_gigachat_cannot_read_is_refused(part: Dict[str, Any], param: str) -> None:
    assert rejected({"contents": [user(part)]}).param == param


def test_file_data_image_url_is_left_to_the_image_policy() -> None:
    """fileData is an image URL for the chat path: fetched only where image URLs may be fetched."""
    uri = "https://example.com/cat.png"
    for blob in ({"mimeType": "image/png", "fileUri": uri}, {"fileUri": uri}):
        chat = gemini_to_chat({"contents": [user({"fileData": blob})]}, "gemini-2.5-flash")
        assert chat["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": uri}}]
        _, plan = to_giga({"contents": [user({"fileData": blob})]}, default="GigaChat-2-Max")
        assert plan.images[0][1].url == uri and plan.images[0][1].data is None
    error = rejected({"contents": [user({"fileData": {"fileUri": "gs://bucket/cat.png"}})]})
    assert "data: URL" in error.message


def test_our_call_ids_carry_the_state_id_back() -> None:
    request = {"contents": [
        user({"text": "weather?"}),
        model_turn({"text": "Let me look."}, call("get_weather", {"city": "Moscow"}, "call_" + STATE)),
        user(answer("get_weather", {"temp": 3}, "call_" + STATE)),
    ], "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}]}
    body, _ = to_giga(request)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "Let me look.", "function_call": {"name": "get_weather",
                                                                            "arguments": {"city": "Moscow"}},
         "functions_state_id": STATE},
        {"role": "function", "name": "get_weather", "content": '{"temp": 3}'},
    ]


def test_two_parallel_calls_answered_in_reverse_order_without_ids() -> None:
    """google-genai's automatic function calling: no ids; the answers are paired by name."""
    request = {"contents": [
        user({"text": "weather and time in Moscow?"}),
        model_turn(call("get_weather", {"city": "Moscow"}), call("get_time", {"tz": "MSK"})),
        user(answer("get_time", {"result": "12:00"}), answer("get_weather", {"result": "cold"})),
    ]}
    body, _ = to_giga(request)
    assert body["messages"][1:] == [
        {"role": "assistant", "content": "", "function_call": {"name": "get_weather", "arguments": {"city": "Moscow"}}},
        {"role": "function", "name": "get_weather", "content": '{"result": "cold"}'},
        {"role": "assistant", "content": "", "function_call": {"name": "get_time", "arguments": {"tz": "MSK"}}},
        {"role": "function", "name": "get_time", "content": '{"result": "12:00"}'},
    ]


def test_same_name_calls_pair_by_order_and_foreign_ids_by_id() -> None:
    request = {"contents": [
        user({"text": "read both"}),
        model_turn(call("read_file", {"path": "a"}, "read_file_1_0"), call("read_file", {"path": "b"}, "read_file_1_1"),
                   call("read_file", {"path": "c"})),
        user(answer("read_file", {"output": "B"}, "read_file_1_1"), answer("read_file", {"output": "A"}, "other"),
             answer("read_file", {"output": "C"})),
    ]}
    body, _ = to_giga(request)
    pairs = [(m["function_call"]["arguments"]["path"], json.loads(body["messages"][i + 1]["content"])["output"])
             for i, m in enumerate(body["messages"]) if "function_call" in m]
    assert pairs == [("a", "A"), ("b", "B"), ("c", "C")]


def test_answers_may_come_over_several_user_turns_then_text() -> None:
    request = {"contents": [
        user({"text": "go"}),
        model_turn(call("a", {}), call("b", {})),
        user(answer("a", {"ok": 1})),
        user(answer("b", {"ok": 2}), {"text": "and now?"}),
    ]}
    body, _ = to_giga(request)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "function", "assistant", "function", "user"]
    assert body["messages"][-1] == {"role": "user", "content": "and now?"}


@pytest.mark.parametrize("contents,param,code", [
    ([user({"text": "go"}), model_turn(call("a", {}), call("b", {})), user(answer("a", {}))],
     "contents[1].parts[1].functionCall", "missing_tool_result"),
    ([user({"text": "go"}), model_turn(call("a", {})), user({"text": "never mind"})],
     "contents[1].parts[0].functionCall", "missing_tool_result"),
    ([user({"text": "go"}), model_turn(call("a", {})), model_turn({"text": "x"})],
     "contents[1].parts[0].functionCall", "missing_tool_result"),
    ([user({"text": "go"}), model_turn(call("a", {})), user(answer("b", {}))],
     "contents[2].parts[0].functionResponse", "unmatched_tool_result"),
    ([user(answer("a", {}))], "contents[0].parts[0].functionResponse", "unmatched_tool_result"),
    ([user({"text": "go"}), model_turn(call("a", {})), user(answer("a", {}), answer("a", {}))],
     "contents[2].parts[1].functionResponse", "unmatched_tool_result"),
    ([user(call("a", {}))], "contents[0].parts[0]", "invalid_value"),
    ([model_turn(answer("a", {}))], "contents[0].parts[0]", "invalid_value"),
    ([user({"text": "go"}), model_turn({"functionCall": {"name": "a", "args": "{}"}})],
     "contents[1].parts[0].functionCall.args", "invalid_type"),
    ([user({"text": "go"}), model_turn(call("a", {})), user({"functionResponse": {"name": "a", "response": "ok"}})],
     "contents[2].parts[0].functionResponse.response", "invalid_type"),
    ([{"role": "system", "parts": [{"text": "x"}]}], "contents[0].role", "invalid_role"),
    ([{"role": "user", "parts": ["hi"]}], "contents[0].parts[0]", "invalid_type"),
    ([{"role": "user", "parts": [{"text": 5}]}], "contents[0].parts[0].text", "invalid_type"),
    ([], "contents", "empty_array"),
    ([model_turn({"text": "", "thought": True})], "contents", "empty_array"),
    ("hello", "contents", "invalid_type"),
])
def test_bad_contents_name_the_field(contents: Any, param: str, code: str) -> None:
    error = rejected({"contents": contents})
    assert (error.param, error.code) == (param, code)


def test_missing_role_is_user_and_unknown_parts_are_left_out() -> None:
    body, _ = to_giga({"contents": [{"parts": [{"text": "hi"}, {"videoMetadata": {"fps": 1}}]},
                                    model_turn({"executableCode": {"code": "1"}}, {"text": "ok"})]})
    assert body["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]


# ---- tools ----------------------------------------------------------------------------


def test_google_typed_parameters_are_normalised() -> None:
    """The Python SDK describes a plain function in Google's OpenAPI subset."""
    parameters = {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": "City name"},
            "unit": {"type": "STRING", "nullable": True, "format": "enum", "enum": ["C", "F"]},
            "days": {"type": "INTEGER", "default": 1, "format": "int32"},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
            "either": {"anyOf": [{"type": "STRING"}, {"type": "NULL"}]},
        },
        "required": ["city"],
        "propertyOrdering": ["city", "unit", "days", "tags", "either"],
    }
    body, _ = to_giga({"contents": HELLO["contents"], "tools": [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather.", "parameters": parameters}]}]})
    assert body["functions"] == [{"name": "get_weather", "description": "Weather.", "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["C", "F"]},
            "days": {"type": "integer", "default": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
            "either": {"type": "string"},
        },
        "required": ["city"],
    }}]
    assert body["function_call"] == "auto"


def test_pydantic_parameters_json_schema_with_refs() -> None:
    schema = {
        "$defs": {"Address": {"properties": {"city": {"title": "City", "type": "string"}}, "required": ["city"],
                              "title": "Address", "type": "object"}},
        "properties": {"name": {"title": "Name", "type": "string"},
                       "address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": None}},
        "required": ["name"], "title": "Person", "type": "object",
    }
    body, _ = to_giga({"contents": HELLO["contents"], "tools": [{"functionDeclarations": [
        {"name": "save_person", "parametersJsonSchema": schema}]}]})
    parameters = body["functions"][0]["parameters"]
    assert parameters == normalize_schema(schema)
    address = parameters["properties"]["address"]
    assert address["type"] == "object" and address["properties"] == {"city": {"title": "City", "type": "string"}}
    assert "$ref" not in json.dumps(parameters) and "anyOf" not in json.dumps(parameters)


def test_tool_names_gigachat_refuses_come_back_as_sent() -> None:
    request = {"contents": [user({"text": "x"}), model_turn(call("mcp.git-status", {})),
                            user(answer("mcp.git-status", {"out": ""}))],
               "tools": [{"functionDeclarations": [{"name": "mcp.git-status"}]}]}
    body, plan = to_giga(request)
    safe = body["functions"][0]["name"]
    assert safe != "mcp.git-status" and body["messages"][1]["function_call"]["name"] == safe
    assert plan.names.to_client(safe) == "mcp.git-status"
    assert body["functions"][0]["parameters"] == {"type": "object", "properties": {}}


def test_builtin_tools_are_left_out_with_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    request = {"contents": HELLO["contents"], "tools": [
        {"googleSearch": {}}, {"codeExecution": {}, "url_context": {}},
        {"functionDeclarations": [{"name": "f"}]}]}
    with caplog.at_level(logging.DEBUG, logger="gigaproxy"):
        body, _ = to_giga(request)
    assert [f["name"] for f in body["functions"]] == ["f"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("tools[0]: googleSearch left out" in line for line in lines)
    assert any("tools[1]: codeExecution, url_context left out" in line for line in lines)
    body, _ = to_giga({"contents": HELLO["contents"], "tools": [{"googleSearch": {}}]})
    assert "functions" not in body


TOOLS = [{"functionDeclarations": [{"name": n} for n in ("a", "b", "c")]}]


@pytest.mark.parametrize("config,function_call,names,instructed", [
    ({"mode": "AUTO"}, "auto", "abc", False),
    ({"mode": "VALIDATED"}, "auto", "abc", False),
    ({"mode": "NONE"}, "none", "abc", False),
    ({"mode": "ANY"}, "auto", "abc", True),
    ({"mode": "any", "allowedFunctionNames": ["b"]}, {"name": "b"}, "abc", False),
    ({"mode": "ANY", "allowedFunctionNames": ["a", "c"]}, "auto", "ac", True),
    ({}, "auto", "abc", False),
])
def test_function_calling_config(config: Dict[str, Any], function_call: Any, names: str, instructed: bool) -> None:
    body, _ = to_giga({"contents": HELLO["contents"], "tools": TOOLS,
                       "toolConfig": {"functionCallingConfig": config}})
    assert body["function_call"] == function_call
    assert "".join(f["name"] for f in body["functions"]) == names
    assert ("calling one of the provided functions" in body["messages"][0]["content"]) is instructed


def test_function_calling_config_refusals() -> None:
    error = rejected({"contents": HELLO["contents"], "tools": TOOLS,
                      "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["a", "z"]}}})
    assert error.param == "toolConfig.functionCallingConfig.allowedFunctionNames[1]"
    error = rejected({"contents": HELLO["contents"], "tools": TOOLS,
                      "toolConfig": {"functionCallingConfig": {"mode": "SOMETIMES"}}})
    assert error.param == "toolConfig.functionCallingConfig.mode"
    error = rejected({"contents": HELLO["contents"], "tools": [{"functionDeclarations": [{"name": 1}]}]})
    assert error.param == "tools[0].functionDeclarations[0].name"
    error = rejected({"contents": HELLO["contents"], "tools": [{"functionDeclarations": [
        {"name": "f", "parameters": "x"}]}]})
    assert error.param == "tools[0].functionDeclarations[0].parameters"


# ---- generationConfig ----------------------------------------------------------------


def test_generation_config_fields() -> None:
    request = {"contents": HELLO["contents"], "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT"}],
               "cachedContent": "cachedContents/x", "labels": {"a": "b"},
               "generationConfig": {"temperature": 0.7, "topP": 0.9, "topK": 40, "maxOutputTokens": 256,
                                    "candidateCount": 3, "stopSequences": ["END", "", "END", "STOP"],
                                    "seed": 1, "presencePenalty": 0.5, "responseMimeType": "text/plain"}}
    chat = gemini_to_chat(request, "gemini-2.5-flash")
    assert {k: v for k, v in chat.items() if k != "messages"} == {
        "model": "gemini-2.5-flash", "temperature": 0.7, "top_p": 0.9, "max_tokens": 256, "n": 3,
        "stop": ["END", "STOP"]}
    body, plan = to_giga(request)
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": DEFAULT, "temperature": 0.7, "top_p": 0.9, "max_tokens": 256}
    assert plan.n == 3 and plan.stop == ("END", "STOP")


def test_stop_sequences_past_what_the_chat_path_emulates() -> None:
    error = rejected({"contents": HELLO["contents"], "generationConfig": {"stopSequences": list("abcde")}})
    assert error.param == "generationConfig.stopSequences" and "at most 4" in error.message
    _, plan = to_giga({"contents": HELLO["contents"], "generationConfig": {"stopSequences": list("abcda")}})
    assert plan.stop == tuple("abcd")


@pytest.mark.parametrize("config,param", [
    ({"temperature": "hot"}, "generationConfig.temperature"),
    ({"maxOutputTokens": 1.5}, "generationConfig.maxOutputTokens"),
    ({"candidateCount": True}, "generationConfig.candidateCount"),
    ({"stopSequences": "END"}, "generationConfig.stopSequences"),
    ({"stopSequences": ["a", 1]}, "generationConfig.stopSequences[1]"),
    ({"responseMimeType": "text/x.enum"}, "generationConfig.responseMimeType"),
    ({"responseSchema": "OBJECT"}, "generationConfig.responseSchema"),
    ({"thinkingConfig": {"thinkingLevel": "EXTREME"}}, "generationConfig.thinkingConfig.thinkingLevel"),
    ({"thinkingConfig": {"thinkingBudget": "lots"}}, "generationConfig.thinkingConfig.thinkingBudget"),
    ({"thinkingConfig": True}, "generationConfig.thinkingConfig"),
    ("fast", "generationConfig"),
])
def test_bad_generation_config_names_the_field(config: Any, param: str) -> None:
    assert rejected({"contents": HELLO["contents"], "generationConfig": config}).param == param


def test_out_of_range_values_are_refused_by_the_chat_path() -> None:
    assert rejected({"contents": HELLO["contents"], "generationConfig": {"topP": 2}}).param == "top_p"
    assert rejected({"contents": HELLO["contents"], "generationConfig": {"candidateCount": 9}}).param == "n"


def test_json_mode_without_a_schema() -> None:
    body, plan = to_giga({"contents": HELLO["contents"], "generationConfig": {"responseMimeType": "application/json"}})
    assert plan.output == "json_object" and "JSON object" in body["messages"][0]["content"]


def test_response_schema_that_is_not_an_object_is_wrapped() -> None:
    schema = {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"name": {"type": "STRING"}}}}
    body, plan = to_giga({"contents": HELLO["contents"], "generationConfig": {
        "responseMimeType": "application/json", "responseSchema": schema}})
    assert plan.output == "json_schema" and plan.unwrap == "value"
    assert body["functions"][0]["parameters"] == {"type": "object", "required": ["value"], "properties": {
        "value": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}


def test_response_schema_that_is_a_union_is_wrapped() -> None:
    _, plan = to_giga({"contents": HELLO["contents"], "generationConfig": {
        "responseMimeType": "application/json", "responseSchema": {"any_of": [{"type": "STRING"}, {"type": "INTEGER"}]}}})
    assert plan.unwrap == "value"


def test_response_json_schema_wins_over_response_schema() -> None:
    chat = gemini_to_chat({"contents": HELLO["contents"], "generationConfig": {
        "responseSchema": {"type": "STRING"}, "responseJsonSchema": {"type": "object", "properties": {}}}}, "m")
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "schema": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize("thinking,effort", [
    ({"includeThoughts": True, "thinkingBudget": 8192}, "medium"),  # Gemini CLI, gemini-2.5-*
    ({"includeThoughts": True, "thinkingLevel": "HIGH"}, "high"),  # Gemini CLI, gemini-3*
    ({"includeThoughts": True}, None),  # Gemini CLI, another model name
    ({"thinkingBudget": 0}, None),
    ({"thinkingBudget": -1}, None),
    ({"thinkingBudget": 512}, "low"),
    ({"thinkingBudget": 1024}, "low"),
    ({"thinkingBudget": 1025}, "medium"),
    ({"thinkingBudget": 24576}, "high"),
    ({"thinkingLevel": "MINIMAL"}, "low"),
    ({"thinkingLevel": "low", "thinkingBudget": 30000}, "low"),
    ({"thinkingLevel": "THINKING_LEVEL_UNSPECIFIED"}, None),
])
def test_thinking_config_becomes_reasoning_effort(thinking: Dict[str, Any], effort: Optional[str]) -> None:
    body, _ = to_giga({"contents": HELLO["contents"], "generationConfig": {"thinkingConfig": thinking}})
    assert body.get("reasoning_effort") == effort


def test_include_thoughts() -> None:
    assert gemini_include_thoughts({"generationConfig": {"thinkingConfig": {"includeThoughts": True}}})
    assert gemini_include_thoughts({"generation_config": {"thinking_config": {"include_thoughts": True}}})
    for request in ({}, {"generationConfig": {}}, {"generationConfig": {"thinkingConfig": {"includeThoughts": 1}}},
                    {"generationConfig": "x"}, "x"):
        assert not gemini_include_thoughts(request)


def test_body_must_be_an_object() -> None:
    with pytest.raises(ProxyError) as info:
        gemini_to_chat([], "m")  # type: ignore[arg-type]
    assert info.value.param == "body"


# --------------------------------------------------------------------------
# answers
# --------------------------------------------------------------------------
def giga_answer(message: Dict[str, Any], finish: str = "stop", usage: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"choices": [{"message": dict({"role": "assistant"}, **message), "index": 0, "finish_reason": finish}],
            "created": 1768996171, "model": VERSION, "object": "chat.completion",
            "usage": usage or {"prompt_tokens": 17, "completion_tokens": 3, "total_tokens": 20}}


def gemini_answer(answer: Dict[str, Any], plan: Optional[ChatPlan] = None, include_thoughts: bool = False) -> Dict[str, Any]:
    chat = to_openai_response(answer, "gemini-2.5-pro", COMPLETION_ID, CREATED, plan)
    return chat_to_gemini(chat, MODEL, RESPONSE_ID, include_thoughts)


USAGE = {"promptTokenCount": 17, "candidatesTokenCount": 3, "totalTokenCount": 20}


def test_plain_answer() -> None:
    assert gemini_answer(giga_answer({"content": "Hello!"})) == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hello!"}]}, "index": 0,
                        "finishReason": "STOP"}],
        "usageMetadata": USAGE, "modelVersion": MODEL, "responseId": RESPONSE_ID}


@pytest.mark.parametrize("include_thoughts,parts", [
    (True, [{"text": "Let me think.", "thought": True}, {"text": "42"}]),
    (False, [{"text": "42"}]),
])
def test_reasoning_is_a_thought_part_when_asked_for(include_thoughts: bool, parts: List[Dict[str, Any]]) -> None:
    response = gemini_answer(giga_answer({"content": "42", "reasoning_content": "Let me think."}),
                             include_thoughts=include_thoughts)
    assert response["candidates"][0]["content"]["parts"] == parts


def test_function_call_answer() -> None:
    _, plan = to_giga({"contents": HELLO["contents"], "tools": [{"functionDeclarations": [{"name": "mcp.read"}]}]})
    safe = plan.names.to_gigachat("mcp.read")
    answer = giga_answer({"content": "", "function_call": {"name": safe, "arguments": {"path": "a.txt"}},
                          "functions_state_id": STATE}, "function_call")
    assert gemini_answer(answer, plan)["candidates"] == [{
        "content": {"role": "model", "parts": [
            {"functionCall": {"name": "mcp.read", "args": {"path": "a.txt"}, "id": "call_" + STATE}}]},
        "index": 0, "finishReason": "STOP"}]


def test_function_call_with_arguments_as_a_string() -> None:
    """The chat core answers a call with ``content: null``: text beside a call is not kept (a stream keeps it)."""
    answer = giga_answer({"content": "Reading.", "function_call": {"name": "read", "arguments": '{"n": 1}'}},
                         "function_call")
    (part,) = gemini_answer(answer)["candidates"][0]["content"]["parts"]
    assert part["functionCall"]["args"] == {"n": 1} and part["functionCall"]["id"] == "call_0123456789abcdef01234567"


def test_function_arguments_that_are_not_an_object_are_an_upstream_error() -> None:
    answer = giga_answer({"content": "", "function_call": {"name": "read", "arguments": "[1]"}}, "function_call")
    with pytest.raises(ProxyError) as info:
        gemini_answer(answer)
    assert info.value.status == 502


@pytest.mark.parametrize("finish,reason", [("length", "MAX_TOKENS"), ("blacklist", "SAFETY"), ("stop", "STOP")])
def test_finish_reasons(finish: str, reason: str) -> None:
    assert gemini_answer(giga_answer({"content": "x"}, finish))["candidates"][0]["finishReason"] == reason


def test_empty_answer_has_no_parts() -> None:
    candidate = gemini_answer(giga_answer({"content": ""}, "length"))["candidates"][0]
    assert candidate == {"content": {"role": "model"}, "index": 0, "finishReason": "MAX_TOKENS"}


def test_cached_tokens() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105, "precached_prompt_tokens": 60}
    assert gemini_answer(giga_answer({"content": "x"}, usage=usage))["usageMetadata"] == {
        "promptTokenCount": 100, "candidatesTokenCount": 5, "totalTokenCount": 105, "cachedContentTokenCount": 60}


def test_thoughts_token_count_when_the_chat_usage_knows_it() -> None:
    chat = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40,
                      "completion_tokens_details": {"reasoning_tokens": 25}}}
    assert chat_to_gemini(chat, MODEL, RESPONSE_ID, True)["usageMetadata"] == {
        "promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 40, "thoughtsTokenCount": 25}


def test_candidate_count_gives_several_candidates() -> None:
    chats = [to_openai_response(giga_answer({"content": text}), "m", COMPLETION_ID, CREATED) for text in ("a", "b")]
    response = chat_to_gemini(merge_choices(chats), MODEL, RESPONSE_ID, False)
    assert [(c["index"], c["content"]["parts"]) for c in response["candidates"]] == [
        (0, [{"text": "a"}]), (1, [{"text": "b"}])]
    assert response["usageMetadata"] == {"promptTokenCount": 34, "candidatesTokenCount": 6, "totalTokenCount": 40}


def test_structured_answer_is_json_text() -> None:
    _, plan = to_giga({"contents": HELLO["contents"], "generationConfig": {
        "responseMimeType": "application/json", "responseSchema": {"type": "OBJECT", "properties": {
            "n": {"type": "INTEGER"}}}}})
    answer = giga_answer({"content": "", "function_call": {"name": plan.output_function, "arguments": {"n": 7}}},
                         "function_call")
    candidate = gemini_answer(answer, plan)["candidates"][0]
    assert json.loads(candidate["content"]["parts"][0]["text"]) == {"n": 7} and candidate["finishReason"] == "STOP"


# --------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------
def giga_event(delta: Dict[str, Any], finish: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    choice = {"delta": delta, "index": 0}  # type: Dict[str, Any]
    if finish:
        choice["finish_reason"] = finish
    event = {"choices": [choice], "created": 1768996171, "model": VERSION, "object": "chat.completion"}
    event.update(extra)
    return event


END_USAGE = {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}


def run_stream(events: List[Dict[str, Any]], include_thoughts: bool = False, plan: Optional[ChatPlan] = None,
               include_usage: bool = True) -> List[Tuple[str, Dict[str, Any]]]:
    """GigaChat events -> StreamTranslator (as the handler builds it) -> GeminiStream, per event."""
    translator = StreamTranslator("gemini-2.5-pro", COMPLETION_ID, CREATED, include_usage, plan)
    stream = GeminiStream(MODEL, RESPONSE_ID, include_thoughts)
    out = []  # type: List[Tuple[str, Dict[str, Any]]]
    for event in events:
        for chunk in translator.feed(event):
            out.extend(stream.feed(chunk))
    for chunk in translator.finish():
        out.extend(stream.feed(chunk))
    out.extend(stream.finish())
    return out


def chunk(parts: Optional[List[Dict[str, Any]]], finish: Optional[str] = None,
          usage: Optional[Dict[str, Any]] = None) -> Tuple[str, Dict[str, Any]]:
    content = {"role": "model"}  # type: Dict[str, Any]
    if parts:
        content["parts"] = parts
    candidate = {"content": content, "index": 0}  # type: Dict[str, Any]
    if finish:
        candidate["finishReason"] = finish
    data = {"candidates": [candidate]}  # type: Dict[str, Any]
    if usage:
        data["usageMetadata"] = usage
    data.update({"modelVersion": MODEL, "responseId": RESPONSE_ID})
    return "", data


STREAM_USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16}


def test_stream_text() -> None:
    events = [giga_event({"role": "assistant", "content": "Hel"}), giga_event({"content": "lo, "}),
              giga_event({"content": "world"}), giga_event({"content": ""}, "stop", usage=END_USAGE)]
    assert run_stream(events) == [
        chunk([{"text": "He"}]), chunk([{"text": "llo,"}]), chunk([{"text": " worl"}]),
        chunk([{"text": "d"}], "STOP", STREAM_USAGE)]


def test_stream_closes_when_the_usage_arrives() -> None:
    """The closing chunk goes out with the translator's usage chunk; finish() adds nothing after it."""
    translator = StreamTranslator("m", COMPLETION_ID, CREATED, True)
    stream = GeminiStream(MODEL, RESPONSE_ID, False)
    assert stream.feed(translator.feed(giga_event({"role": "assistant", "content": "ok"}))[0]) == [
        chunk([{"text": "o"}])]
    assert [stream.feed(c) for c in translator.feed(giga_event({"content": ""}, "stop", usage=END_USAGE))] == [[]]
    (usage_chunk,) = translator.finish()
    assert stream.feed(usage_chunk) == [chunk([{"text": "k"}], "STOP", STREAM_USAGE)]
    assert stream.finish() == [] and stream.feed(usage_chunk) == []


def test_stream_of_one_character_deltas() -> None:
    events = [giga_event({"role": "assistant", "content": c}) for c in "abc"] + [giga_event({"content": ""}, "stop")]
    assert run_stream(events, include_usage=False) == [
        chunk([{"text": "a"}]), chunk([{"text": "b"}]), chunk([{"text": "c"}], "STOP")]


def test_stream_thoughts_then_text() -> None:
    events = [giga_event({"role": "assistant", "reasoning_content": "Think"}),
              giga_event({"reasoning_content": "ing."}),
              giga_event({"content": "Answer"}), giga_event({"content": ""}, "stop", usage=END_USAGE)]
    assert run_stream(events, include_thoughts=True) == [
        chunk([{"text": "Think", "thought": True}]), chunk([{"text": "ing.", "thought": True}]),
        chunk([{"text": "Answe"}]), chunk([{"text": "r"}], "STOP", STREAM_USAGE)]
    assert run_stream(events) == [chunk([{"text": "Answe"}]), chunk([{"text": "r"}], "STOP", STREAM_USAGE)]


def test_stream_one_function_call() -> None:
    events = [giga_event({"role": "assistant", "content": ""}),
              giga_event({"content": "", "function_call": {"name": "write_file", "arguments": {"file_path": "a"}},
                          "functions_state_id": STATE}, "function_call", usage=END_USAGE)]
    assert run_stream(events) == [chunk([{"functionCall": {"name": "write_file", "args": {"file_path": "a"},
                                                           "id": "call_" + STATE}}], "STOP", STREAM_USAGE)]


def test_stream_text_then_a_function_call() -> None:
    events = [giga_event({"role": "assistant", "content": "I will write it."}),
              giga_event({"content": "", "function_call": {"name": "write_file", "arguments": {}}},
                         "function_call", usage=END_USAGE)]
    call_id = "call_" + COMPLETION_ID.rsplit("-", 1)[-1][:24]
    assert run_stream(events) == [
        chunk([{"text": "I will write it"}]),
        chunk([{"text": "."}, {"functionCall": {"name": "write_file", "args": {}, "id": call_id}}], "STOP",
              STREAM_USAGE)]


def test_stream_two_parallel_calls() -> None:
    """Chat chunks with two tool calls (the chat core's shape for parallel calls) -> one closing chunk."""
    stream = GeminiStream(MODEL, RESPONSE_ID, False)
    base = {"id": COMPLETION_ID, "object": "chat.completion.chunk", "created": CREATED, "model": "m"}
    calls = [{"index": i, "id": "call_%d" % i, "type": "function",
              "function": {"name": name, "arguments": json.dumps({"city": city})}}
             for i, (name, city) in enumerate((("weather", "Moscow"), ("time", "Kazan")))]
    out = stream.feed(dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "tool_calls": calls},
                                           "finish_reason": None}]))
    out += stream.feed(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    out += stream.feed(dict(base, choices=[], usage={"prompt_tokens": 12, "completion_tokens": 4,
                                                     "total_tokens": 16}))
    assert out == [chunk([{"functionCall": {"name": "weather", "args": {"city": "Moscow"}, "id": "call_0"}},
                          {"functionCall": {"name": "time", "args": {"city": "Kazan"}, "id": "call_1"}}],
                         "STOP", STREAM_USAGE)]


@pytest.mark.parametrize("finish,reason", [("length", "MAX_TOKENS"), ("blacklist", "SAFETY")])
def test_stream_finish_reasons(finish: str, reason: str) -> None:
    events = [giga_event({"role": "assistant", "content": "abc"}), giga_event({"content": ""}, finish)]
    assert run_stream(events, include_usage=False)[-1] == chunk([{"text": "c"}], reason)


def test_stream_with_a_stop_sequence() -> None:
    _, plan = to_giga({"contents": HELLO["contents"], "generationConfig": {"stopSequences": ["END"]}})
    events = [giga_event({"role": "assistant", "content": "one two EN"}), giga_event({"content": "D three"}),
              giga_event({"content": ""}, "stop", usage=END_USAGE)]
    assert run_stream(events, plan=plan) == [chunk([{"text": "one two"}]), chunk([{"text": " "}], "STOP")]


def test_stream_error_midway() -> None:
    translator = StreamTranslator("m", COMPLETION_ID, CREATED, True)
    stream = GeminiStream(MODEL, RESPONSE_ID, False)
    out = stream.feed(translator.feed(giga_event({"role": "assistant", "content": "partial"}))[0])
    error = ProxyError(502, "GigaChat's stream ended before the answer was complete", "api_error",
                       "upstream_stream_incomplete")
    out += stream.fail(error)
    assert out == [chunk([{"text": "partia"}]), chunk([{"text": "l"}]),
                   ("", {"error": {"code": 502, "message": "GigaChat's stream ended before the answer was complete",
                                   "status": "UNAVAILABLE"}})]
    assert stream.feed(translator.feed(giga_event({"content": "more"}))[0]) == [] and stream.finish() == []
    assert stream.fail(error) == []
    assert gemini_sse(out[-1:]) == (b'data: {"error":{"code":502,"message":"GigaChat\'s stream ended before the '
                                    b'answer was complete","status":"UNAVAILABLE"}}\r\n\r\n')


def test_no_error_after_the_closing_chunk() -> None:
    stream = GeminiStream(MODEL, RESPONSE_ID, False)
    assert stream.finish() == [chunk(None, "STOP")]
    assert stream.fail(ProxyError(502, "late")) == []


def test_stream_error_before_any_text() -> None:
    stream = GeminiStream(MODEL, RESPONSE_ID, False)
    assert stream.fail(ProxyError(429, "slow down", headers={"Retry-After": "7"})) == [
        ("", {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}})]


def test_sse_encoding_is_exact() -> None:
    events = [chunk([{"text": "line\u2028sep\u2029para \u00e9 \"q\"\n"}]), chunk(None, "STOP")]
    wire = gemini_sse(events)
    assert wire == (
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"line\\u2028sep\\u2029para '
        + "\u00e9".encode("utf-8") + b' \\"q\\"\\n"}]},"index":0}],"modelVersion":"GigaChat-2-Max",'
        b'"responseId":"resp-0123456789"}\r\n\r\n'
        b'data: {"candidates":[{"content":{"role":"model"},"index":0,"finishReason":"STOP"}],'
        b'"modelVersion":"GigaChat-2-Max","responseId":"resp-0123456789"}\r\n\r\n')
    assert "\u2028".encode("utf-8") not in wire and "\u2029".encode("utf-8") not in wire
    for block in wire.split(b"\r\n\r\n")[:-1]:  # what the JS SDK's parser needs: one data line per event
        assert block.startswith(b"data: ") and b"\n" not in block and b"\r" not in block
        assert json.loads(block[6:].decode("utf-8"))["candidates"]
    assert b"[DONE]" not in wire and b"event:" not in wire


def test_json_array_form() -> None:
    events = [chunk([{"text": "a\u2028"}]), chunk([{"text": "b"}], "STOP", STREAM_USAGE)]
    wire = gemini_json_array(events)
    assert json.loads(wire.decode("utf-8")) == [data for _, data in events]
    assert wire.startswith(b'[{"candidates"') and wire.endswith(b"}]") and b"\\u2028" in wire
    assert gemini_json_array([]) == b"[]"


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("status,name", [
    (400, "INVALID_ARGUMENT"), (401, "UNAUTHENTICATED"), (402, "RESOURCE_EXHAUSTED"), (403, "PERMISSION_DENIED"),
    (404, "NOT_FOUND"), (405, "INVALID_ARGUMENT"), (408, "DEADLINE_EXCEEDED"), (413, "INVALID_ARGUMENT"),
    (429, "RESOURCE_EXHAUSTED"), (499, "CANCELLED"), (500, "INTERNAL"), (502, "UNAVAILABLE"),
    (503, "UNAVAILABLE"), (504, "DEADLINE_EXCEEDED"), (505, "INTERNAL"),
])
def test_error_envelope(status: int, name: str) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    assert gemini_error(ProxyError(status, "msg", headers=headers)) == (
        status, {"error": {"code": status, "message": "msg", "status": name}}, headers)


def test_error_envelope_retry_info() -> None:
    status, body, headers = gemini_error(ProxyError(429, "GigaChat: Too many requests", "rate_limit_error",
                                                    headers={"Retry-After": "30"}))
    assert body["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]
    assert headers == {"Retry-After": "30"}
    _, body, _ = gemini_error(ProxyError(503, "busy", headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert "details" not in body["error"]


def test_error_of_a_bad_request() -> None:
    error = rejected({"contents": [user({"text": 5})]})
    assert gemini_error(error) == (400, {"error": {"code": 400, "message": error.message,
                                                   "status": "INVALID_ARGUMENT"}}, {})
    assert "contents[0].parts[0].text" in error.message


# --------------------------------------------------------------------------
# countTokens, embeddings, models, paths
# --------------------------------------------------------------------------
def test_count_tokens_texts() -> None:
    request = {"contents": [user({"text": "How many tokens?"}), model_turn(call("f", {"a": 1})),
                            user(answer("f", {"r": 2}))]}
    body, _ = translate_chat_request(gemini_count_request(request, "gemini-2.5-flash"), DEFAULT)
    assert gigachat_texts(body) == ["How many tokens?", '{"name": "f", "arguments": {"a": 1}}', '{"r": 2}']
    inner = {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [user({"text": "hi"})],
                                        "systemInstruction": {"parts": [{"text": "Be brief."}]},
                                        "tools": [{"functionDeclarations": [{"name": "g"}]}]}}
    body, _ = translate_chat_request(gemini_count_request(inner, "gemini-2.5-flash"), DEFAULT)
    assert gigachat_texts(body) == ["Be brief.", "hi", '{"name": "g", "parameters": {"type": "object", '
                                                       '"properties": {}}}']
    with pytest.raises(ProxyError) as info:
        gemini_count_request({"contents": []}, "m")
    assert info.value.param == "contents"


def test_count_tokens_response() -> None:
    answer = [{"object": "tokens", "tokens": 7, "characters": 36}, {"object": "tokens", "tokens": 3, "characters": 9}]
    assert gemini_count_response(answer) == {"totalTokens": 10}
    assert gemini_count_response([]) == {"totalTokens": 0}
    for bad in ({"tokens": 3}, [{"tokens": "3"}], None):
        with pytest.raises(ProxyError) as info:
            gemini_count_response(bad)
        assert info.value.status == 502


def test_embed_content() -> None:
    request = {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello"}, {"text": "world"}]},
               "taskType": "RETRIEVAL_DOCUMENT", "title": "t"}
    assert gemini_embed_request(request, False) == (["hello\nworld"], None)
    assert gemini_embed_response([[0.1, 0.2]], False) == {"embedding": {"values": [0.1, 0.2]}}


def test_batch_embed_contents() -> None:
    """google-genai's embed_content always sends this shape."""
    request = {"requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]},
                             "outputDimensionality": 1024} for t in ("a", "b")]}
    assert gemini_embed_request(request, True) == (["a", "b"], 1024)
    assert gemini_embed_response([[1.0], [2.0]], True) == {"embeddings": [{"values": [1.0]}, {"values": [2.0]}]}


@pytest.mark.parametrize("request_,batch,param", [
    ({"content": {"parts": [{"text": ""}]}}, False, "content"),
    ({}, False, "content"),
    ({"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": PNG}}]}}, False, "content.parts[0]"),
    ({"requests": []}, True, "requests"),
    ({"requests": "a"}, True, "requests"),
    ({"requests": [{"content": {"parts": [{"text": "a"}]}}, 5]}, True, "requests[1]"),
    ({"requests": [{"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                   {"content": {"parts": [{"text": "b"}]}, "outputDimensionality": 16}]}, True, "requests"),
    ({"requests": [{"content": {"parts": [{"text": "a"}]}, "outputDimensionality": "8"}]}, True,
     "requests[0].outputDimensionality"),
])
def test_bad_embeddings_requests(request_: Dict[str, Any], batch: bool, param: str) -> None:
    with pytest.raises(ProxyError) as info:
        gemini_embed_request(request_, batch)
    assert (info.value.status, info.value.param) == (400, param)


IDS = ["GigaChat", "GigaChat-2-Max", "Embeddings", "EmbeddingsGigaR", "gigachat-pro"]


def test_models_list() -> None:
    models = gemini_models(IDS)["models"]
    assert [m["name"] for m in models] == ["models/" + i for i in IDS]
    assert models[1] == {"name": "models/GigaChat-2-Max", "baseModelId": "GigaChat-2-Max",
                         "displayName": "GigaChat-2-Max", "description": "GigaChat-2-Max through gigaproxy",
                         "inputTokenLimit": 131072, "outputTokenLimit": 8192,
                         "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}
    assert models[0]["inputTokenLimit"] == 32768
    assert models[2]["supportedGenerationMethods"] == ["embedContent", "batchEmbedContents"]
    assert (models[2]["inputTokenLimit"], models[3]["inputTokenLimit"]) == (512, 4096)
    assert models[4]["description"] == "GigaChat-2-Pro through gigaproxy" and models[4]["inputTokenLimit"] == 131072


def test_model_get() -> None:
    assert gemini_model_info(IDS, "GigaChat-2-Max") == gemini_model_info(IDS, "models/GigaChat-2-Max") \
        == gemini_models(IDS)["models"][1]
    with pytest.raises(ProxyError) as info:
        gemini_model_info(IDS, "gemini-2.5-pro")
    assert gemini_error(info.value)[:2] == (404, {"error": {
        "code": 404, "message": "models/gemini-2.5-pro is not found; GET /v1beta/models lists the models",
        "status": "NOT_FOUND"}})


@pytest.mark.parametrize("path,parsed", [
    ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", ("gemini-2.5-pro", "streamGenerateContent")),
    ("/v1/models/gemini-2.5-flash:generateContent", ("gemini-2.5-flash", "generateContent")),
    ("/models/text-embedding-004:batchEmbedContents", ("text-embedding-004", "batchEmbedContents")),
    ("/v1beta/models/gigachat-max%3AcountTokens", ("gigachat-max", "countTokens")),
    ("/v1beta/models/GigaChat-2-Max", ("GigaChat-2-Max", "")),
    ("/v1beta/models", ("", "")),
    ("/v1/models/", ("", "")),
    ("/v1/chat/completions", None),
    ("/v1beta/models/a/b:generateContent", None),
    ("/v2/models/x:generateContent", None),
])
def test_gemini_path(path: str, parsed: Optional[Tuple[str, str]]) -> None:
    assert gemini_path(path) == parsed
