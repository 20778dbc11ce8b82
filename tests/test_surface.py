"""The rest of the OpenAI surface: stop sequences, n, legacy completions, embeddings, extras."""

from __future__ import annotations

import base64
import json
import struct
import threading

import pytest

import gigaproxy
from gigaproxy import StopFilter, cut_at_stop

HELLO = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hello"}]}
CHAT = "/api/v1/chat/completions"


def stream_text(events):
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                   if isinstance(e, dict) and e.get("choices"))


# ---- stop sequences -------------------------------------------------------------------


def test_cut_at_stop_takes_the_earliest_sequence():
    assert cut_at_stop("abc STOP def END", ("END", "STOP")) == ("abc ", True)
    assert cut_at_stop("nothing here", ("STOP",)) == ("nothing here", False)
    assert cut_at_stop("STOP at once", ("STOP",)) == ("", True)


@pytest.mark.parametrize("pieces", [
    ["Hello wo", "rld ST", "OP and more"],
    ["Hello world S", "T", "O", "P", " more"],
    ["Hello world STOP", " more"],
    ["Hello world ", "STOP more"],
])
def test_stop_filter_never_emits_the_sequence_even_across_chunks(pieces):
    stop_filter = StopFilter(("STOP",))
    emitted = [stop_filter.feed(p) for p in pieces]
    assert "".join(emitted) == "Hello world "
    assert stop_filter.stopped
    assert not any("STOP" in "".join(emitted[:i + 1]) for i in range(len(emitted)))


def test_stop_filter_holds_back_only_a_possible_start():
    stop_filter = StopFilter(("\n\n", "END"))
    assert stop_filter.feed("abc") == "abc"  # nothing can start a stop here
    assert stop_filter.feed("def\n") == "def"  # "\n" might start "\n\n"
    assert stop_filter.feed("x E") == "\nx "  # it did not; "E" might start "END"
    assert stop_filter.feed("ND tail") == ""  # it did
    assert stop_filter.stopped


def test_stop_filter_flushes_what_it_held_when_no_stop_came():
    stop_filter = StopFilter(("STOP",))
    assert stop_filter.feed("almost ST") == "almost "
    assert stop_filter.flush() == "ST"
    assert not stop_filter.stopped


def test_non_stream_stop_cuts_and_keeps_honest_usage(proxy, fake):
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    fake.enqueue_reply({"role": "assistant", "content": "first line\n\nsecond line"}, finish_reason="length",
                       usage=usage)
    status, _, body = proxy.chat(dict(HELLO, stop="\n\n"))
    assert status == 200
    choice = body["choices"][0]
    assert choice["message"]["content"] == "first line"
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 9  # what GigaChat generated, and bills
    assert "stop" not in fake.chat_requests()[0]


def test_stream_stop_spanning_chunks_and_upstream_closed(proxy, fake):
    release = threading.Event()
    fake.enqueue_reply({"role": "assistant", "content": "Hello world STOP and more text"},
                       chunks=["Hello wo", "rld ST", "OP and", " more", " text"])
    # After the stop sequence GigaChat would go on; the fake holds its next event forever.
    fake.add_fault("hold", after_events=4, release=release, timeout=10)
    try:
        status, _, events = proxy.stream(dict(HELLO, stop=["STOP", "never"],
                                              stream_options={"include_usage": True}))
    finally:
        release.set()
    assert status == 200
    assert events[-1] == "[DONE]"
    assert stream_text(events) == "Hello world "
    finishes = [e["choices"][0]["finish_reason"] for e in events[:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
    assert finishes == ["stop"]
    raw = json.dumps([e["choices"][0]["delta"] for e in events[:-1] if e["choices"]])
    assert "ST\"" not in raw and "STOP" not in raw
    # Which sequence ended the text is named in vLLM's field on the finish chunk only.
    assert [e["choices"][0].get("stop_reason") for e in events[:-1] if e["choices"]][-1] == "STOP"
    # GigaChat had not reported usage yet: no usage numbers are made up.
    assert all(e["choices"] for e in events[:-1])


def test_stream_without_a_stop_match_is_untouched(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "a b c S"}, chunks=["a", " b", " c", " S"])
    _, _, events = proxy.stream(dict(HELLO, stop=["STOP"], stream_options={"include_usage": True}))
    assert stream_text(events) == "a b c S"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("stop,param", [
    (["a", "b", "c", "d", "e"], "stop"), (5, "stop"), (["ok", 5], "stop[1]"),
])
def test_bad_stop_values(proxy, stop, param):
    status, _, body = proxy.chat(dict(HELLO, stop=stop))
    assert status == 400 and body["error"]["param"] == param


# ---- n --------------------------------------------------------------------------------


def test_n_choices_come_from_parallel_calls(proxy, fake):
    for text in ("one", "two", "three"):
        fake.enqueue_reply({"role": "assistant", "content": text},
                           usage={"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3})
    status, _, body = proxy.chat(dict(HELLO, n=3))
    assert status == 200
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert sorted(c["message"]["content"] for c in body["choices"]) == ["one", "three", "two"]
    assert body["usage"]["total_tokens"] == 9 and body["usage"]["prompt_tokens"] == 6
    assert len(fake.chat_requests()) == 3
    assert all("n" not in r for r in fake.chat_requests())


def test_n_stream_and_too_many_are_refused(proxy, fake):
    assert proxy.chat(dict(HELLO, n=2, stream=True))[0] == 400
    assert proxy.chat(dict(HELLO, n=gigaproxy.MAX_CHOICES + 1))[0] == 400
    assert fake.chat_requests() == []


# ---- legacy completions ---------------------------------------------------------------


def test_completions_answer_as_text_completion(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": " world"})
    status, _, body = proxy.json("POST", "/v1/completions", {"model": "gigachat", "prompt": "hello",
                                                             "max_tokens": 5, "stop": ["\n"]})
    assert status == 200
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == "gigachat"
    assert body["choices"] == [{"text": " world", "index": 0, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["total_tokens"] > 0
    sent = fake.chat_requests()[0]
    assert sent["messages"][-1] == {"role": "user", "content": "hello"}
    assert sent["max_tokens"] == 5 and "stop" not in sent


def test_completions_echo_and_fill_in_the_middle(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "return a + b"})
    _, _, body = proxy.json("POST", "/v1/completions", {"model": "gigachat", "prompt": "def add(a, b):\n    ",
                                                        "suffix": "\n\nprint(add(1, 2))", "echo": True})
    assert body["choices"][0]["text"] == "def add(a, b):\n    return a + b"
    sent = fake.chat_requests()[0]["messages"]
    assert sent[-1]["content"] == "def add(a, b):\n    <FILL>\n\nprint(add(1, 2))"
    assert "<FILL>" in sent[0]["content"]


def test_completions_stream(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "one two"}, chunks=["one", " two"])
    status, _, data = proxy.request("POST", "/v1/completions", {"model": "gigachat", "prompt": "count:",
                                                                "stream": True, "echo": True})
    from conftest import sse_payloads
    events = sse_payloads(data)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == "count:one two"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_with_several_prompts(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "A"})
    fake.enqueue_reply({"role": "assistant", "content": "B"})
    _, _, body = proxy.json("POST", "/v1/completions", {"prompt": ["x", "y"]})
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert sorted(c["text"] for c in body["choices"]) == ["A", "B"]


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2]], None, 5, []])
def test_completions_refuse_token_ids_and_junk(proxy, prompt):
    status, _, body = proxy.json("POST", "/v1/completions", {"prompt": prompt})
    assert status == 400 and body["error"]["param"] == "prompt"


# ---- embeddings -----------------------------------------------------------------------


def test_embeddings_single_and_list(proxy, fake):
    status, _, body = proxy.json("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi there"})
    assert status == 200
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert len(body["data"]) == 1 and body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert len(body["data"][0]["embedding"]) == 8
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    embeddings_calls = [r for r in fake.requests if r.path == "/api/v1/embeddings"]
    assert embeddings_calls[0].json == {"model": "Embeddings", "input": ["hi there"]}
    _, _, listed = proxy.json("POST", "/v1/embeddings", {"model": "Embeddings-2", "input": ["a", "b c"]})
    assert [d["index"] for d in listed["data"]] == [0, 1]
    assert listed["usage"]["prompt_tokens"] == 3
    assert [r for r in fake.requests if r.path == "/api/v1/embeddings"][-1].json["model"] == "Embeddings-2"


def test_embeddings_base64_is_little_endian_float32(proxy):
    _, _, floats = proxy.json("POST", "/v1/embeddings", {"input": "same text"})
    _, _, packed = proxy.json("POST", "/v1/embeddings", {"input": "same text", "encoding_format": "base64"})
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack("<%df" % (len(raw) // 4), raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)


def test_embeddings_large_input_is_batched_in_order(proxy, fake):
    texts = ["text number %d" % i for i in range(200)]
    status, _, body = proxy.json("POST", "/v1/embeddings", {"input": texts})
    assert status == 200
    calls = [r.json["input"] for r in fake.requests if r.path == "/api/v1/embeddings"]
    assert [len(c) for c in calls] == [90, 90, 20]
    assert sum(calls, []) == texts
    _, _, single = proxy.json("POST", "/v1/embeddings", {"input": texts[137]})
    assert body["data"][137]["embedding"] == single["data"][0]["embedding"]
    assert [d["index"] for d in body["data"]] == list(range(200))
    assert body["usage"]["prompt_tokens"] == 600


@pytest.mark.parametrize("request_body,param", [
    ({"input": []}, "input"), ({"input": ""}, "input"), ({"input": [1, [2]]}, "input"),  # token ids: test_tiktoken
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": "8"}, "dimensions"), ({"input": "x", "model": 3}, "model"),
])
def test_embeddings_bad_requests(proxy, fake, request_body, param):
    status, _, body = proxy.json("POST", "/v1/embeddings", request_body)
    assert status == 400 and body["error"]["param"] == param
    assert not [r for r in fake.requests if r.path == "/api/v1/embeddings"]


def test_embeddings_dimensions_must_match_the_model(proxy):
    assert proxy.json("POST", "/v1/embeddings", {"input": "x", "dimensions": 8})[0] == 200
    status, _, body = proxy.json("POST", "/v1/embeddings", {"input": "x", "dimensions": 256})
    assert status == 400 and "8-dimensional" in body["error"]["message"]


# ---- images ---------------------------------------------------------------------------

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def image_message(text, url=PNG_URL):
    return {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}


def test_image_is_uploaded_and_attached(proxy, fake):
    status, _, body = proxy.chat({"model": "gigachat-max", "messages": [image_message("what is this?")]})
    assert status == 200, body
    uploads = [r for r in fake.requests if r.path == "/api/v1/files"]
    assert len(uploads) == 1 and uploads[0].status == 200
    assert uploads[0].headers["content-type"].startswith("multipart/form-data; boundary=")
    (file_id, stored), = fake.files.items()
    assert stored["data"] == PNG and stored["mime"] == "image/png"
    sent = fake.chat_requests()[0]
    assert sent["model"] == "GigaChat-2-Max"
    assert sent["messages"] == [{"role": "user", "content": "what is this?", "attachments": [file_id]}]


def test_the_same_image_in_a_growing_conversation_is_uploaded_once(proxy, fake):
    history = [image_message("first look")]
    for turn in range(3):
        status, _, body = proxy.chat({"model": "gigachat-pro", "messages": history})
        assert status == 200
        history += [{"role": "assistant", "content": body["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "and now? %d" % turn}]
    assert len([r for r in fake.requests if r.path == "/api/v1/files"]) == 1
    assert len(fake.files) == 1


def test_images_are_scoped_by_client_id(proxy, fake):
    for client in ("alice", "bob"):
        status, _, _ = proxy.chat({"model": "gigachat-max", "messages": [image_message("x")]},
                                  headers={"X-Client-ID": client})
        assert status == 200
    assert len(fake.files) == 2


@pytest.mark.parametrize("messages,model,fragment,param", [
    ([image_message("x")], "gigachat", "does not accept images", "model"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG_URL}},
                                   {"type": "image_url", "image_url": {"url": PNG_URL}}]}],
     "gigachat-max", "one image per message", "messages[0].content"),
    ([image_message("m%d" % i) for i in range(11)], "gigachat-max", "at most 10", "messages"),
    ([image_message("x", "data:image/webp;base64,UklGRg==")], "gigachat-max", "image/webp", None),
    ([image_message("x", "data:image/gif;base64,R0lGODlh")], "gigachat-max", "image/gif", None),
    ([image_message("x", "data:image/png;base64,@@@not base64@@@")], "gigachat-max", "not valid base64", None),
    ([image_message("x", "ftp://example.com/a.png")], "gigachat-max", "data: URL", None),
    ([image_message("x", "https://example.com/a.png")], "gigachat-max", "GIGAPROXY_ALLOW_IMAGE_URLS", None),
])
def test_image_limits_are_a_clear_400(proxy, fake, messages, model, fragment, param):
    status, _, body = proxy.chat({"model": model, "messages": messages})
    assert status == 400, body
    assert fragment in body["error"]["message"]
    if param:
        assert body["error"]["param"] == param
    else:
        assert body["error"]["param"].startswith("messages[0].content[")
    assert fake.chat_requests() == [] and not fake.files


def test_image_over_the_size_cap(proxy, fake, monkeypatch):
    monkeypatch.setattr(gigaproxy, "MAX_IMAGE_BYTES", 64)
    big = "data:image/png;base64," + base64.b64encode(PNG + b"\0" * 100).decode()
    status, _, body = proxy.chat({"model": "gigachat-max", "messages": [image_message("x", big)]})
    assert status == 400 and "MB limit" in body["error"]["message"]


def test_image_urls_refuse_private_addresses_even_when_allowed(start_proxy, fake):
    proxy = start_proxy(GIGAPROXY_ALLOW_IMAGE_URLS="true")
    for url in ("http://127.0.0.1:1/a.png", "http://localhost/a.png", "http://10.1.2.3/a.png",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/a.png", "http://[::ffff:127.0.0.1]/a.png"):
        status, _, body = proxy.chat({"model": "gigachat-max", "messages": [image_message("x", url)]})
        assert status == 400, url
        assert body["error"]["code"] == "image_url_refused", (url, body)
    assert not fake.files


def test_image_url_fetch_when_allowed(start_proxy, fake, monkeypatch):
    import http.server

    class Images(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/a.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)
            else:
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1/secret")
                self.send_header("Content-Length", "0")
                self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Loopback stands in for a public host here; the address check itself is tested above.
    monkeypatch.setattr(gigaproxy, "_public_address", lambda address: True)
    try:
        proxy = start_proxy(GIGAPROXY_ALLOW_IMAGE_URLS="true")
        base = "http://127.0.0.1:%d" % server.server_address[1]
        status, _, body = proxy.chat({"model": "gigachat-max", "messages": [image_message("x", base + "/a.png")]})
        assert status == 200, body
        assert list(fake.files.values())[0]["data"] == PNG
        status, _, body = proxy.chat({"model": "gigachat-max", "messages": [image_message("x", base + "/moved")]})
        assert status == 400 and "redirects are not followed" in body["error"]["message"]
    finally:
        server.shutdown()
        server.server_close()


# ---- GigaChat extras ------------------------------------------------------------------


def test_balance_and_tokens_count_pass_through(proxy, fake):
    status, _, body = proxy.json("GET", "/v1/balance")
    assert status == 200 and body == {"balance": fake.balance}
    status, _, body = proxy.json("POST", "/v1/tokens/count", {"model": "gigachat-max", "input": "two words"})
    assert status == 200 and body == [{"object": "tokens", "tokens": 2, "characters": 9}]
    sent = [r for r in fake.requests if r.path == "/api/v1/tokens/count"][0].json
    assert sent == {"model": "GigaChat-2-Max", "input": ["two words"]}
    assert proxy.json("POST", "/v1/tokens/count", {"input": 5})[0] == 400
