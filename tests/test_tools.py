"""Tool calling, structured output and reasoning for coding agents (issue 3).

Every end-to-end test here goes client -> gigaproxy -> the strict fake GigaChat over
real loopback sockets (tests/conftest.py), so each translated request is validated the
way the fake says GigaChat validates (gigachat-api.md §4.1, §4.2 and the schema rules
documented in tests/fake_gigachat.py), and each answer is checked field by field
against what the clients in /work/shared/clients.md §A need.

Data lives in fixtures:

* ``fixtures/schemas/<case>.json``: real tool parameter schemas as Claude Code, Codex,
  MCP servers, Pydantic v2 and zod-to-json-schema emit them (``{"source", "function"}``).
* ``fixtures/conversations/<client>/``: the request bodies each client really sends
  (``turnN.json``) and ``conversation.json`` with the scripted GigaChat replies and
  what GigaChat must receive and the client must get back.  ``$CALL_ID_N`` in a turn is
  the id of the tool call the client got back in turn N.

A small standard-library JSON Schema checker (``schema_errors``) validates structured
answers against the client's own schema.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import uuid
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(HERE), HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import gigaproxy  # noqa: E402
from fake_gigachat import (  # noqa: E402
    CHAT_PATH,
    FUNCTION_NAME_RE,
    RESERVED_FUNCTION_NAMES,
    FakeGigaChat,
    GigaChatError,
    DEFAULT_MODELS,
    validate_chat_request,
    validate_schema,
)
from conftest import Proxy, fake_env, sse_payloads  # noqa: E402
from gigaproxy import ToolNames, normalize_schema  # noqa: E402

SCHEMAS = os.path.join(HERE, "fixtures", "schemas")
CONVERSATIONS = os.path.join(HERE, "fixtures", "conversations")

STATE_1 = "3f7a8c2e-5b1d-4e9a-9c6f-1a2b3c4d5e6f"
STATE_2 = "9b2d4f6a-8c1e-4a3b-b5d7-0e1f2a3b4c5d"
STATE_3 = "e4d3c2b1-a098-4765-b321-0fedcba98765"


# ==========================================================================
# fixtures: one fake GigaChat and one gigaproxy for the module (fast), reset per test
# ==========================================================================
@pytest.fixture(scope="module")
def _module_fake() -> Iterator[FakeGigaChat]:
    with FakeGigaChat() as server:
        yield server


@pytest.fixture
def fake(_module_fake: FakeGigaChat) -> Iterator[FakeGigaChat]:
    """The module's fake GigaChat with nothing recorded or queued (tokens stay valid)."""
    _module_fake.reset()
    yield _module_fake
    assert not _module_fake.errors, _module_fake.errors


@pytest.fixture(scope="module")
def _module_proxy(_module_fake: FakeGigaChat, tmp_path_factory: Any) -> Iterator[Proxy]:
    args = gigaproxy.build_parser().parse_args(["--port", "0"])
    config = gigaproxy.load_config(args, fake_env(_module_fake), cwd=str(tmp_path_factory.mktemp("tools")))
    handle = Proxy(gigaproxy.make_server(config))
    yield handle
    handle.stop()


@pytest.fixture
def proxy(_module_proxy: Proxy, fake: FakeGigaChat) -> Proxy:
    """gigaproxy with default settings against ``fake``, shared by the module's tests."""
    return _module_proxy


# ==========================================================================
# helpers
# ==========================================================================
def load_json(*parts: str) -> Any:
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def tool(name: str, description: str = "", parameters: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    fn = {"name": name, "description": description or "Tool " + name,
          "parameters": parameters if parameters is not None else {
              "type": "object", "properties": {"path": {"type": "string", "description": "A path"}},
              "required": ["path"]}}  # type: Dict[str, Any]
    return {"type": "function", "function": fn}


def user(text: str) -> Dict[str, Any]:
    return {"role": "user", "content": text}


def call_message(name: str, arguments: Any, state_id: Optional[str] = None, content: str = "") -> Dict[str, Any]:
    """A GigaChat assistant message with a function call (§5)."""
    message = {"role": "assistant", "content": content,
               "function_call": {"name": name, "arguments": arguments}}  # type: Dict[str, Any]
    if state_id:
        message["functions_state_id"] = state_id
    return message


def assistant_calls(*calls: Tuple[str, str, Any], content: Any = None) -> Dict[str, Any]:
    """An OpenAI assistant message with tool_calls [(id, name, arguments-object-or-string)]."""
    return {"role": "assistant", "content": content, "tool_calls": [
        {"id": cid, "type": "function",
         "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
        for cid, name, args in calls]}


def tool_result(call_id: str, content: Any) -> Dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def upstream(fake: Any) -> List[Dict[str, Any]]:
    """Chat bodies GigaChat accepted, in order; fails if it refused any."""
    chats = [r for r in fake.requests if r.path == CHAT_PATH]
    refused = [(r.status, r.body[:300]) for r in chats if not r.valid]
    assert not refused, "the strict fake GigaChat refused a translated request: %r" % refused
    return fake.chat_requests()


def last_upstream(fake: Any) -> Dict[str, Any]:
    bodies = upstream(fake)
    assert bodies, "nothing reached GigaChat"
    return bodies[-1]


def error_of(body: Any) -> Dict[str, Any]:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    return body["error"]


def check_completion(body: Dict[str, Any], model: str) -> Dict[str, Any]:
    """OpenAI chat.completion fields every client reads; returns choices[0]."""
    assert isinstance(body["id"], str) and body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["created"] > 1600000000
    assert body["model"] == model
    assert isinstance(body["choices"], list) and len(body["choices"]) == 1
    choice = body["choices"][0]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    usage = body["usage"]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert isinstance(usage[key], int) and usage[key] >= 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    return choice


def check_tool_call(call: Dict[str, Any], name: str, arguments: Any, streamed: bool) -> None:
    if streamed:
        assert call["index"] == 0
    assert isinstance(call["id"], str) and call["id"].startswith("call_") and len(call["id"]) > 5
    assert call["type"] == "function"
    assert call["function"]["name"] == name
    text = call["function"]["arguments"]
    assert isinstance(text, str) and text.strip(), "arguments must be a non-empty JSON string"
    assert json.loads(text) == arguments


class Streamed:
    """A client's view of one streamed answer, after the shape checks of clients.md §A.3."""

    def __init__(self, payloads: List[Any], model: str, include_usage: bool) -> None:
        assert payloads and payloads[-1] == "[DONE]", "the stream must end with data: [DONE]"
        chunks = payloads[:-1]
        assert chunks and all(isinstance(c, dict) for c in chunks)
        assert "[DONE]" not in chunks
        ids = {c["id"] for c in chunks}
        assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-")
        for chunk in chunks:
            assert chunk["object"] == "chat.completion.chunk"
            assert isinstance(chunk["created"], int)
            assert chunk["model"] == model
            assert "error" not in chunk
        self.usage = None  # type: Optional[Dict[str, Any]]
        if include_usage:
            last = chunks[-1]
            assert last["choices"] == [] and isinstance(last["usage"], dict)
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                assert isinstance(last["usage"][key], int)
            self.usage = last["usage"]
            chunks = chunks[:-1]
            assert all(c.get("usage") is None for c in chunks)
        else:
            assert all(c["choices"] for c in chunks), "no usage-only chunk unless asked for"
            assert all(c.get("usage") is None for c in chunks)
        for chunk in chunks:
            assert len(chunk["choices"]) == 1 and chunk["choices"][0]["index"] == 0
        deltas = [c["choices"][0]["delta"] for c in chunks]
        finishes = [c["choices"][0]["finish_reason"] for c in chunks]
        assert [i for i, d in enumerate(deltas) if "role" in d] == [0], "role only in the first delta"
        assert deltas[0]["role"] == "assistant"
        assert finishes[-1] is not None and all(f is None for f in finishes[:-1]), finishes
        assert deltas[-1] == {}, "the finish chunk is separate and carries no delta"
        self.finish_reason = finishes[-1]
        self.deltas = deltas
        self.content_chunks = [d["content"] for d in deltas if d.get("content")]
        self.content = "".join(d.get("content") or "" for d in deltas)
        self.reasoning = "".join(d.get("reasoning_content") or "" for d in deltas)
        tool_deltas = [i for i, d in enumerate(deltas) if d.get("tool_calls")]
        self.tool_calls = []  # type: List[Dict[str, Any]]
        if tool_deltas:
            assert len(tool_deltas) == 1, "one tool_calls delta carrying the whole call"
            assert tool_deltas[0] == len(deltas) - 2, "the finish chunk directly follows the call"
            self.tool_calls = deltas[tool_deltas[0]]["tool_calls"]
            assert self.finish_reason == "tool_calls"


def stream_of(proxy: Any, body: Dict[str, Any], **kw: Any) -> Streamed:
    status, headers, payloads = proxy.stream(body, **kw)
    assert status == 200, payloads
    assert headers["Content-Type"].startswith("text/event-stream")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return Streamed(payloads, body["model"], include_usage)


# ---- a small JSON Schema checker (enough for the clients' structured-output schemas) ----
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: Any, root: Any = None, path: str = "$") -> List[str]:
    """Violations of ``schema`` by ``value``: type (incl. lists), enum, const, required,
    properties, additionalProperties, items, min/maxItems, anyOf/oneOf/allOf, local $ref."""
    root = schema if root is None else root
    if schema is True or not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        target = root  # type: Any
        for part in schema["$ref"].lstrip("#").strip("/").split("/"):
            if part:
                target = target[part]
        return schema_errors(value, target, root, path)
    errors = []  # type: List[str]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_TYPES[k](value) for k in kinds):
        return ["%s: %r is not %s" % (path, value, "/".join(kinds))]
    if "enum" in schema and value not in schema["enum"]:
        errors.append("%s: %r not in %r" % (path, value, schema["enum"]))
    if "const" in schema and value != schema["const"]:
        errors.append("%s: %r is not %r" % (path, value, schema["const"]))
    for part in schema.get("allOf", []):
        errors += schema_errors(value, part, root, path)
    for union in ("anyOf", "oneOf"):
        if union in schema and not any(not schema_errors(value, o, root, path) for o in schema[union]):
            errors.append("%s: %r matches none of %s" % (path, value, union))
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append("%s: %s is required" % (path, name))
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(item, properties[name], root, "%s.%s" % (path, name))
            elif extra is False:
                errors.append("%s: unexpected property %s" % (path, name))
            else:
                errors += schema_errors(item, extra, root, "%s.%s" % (path, name))
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append("%s: fewer than %d items" % (path, schema["minItems"]))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append("%s: more than %d items" % (path, schema["maxItems"]))
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", True), root, "%s[%d]" % (path, i))
    return errors


def test_schema_checker_is_not_vacuous() -> None:
    schema = {"$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
              "type": "object", "additionalProperties": False, "required": ["steps", "mode"],
              "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}, "minItems": 1},
                             "mode": {"type": "string", "enum": ["a", "b"]},
                             "note": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}
    assert schema_errors({"steps": [{"n": 1}], "mode": "a", "note": None}, schema) == []
    for bad in ({"steps": [], "mode": "a"}, {"steps": [{"n": "1"}], "mode": "a"}, {"steps": [{"n": 1}]},
                {"steps": [{"n": 1}], "mode": "c"}, {"steps": [{"n": 1}], "mode": "a", "x": 1},
                {"steps": [{"n": 1}], "mode": "a", "note": 5}, [1], {"steps": [{}], "mode": "a"}):
        assert schema_errors(bad, schema), bad


# ==========================================================================
# schema normalisation on real schemas
# ==========================================================================
SCHEMA_CASES = sorted(name[:-5] for name in os.listdir(SCHEMAS) if name.endswith(".json"))


def schema_fixture(case: str) -> Dict[str, Any]:
    return load_json(SCHEMAS, case + ".json")["function"]


def subschemas(node: Any) -> Iterator[Dict[str, Any]]:
    """Every schema node: through properties, items, additionalProperties, unions, $defs."""
    if isinstance(node, list):
        for item in node:
            for sub in subschemas(item):
                yield sub
        return
    if not isinstance(node, dict):
        return
    yield node
    for key, value in node.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for sub in value.values():
                for inner in subschemas(sub):
                    yield inner
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "not"):
            for inner in subschemas(value):
                yield inner


def property_names(schema: Any) -> set:
    return {name for node in subschemas(schema) if isinstance(node.get("properties"), dict)
            for name in node["properties"]}


def descriptions(schema: Any) -> List[str]:
    return [node["description"] for node in subschemas(schema) if isinstance(node.get("description"), str)]


def schema_depth(node: Any) -> int:
    if not isinstance(node, dict):
        return 0
    below = [schema_depth(v) for v in (node.get("properties") or {}).values()]
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            below.append(schema_depth(node[key]))
    return 1 + max(below or [0])


def assert_gigachat_accepts_schema(schema: Dict[str, Any]) -> None:
    try:
        validate_schema(schema, "parameters")
    except GigaChatError as exc:
        pytest.fail("GigaChat would refuse this schema: %s" % exc.body["message"])


def test_schema_fixtures_cover_the_sources() -> None:
    prefixes = {case.split("_")[0] for case in SCHEMA_CASES}
    assert {"claude", "codex", "mcp", "pydantic", "zod"} <= prefixes
    for case in SCHEMA_CASES:
        doc = load_json(SCHEMAS, case + ".json")
        assert set(doc) == {"source", "function"} and doc["source"]
        assert set(doc["function"]) == {"name", "description", "parameters"}


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_normalised_schema_passes_the_strict_fake(case: str) -> None:
    parameters = schema_fixture(case)["parameters"]
    original = copy.deepcopy(parameters)
    out = normalize_schema(parameters)
    assert parameters == original, "the client's schema must not be modified"
    assert out["type"] == "object" and isinstance(out["properties"], dict)
    assert_gigachat_accepts_schema(out)
    assert json.loads(json.dumps(out)) == out


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_normalised_schema_keeps_every_property_name(case: str) -> None:
    parameters = schema_fixture(case)["parameters"]
    missing = property_names(parameters) - property_names(normalize_schema(parameters))
    assert not missing, "property names lost: %s" % sorted(missing)


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_normalised_schema_keeps_every_description(case: str) -> None:
    parameters = schema_fixture(case)["parameters"]
    kept = descriptions(normalize_schema(parameters))
    lost = [d for d in descriptions(parameters) if not any(d in text for text in kept)]
    assert not lost, "descriptions lost: %r" % lost


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_normalise_schema_is_idempotent(case: str) -> None:
    once = normalize_schema(schema_fixture(case)["parameters"])
    assert normalize_schema(copy.deepcopy(once)) == once


def test_pydantic_shapes_become_plain_gigachat_types() -> None:
    out = normalize_schema(schema_fixture("pydantic_create_order")["parameters"])
    props = out["properties"]
    assert props["shipping"]["type"] == "object"  # $ref inlined
    assert set(props["shipping"]["properties"]) == {"street", "city", "country_code", "postal_code"}
    assert props["shipping"]["properties"]["postal_code"]["type"] == "string"  # Optional[str]
    assert props["billing"]["type"] == "object" and "street" in props["billing"]["properties"]  # Optional[Model]
    line = props["items"]["items"]
    assert props["items"]["type"] == "array" and line["type"] == "object"  # list of a model
    assert line["properties"]["unit_price"]["type"] == "number"  # Decimal: anyOf number/string
    assert line["properties"]["color"]["enum"] == ["red", "green"]  # Optional[str Enum] via $ref
    assert props["priority"]["type"] == "integer" and "enum" not in props["priority"]  # IntEnum
    assert all(v in props["priority"]["description"] for v in ("1", "2", "3"))
    assert props["mode"]["enum"] == ["standard", "express"]  # Literal of two
    assert props["channel"]["enum"] == ["web"]  # Literal of one: const
    assert props["delivery_date"] == {"type": "string", "format": "date", "default": None,
                                      "description": "Requested delivery date", "title": "Delivery Date"}
    assert "format" not in props["customer_id"]  # uuid is not a GigaChat format
    assert props["quantities_by_warehouse"]["additionalProperties"] == {"type": "integer"}
    assert props["notes"]["type"] == "string"  # Union[str, List[str], None]
    assert props["coupon"]["type"] == "object"  # discriminated union
    assert out["required"] == ["customer_id", "items", "shipping"]


def test_zod_shapes_become_plain_gigachat_types() -> None:
    props = normalize_schema(schema_fixture("zod_create_task")["parameters"])["properties"]
    assert props["kind"]["enum"] == ["task"]  # z.literal: const
    assert props["estimate"]["type"] in ("number", "string")  # z.union of primitives: type array
    assert props["assignee"]["type"] == "string" and "format" not in props["assignee"]  # email().nullable()
    assert props["due"]["format"] == "date-time"
    assert props["metadata"]["type"] == "object" and props["metadata"]["properties"] == {}  # z.record
    assert props["priority"]["type"] == "number" and "enum" not in props["priority"]


def test_zod_reused_schema_json_pointer_ref_is_inlined() -> None:
    """zod-to-json-schema's default $refStrategy "root" writes a schema used twice as a
    JSON-pointer $ref to its first place ("#/properties/source"); it must be inlined,
    not turned into an empty object."""
    props = normalize_schema(schema_fixture("zod_create_task")["parameters"])["properties"]
    assert props["target"]["type"] == "string", props["target"]
    assert props["target"].get("description") == "A path relative to the workspace root"


def test_root_ref_into_definitions_is_inlined() -> None:
    out = normalize_schema(schema_fixture("zod_named_definitions")["parameters"])
    assert set(out["properties"]) == {"query", "paths", "caseSensitive"}
    assert out["required"] == ["query"] and out["description"] == "Search the code base"
    assert out["properties"]["paths"] == {"type": "array", "items": {"type": "string"},
                                          "description": "Limit the search to these paths"}


@pytest.mark.parametrize("case", ["pydantic_tree_node", "pydantic_org_chart", "zod_recursive_root_ref"])
def test_recursive_schemas_are_cut(case: str) -> None:
    out = normalize_schema(schema_fixture(case)["parameters"])
    assert_gigachat_accepts_schema(out)
    assert "$ref" not in json.dumps(out)
    assert schema_depth(out) <= gigaproxy.SCHEMA_MAX_DEPTH + 2  # levels 0..MAX, then the cut node
    assert len(json.dumps(out)) < 20000


def _deep(levels: int) -> Dict[str, Any]:
    node = {"type": "string", "description": "leaf"}  # type: Dict[str, Any]
    for i in range(levels):
        node = {"type": "object", "description": "level %d" % i,
                "properties": {"child": node, "n": {"type": "integer"}}}
    return node


def _cycle(length: int) -> Dict[str, Any]:
    defs = {"N%d" % i: {"type": "object", "properties": {
        "next": {"$ref": "#/$defs/N%d" % ((i + 1) % length)},
        "also": {"anyOf": [{"$ref": "#/$defs/N0"}, {"type": "null"}]}}}
        for i in range(length)}
    return {"$defs": defs, "type": "object", "properties": {"start": {"$ref": "#/$defs/N0"}}}


@pytest.mark.parametrize("schema", [_deep(60), _cycle(1), _cycle(25),
                                    {"type": "object", "properties": {"self": {"$ref": "#"}}},
                                    {"$ref": "#/$defs/Missing", "$defs": {}}],
                         ids=["nested_60_levels", "self_cycle", "cycle_of_25", "root_pointer", "missing_def"])
def test_recursion_is_bounded(schema: Dict[str, Any]) -> None:
    out = normalize_schema(schema)
    assert_gigachat_accepts_schema(out)
    assert schema_depth(out) <= gigaproxy.SCHEMA_MAX_DEPTH + 2  # levels 0..MAX, then the cut node
    assert len(json.dumps(out)) < 200000
    assert normalize_schema(copy.deepcopy(out)) == out


def test_every_real_schema_as_tools_in_one_request(proxy: Any, fake: Any) -> None:
    functions = [schema_fixture(case) for case in SCHEMA_CASES]
    request = {"model": "GigaChat-2-Max", "messages": [user("Plan the work.")],
               "tools": [{"type": "function", "function": fn} for fn in functions], "tool_choice": "auto"}
    status, _, body = proxy.chat(request)
    assert status == 200, body
    sent = last_upstream(fake)
    assert [f["name"] for f in sent["functions"]] == [fn["name"] for fn in functions]
    for fn, got in zip(functions, sent["functions"]):
        assert got["parameters"] == normalize_schema(fn["parameters"])
        assert got["description"] == fn["description"]
    assert sent["function_call"] == "auto"


# ==========================================================================
# tool names
# ==========================================================================
LONG_NAME = "mcp__atlassian_confluence__search_confluence_pages_by_cql_query_with_pagination"
ODD_NAMES = [
    "read-file",                  # dash
    "mcp.filesystem.read_file",   # dots (Continue/Zed-style MCP names)
    "github/create_issue",        # slash
    "получить_погоду",            # non-ASCII
    "погода",                     # non-ASCII again
    "2fa_verify",                 # leading digit
    LONG_NAME,                    # 80 characters
    LONG_NAME + "_and_labels",    # same first 64 characters
    "a-b", "a_b",                 # the same after sanitising
    "web_search", "text2image",   # GigaChat built-ins
    "plain_name",                 # nothing to change
]


def odd_tools() -> List[Dict[str, Any]]:
    return [tool(name, "tool number %d" % i) for i, name in enumerate(ODD_NAMES)]


def learn_names(proxy: Any, fake: Any) -> Dict[str, str]:
    """Client name -> the function name GigaChat received, from one real request."""
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [user("hi")], "tools": odd_tools()})
    assert status == 200, body
    by_description = {f["description"]: f["name"] for f in last_upstream(fake)["functions"]}
    return {name: by_description["tool number %d" % i] for i, name in enumerate(ODD_NAMES)}


def test_odd_tool_names_are_sent_as_safe_unique_names(proxy: Any, fake: Any) -> None:
    names = learn_names(proxy, fake)
    sent = list(names.values())
    assert len(set(sent)) == len(sent), "two client tools share a GigaChat name: %r" % names
    for client, safe in names.items():
        assert FUNCTION_NAME_RE.match(safe) and len(safe) <= 64, (client, safe)
        assert safe not in RESERVED_FUNCTION_NAMES
    assert names["plain_name"] == "plain_name" and names["a_b"] == "a_b"
    assert all(names[n] != n for n in ODD_NAMES if n not in ("plain_name", "a_b"))
    assert learn_names(proxy, fake) == names, "the same tools map the same way on every request"


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_odd_tool_names_are_mapped_back_in_answers(proxy: Any, fake: Any, stream: bool) -> None:
    names = learn_names(proxy, fake)
    for i, client_name in enumerate(ODD_NAMES):
        fake.enqueue_reply(call_message(names[client_name], {"path": "f%d" % i}, str(uuid.uuid4())), "function_call")
        request = {"model": "GigaChat-2", "messages": [user("call tool %d" % i)], "tools": odd_tools()}
        if stream:
            got = stream_of(proxy, request)
            assert len(got.tool_calls) == 1
            check_tool_call(got.tool_calls[0], client_name, {"path": "f%d" % i}, streamed=True)
        else:
            status, _, body = proxy.chat(request)
            assert status == 200, body
            choice = check_completion(body, "GigaChat-2")
            assert choice["finish_reason"] == "tool_calls"
            check_tool_call(choice["message"]["tool_calls"][0], client_name, {"path": "f%d" % i}, streamed=False)
    upstream(fake)


def test_odd_tool_names_in_history_become_the_same_safe_names(proxy: Any, fake: Any) -> None:
    names = learn_names(proxy, fake)
    calls = [("call_h%d" % i, name, {"path": "f%d" % i}) for i, name in enumerate(ODD_NAMES)]
    messages = [user("use them all"), assistant_calls(*calls)]
    messages += [tool_result(cid, "result %d" % i) for i, (cid, _, _) in reversed(list(enumerate(calls)))]
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": messages, "tools": odd_tools()})
    assert status == 200, body
    sent = last_upstream(fake)["messages"]
    pairs = sent[1:-1] if sent[-1]["role"] == "user" else sent[1:]
    assert len(pairs) == 2 * len(ODD_NAMES)
    for i, client_name in enumerate(ODD_NAMES):
        call, result = pairs[2 * i], pairs[2 * i + 1]
        assert call["role"] == "assistant" and call["function_call"]["name"] == names[client_name]
        assert call["function_call"]["arguments"] == {"path": "f%d" % i}
        assert set(result) == {"role", "content", "name"} and result["role"] == "function"
        assert result["name"] == names[client_name]
        assert json.loads(result["content"]) == {"result": "result %d" % i}


def test_tool_name_with_a_trailing_newline_is_renamed(proxy: Any, fake: Any) -> None:
    """``^...$`` also matches before a final newline: such a name is not safe as it is."""
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [user("hi")], "tools": [tool("read_file\n")]})
    assert status == 200, body
    assert FUNCTION_NAME_RE.match(last_upstream(fake)["functions"][0]["name"])


def test_tool_names_mapping_is_deterministic_and_reversible() -> None:
    first, second = ToolNames(ODD_NAMES), ToolNames(list(ODD_NAMES))
    for name in ODD_NAMES:
        assert first.to_gigachat(name) == second.to_gigachat(name)
        assert first.to_client(first.to_gigachat(name)) == name


# ==========================================================================
# tool_choice
# ==========================================================================
THREE_TOOLS = [tool("get_weather"), tool("read-file"), tool("search_code")]


@pytest.mark.parametrize("choice, expected", [
    (None, "auto"),
    ("auto", "auto"),
    ("none", "none"),
    ({"type": "function", "function": {"name": "get_weather"}}, {"name": "get_weather"}),
    ({"type": "function", "function": {"name": "read-file"}}, {"name": "read_file"}),
], ids=["absent", "auto", "none", "named", "named_renamed"])
def test_tool_choice(proxy: Any, fake: Any, choice: Any, expected: Any) -> None:
    request = {"model": "GigaChat-2", "messages": [user("hi")], "tools": THREE_TOOLS}
    if choice is not None:
        request["tool_choice"] = choice
    status, _, body = proxy.chat(request)
    assert status == 200, body
    sent = last_upstream(fake)
    assert sent["function_call"] == expected
    assert [f["name"] for f in sent["functions"]] == ["get_weather", "read_file", "search_code"]
    assert sent["messages"] == [user("hi")], "no instruction is added for auto, none or a named tool"


def test_named_renamed_tool_choice_answer_maps_back(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(call_message("read_file", {"path": "a.txt"}, STATE_1), "function_call")
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [user("read a.txt")], "tools": THREE_TOOLS,
                                  "tool_choice": {"type": "function", "function": {"name": "read-file"}}})
    assert status == 200, body
    check_tool_call(body["choices"][0]["message"]["tool_calls"][0], "read-file", {"path": "a.txt"}, streamed=False)


def test_tool_choice_required_with_one_tool_forces_it(proxy: Any, fake: Any) -> None:
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [{"role": "system", "content": "Be brief."},
                                                                      user("hi")],
                                  "tools": [tool("read-file")], "tool_choice": "required"})
    assert status == 200, body
    sent = last_upstream(fake)
    assert sent["function_call"] == {"name": "read_file"}
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_tool_choice_required_with_several_tools_instructs_the_model(proxy: Any, fake: Any) -> None:
    """GigaChat cannot force "some function": function_call auto plus the documented
    instruction (gigaproxy.REQUIRED_TOOL_INSTRUCTION) in the system message."""
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [{"role": "system", "content": "Be brief."},
                                                                      user("hi")],
                                  "tools": THREE_TOOLS, "tool_choice": "required"})
    assert status == 200, body
    sent = last_upstream(fake)
    assert sent["function_call"] == "auto" and len(sent["functions"]) == 3
    system = sent["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert gigaproxy.REQUIRED_TOOL_INSTRUCTION in system["content"]
    assert sent["messages"][1:] == [user("hi")]
    # without a system message of the client's, the instruction becomes the system message
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [user("hi")], "tools": THREE_TOOLS,
                                  "tool_choice": "required"})
    assert status == 200, body
    assert last_upstream(fake)["messages"] == [{"role": "system", "content": gigaproxy.REQUIRED_TOOL_INSTRUCTION},
                                               user("hi")]


@pytest.mark.parametrize("choice, expected", [
    (None, "auto"), ("auto", "auto"), ("none", "none"), ({"name": "get_weather"}, {"name": "get_weather"}),
    ({"name": "read-file"}, {"name": "read_file"}),
], ids=["absent", "auto", "none", "named", "named_renamed"])
def test_legacy_functions_and_function_call(proxy: Any, fake: Any, choice: Any, expected: Any) -> None:
    request = {"model": "GigaChat-2", "messages": [user("hi")], "functions": [t["function"] for t in THREE_TOOLS]}
    if choice is not None:
        request["function_call"] = choice
    fake.enqueue_reply(call_message("read_file", {"path": "x"}, STATE_1), "function_call")
    status, _, body = proxy.chat(request)
    assert status == 200, body
    sent = last_upstream(fake)
    assert sent["function_call"] == expected
    assert [f["name"] for f in sent["functions"]] == ["get_weather", "read_file", "search_code"]
    calls = body["choices"][0]["message"].get("tool_calls") or []
    legacy = body["choices"][0]["message"].get("function_call")
    assert [c["function"]["name"] for c in calls] == ["read-file"] or (legacy or {}).get("name") == "read-file"


@pytest.mark.parametrize("field, choice", [
    ("tool_choice", {"type": "function", "function": {"name": "not_a_tool"}}),
    ("tool_choice", {"type": "function", "function": {"name": "read_file"}}),  # GigaChat's name, not the client's
    ("function_call", {"name": "not_a_tool"}),
])
def test_named_choice_not_among_the_tools_is_400(proxy: Any, fake: Any, field: str, choice: Any) -> None:
    request = {"model": "GigaChat-2", "messages": [user("hi")], field: choice}
    if field == "tool_choice":
        request["tools"] = THREE_TOOLS
    else:
        request["functions"] = [t["function"] for t in THREE_TOOLS]
    status, _, body = proxy.chat(request)
    assert status == 400, body
    error = error_of(body)
    assert error["type"] == "invalid_request_error" and error["param"] == field
    assert fake.chat_requests() == []


# ==========================================================================
# history
# ==========================================================================
def test_three_parallel_calls_with_shuffled_results(proxy: Any, fake: Any) -> None:
    messages = [
        {"role": "system", "content": "You are a coding agent."},
        user("Check the weather, read a.txt and search for TODO."),
        assistant_calls(("call_w", "get_weather", {"city": "Moscow"}),
                        ("call_r", "read-file", "{\"path\": \"a.txt\"}"),
                        ("call_s", "search_code", {"path": "src", "query": "TODO"}),
                        content="Doing all three."),
        tool_result("call_s", "src/x.py:3: # TODO"),
        tool_result("call_w", "{\"temp\": -3}"),
        tool_result("call_r", "hello"),
    ]
    original = copy.deepcopy(messages)
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": messages, "tools": THREE_TOOLS})
    assert status == 200, body
    assert messages == original
    sent = last_upstream(fake)["messages"]
    assert [m["role"] for m in sent] == ["system", "user"] + ["assistant", "function"] * 3
    calls, results = sent[2::2], sent[3::2]
    assert [c["function_call"] for c in calls] == [
        {"name": "get_weather", "arguments": {"city": "Moscow"}},
        {"name": "read_file", "arguments": {"path": "a.txt"}},
        {"name": "search_code", "arguments": {"path": "src", "query": "TODO"}}]
    assert calls[0]["content"] == "Doing all three." and calls[1]["content"] == calls[2]["content"] == ""
    assert [r["name"] for r in results] == ["get_weather", "read_file", "search_code"]
    assert [json.loads(r["content"]) for r in results] == [
        {"temp": -3}, {"result": "hello"}, {"result": "src/x.py:3: # TODO"}]
    assert all("functions_state_id" not in c for c in calls), "ids gigaproxy did not issue carry no state"


@pytest.mark.parametrize("content, expected", [
    ("plain text result", {"result": "plain text result"}),
    ("[1, 2, 3]", {"result": [1, 2, 3]}),
    ("42", {"result": 42}),
    ("-0.5", {"result": -0.5}),
    ("true", {"result": True}),
    ("null", {"result": None}),
    ("\"quoted\"", {"result": "quoted"}),
    ("{\"ok\": true, \"files\": [\"a\"]}", {"ok": True, "files": ["a"]}),
    ("NaN", {"result": "NaN"}),
    ("{\"x\": NaN}", {"result": "{\"x\": NaN}"}),
    ("", {"result": ""}),
    ([{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}], None),
])
def test_tool_result_becomes_a_json_object_string(proxy: Any, fake: Any, content: Any, expected: Any) -> None:
    messages = [user("go"), assistant_calls(("call_1", "get_weather", {"city": "Oslo"})),
                tool_result("call_1", content)]
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": messages, "tools": THREE_TOOLS})
    assert status == 200, body
    result = last_upstream(fake)["messages"][2]
    assert result["role"] == "function" and result["name"] == "get_weather"
    value = json.loads(result["content"])
    assert isinstance(value, dict)
    if expected is not None:
        assert value == expected
    else:
        assert "part one" in json.dumps(value) and "part two" in json.dumps(value)


@pytest.mark.parametrize("arguments", ["{not json", "{\"a\": 1", "[1, 2]", "\"text\"", "{\"a\": NaN}"])
def test_invalid_argument_json_is_400_naming_the_message(proxy: Any, fake: Any, arguments: str) -> None:
    messages = [{"role": "system", "content": "s"}, user("go"),
                assistant_calls(("call_1", "get_weather", {"city": "a"}), ("call_2", "read-file", arguments)),
                tool_result("call_1", "x"), tool_result("call_2", "y")]
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": messages, "tools": THREE_TOOLS})
    assert status == 400, body
    error = error_of(body)
    assert error["param"] == "messages[2].tool_calls[1].function.arguments"
    assert "messages[2]" in error["message"]
    assert fake.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_functions_state_id_round_trip(proxy: Any, fake: Any, stream: bool) -> None:
    request = {"model": "GigaChat-2", "messages": [user("weather in Oslo?")], "tools": THREE_TOOLS}
    fake.enqueue_reply(call_message("get_weather", {"city": "Oslo"}, STATE_2), "function_call")
    if stream:
        call = stream_of(proxy, request).tool_calls[0]
    else:
        status, _, body = proxy.chat(request)
        assert status == 200, body
        call = body["choices"][0]["message"]["tool_calls"][0]
    echoed = {"id": call["id"], "type": call["type"], "function": call["function"]}
    followup = dict(request, messages=request["messages"] + [
        {"role": "assistant", "content": None, "tool_calls": [echoed]}, tool_result(call["id"], "{\"temp\": 4}")])
    fake.enqueue_reply({"role": "assistant", "content": "4 degrees."})
    if stream:
        assert stream_of(proxy, followup).content == "4 degrees."
    else:
        assert proxy.chat(followup)[2]["choices"][0]["message"]["content"] == "4 degrees."
    sent = last_upstream(fake)["messages"]
    assert sent[1]["function_call"] == {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert sent[1]["functions_state_id"] == STATE_2
    assert json.loads(sent[2]["content"]) == {"temp": 4}


def test_foreign_tool_call_ids_carry_no_state(proxy: Any, fake: Any) -> None:
    for call_id in ("toolu_01A09q90qw90lq917835lq9", "call_abc123", "call_" + STATE_1.upper(), "fc_" + STATE_1):
        messages = [user("go"), assistant_calls((call_id, "get_weather", {"city": "a"})), tool_result(call_id, "1")]
        status, _, body = proxy.chat({"model": "GigaChat-2", "messages": messages, "tools": THREE_TOOLS})
        assert status == 200, body
        assert "functions_state_id" not in last_upstream(fake)["messages"][1], call_id


# ==========================================================================
# responses: tool calls, finish reasons, reasoning
# ==========================================================================
def test_tool_call_response_non_stream(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(call_message("search_code", {"path": "src", "query": "def main"}, STATE_1), "function_call")
    status, _, body = proxy.chat({"model": "my-agent-model", "messages": [user("find main")], "tools": THREE_TOOLS})
    assert status == 200, body
    choice = check_completion(body, "my-agent-model")
    message = choice["message"]
    assert message["content"] is None
    assert choice["finish_reason"] == "tool_calls"
    assert len(message["tool_calls"]) == 1
    check_tool_call(message["tool_calls"][0], "search_code", {"path": "src", "query": "def main"}, streamed=False)
    assert message["tool_calls"][0]["id"] == "call_" + STATE_1
    assert set(message["tool_calls"][0]) == {"id", "type", "function"}


@pytest.mark.parametrize("include_usage", [True, False], ids=["with_usage", "without_usage"])
def test_tool_call_response_stream(proxy: Any, fake: Any, include_usage: bool) -> None:
    fake.enqueue_reply(call_message("read_file", {"path": "README.md"}, STATE_1), "function_call",
                       {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40,
                        "precached_prompt_tokens": 4})
    request = {"model": "GigaChat-2-Max", "messages": [user("read the readme")], "tools": THREE_TOOLS,
               "stream_options": {"include_usage": include_usage}}
    status, _, payloads = proxy.stream(request)
    assert status == 200
    got = Streamed(payloads, "GigaChat-2-Max", include_usage)
    assert got.finish_reason == "tool_calls" and got.content == ""
    assert len(got.tool_calls) == 1
    check_tool_call(got.tool_calls[0], "read-file", {"path": "README.md"}, streamed=True)
    assert got.tool_calls[0]["id"] == "call_" + STATE_1
    if include_usage:
        assert got.usage == {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40,
                             "prompt_tokens_details": {"cached_tokens": 4}}
    # the exact order Cline and Roo need: tool_calls delta, separate finish chunk, [usage], [DONE]
    tail = payloads[-4:] if include_usage else payloads[-3:]
    assert "tool_calls" in tail[0]["choices"][0]["delta"] and tail[0]["choices"][0]["finish_reason"] is None
    assert tail[1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    if include_usage:
        assert tail[2]["choices"] == []
    assert tail[-1] == "[DONE]"


def test_finish_reason_error_non_stream_is_502_tool_call_failed(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(call_message("read_file", "{\"path\": ", STATE_1), "error")
    status, _, body = proxy.chat({"model": "GigaChat-2", "messages": [user("read")], "tools": THREE_TOOLS})
    assert status == 502, body
    error = error_of(body)
    assert error["code"] == "tool_call_failed" and error["type"] == "api_error"
    assert "read-file" in error["message"], "the message names the client's tool"


def test_finish_reason_error_stream_is_an_error_event(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(call_message("read_file", "{\"path\": ", STATE_1), "error")
    status, _, payloads = proxy.stream({"model": "GigaChat-2", "messages": [user("read")], "tools": THREE_TOOLS,
                                        "stream_options": {"include_usage": True}})
    assert status == 200
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "tool_call_failed"
    assert payloads.index(errors[0]) == len([p for p in payloads if p != "[DONE]"]) - 1, "nothing after the error"
    chunks = [p for p in payloads if isinstance(p, dict) and "choices" in p]
    assert not any(c["choices"] and (c["choices"][0]["delta"].get("tool_calls") or c["choices"][0]["finish_reason"])
                   for c in chunks), "no tool call and no successful finish before the error"


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_blacklist_is_content_filter(proxy: Any, fake: Any, stream: bool) -> None:
    text = "Не люблю менять тему разговора, но вот сейчас тот самый случай."
    fake.enqueue_reply({"role": "assistant", "content": text}, "blacklist")
    request = {"model": "GigaChat-2", "messages": [user("something forbidden")], "tools": THREE_TOOLS}
    if stream:
        got = stream_of(proxy, request)
        assert (got.finish_reason, got.content, got.tool_calls) == ("content_filter", text, [])
    else:
        status, _, body = proxy.chat(request)
        assert status == 200
        choice = check_completion(body, "GigaChat-2")
        assert (choice["finish_reason"], choice["message"]["content"]) == ("content_filter", text)
        assert "tool_calls" not in choice["message"]


@pytest.mark.parametrize("effort, sent", [("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"),
                                          ("none", None)])
def test_reasoning_effort_is_forwarded(proxy: Any, fake: Any, effort: str, sent: Optional[str]) -> None:
    status, _, body = proxy.chat({"model": "GigaChat-2-Reasoning", "messages": [user("2+2?")],
                                  "reasoning_effort": effort})
    assert status == 200, body
    assert last_upstream(fake).get("reasoning_effort") == sent


@pytest.mark.parametrize("effort", ["maximum", "", "LOUD", 3, ["low"]])
def test_unknown_reasoning_effort_is_400(proxy: Any, fake: Any, effort: Any) -> None:
    status, _, body = proxy.chat({"model": "GigaChat-2-Reasoning", "messages": [user("2+2?")],
                                  "reasoning_effort": effort})
    assert status == 400, body
    assert error_of(body)["param"] == "reasoning_effort"
    assert fake.chat_requests() == []


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_reasoning_content_is_returned(proxy: Any, fake: Any, stream: bool) -> None:
    thinking = "The user asks for two plus two. That is four."
    fake.enqueue_reply({"role": "assistant", "content": "4", "reasoning_content": thinking})
    request = {"model": "GigaChat-2-Reasoning", "messages": [user("2+2?")], "reasoning_effort": "high"}
    if stream:
        got = stream_of(proxy, request)
        assert (got.reasoning, got.content, got.finish_reason) == (thinking, "4", "stop")
        first_content = next(i for i, d in enumerate(got.deltas) if d.get("content"))
        assert all(not d.get("reasoning_content") for d in got.deltas[first_content:]), "reasoning comes first"
    else:
        status, _, body = proxy.chat(request)
        assert status == 200, body
        message = check_completion(body, "GigaChat-2-Reasoning")["message"]
        assert (message["reasoning_content"], message["content"]) == (thinking, "4")


# ==========================================================================
# structured output
# ==========================================================================
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "steps": {"type": "array", "description": "Reasoning steps", "items": {
            "type": "object", "properties": {"explanation": {"type": "string"}, "output": {"type": "string"}},
            "required": ["explanation", "output"], "additionalProperties": False}},
        "final_answer": {"type": "string", "description": "The answer"},
        "confidence": {"type": "string", "enum": ["low", "medium", "high"]},
        "meta": {"type": "object", "properties": {"language": {"type": "string"}, "tokens": {"type": "integer"}},
                 "required": ["language", "tokens"], "additionalProperties": False},
    },
    "required": ["steps", "final_answer", "confidence", "meta"],
    "additionalProperties": False,
}
ANSWER = {"steps": [{"explanation": "Subtract 7 from both sides", "output": "8x = -30"},
                    {"explanation": "Divide by 8", "output": "x = -3.75"}],
          "final_answer": "x = -3.75", "confidence": "high", "meta": {"language": "en", "tokens": 17}}
JSON_SCHEMA_FORMAT = {"type": "json_schema",
                      "json_schema": {"name": "math_reasoning", "schema": ANSWER_SCHEMA, "strict": True}}


def structured_request(**fields: Any) -> Dict[str, Any]:
    request = {"model": "GigaChat-2-Max", "messages": [{"role": "system", "content": "You are a math tutor."},
                                                       user("Solve 8x + 7 = -23")],
               "response_format": JSON_SCHEMA_FORMAT}  # type: Dict[str, Any]
    request.update(fields)
    return request


def test_json_schema_sends_a_forced_function_with_the_normalised_schema(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(call_message("math_reasoning", ANSWER, STATE_1), "function_call")
    status, _, body = proxy.chat(structured_request())
    assert status == 200, body
    sent = last_upstream(fake)
    assert [f["name"] for f in sent["functions"]] == ["math_reasoning"]
    assert sent["functions"][0]["parameters"] == normalize_schema(ANSWER_SCHEMA)
    assert sent["function_call"] == {"name": "math_reasoning"}
    assert "response_format" not in sent
    choice = check_completion(body, "GigaChat-2-Max")
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    content = choice["message"]["content"]
    assert isinstance(content, str) and json.loads(content) == ANSWER
    assert schema_errors(json.loads(content), ANSWER_SCHEMA) == []


def test_json_schema_stream_is_one_content_delta_then_stop(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(call_message("math_reasoning", ANSWER, STATE_1), "function_call")
    got = stream_of(proxy, structured_request(stream=True, stream_options={"include_usage": True}))
    assert got.finish_reason == "stop" and got.tool_calls == []
    assert len(got.content_chunks) == 1
    assert json.loads(got.content) == ANSWER and schema_errors(json.loads(got.content), ANSWER_SCHEMA) == []
    assert got.usage is not None


def test_json_schema_answer_given_as_a_json_string_is_returned_as_json(proxy: Any, fake: Any) -> None:
    """§5: arguments have also been seen as a JSON string."""
    fake.enqueue_reply(call_message("math_reasoning", json.dumps(ANSWER), STATE_1), "function_call")
    status, _, body = proxy.chat(structured_request())
    assert status == 200, body
    assert json.loads(body["choices"][0]["message"]["content"]) == ANSWER


ARRAY_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    "title": {"type": "string"}, "year": {"type": "integer"}}, "required": ["title", "year"]}, "minItems": 1}
MOVIES = [{"title": "Solaris", "year": 1972}, {"title": "Stalker", "year": 1979}]


@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_json_schema_array_root_is_wrapped_and_unwrapped(proxy: Any, fake: Any, stream: bool) -> None:
    request = structured_request(response_format={"type": "json_schema", "json_schema": {
        "name": "movies", "schema": ARRAY_SCHEMA, "strict": False}},
        messages=[user("Two films by Tarkovsky")])
    sent_before = len(fake.chat_requests())
    status, _, body = proxy.chat(request)  # learn the wrapping property from what GigaChat receives
    assert status == 200, body
    parameters = fake.chat_requests()[sent_before]["functions"][0]["parameters"]
    assert parameters["type"] == "object" and list(parameters["properties"]) == parameters["required"]
    (wrapper,) = parameters["required"]
    assert parameters["properties"][wrapper] == normalize_schema({"type": "object", "properties": {
        "v": ARRAY_SCHEMA}})["properties"]["v"]
    fake.enqueue_reply(call_message("movies", {wrapper: MOVIES}, STATE_1), "function_call")
    if stream:
        content = stream_of(proxy, dict(request, stream=True)).content
    else:
        status, _, body = proxy.chat(request)
        assert status == 200 and body["choices"][0]["finish_reason"] == "stop"
        content = body["choices"][0]["message"]["content"]
    assert json.loads(content) == MOVIES and schema_errors(json.loads(content), ARRAY_SCHEMA) == []


def test_json_schema_with_tools_adds_the_answer_function_next_to_them(proxy: Any, fake: Any) -> None:
    request = structured_request(tools=THREE_TOOLS)
    fake.enqueue_reply(call_message("read_file", {"path": "notes.md"}, STATE_1), "function_call")
    status, _, body = proxy.chat(request)
    assert status == 200, body
    sent = last_upstream(fake)
    assert [f["name"] for f in sent["functions"]] == ["get_weather", "read_file", "search_code", "math_reasoning"]
    assert sent["function_call"] == "auto"
    assert "math_reasoning" in sent["messages"][0]["content"] and sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are a math tutor.")
    check_tool_call(body["choices"][0]["message"]["tool_calls"][0], "read-file", {"path": "notes.md"}, streamed=False)
    call = body["choices"][0]["message"]["tool_calls"][0]
    fake.enqueue_reply(call_message("math_reasoning", ANSWER, STATE_2), "function_call")
    followup = dict(request, messages=request["messages"] + [
        {"role": "assistant", "content": None, "tool_calls": [call]}, tool_result(call["id"], "8x + 7 = -23")])
    status, _, body = proxy.chat(followup)
    assert status == 200, body
    choice = check_completion(body, "GigaChat-2-Max")
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert json.loads(choice["message"]["content"]) == ANSWER


def test_json_schema_name_colliding_with_a_tool_gets_its_own_function(proxy: Any, fake: Any) -> None:
    request = structured_request(tools=[tool("math_reasoning")])
    status, _, body = proxy.chat(request)
    assert status == 200, body
    names = [f["name"] for f in last_upstream(fake)["functions"]]
    assert names[0] == "math_reasoning" and len(set(names)) == 2


def test_native_structured_output_sends_the_flat_response_format(start_proxy: Any, fake: Any) -> None:
    proxy = start_proxy(GIGAPROXY_STRUCTURED_OUTPUT="native")
    fake.enqueue_reply({"role": "assistant", "content": json.dumps(ANSWER)})
    status, _, body = proxy.chat(structured_request())
    assert status == 200, body
    sent = last_upstream(fake)
    assert sent["response_format"] == {"type": "json_schema", "schema": normalize_schema(ANSWER_SCHEMA),
                                       "strict": True}
    assert "functions" not in sent and "function_call" not in sent
    choice = check_completion(body, "GigaChat-2-Max")
    assert choice["finish_reason"] == "stop"
    assert schema_errors(json.loads(choice["message"]["content"]), ANSWER_SCHEMA) == []


def test_native_strict_schema_gets_the_required_list_gigachat_needs(start_proxy: Any, fake: Any) -> None:
    proxy = start_proxy(GIGAPROXY_STRUCTURED_OUTPUT="native")
    pydantic = schema_fixture("pydantic_create_order")["parameters"]
    loose = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    for schema in (loose, pydantic):
        status, _, body = proxy.chat(structured_request(response_format={
            "type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}))
        assert status == 200, body
        sent = last_upstream(fake)["response_format"]
        assert sent["strict"] is True and isinstance(sent["schema"]["required"], list) and sent["schema"]["required"]
        assert set(sent["schema"]["required"]) <= set(sent["schema"]["properties"])
    assert last_upstream(fake)["response_format"]["schema"] == dict(normalize_schema(pydantic))


def test_json_object_instruction_goes_into_the_system_message(proxy: Any, fake: Any) -> None:
    status, _, body = proxy.chat({"model": "GigaChat-2", "response_format": {"type": "json_object"},
                                  "messages": [{"role": "system", "content": "Extract the city."},
                                               user("I live in Kazan.")]})
    assert status == 200, body
    sent = last_upstream(fake)["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith("Extract the city.")
    assert gigaproxy.JSON_OBJECT_INSTRUCTION in sent[0]["content"]
    assert sent[1:] == [user("I live in Kazan.")]
    assert "functions" not in last_upstream(fake) and "response_format" not in last_upstream(fake)


JSON_OBJECT_REPLIES = [
    ("{\"city\": \"Kazan\"}", {"city": "Kazan"}),
    ("```json\n{\"city\": \"Kazan\", \"tags\": [1, 2]}\n```", {"city": "Kazan", "tags": [1, 2]}),
    ("```\n{\"city\": \"Kazan\"}\n```", {"city": "Kazan"}),
    ("Sure! Here is the JSON:\n{\"city\": \"Kazan\", \"nested\": {\"a\": 1}}\nAnything else?",
     {"city": "Kazan", "nested": {"a": 1}}),
    ("I could not find a city in the text.", {"response": "I could not find a city in the text."}),
    ("[\"Kazan\"]", {"response": "[\"Kazan\"]"}),
]


@pytest.mark.parametrize("reply, expected", JSON_OBJECT_REPLIES,
                         ids=["clean", "fenced_json", "fenced", "prose_wrapped", "no_json", "array"])
@pytest.mark.parametrize("stream", [False, True], ids=["non_stream", "stream"])
def test_json_object_answers_come_back_as_clean_objects(proxy: Any, fake: Any, reply: str, expected: Any,
                                                         stream: bool) -> None:
    fake.enqueue_reply({"role": "assistant", "content": reply})
    request = {"model": "GigaChat-2", "response_format": {"type": "json_object"}, "messages": [user("city?")]}
    if stream:
        got = stream_of(proxy, request)
        assert got.finish_reason == "stop"
        assert len(got.content_chunks) == 1, "JSON-object mode holds the text and sends it once"
        content = got.content
    else:
        status, _, body = proxy.chat(request)
        assert status == 200, body
        choice = check_completion(body, "GigaChat-2")
        assert choice["finish_reason"] == "stop"
        content = choice["message"]["content"]
    value = json.loads(content)
    assert isinstance(value, dict) and value == expected


def test_json_object_stream_split_into_many_chunks_sends_one(proxy: Any, fake: Any) -> None:
    fake.enqueue_reply(chunks=["```json\n{\"ci", "ty\": \"Ka", "zan\", ", "\"ok\": true}", "\n```"])
    got = stream_of(proxy, {"model": "GigaChat-2", "response_format": {"type": "json_object"},
                            "messages": [user("city?")], "stream_options": {"include_usage": True}})
    assert len(got.content_chunks) == 1 and json.loads(got.content) == {"city": "Kazan", "ok": True}


# ==========================================================================
# conversation fixtures: each client of clients.md, turn by turn
# ==========================================================================
CLIENTS = sorted(name for name in os.listdir(CONVERSATIONS) if os.path.isdir(os.path.join(CONVERSATIONS, name)))


def test_conversation_fixtures_cover_every_client_and_feature() -> None:
    assert set(CLIENTS) == {"aider", "cline", "continue", "langchain", "open_webui", "openai_sdk", "roo_code"}
    seen = set()
    for client in CLIENTS:
        for turn in load_json(CONVERSATIONS, client, "conversation.json")["turns"]:
            request = load_json(CONVERSATIONS, client, turn["request"])
            for message in request["messages"]:
                if isinstance(message.get("content"), list):
                    seen.add("content parts")
                if message["role"] == "developer":
                    seen.add("developer role")
            for key in ("stream", "stream_options", "max_completion_tokens", "tools"):
                if request.get(key):
                    seen.add(key)
            if request.get("parallel_tool_calls") is False:
                seen.add("parallel_tool_calls false")
            if request.get("temperature") == 0:
                seen.add("temperature 0")
            if turn["gigachat_reply"]["finish_reason"] == "function_call":
                seen.add("tool call")
    assert seen >= {"content parts", "developer role", "stream", "stream_options", "max_completion_tokens", "tools",
                    "parallel_tool_calls false", "temperature 0", "tool call"}


def check_gigachat_side(sent: Dict[str, Any], expect: Dict[str, Any]) -> None:
    if "roles" in expect:
        assert [m["role"] for m in sent["messages"]] == expect["roles"]
    if "function_call" in expect:
        assert sent.get("function_call") == expect["function_call"]
    if "functions" in expect:
        assert [f["name"] for f in sent["functions"]] == expect["functions"]
    for key, value in expect.get("fields", {}).items():
        assert sent.get(key) == value, key
    for key in expect.get("absent", []):
        assert key not in sent, key
    calls = [m for m in sent["messages"] if m.get("function_call")]
    results = [m for m in sent["messages"] if m["role"] == "function"]
    if "state_ids" in expect:
        assert [m.get("functions_state_id") for m in calls] == expect["state_ids"]
    if "calls" in expect:
        assert [m["function_call"] for m in calls] == expect["calls"]
    if "results" in expect:
        assert [r["name"] for r in results] == [e["name"] for e in expect["results"]]
        for got, want in zip(results, expect["results"]):
            if "content" in want:
                assert json.loads(got["content"]) == want["content"]
    for result in results:
        assert isinstance(json.loads(result["content"]), dict)


@pytest.mark.parametrize("client", CLIENTS)
def test_client_conversation(proxy: Any, fake: Any, client: str) -> None:
    conversation = load_json(CONVERSATIONS, client, "conversation.json")
    headers = conversation.get("headers")
    call_ids = {}  # type: Dict[int, str]
    for number, turn in enumerate(conversation["turns"], 1):
        with open(os.path.join(CONVERSATIONS, client, turn["request"]), encoding="utf-8") as f:
            text = f.read()
        for earlier, call_id in call_ids.items():
            text = text.replace("$CALL_ID_%d" % earlier, call_id)
        assert "$CALL_ID_" not in text, "turn %d refers to a call that did not happen" % number
        request = json.loads(text)
        reply = turn["gigachat_reply"]
        fake.enqueue_reply(reply["message"], reply["finish_reason"])
        expect = turn["expect"]
        where = "%s turn %d" % (client, number)
        if request.get("stream"):
            status, _, payloads = proxy.request("POST", "/v1/chat/completions", request, headers=headers)
            assert status == 200, (where, payloads)
            got = Streamed(sse_payloads(payloads), request["model"],
                           bool((request.get("stream_options") or {}).get("include_usage")))
            finish, content, calls = got.finish_reason, got.content, got.tool_calls
        else:
            status, _, body = proxy.chat(request, headers=headers)
            assert status == 200, (where, body)
            choice = check_completion(body, request["model"])
            finish, content = choice["finish_reason"], choice["message"]["content"]
            calls = choice["message"].get("tool_calls") or []
        check_gigachat_side(last_upstream(fake), turn["gigachat_expect"])
        assert finish == expect["finish_reason"], where
        if "tool_calls" in expect:
            assert len(calls) == len(expect["tool_calls"]) == 1, where
            check_tool_call(calls[0], expect["tool_calls"][0]["name"], expect["tool_calls"][0]["arguments"],
                            streamed=bool(request.get("stream")))
            state = reply["message"].get("functions_state_id")
            if state:
                assert calls[0]["id"] == "call_" + state
            call_ids[number] = calls[0]["id"]
            if request.get("stream"):
                assert content == expect.get("content", "")
            else:
                assert content is None
        else:
            assert calls == [], where
            if "json_content" in expect:
                assert json.loads(content) == expect["json_content"]
                assert schema_errors(json.loads(content), expect["schema"]) == []
            else:
                assert content == expect["content"], where
    assert len(upstream(fake)) == len(conversation["turns"])


# ==========================================================================
# a multi-turn agent loop
# ==========================================================================
PATH_ONLY = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
AGENT_TOOLS = [
    tool("fs.read_file", "Read a file", PATH_ONLY),
    tool("list_dir", "List a directory", PATH_ONLY),
    tool("run_tests", "Run the test suite", {"type": "object", "properties": {
        "args": {"type": ["array", "null"], "items": {"type": "string"}}}, "required": []}),
    tool("write_file", "Write a file", {"type": "object", "properties": {
        "path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"],
        "additionalProperties": False}),
]


def test_agent_loop_three_streamed_tool_rounds(proxy: Any, fake: Any) -> None:
    """A Cline-like agent, streamed, over real sockets: the session began on another model
    whose two parallel calls (with its own ids) are in the history; then three GigaChat
    tool rounds (one call without a state id) and a final text answer."""
    messages = [
        {"role": "system", "content": "You are a coding agent. Use the tools."},
        {"role": "user", "content": [{"type": "text", "text": "Fix the failing test in this repo."}]},
        {"role": "assistant", "content": "Let me look at the code first.", "tool_calls": [
            {"id": "call_Xq3kz9LmP0aB7cD1eF2gH3iJ", "type": "function",
             "function": {"name": "fs.read_file", "arguments": "{\"path\":\"src/calc.py\"}"}},
            {"id": "call_Yr4la0MnQ1bC8dE2fG3hI4jK", "type": "function",
             "function": {"name": "fs.read_file", "arguments": "{\"path\":\"tests/test_calc.py\"}"}}]},
        tool_result("call_Yr4la0MnQ1bC8dE2fG3hI4jK", "def test_add():\n    assert add(2, 2) == 4\n"),
        tool_result("call_Xq3kz9LmP0aB7cD1eF2gH3iJ", "def add(a, b):\n    return a - b\n"),
    ]
    rounds = [
        (call_message("run_tests", {"args": ["-q"]}, STATE_1, content="I'll run the tests."), "run_tests",
         {"args": ["-q"]}, "1 failed: test_add (assert 0 == 4)"),
        (call_message("fs_read_file", {"path": "src/calc.py"}, STATE_2), "fs.read_file",
         {"path": "src/calc.py"}, "def add(a, b):\n    return a - b\n"),
        (call_message("write_file", {"path": "src/calc.py", "content": "def add(a, b):\n    return a + b\n"}),
         "write_file", {"path": "src/calc.py", "content": "def add(a, b):\n    return a + b\n"}, "{\"written\": 33}"),
    ]
    request = {"model": "GigaChat-2-Max", "stream": True, "stream_options": {"include_usage": True},
               "tools": AGENT_TOOLS, "tool_choice": "auto", "parallel_tool_calls": False}
    seen = []  # type: List[Dict[str, Any]]
    for reply, name, arguments, result in rounds:
        fake.enqueue_reply(reply, "function_call")
        got = stream_of(proxy, dict(request, messages=messages))
        assert got.finish_reason == "tool_calls" and len(got.tool_calls) == 1
        call = got.tool_calls[0]
        check_tool_call(call, name, arguments, streamed=True)
        seen.append(call)
        messages = messages + [
            {"role": "assistant", "content": got.content or None,
             "tool_calls": [{"id": call["id"], "type": "function", "function": call["function"]}]},
            tool_result(call["id"], result)]
    fake.enqueue_reply(chunks=["Fixed: ", "`add` now returns ", "`a + b`; ", "the test passes."])
    final = stream_of(proxy, dict(request, messages=messages))
    assert (final.finish_reason, final.tool_calls) == ("stop", [])
    assert final.content == "Fixed: `add` now returns `a + b`; the test passes."

    assert seen[0]["id"] == "call_" + STATE_1 and seen[1]["id"] == "call_" + STATE_2
    assert seen[2]["id"].startswith("call_") and gigaproxy.state_id_from_call_id(seen[2]["id"]) is None
    assert len({c["id"] for c in seen}) == 3
    assert [c["function"]["name"] for c in seen] == ["run_tests", "fs.read_file", "write_file"]

    bodies = upstream(fake)
    assert len(bodies) == 4 and all(b["stream"] is True for b in bodies)
    last = bodies[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user"] + ["assistant", "function"] * 5
    calls, results = last[2::2], last[3::2]
    assert [c["function_call"]["name"] for c in calls] == ["fs_read_file", "fs_read_file", "run_tests",
                                                           "fs_read_file", "write_file"]
    assert [c["function_call"]["arguments"] for c in calls[:2]] == [{"path": "src/calc.py"},
                                                                    {"path": "tests/test_calc.py"}]
    assert [c.get("functions_state_id") for c in calls] == [None, None, STATE_1, STATE_2, None]
    assert [r["name"] for r in results] == ["fs_read_file", "fs_read_file", "run_tests", "fs_read_file", "write_file"]
    assert json.loads(results[0]["content"]) == {"result": "def add(a, b):\n    return a - b\n"}
    assert json.loads(results[1]["content"]) == {"result": "def test_add():\n    assert add(2, 2) == 4\n"}
    assert json.loads(results[4]["content"]) == {"written": 33}
    assert calls[0]["content"] == "Let me look at the code first." and calls[2]["content"] == "I'll run the tests."
    for body in bodies:  # every round carried the same functions and the whole history so far
        assert [f["name"] for f in body["functions"]] == ["fs_read_file", "list_dir", "run_tests", "write_file"]
        assert body["function_call"] == "auto"


# ==========================================================================
# legacy functions, Aider's unanswered calls, schema size
# ==========================================================================
def test_legacy_functions_client_gets_function_call_back(proxy: Proxy, fake: FakeGigaChat) -> None:
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {"name": "get_time", "arguments": {}}},
                       finish_reason="function_call")
    body = {"model": "gigachat-max", "messages": [user("time?")],
            "functions": [{"name": "get_time", "parameters": {"type": "object", "properties": {}}}]}
    status, _, reply = proxy.chat(body)
    assert status == 200
    message = reply["choices"][0]["message"]
    assert message["function_call"] == {"name": "get_time", "arguments": "{}"}
    assert "tool_calls" not in message and message["content"] is None
    assert reply["choices"][0]["finish_reason"] == "function_call"
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {"name": "get_time", "arguments": {}}},
                       finish_reason="function_call")
    events = [e for e in sse_payloads(proxy.request("POST", "/v1/chat/completions", dict(body, stream=True))[2])
              if isinstance(e, dict)]
    calls = [e["choices"][0]["delta"]["function_call"] for e in events if "function_call" in e["choices"][0]["delta"]]
    assert calls == [{"name": "get_time", "arguments": "{}"}]
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"]] == ["function_call"]


def test_legacy_call_without_a_result_becomes_text() -> None:
    body = gigaproxy.to_gigachat_request({"model": "GigaChat-2", "messages": [
        {"role": "user", "content": "edit it"},
        {"role": "assistant", "content": None, "function_call": {"name": "replace_lines", "arguments": '{"a": 1}'}},
        {"role": "user", "content": "I committed the changes."},
        {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": "next"}]})
    assert body["messages"][1] == {"role": "assistant", "content": '[called replace_lines with {"a": 1}]'}
    validate_chat_request(body, DEFAULT_MODELS)


def test_reference_fan_out_stays_bounded() -> None:
    defs = {"L%d" % i: {"type": "object", "properties": {"p%d" % k: {"$ref": "#/$defs/L%d" % (i + 1)}
                                                         for k in range(8)}} for i in range(10)}
    defs["L10"] = {"type": "string"}
    out = normalize_schema({"type": "object", "properties": {"root": {"$ref": "#/$defs/L0"}}, "$defs": defs})
    assert len(json.dumps(out)) < 500000
    assert_gigachat_accepts_schema(out)
