"""Embeddings input as token ids: tiktoken vocabulary files found, verified, parsed and decoded.

The real vocabularies (cl100k_base is 1.7 MB) are not shipped with the tests and nothing
is downloaded: each test writes a tiny ``.tiktoken`` file in the same format and makes
its SHA-256 the expected one for the duration of the test (the real hashes stay in the
code; one test checks them).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import tempfile
import threading

import pytest

import gigaproxy

# A small vocabulary: every single byte (ranks 0-255, as in the real files) and a few words.
WORDS = [b"hello", b" world", "Привет".encode("utf-8"), b" there"]
HELLO, WORLD, PRIVET, THERE = 256, 257, 258, 259
TOKENS = [bytes([b]) for b in range(256)] + WORDS
FAKE_FILE = b"".join(base64.b64encode(token) + b" " + str(rank).encode() + b"\n" for rank, token in enumerate(TOKENS))
CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # sha1 of tiktoken's cl100k_base URL


@pytest.fixture
def fake_hash(monkeypatch):
    """The fake file passes as every encoding's vocabulary (the hash is all that is checked)."""
    digest = hashlib.sha256(FAKE_FILE).hexdigest()
    for encoding in list(gigaproxy.TIKTOKEN_SHA256):
        monkeypatch.setitem(gigaproxy.TIKTOKEN_SHA256, encoding, digest)


@pytest.fixture
def vocab_dir(tmp_path, fake_hash):
    """A GIGAPROXY_TIKTOKEN_DIR holding the fake file as cl100k_base.tiktoken."""
    (tmp_path / "cl100k_base.tiktoken").write_bytes(FAKE_FILE)
    return str(tmp_path)


def ids(text: bytes):
    return [TOKENS.index(bytes([b])) for b in text]


# ---- the file: names, format, hashes --------------------------------------------------


def test_real_hashes_and_names_are_tiktokens():
    # tiktoken_ext/openai_public.py: the expected_hash each load_tiktoken_bpe call checks
    assert gigaproxy.TIKTOKEN_SHA256 == {
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
        "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    }
    assert set(gigaproxy.TIKTOKEN_SPECIAL_TOKENS) == set(gigaproxy.TIKTOKEN_SHA256)
    # tiktoken/load.py caches a file under the sha1 of its URL
    assert gigaproxy.tiktoken_files("cl100k_base", "d") == [os.path.join("d", "cl100k_base.tiktoken"),
                                                            os.path.join("d", CL100K_CACHE_NAME)]


def test_tiktokens_default_cache_dir():
    assert gigaproxy.tiktoken_cache_dir() == os.path.join(tempfile.gettempdir(), "data-gym-cache")


@pytest.mark.parametrize("model,encoding", [
    ("text-embedding-ada-002", "cl100k_base"), ("text-embedding-3-small", "cl100k_base"),
    ("text-embedding-3-large", "cl100k_base"), ("Embeddings", "cl100k_base"), ("GigaEmbeddings-3B-2025-09", "cl100k_base"),
    (None, "cl100k_base"), ("", "cl100k_base"), ("text-similarity-ada-001", "r50k_base"),
    ("text-search-babbage-doc-001", "r50k_base"), ("gpt-4o-mini", "o200k_base"), ("text-davinci-003", "p50k_base"),
    ("text-davinci-001", "r50k_base"),
])
def test_encoding_by_model_name(model, encoding):
    assert gigaproxy.tiktoken_encoding_for(model) == encoding


def test_parse_tiktoken_file():
    vocabulary = gigaproxy.parse_tiktoken_file(FAKE_FILE + b"\n")
    assert len(vocabulary) == len(TOKENS) and vocabulary[PRIVET] == "Привет".encode("utf-8")
    assert vocabulary[0] == b"\x00" and vocabulary[255] == b"\xff"


@pytest.mark.parametrize("line", [b"aGVsbG8=", b"aGVsbG8= 1 2", b"aGVsbG8= x", b"not*base64 5"])
def test_parse_rejects_a_malformed_line(line):
    with pytest.raises(ValueError, match="line 3 "):
        gigaproxy.parse_tiktoken_file(b"YQ== 0\nYg== 1\n" + line + b"\n")


# ---- loading: where, once, verified ----------------------------------------------------


def test_loaded_from_the_directory_once_and_cached(vocab_dir):
    vocabulary = gigaproxy.tiktoken_vocabulary("cl100k_base", vocab_dir)
    assert vocabulary[HELLO] == b"hello"
    assert vocabulary[100257] == b"<|endoftext|>"  # special tokens are added, as tiktoken does
    os.remove(os.path.join(vocab_dir, "cl100k_base.tiktoken"))
    assert gigaproxy.tiktoken_vocabulary("cl100k_base", vocab_dir) is vocabulary
    assert gigaproxy.tiktoken_vocabulary("o200k_base", vocab_dir) is None


def test_found_under_tiktokens_cache_name(tmp_path, fake_hash):
    (tmp_path / CL100K_CACHE_NAME).write_bytes(FAKE_FILE)
    assert gigaproxy.tiktoken_vocabulary("cl100k_base", str(tmp_path))[WORLD] == b" world"


def test_default_is_tiktokens_cache(tmp_path, fake_hash, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / "data-gym-cache").mkdir()
    (tmp_path / "data-gym-cache" / CL100K_CACHE_NAME).write_bytes(FAKE_FILE)
    assert gigaproxy.tiktoken_vocabulary("cl100k_base", None)[HELLO] == b"hello"


def test_hash_mismatch_is_absent_with_a_warning_once(tmp_path, caplog):
    path = tmp_path / "cl100k_base.tiktoken"
    path.write_bytes(FAKE_FILE)  # not the real cl100k_base: its hash is not tiktoken's
    with caplog.at_level(logging.WARNING, logger="gigaproxy"):
        assert gigaproxy.tiktoken_vocabulary("cl100k_base", str(tmp_path)) is None
        assert gigaproxy.tiktoken_vocabulary("cl100k_base", str(tmp_path)) is None
    ignored = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert len(ignored) == 1 and str(path) in ignored[0] and "SHA-256" in ignored[0]
    missing = [r.getMessage() for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(missing) == 1 and "GIGAPROXY_TIKTOKEN_DIR" in missing[0]


def test_a_bad_file_does_not_hide_a_good_one(tmp_path, fake_hash):
    (tmp_path / "cl100k_base.tiktoken").write_bytes(b"truncated")
    (tmp_path / CL100K_CACHE_NAME).write_bytes(FAKE_FILE)
    assert gigaproxy.tiktoken_vocabulary("cl100k_base", str(tmp_path))[HELLO] == b"hello"


def test_concurrent_first_requests_parse_the_file_once(vocab_dir, monkeypatch):
    parsed = []
    real_parse = gigaproxy.parse_tiktoken_file
    monkeypatch.setattr(gigaproxy, "parse_tiktoken_file", lambda data: parsed.append(1) or real_parse(data))
    results = []
    barrier = threading.Barrier(8)

    def load():
        barrier.wait()
        results.append(gigaproxy.tiktoken_vocabulary("cl100k_base", vocab_dir))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and all(r is results[0] for r in results) and results[0] is not None
    assert parsed == [1]


# ---- decoding --------------------------------------------------------------------------


def test_decodes_each_text(vocab_dir):
    texts = gigaproxy.token_ids_to_texts([[HELLO, WORLD], [PRIVET] + ids(b"!"), [100257]],
                                         "text-embedding-3-small", vocab_dir)
    assert texts == ["hello world", "Привет!", "<|endoftext|>"]
    assert gigaproxy.token_ids_to_texts([HELLO, THERE], None, vocab_dir) == ["hello there"]


def test_a_character_split_between_chunks_becomes_a_replacement_character(vocab_dir):
    first, second = ids("Пр".encode("utf-8")[:3]), ids("Пр".encode("utf-8")[3:])
    assert gigaproxy.token_ids_to_texts([first, second], None, vocab_dir) == ["П\ufffd", "\ufffd"]


@pytest.mark.parametrize("value,where", [([HELLO, 100000], "input[1]"), ([[HELLO], [WORLD, -1, 5]], "input[1][1]"),
                                         ([[HELLO], [10 ** 30]], "input[1][0]")])
def test_an_unknown_token_id_is_a_400_naming_it(vocab_dir, value, where):
    with pytest.raises(gigaproxy.ProxyError) as caught:
        gigaproxy.embeddings_request({"input": value}, "Embeddings", vocab_dir)
    assert caught.value.status == 400 and caught.value.param == "input"
    assert caught.value.message.startswith(where + " is token id ") and "cl100k_base" in caught.value.message


@pytest.mark.parametrize("value,fragment", [([HELLO, [WORLD]], "array of token ids"), ([[HELLO], "x"], "array of token ids"),
                                            ([True, 1], "array of token ids"), ([[HELLO], []], "input[1] is empty")])
def test_malformed_token_id_input(vocab_dir, value, fragment):
    with pytest.raises(gigaproxy.ProxyError) as caught:
        gigaproxy.embeddings_request({"input": value}, "Embeddings", vocab_dir)
    assert caught.value.status == 400 and fragment in caught.value.message


# ---- configuration ---------------------------------------------------------------------


def test_config_directory_precedence(make_config, tmp_path):
    assert make_config().tiktoken_dir is None  # tiktoken's default, found when first needed
    assert make_config(DATA_GYM_CACHE_DIR="/dg").tiktoken_dir == "/dg"
    assert make_config(DATA_GYM_CACHE_DIR="/dg", TIKTOKEN_CACHE_DIR="/tc").tiktoken_dir == "/tc"
    assert make_config(TIKTOKEN_CACHE_DIR="/tc", GIGAPROXY_TIKTOKEN_DIR=str(tmp_path)).tiktoken_dir == str(tmp_path)


def test_config_directory_must_exist(make_config, tmp_path):
    with pytest.raises(gigaproxy.ConfigError, match="GIGAPROXY_TIKTOKEN_DIR: .*missing is not a directory"):
        make_config(GIGAPROXY_TIKTOKEN_DIR=str(tmp_path / "missing"))


def test_help_lists_the_variable():
    assert "GIGAPROXY_TIKTOKEN_DIR" in gigaproxy.build_parser().format_help()


# ---- through the HTTP route, against the fake GigaChat ----------------------------------


def embeddings_calls(fake):
    return [r.json for r in fake.requests if r.path == "/api/v1/embeddings"]


def test_token_ids_reach_gigachat_as_text(start_proxy, fake, vocab_dir):
    proxy = start_proxy(GIGAPROXY_TIKTOKEN_DIR=vocab_dir)
    body = {"model": "text-embedding-3-small", "input": [[HELLO, WORLD], [PRIVET]]}  # as LangChain sends it
    status, _, answer = proxy.json("POST", "/v1/embeddings", body)
    assert status == 200, answer
    assert embeddings_calls(fake) == [{"model": "Embeddings", "input": ["hello world", "Привет"]}]
    _, _, as_text = proxy.json("POST", "/v1/embeddings", {"model": "text-embedding-3-small",
                                                         "input": ["hello world", "Привет"]})
    assert [d["embedding"] for d in answer["data"]] == [d["embedding"] for d in as_text["data"]]
    assert answer["model"] == "text-embedding-3-small" and [d["index"] for d in answer["data"]] == [0, 1]
    status, _, single = proxy.json("POST", "/v1/embeddings", {"input": [HELLO, THERE]})
    assert status == 200 and embeddings_calls(fake)[-1]["input"] == ["hello there"]


def test_tiktokens_cache_dir_variable_is_searched(start_proxy, fake, tmp_path, fake_hash):
    (tmp_path / CL100K_CACHE_NAME).write_bytes(FAKE_FILE)
    proxy = start_proxy(TIKTOKEN_CACHE_DIR=str(tmp_path))
    status, _, answer = proxy.json("POST", "/v1/embeddings", {"input": [[HELLO]]})
    assert status == 200, answer
    assert embeddings_calls(fake) == [{"model": "Embeddings", "input": ["hello"]}]


@pytest.mark.parametrize("value", [[1, 2, 3], [[1, 2]]])
def test_without_a_vocabulary_the_400_says_what_to_do(start_proxy, fake, tmp_path, value):
    proxy = start_proxy(GIGAPROXY_TIKTOKEN_DIR=str(tmp_path))  # an empty directory
    status, _, answer = proxy.json("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": value})
    assert status == 400
    error = answer["error"]
    assert error["param"] == "input" and error["code"] == "unsupported_value"
    assert "OpenAIEmbeddings(check_embedding_ctx_length=False)" in error["message"]
    assert "send the text" in error["message"] and "GIGAPROXY_TIKTOKEN_DIR" in error["message"]
    assert "cl100k_base.tiktoken" in error["message"] and str(tmp_path) not in error["message"]
    assert embeddings_calls(fake) == []
