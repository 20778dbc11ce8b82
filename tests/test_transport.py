"""TLS verification, mTLS, the corporate CONNECT proxy, NO_PROXY and keep-alive reuse."""

from __future__ import annotations

import base64
import logging
import os
import ssl

import pytest

import gigaproxy
from fake_connect_proxy import FakeConnectProxy
from fake_gigachat import CA_FILE, CLIENT_CERT, CLIENT_KEY, CLIENT_KEY_ENCRYPTED, CLIENT_KEY_PASSWORD, OTHER_CA_FILE

HELLO = {"model": "GigaChat-2", "messages": [{"role": "user", "content": "hi"}]}


def test_verification_fails_without_the_right_ca_and_says_what_to_do(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_CA_BUNDLE_FILE=OTHER_CA_FILE)
    status, _, body = proxy.chat(HELLO)
    assert status == 502
    message = body["error"]["message"]
    assert "TLS verification" in message and "GIGACHAT_CA_BUNDLE_FILE" in message
    assert body["error"]["code"] == "upstream_tls_error"
    assert fake.chat_requests() == []


def test_the_bundled_root_is_trusted_in_addition_to_the_system_store(make_config):
    config = make_config()
    assert config.bundled_ca_file == os.path.join(os.path.dirname(os.path.abspath(gigaproxy.__file__)),
                                                  "russian_trusted_root_ca.pem")
    context = gigaproxy.build_ssl_context(config)
    subjects = [dict(x[0] for x in cert["subject"]).get("commonName") for cert in context.get_ca_certs()]
    assert "Russian Trusted Root CA" in subjects
    assert "gigaproxy test CA" in subjects  # GIGACHAT_CA_BUNDLE_FILE
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert not context.verify_flags & getattr(ssl, "VERIFY_X509_STRICT", 0)


def _system_store(monkeypatch, tmp_path, cafile):
    """Make OpenSSL's default verify paths (what load_default_certs reads) one file and an empty directory."""
    empty = tmp_path / "no-certs"
    empty.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", cafile)
    monkeypatch.setenv("SSL_CERT_DIR", str(empty))


def test_the_system_store_is_not_loaded_at_startup(make_config, monkeypatch, tmp_path, build_ssl_context_uncached):
    """Loading 140-odd system roots costs ~40 ms of every start: it waits until a certificate needs it."""
    _system_store(monkeypatch, tmp_path, OTHER_CA_FILE)
    context = build_ssl_context_uncached(make_config())

    def common_names():
        return sorted(dict(x[0] for x in cert["subject"]).get("commonName") for cert in context.get_ca_certs())

    assert context.system_store_deferred
    assert common_names() == ["Russian Trusted Root CA", "gigaproxy test CA"]  # bundled root + bundle, no more
    gigaproxy.add_system_store(context)
    gigaproxy.add_system_store(context)  # the second call finds it loaded and does nothing
    assert not context.system_store_deferred
    assert common_names() == sorted(["Russian Trusted Root CA", "gigaproxy test CA", "other test CA"])
    eager = build_ssl_context_uncached(make_config(), system_store=True)
    assert not eager.system_store_deferred and len(eager.get_ca_certs()) == 3


def test_a_certificate_only_the_system_store_trusts_is_accepted(start_proxy, fake, monkeypatch, tmp_path, caplog):
    """The corporate case: GigaChat's certificate re-signed by a root that only the system store has."""
    _system_store(monkeypatch, tmp_path, CA_FILE)
    caplog.set_level(logging.INFO, logger="gigaproxy")
    proxy = start_proxy(GIGACHAT_CA_BUNDLE_FILE=None)
    assert proxy.chat(HELLO)[0] == 200
    assert proxy.chat(HELLO)[0] == 200
    loaded = [r.getMessage() for r in caplog.records if "loading the system CA store" in r.getMessage()]
    assert len(loaded) == 1 and "127.0.0.1" in loaded[0]
    assert len(fake.chat_requests()) == 2


def test_missing_bundled_root_is_one_warning_and_the_proxy_still_works(make_config, fake, start_proxy, tmp_path, caplog):
    config = make_config()._replace(bundled_ca_file=str(tmp_path / "russian_trusted_root_ca.pem"))
    caplog.set_level(logging.WARNING, logger="gigaproxy")
    proxy = start_proxy(config)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "russian_trusted_root_ca.pem" in warnings[0]
    assert proxy.chat(HELLO)[0] == 200


def test_verification_off_works_and_warns(start_proxy, fake, caplog):
    caplog.set_level(logging.WARNING, logger="gigaproxy")
    proxy = start_proxy(GIGACHAT_CA_BUNDLE_FILE=None, GIGACHAT_VERIFY_SSL_CERTS="False")
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    assert proxy.chat(HELLO)[0] == 200


def test_without_the_ca_bundle_the_fake_is_not_trusted(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_CA_BUNDLE_FILE=None)
    status, _, body = proxy.chat(HELLO)
    assert status == 502 and body["error"]["code"] == "upstream_tls_error"


def test_client_certificate_goes_on_api_calls_only(start_proxy, fake):
    proxy = start_proxy(GIGACHAT_CERT_FILE=CLIENT_CERT, GIGACHAT_KEY_FILE=CLIENT_KEY_ENCRYPTED,
                        GIGACHAT_KEY_FILE_PASSWORD=CLIENT_KEY_PASSWORD)
    assert proxy.chat(HELLO)[0] == 200
    by_path = {r.path: r for r in fake.requests}
    assert by_path["/api/v1/chat/completions"].client_cert
    assert not by_path["/api/v2/oauth"].client_cert


def test_wrong_key_password_is_a_config_error(make_config):
    config = make_config(GIGACHAT_CERT_FILE=CLIENT_CERT, GIGACHAT_KEY_FILE=CLIENT_KEY_ENCRYPTED,
                         GIGACHAT_KEY_FILE_PASSWORD="wrong")
    with pytest.raises(gigaproxy.ConfigError) as info:
        gigaproxy.make_server(config)
    assert "GIGACHAT_KEY_FILE_PASSWORD" in str(info.value)


def test_corporate_proxy_connect_tunnel_with_credentials(start_proxy, fake):
    with FakeConnectProxy(auth=("corp user", "p@ss:word")) as corp:
        url = "http://corp%20user:p%40ss%3Aword@127.0.0.1:" + str(corp.port)
        proxy = start_proxy(HTTPS_PROXY=url)
        assert proxy.chat(HELLO)[0] == 200
        assert proxy.chat(HELLO)[0] == 200
        target = "127.0.0.1:%d" % fake.port
        assert corp.connects == [target, target]  # one tunnel for OAuth, one reused for the API
        expected = "Basic " + base64.b64encode(b"corp user:p@ss:word").decode()
        assert set(corp.auth_headers) == {expected}


def test_lowercase_https_proxy_and_proxy_refusal(start_proxy, fake):
    with FakeConnectProxy(auth=("u", "right")) as corp:
        proxy = start_proxy(https_proxy="http://u:wrong@127.0.0.1:%d" % corp.port)
        status, _, body = proxy.chat(HELLO)
        assert status == 502
        assert "HTTPS_PROXY" in body["error"]["message"] and "407" in body["error"]["message"]
        assert "wrong" not in body["error"]["message"]
        assert corp.connects == []


def test_no_proxy_bypasses_the_proxy(start_proxy, fake):
    with FakeConnectProxy() as corp:
        proxy = start_proxy(HTTPS_PROXY=corp.url, NO_PROXY="localhost,127.0.0.0/8")
        assert proxy.chat(HELLO)[0] == 200
        assert corp.connects == [] and corp.requests == []


def test_a_stale_keep_alive_connection_is_replaced_transparently(proxy, fake):
    assert proxy.chat(HELLO)[0] == 200
    handshakes = fake.tls_handshakes
    fake.add_fault("cut")  # the pooled connection dies without an answer
    assert proxy.chat(HELLO)[0] == 200
    assert fake.tls_handshakes == handshakes + 1


def test_idle_pool_is_bounded_and_closed(make_config):
    config = make_config()
    transport = gigaproxy.Transport(config, None, None)

    class Conn:
        closed = False

        def close(self):
            self.closed = True

    conns = [Conn() for _ in range(max(gigaproxy.POOL_MIN_IDLE_PER_HOST, config.max_concurrency) + 3)]
    key = ("https", "h", 443, "api")
    for conn in conns:
        transport._put_idle(key, conn)
    assert sum(c.closed for c in conns) == 3
    transport.close()
    assert all(c.closed for c in conns)
