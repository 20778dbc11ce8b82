"""gigaproxy's Gemini API over real sockets: the raw stream Gemini CLI parses, Google's error
envelope and key handling, and the real google-genai SDK (installed outside the repo).

Against the fake GigaChat; the SDK's tests skip when it is not installed.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from conftest import API_KEY

STATE_A = "5b0c9d0e-8a71-4c53-9d1e-2f3a4b5c6d7e"
WRITE_FILE = {"name": "write_file", "description": "Writes a file", "parametersJsonSchema": {
    "type": "object", "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
    "required": ["file_path", "content"]}}
STREAM = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"


def sse_chunks(data: bytes) -> List[Dict[str, Any]]:
    """The chunks of a Gemini SSE body, checked the way Gemini CLI's parser reads them."""
    text = data.decode("utf-8")
    assert text.endswith("\r\n\r\n") and "[DONE]" not in text and "event:" not in text
    chunks = []
    for event in text.split("\r\n\r\n")[:-1]:
        assert event.startswith("data: ") and "\n" not in event, event
        chunks.append(json.loads(event[6:]))
    return chunks


def stream(proxy, body: Dict[str, Any]) -> List[Dict[str, Any]]:
    status, headers, data = proxy.request("POST", STREAM, body, headers={"x-goog-api-key": "unused"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream"), data
    return sse_chunks(data)


def test_a_streamed_text_answer_is_one_chunk_per_event_the_last_with_finish_and_usage(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "раз два"}, chunks=["раз", " два"])
    chunks = stream(proxy, {"contents": [{"role": "user", "parts": [{"text": "считай"}]}]})
    text = "".join(p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == "раз два"
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] > 0 and chunks[-1]["modelVersion"]


def test_thoughts_come_first_when_asked_for(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "Hi", "reasoning_content": "hmm"}, chunks=["Hi"])
    chunks = stream(proxy, {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                            "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 8192}}})
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert parts[0] == {"text": "hmm", "thought": True}
    assert "".join(p["text"] for p in parts[1:]) == "Hi"


def test_a_function_call_then_its_response_round_trip_keeps_gigachats_state(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "write_file", "arguments": {"file_path": "/tmp/e.txt", "content": "E"}},
        "functions_state_id": STATE_A}, finish_reason="function_call")
    chunks = stream(proxy, {"contents": [{"role": "user", "parts": [{"text": "write it"}]}],
                            "tools": [{"functionDeclarations": [WRITE_FILE]}, {"googleSearch": {}}]})
    calls = [p["functionCall"] for c in chunks for p in c["candidates"][0]["content"]["parts"] if "functionCall" in p]
    assert calls == [{"name": "write_file", "args": {"file_path": "/tmp/e.txt", "content": "E"},
                      "id": "call_" + STATE_A}]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    # Gemini CLI echoes the call back under an id of its own, with a thought signature
    fake.enqueue_reply({"role": "assistant", "content": "Done."})
    chunks = stream(proxy, {"contents": [
        {"role": "user", "parts": [{"text": "write it"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "write_file_1796541181499_0", "name": "write_file",
                                                      "args": {"file_path": "/tmp/e.txt", "content": "E"}},
                                     "thoughtSignature": "c2tpcA=="}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "write_file_1796541181499_0", "name": "write_file",
                                                         "response": {"output": "Successfully wrote"}}}]}],
        "tools": [{"functionDeclarations": [WRITE_FILE]}]})
    sent = fake.chat_requests()[-1]["messages"]
    assert sent[-2]["function_call"]["name"] == "write_file" and sent[-1]["role"] == "function"
    assert json.loads(sent[-1]["content"]) == {"output": "Successfully wrote"}


def test_errors_keys_and_the_shared_models_route(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_API_KEY=API_KEY)
    status, _, body = proxy.json("POST", STREAM, {"contents": []})
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED" and body["error"]["code"] == 401
    status, _, body = proxy.json("POST", "/v1beta/models/x:generateContent?key=" + API_KEY, {"contents": "nope"})
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    status, _, body = proxy.json("GET", "/v1beta/models", headers={"x-goog-api-key": API_KEY})
    assert status == 200 and any(m["name"] == "models/gigachat-max" for m in body["models"])
    status, _, body = proxy.json("GET", "/v1/models", headers={"x-goog-api-key": API_KEY})
    assert status == 200 and "models" in body  # the Google way of asking gets Google's shape
    status, _, body = proxy.json("GET", "/v1/models", headers={"Authorization": "Bearer " + API_KEY})
    assert status == 200 and body["object"] == "list"  # and OpenAI's gets OpenAI's
    status, _, body = proxy.json("POST", "/v1beta/models/x:predict", {}, headers={"x-goog-api-key": API_KEY})
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    assert all(API_KEY not in rec.path and API_KEY not in json.dumps(rec.headers) for rec in fake.requests)


# ---- the google-genai SDK -----------------------------------------------------------------------


def client_for(proxy):
    genai = pytest.importorskip("google.genai")
    return genai.Client(api_key="unused", http_options={"base_url": "http://127.0.0.1:%d" % proxy.port,
                                                       "timeout": 30000})


def test_google_genai_generate_content_and_stream(proxy, fake):
    client = client_for(proxy)
    reply = client.models.generate_content(model="gemini-2.5-pro", contents="Привет")
    assert reply.text == "Echo: Привет" and reply.candidates[0].finish_reason.name == "STOP"
    assert reply.usage_metadata.total_token_count > 0
    fake.enqueue_reply({"role": "assistant", "content": "раз два три"}, chunks=["раз", " два", " три"])
    text = "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="считай"))
    assert text == "раз два три"


def test_google_genai_function_calling_loop(proxy, fake):
    types = pytest.importorskip("google.genai.types")
    client = client_for(proxy)
    declaration = types.FunctionDeclaration(name="get_weather", description="Weather in a city",
                                            parameters=types.Schema(type="OBJECT", properties={
                                                "city": types.Schema(type="STRING")}, required=["city"]))
    config = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[declaration])])
    fake.enqueue_reply({"role": "assistant", "content": "", "function_call": {
        "name": "get_weather", "arguments": {"city": "Paris"}}, "functions_state_id": STATE_A},
        finish_reason="function_call")
    contents = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])]
    first = client.models.generate_content(model="gemini-2.5-pro", contents=contents, config=config)
    call = first.function_calls[0]
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    contents += [first.candidates[0].content,
                 types.Content(role="user", parts=[types.Part.from_function_response(
                     name="get_weather", response={"temperature": "21C"})])]
    fake.enqueue_reply({"role": "assistant", "content": "21C in Paris."})
    second = client.models.generate_content(model="gemini-2.5-pro", contents=contents, config=config)
    assert second.text == "21C in Paris."
    sent = fake.chat_requests()[-1]
    assert sent["messages"][-2]["functions_state_id"] == STATE_A
    assert json.loads(sent["messages"][-1]["content"]) == {"temperature": "21C"}


def test_google_genai_count_tokens_embeddings_and_models(proxy, fake):
    client = client_for(proxy)
    assert client.models.count_tokens(model="gemini-2.5-pro", contents="hello there").total_tokens > 0
    embedded = client.models.embed_content(model="text-embedding-004", contents=["one", "two"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0].values) > 0
    assert fake.requests[-1].json["model"] == proxy.server.config.embeddings_model
    names = [m.name for m in client.models.list()]
    assert "models/gigachat-max" in names
