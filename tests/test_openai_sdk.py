"""The real openai SDK (installed outside the repo) chats through gigaproxy, streamed and not."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")


def client_for(proxy):
    return openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0, timeout=30)


def test_openai_sdk_chat(proxy, fake):
    reply = client_for(proxy).chat.completions.create(
        model="gigachat-max", messages=[{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "Привет"}])
    assert reply.choices[0].message.content == "Echo: Привет"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gigachat-max"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert fake.chat_requests()[0]["model"] == "GigaChat-2-Max"


def test_openai_sdk_stream(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "раз два три"}, chunks=["раз", " два", " три"])
    stream = client_for(proxy).chat.completions.create(
        model="gpt-4o", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [{"type": "text", "text": "считай"}]}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "раз два три"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0


def test_openai_sdk_models(proxy):
    ids = [m.id for m in client_for(proxy).models.list()]
    assert "gigachat-max" in ids and "GigaChat-2-Max" in ids


def test_openai_sdk_sees_errors_as_api_errors(proxy, fake):
    fake.add_fault("status", status=429, headers={"Retry-After": "60"})  # too long for the proxy to wait
    with pytest.raises(openai.RateLimitError) as info:
        client_for(proxy).chat.completions.create(model="gigachat", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 429


def test_openai_sdk_mid_stream_error_raises(proxy, fake):
    fake.enqueue_reply({"role": "assistant", "content": "a b c"}, chunks=["a", " b", " c"])
    fake.add_fault("cut", after_events=1)
    stream = client_for(proxy).chat.completions.create(
        model="gigachat", stream=True, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
