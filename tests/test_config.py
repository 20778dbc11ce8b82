"""Configuration: environment variables, the env file, flags, precedence, NO_PROXY.

Every test builds its Config with
``load_config(build_parser().parse_args([...]), environ={...}, cwd=str(tmp_path))``:
the real ``os.environ`` and the real working directory are never consulted.
Requirements come from issue 2, section "Configuration".
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gigaproxy  # noqa: E402
from gigaproxy import ConfigError, build_parser, load_config, parse_env_file, proxy_bypassed  # noqa: E402

KEY = "MDE5YTM2ZjYtYzQ2NC03MjJkLWE1ZmUtNWQ4ZDg0ZDc0YTJlOmFiY2RlZg=="  # looks like a real key: base64, "=="
OTHER_KEY = "b3RoZXIta2V5LXZhbHVlOnh5eg=="


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def write_env_file(directory: Any, text: str, name: str = ".env") -> str:
    path = os.path.join(str(directory), name)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return path


def make(tmp_path: Any, env: Optional[Dict[str, str]] = None, argv: Optional[List[str]] = None,
         file: Optional[str] = None) -> gigaproxy.Config:
    """Load a Config from flags ``argv``, environment ``env`` and (optionally) a ``.env`` in tmp_path."""
    if file is not None:
        write_env_file(tmp_path, file)
    args = build_parser().parse_args(list(argv or []))
    return load_config(args, environ=dict(env or {}), cwd=str(tmp_path))


def make_error(tmp_path: Any, env: Optional[Dict[str, str]] = None, argv: Optional[List[str]] = None,
               file: Optional[str] = None) -> str:
    """The ConfigError message for a bad configuration; it must be one line."""
    with pytest.raises(ConfigError) as info:
        make(tmp_path, env, argv, file)
    message = str(info.value)
    assert message.strip(), "a ConfigError must say what is wrong"
    assert "\n" not in message and "\r" not in message, "startup errors are ONE line: %r" % message
    return message


def with_key(**extra: str) -> Dict[str, str]:
    env = {"GIGACHAT_CREDENTIALS": KEY}
    env.update(extra)
    return env


@pytest.fixture
def readable(tmp_path):
    """Factory: a readable file under tmp_path (its content does not matter to load_config)."""
    def create(name: str, content: str = "-----BEGIN CERTIFICATE-----\n") -> str:
        path = tmp_path / "files" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(content)
        return str(path)
    return create


# --------------------------------------------------------------------------
# defaults
# --------------------------------------------------------------------------
def test_defaults_with_only_a_key(tmp_path):
    config = make(tmp_path, with_key())
    assert config.credentials == KEY
    assert config.auth_mode == "oauth"
    assert config.scope == "GIGACHAT_API_PERS"
    assert config.base_url == "https://gigachat.devices.sberbank.ru/api/v1"
    assert config.auth_url == "https://ngw.devices.sberbank.ru:9443/api/v2/oauth"
    assert config.verify_ssl is True
    assert config.ca_bundle_file is None
    assert config.cert_file is None and config.key_file is None and config.key_file_password is None
    assert config.user is None and config.password is None and config.access_token is None
    assert config.host == "127.0.0.1"
    assert config.port == 4000
    assert config.log_level == "INFO"
    assert config.model == gigaproxy.DEFAULT_MODEL
    assert config.timeout == gigaproxy.DEFAULT_TIMEOUT and config.timeout > 0
    assert config.max_body_bytes == int(gigaproxy.DEFAULT_MAX_BODY_MB * 1024 * 1024)
    assert config.https_proxy is None and config.no_proxy is None


def test_config_is_frozen(tmp_path):
    config = make(tmp_path, with_key())
    with pytest.raises(Exception):
        config.port = 1  # type: ignore[misc]


def test_bundled_ca_is_looked_for_next_to_the_script(tmp_path):
    config = make(tmp_path, with_key())
    assert config.bundled_ca_file == os.path.join(ROOT, "russian_trusted_root_ca.pem")


# --------------------------------------------------------------------------
# credentials
# --------------------------------------------------------------------------
def test_credentials_read(tmp_path):
    assert make(tmp_path, {"GIGACHAT_CREDENTIALS": KEY}).credentials == KEY


def test_auth_key_alias_read(tmp_path):
    config = make(tmp_path, {"GIGACHAT_AUTH_KEY": KEY})
    assert config.credentials == KEY
    assert config.auth_mode == "oauth"


def test_credentials_and_alias_equal_is_fine(tmp_path):
    assert make(tmp_path, {"GIGACHAT_CREDENTIALS": KEY, "GIGACHAT_AUTH_KEY": KEY}).credentials == KEY


def test_credentials_and_alias_differ_is_an_error(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_CREDENTIALS": KEY, "GIGACHAT_AUTH_KEY": OTHER_KEY})
    assert "GIGACHAT_CREDENTIALS" in message and "GIGACHAT_AUTH_KEY" in message
    assert KEY not in message and OTHER_KEY not in message, "the error line must not print the keys"


def test_credentials_in_env_and_alias_in_file_differ_is_an_error(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_CREDENTIALS": KEY}, file="GIGACHAT_AUTH_KEY=%s\n" % OTHER_KEY)
    assert "GIGACHAT_AUTH_KEY" in message


@pytest.mark.parametrize("value", [
    "Basic " + KEY,
    "basic " + KEY,
    "BASIC   " + KEY,
    "  Basic " + KEY + "  ",
])
def test_pasted_basic_prefix_is_stripped(tmp_path, value):
    assert make(tmp_path, {"GIGACHAT_CREDENTIALS": value}).credentials == KEY
    assert make(tmp_path, {"GIGACHAT_AUTH_KEY": value}).credentials == KEY


def test_credentials_whitespace_is_stripped(tmp_path):
    assert make(tmp_path, {"GIGACHAT_CREDENTIALS": " %s \n" % KEY}).credentials == KEY


def test_nothing_set_is_an_error_naming_credentials(tmp_path):
    message = make_error(tmp_path, {})
    assert "GIGACHAT_CREDENTIALS" in message


def test_only_unrelated_settings_is_an_error_naming_credentials(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_SCOPE": "GIGACHAT_API_B2B", "GIGACHAT_MODEL": "GigaChat-2-Max",
                                    "PATH": "/usr/bin"})
    assert "GIGACHAT_CREDENTIALS" in message


def test_empty_credentials_count_as_unset(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_CREDENTIALS": "", "GIGACHAT_AUTH_KEY": ""})
    assert "GIGACHAT_CREDENTIALS" in message


@pytest.mark.parametrize("scope", ["GIGACHAT_API_PERS", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP"])
def test_scope_values(tmp_path, scope):
    assert make(tmp_path, with_key(GIGACHAT_SCOPE=scope)).scope == scope


@pytest.mark.parametrize("scope", ["GIGACHAT_API_FOO", "PERS", "gigachat api pers"])
def test_scope_invalid(tmp_path, scope):
    message = make_error(tmp_path, with_key(GIGACHAT_SCOPE=scope))
    assert "GIGACHAT_SCOPE" in message


def test_user_and_password(tmp_path):
    config = make(tmp_path, {"GIGACHAT_USER": "alice", "GIGACHAT_PASSWORD": "s3cret-pw"})
    assert config.user == "alice"
    assert config.password == "s3cret-pw"
    assert config.credentials is None
    assert config.auth_mode == "password"


def test_user_without_password(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_USER": "alice"})
    assert "GIGACHAT_PASSWORD" in message


def test_password_without_user(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_PASSWORD": "s3cret-pw"})
    assert "GIGACHAT_USER" in message
    assert "s3cret-pw" not in message


def test_credentials_plus_user_password_is_an_error(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_CREDENTIALS": KEY, "GIGACHAT_USER": "alice",
                                    "GIGACHAT_PASSWORD": "s3cret-pw"})
    assert "GIGACHAT_CREDENTIALS" in message and "GIGACHAT_USER" in message
    assert KEY not in message and "s3cret-pw" not in message


def test_alias_plus_user_password_is_an_error(tmp_path):
    message = make_error(tmp_path, {"GIGACHAT_AUTH_KEY": KEY, "GIGACHAT_USER": "alice",
                                    "GIGACHAT_PASSWORD": "s3cret-pw"})
    assert "GIGACHAT_USER" in message


def test_access_token_alone_is_enough(tmp_path):
    config = make(tmp_path, {"GIGACHAT_ACCESS_TOKEN": "eyJhbGciOi.static.token"})
    assert config.access_token == "eyJhbGciOi.static.token"
    assert config.credentials is None
    assert config.auth_mode == "token"


def test_mtls_cert_alone_is_enough(tmp_path, readable):
    cert = readable("client.pem")
    config = make(tmp_path, {"GIGACHAT_CERT_FILE": cert})
    assert config.cert_file == cert
    assert config.key_file is None
    assert config.auth_mode == "mtls"


def test_mtls_cert_key_and_password(tmp_path, readable):
    cert, key = readable("client.pem"), readable("client.key")
    config = make(tmp_path, {"GIGACHAT_CERT_FILE": cert, "GIGACHAT_KEY_FILE": key,
                             "GIGACHAT_KEY_FILE_PASSWORD": "key-pass-123"})
    assert (config.cert_file, config.key_file, config.key_file_password) == (cert, key, "key-pass-123")
    assert config.auth_mode == "mtls"


def test_mtls_key_without_cert_is_an_error(tmp_path, readable):
    message = make_error(tmp_path, with_key(GIGACHAT_KEY_FILE=readable("client.key")))
    assert "GIGACHAT_CERT_FILE" in message


def test_key_without_cert_and_no_other_credentials_is_an_error(tmp_path, readable):
    message = make_error(tmp_path, {"GIGACHAT_KEY_FILE": readable("client.key")})
    assert "GIGACHAT_CERT_FILE" in message


# --------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name,attr", [("GIGACHAT_BASE_URL", "base_url"), ("GIGACHAT_AUTH_URL", "auth_url")])
@pytest.mark.parametrize("value,expected", [
    ("https://example.test/api/v1", "https://example.test/api/v1"),
    ("https://example.test/api/v1/", "https://example.test/api/v1"),
    ("https://example.test:9443/api/v2/oauth/", "https://example.test:9443/api/v2/oauth"),
    ("http://127.0.0.1:8080/api/v1", "http://127.0.0.1:8080/api/v1"),
])
def test_urls_read_and_trailing_slash_removed(tmp_path, name, attr, value, expected):
    assert getattr(make(tmp_path, with_key(**{name: value})), attr) == expected


@pytest.mark.parametrize("name", ["GIGACHAT_BASE_URL", "GIGACHAT_AUTH_URL"])
@pytest.mark.parametrize("value", [
    "gigachat.devices.sberbank.ru/api/v1",  # no scheme
    "ftp://example.test/api",
    "https://",  # no host
    "https://example.test:notaport/api",
    "not a url",
])
def test_urls_invalid(tmp_path, name, value):
    message = make_error(tmp_path, with_key(**{name: value}))
    assert name in message


# --------------------------------------------------------------------------
# booleans, numbers, model
# --------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [
    ("true", True), ("TRUE", True), ("True", True), ("1", True), ("yes", True), ("YES", True), ("Yes", True),
    ("false", False), ("FALSE", False), ("False", False), ("0", False), ("no", False), ("NO", False),
    ("No", False), (" false ", False),
])
def test_verify_ssl_booleans(tmp_path, value, expected):
    assert make(tmp_path, with_key(GIGACHAT_VERIFY_SSL_CERTS=value)).verify_ssl is expected


@pytest.mark.parametrize("value", ["maybe", "tru", "2", "-1", "nope", "y e s"])
def test_verify_ssl_junk_is_an_error(tmp_path, value):
    message = make_error(tmp_path, with_key(GIGACHAT_VERIFY_SSL_CERTS=value))
    assert "GIGACHAT_VERIFY_SSL_CERTS" in message


@pytest.mark.parametrize("value", ["TRUE", "yes", "1", "False", "no", "0"])
def test_parse_bool_any_case(value):
    assert gigaproxy.parse_bool("X", value) is (value.lower() in ("true", "yes", "1"))


def test_parse_bool_junk_names_the_variable():
    with pytest.raises(ConfigError) as info:
        gigaproxy.parse_bool("SOME_VARIABLE", "perhaps")
    assert "SOME_VARIABLE" in str(info.value)


@pytest.mark.parametrize("value,expected", [("30", 30.0), ("2.5", 2.5), ("600", 600.0)])
def test_timeout(tmp_path, value, expected):
    assert make(tmp_path, with_key(GIGACHAT_TIMEOUT=value)).timeout == expected


@pytest.mark.parametrize("value", ["abc", "0", "0.0", "-1", "-0.5", "30s", "nan"])
def test_timeout_invalid(tmp_path, value):
    message = make_error(tmp_path, with_key(GIGACHAT_TIMEOUT=value))
    assert "GIGACHAT_TIMEOUT" in message


def test_model(tmp_path):
    assert make(tmp_path, with_key(GIGACHAT_MODEL="GigaChat-2-Max")).model == "GigaChat-2-Max"


# --------------------------------------------------------------------------
# files: CA bundle, mTLS certificate and key
# --------------------------------------------------------------------------
def test_ca_bundle_read(tmp_path, readable):
    path = readable("corp-ca.pem")
    assert make(tmp_path, with_key(GIGACHAT_CA_BUNDLE_FILE=path)).ca_bundle_file == path


@pytest.mark.parametrize("name", ["GIGACHAT_CA_BUNDLE_FILE", "GIGACHAT_CERT_FILE"])
def test_missing_file_is_an_error_naming_the_variable(tmp_path, name):
    missing = str(tmp_path / "no-such-file.pem")
    message = make_error(tmp_path, with_key(**{name: missing}))
    assert name in message
    assert "no-such-file.pem" in message


def test_missing_key_file_is_an_error_naming_the_variable(tmp_path, readable):
    missing = str(tmp_path / "no-such-file.key")
    message = make_error(tmp_path, {"GIGACHAT_CERT_FILE": readable("client.pem"), "GIGACHAT_KEY_FILE": missing})
    assert "GIGACHAT_KEY_FILE" in message


@pytest.mark.parametrize("name", ["GIGACHAT_CA_BUNDLE_FILE", "GIGACHAT_CERT_FILE"])
def test_directory_instead_of_file_is_an_error(tmp_path, name):
    message = make_error(tmp_path, with_key(**{name: str(tmp_path)}))
    assert name in message


@pytest.mark.skipif(os.name == "nt" or (hasattr(os, "geteuid") and os.geteuid() == 0),
                    reason="permission bits do not stop root (or Windows) from reading a file")
def test_unreadable_ca_bundle_is_an_error(tmp_path, readable):
    path = readable("secret-ca.pem")
    os.chmod(path, 0)
    try:
        message = make_error(tmp_path, with_key(GIGACHAT_CA_BUNDLE_FILE=path))
    finally:
        os.chmod(path, 0o600)
    assert "GIGACHAT_CA_BUNDLE_FILE" in message


# --------------------------------------------------------------------------
# the proxy's own knobs
# --------------------------------------------------------------------------
def test_host_env(tmp_path):
    assert make(tmp_path, with_key(GIGAPROXY_HOST="0.0.0.0", GIGAPROXY_API_KEY="k" * 16)).host == "0.0.0.0"


@pytest.mark.parametrize("value,expected", [("0", 0), ("8080", 8080), ("65535", 65535)])
def test_port_env(tmp_path, value, expected):
    assert make(tmp_path, with_key(GIGAPROXY_PORT=value)).port == expected


@pytest.mark.parametrize("value", ["abc", "-1", "65536", "80.5", "4000x"])
def test_port_env_invalid(tmp_path, value):
    message = make_error(tmp_path, with_key(GIGAPROXY_PORT=value))
    assert "GIGAPROXY_PORT" in message


@pytest.mark.parametrize("value", ["-1", "65536", "100000"])
def test_port_flag_out_of_range(tmp_path, value):
    message = make_error(tmp_path, with_key(), argv=["--port", value])
    assert "--port" in message or "GIGAPROXY_PORT" in message


@pytest.mark.parametrize("value,expected", [("debug", "DEBUG"), ("Warning", "WARNING"), ("ERROR", "ERROR"),
                                            ("info", "INFO")])
def test_log_level_env(tmp_path, value, expected):
    assert make(tmp_path, with_key(GIGAPROXY_LOG_LEVEL=value)).log_level == expected


@pytest.mark.parametrize("value", ["LOUD", "verbose", "5"])
def test_log_level_env_invalid(tmp_path, value):
    message = make_error(tmp_path, with_key(GIGAPROXY_LOG_LEVEL=value))
    assert "GIGAPROXY_LOG_LEVEL" in message


def test_log_level_flag_any_case(tmp_path):
    assert make(tmp_path, with_key(), argv=["--log-level", "debug"]).log_level == "DEBUG"


@pytest.mark.parametrize("value,expected", [("1", 1024 * 1024), ("0.5", 512 * 1024), ("100", 100 * 1024 * 1024)])
def test_max_body_mb(tmp_path, value, expected):
    assert make(tmp_path, with_key(GIGAPROXY_MAX_BODY_MB=value)).max_body_bytes == expected


@pytest.mark.parametrize("value", ["abc", "0", "-1", "ten"])
def test_max_body_mb_invalid(tmp_path, value):
    message = make_error(tmp_path, with_key(GIGAPROXY_MAX_BODY_MB=value))
    assert "GIGAPROXY_MAX_BODY_MB" in message


# --------------------------------------------------------------------------
# corporate proxy
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy"])
def test_https_proxy_read(tmp_path, name):
    config = make(tmp_path, with_key(**{name: "http://proxy.corp.test:3128"}))
    assert config.https_proxy == "http://proxy.corp.test:3128"


def test_https_proxy_with_credentials_kept(tmp_path):
    config = make(tmp_path, with_key(HTTPS_PROXY="http://bob:pr0xy-pw@proxy.corp.test:3128"))
    assert config.https_proxy == "http://bob:pr0xy-pw@proxy.corp.test:3128"


def test_https_proxy_without_scheme_is_http(tmp_path):
    assert make(tmp_path, with_key(HTTPS_PROXY="proxy.corp.test:3128")).https_proxy == "http://proxy.corp.test:3128"


@pytest.mark.parametrize("name", ["HTTPS_PROXY", "https_proxy"])
@pytest.mark.parametrize("value", ["socks5://proxy.corp.test:1080", "socks5h://bob:pr0xy-pw@proxy.corp.test:1080"])
def test_socks_proxy_is_an_error(tmp_path, name, value):
    message = make_error(tmp_path, with_key(**{name: value}))
    assert "HTTPS_PROXY" in message
    assert "pr0xy-pw" not in message, "the error line must not print the proxy password"


@pytest.mark.parametrize("name", ["NO_PROXY", "no_proxy"])
def test_no_proxy_read(tmp_path, name):
    config = make(tmp_path, with_key(**{name: "localhost,.sberbank.ru,10.0.0.0/8"}))
    assert config.no_proxy == "localhost,.sberbank.ru,10.0.0.0/8"


# --------------------------------------------------------------------------
# precedence: flags > environment > env file > defaults, per knob
# --------------------------------------------------------------------------
# (variable, attribute, value in the env file, value in the environment, default, transform of a value)
KNOBS = [
    ("GIGACHAT_CREDENTIALS", "credentials", "ZmlsZS1rZXk=", "ZW52LWtleQ==", None, None),
    ("GIGACHAT_AUTH_KEY", "credentials", "ZmlsZS1rZXk=", "ZW52LWtleQ==", None, None),
    ("GIGACHAT_ACCESS_TOKEN", "access_token", "file-token", "env-token", None, None),
    ("GIGACHAT_SCOPE", "scope", "GIGACHAT_API_B2B", "GIGACHAT_API_CORP", "GIGACHAT_API_PERS", None),
    ("GIGACHAT_BASE_URL", "base_url", "https://file.test/api/v1", "https://env.test/api/v1",
     "https://gigachat.devices.sberbank.ru/api/v1", None),
    ("GIGACHAT_AUTH_URL", "auth_url", "https://file.test/oauth", "https://env.test/oauth",
     "https://ngw.devices.sberbank.ru:9443/api/v2/oauth", None),
    ("GIGACHAT_CA_BUNDLE_FILE", "ca_bundle_file", "@file-ca.pem", "@env-ca.pem", None, None),
    ("GIGACHAT_VERIFY_SSL_CERTS", "verify_ssl", "false", "true", True, "bool"),
    ("GIGACHAT_CERT_FILE", "cert_file", "@file-cert.pem", "@env-cert.pem", None, None),
    ("GIGACHAT_KEY_FILE_PASSWORD", "key_file_password", "file-kpw", "env-kpw", None, None),
    ("GIGACHAT_TIMEOUT", "timeout", "11", "22", gigaproxy.DEFAULT_TIMEOUT, float),
    ("GIGACHAT_MODEL", "model", "GigaChat-2-Pro", "GigaChat-2-Max", gigaproxy.DEFAULT_MODEL, None),
    ("GIGAPROXY_HOST", "host", "127.1.1.1", "127.2.2.2", "127.0.0.1", None),
    ("GIGAPROXY_PORT", "port", "4100", "4200", 4000, int),
    ("GIGAPROXY_LOG_LEVEL", "log_level", "ERROR", "DEBUG", "INFO", None),
    ("GIGAPROXY_MAX_BODY_MB", "max_body_bytes", "1", "2", int(gigaproxy.DEFAULT_MAX_BODY_MB * 1024 * 1024),
     lambda v: int(float(v) * 1024 * 1024)),
    ("HTTPS_PROXY", "https_proxy", "http://file-proxy.test:3128", "http://env-proxy.test:3128", None, None),
    ("NO_PROXY", "no_proxy", "file.test", "env.test", None, None),
]

FLAG_KNOBS = {
    "GIGAPROXY_HOST": ("--host", "127.3.3.3", "127.3.3.3"),
    "GIGAPROXY_PORT": ("--port", "4300", 4300),
    "GIGAPROXY_LOG_LEVEL": ("--log-level", "WARNING", "WARNING"),
}


def _knob_value(tmp_path: Any, raw: str) -> str:
    """'@name' means: a readable file called name (file settings must point at real files)."""
    if raw.startswith("@"):
        directory = tmp_path / "files"
        directory.mkdir(exist_ok=True)
        path = directory / raw[1:]
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        return str(path)
    return raw


def _expected(raw_value: str, transform: Any) -> Any:
    if transform == "bool":
        return raw_value.lower() in ("true", "1", "yes")
    if transform is not None:
        return transform(raw_value)
    return raw_value


def _base_env(name: str) -> Dict[str, str]:
    """Enough credentials for the config to load, without touching the knob under test."""
    if name in ("GIGACHAT_CREDENTIALS", "GIGACHAT_AUTH_KEY", "GIGACHAT_CERT_FILE"):
        return {}
    return {"GIGACHAT_USER": "alice", "GIGACHAT_PASSWORD": "pw"} if name == "GIGACHAT_ACCESS_TOKEN" \
        else {"GIGACHAT_CREDENTIALS": KEY}


@pytest.mark.parametrize("name,attr,file_raw,env_raw,default,transform", KNOBS, ids=[k[0] for k in KNOBS])
def test_precedence_env_over_file_over_default(tmp_path, name, attr, file_raw, env_raw, default, transform):
    file_value, env_value = _knob_value(tmp_path, file_raw), _knob_value(tmp_path, env_raw)
    base = _base_env(name)

    # default: the knob set nowhere (credential knobs cannot be unset and still load)
    if base:
        assert getattr(make(tmp_path, base), attr) == default

    # env file only
    file_text = "%s=%s\n" % (name, file_value)
    assert getattr(make(tmp_path, base, file=file_text), attr) == _expected(file_value, transform)

    # environment and env file: the environment wins
    env = dict(base)
    env[name] = env_value
    assert getattr(make(tmp_path, env, file=file_text), attr) == _expected(env_value, transform)

    # environment only (the .env written above is replaced by an unrelated one)
    assert getattr(make(tmp_path, env, file="UNRELATED=1\n"), attr) == _expected(env_value, transform)


@pytest.mark.parametrize("name", sorted(FLAG_KNOBS))
def test_precedence_flag_over_env_over_file(tmp_path, name):
    flag, flag_value, expected = FLAG_KNOBS[name]
    attr = {"GIGAPROXY_HOST": "host", "GIGAPROXY_PORT": "port", "GIGAPROXY_LOG_LEVEL": "log_level"}[name]
    env_value = {"GIGAPROXY_HOST": "127.2.2.2", "GIGAPROXY_PORT": "4200", "GIGAPROXY_LOG_LEVEL": "DEBUG"}[name]
    file_text = "%s=%s\n" % (name, {"GIGAPROXY_HOST": "127.1.1.1", "GIGAPROXY_PORT": "4100",
                                     "GIGAPROXY_LOG_LEVEL": "ERROR"}[name])
    env = with_key(**{name: env_value})
    assert getattr(make(tmp_path, env, argv=[flag, flag_value], file=file_text), attr) == expected
    # the flag also beats the env file alone
    assert getattr(make(tmp_path, with_key(), argv=[flag, flag_value], file=file_text), attr) == expected


def test_port_flag_zero_beats_environment(tmp_path):
    """--port 0 (any free port) is a real value, not "unset"."""
    assert make(tmp_path, with_key(GIGAPROXY_PORT="4200"), argv=["--port", "0"]).port == 0


def test_user_password_from_file_and_env(tmp_path):
    file_text = "GIGACHAT_USER=file-user\nGIGACHAT_PASSWORD=file-pw\n"
    config = make(tmp_path, {}, file=file_text)
    assert (config.user, config.password) == ("file-user", "file-pw")
    config = make(tmp_path, {"GIGACHAT_USER": "env-user", "GIGACHAT_PASSWORD": "env-pw"}, file=file_text)
    assert (config.user, config.password) == ("env-user", "env-pw")


def test_key_file_from_file_and_env(tmp_path, readable):
    cert, file_key, env_key = readable("c.pem"), readable("file.key"), readable("env.key")
    file_text = "GIGACHAT_CERT_FILE=%s\nGIGACHAT_KEY_FILE=%s\n" % (cert, file_key)
    assert make(tmp_path, {}, file=file_text).key_file == file_key
    assert make(tmp_path, {"GIGACHAT_KEY_FILE": env_key}, file=file_text).key_file == env_key


def test_mixed_sources_combine(tmp_path):
    """Each knob is taken from the highest source that has it; sources are not all-or-nothing."""
    file_text = "GIGACHAT_CREDENTIALS=%s\nGIGACHAT_MODEL=GigaChat-2-Pro\nGIGAPROXY_PORT=4100\n" % KEY
    config = make(tmp_path, {"GIGACHAT_SCOPE": "GIGACHAT_API_CORP", "GIGAPROXY_PORT": "4200"},
                  argv=["--host", "127.0.0.9"], file=file_text)
    assert config.credentials == KEY
    assert config.model == "GigaChat-2-Pro"
    assert config.scope == "GIGACHAT_API_CORP"
    assert config.port == 4200
    assert config.host == "127.0.0.9"


def test_sources_say_where_each_value_came_from(tmp_path):
    """``load_config(sources=...)`` records flag / env / env file for what was set (``--check`` shows it)."""
    file_text = "GIGACHAT_SCOPE=GIGACHAT_API_B2B\nGIGACHAT_MODEL=GigaChat-2-Pro\nGIGAPROXY_PORT=4100\n"
    path = write_env_file(tmp_path, file_text, "settings.env")
    env = {"GIGACHAT_AUTH_KEY": KEY, "GIGACHAT_MODEL": "GigaChat-2-Max", "https_proxy": "proxy:3128",
           "GIGAPROXY_HOST": "", "GIGAPROXY_WORKERS": "2"}
    argv = ["--env-file", "settings.env", "--host", "::1", "--log-level", "debug", "--workers", "1"]
    sources = {}  # type: Dict[str, str]
    load_config(build_parser().parse_args(argv), env, cwd=str(tmp_path), sources=sources)
    assert sources == {
        "GIGAPROXY_ENV_FILE": "flag --env-file",
        "GIGACHAT_AUTH_KEY": "env",
        "GIGACHAT_SCOPE": "env file " + path,
        "GIGACHAT_MODEL": "env",  # the environment beats the env file
        "GIGAPROXY_PORT": "env file " + path,
        "https_proxy": "env",
        "GIGAPROXY_HOST": "flag --host",  # an empty variable counts as unset
        "GIGAPROXY_LOG_LEVEL": "flag --log-level",
        "GIGAPROXY_WORKERS": "flag --workers",
    }
    assert load_config(build_parser().parse_args([]), {"GIGACHAT_CREDENTIALS": KEY}, cwd=str(tmp_path)).port == 4000


# --------------------------------------------------------------------------
# the env file: where it is looked for
# --------------------------------------------------------------------------
def test_no_env_file_is_fine(tmp_path):
    assert not (tmp_path / ".env").exists()
    assert make(tmp_path, with_key()).credentials == KEY


def test_dot_env_in_cwd_is_read(tmp_path):
    write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % KEY)
    assert make(tmp_path, {}).credentials == KEY


def test_dot_env_elsewhere_is_not_read(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    write_env_file(other, "GIGACHAT_CREDENTIALS=%s\n" % KEY)
    work = tmp_path / "work"
    work.mkdir()
    message = make_error(work, {})
    assert "GIGACHAT_CREDENTIALS" in message


def test_dot_env_with_bom_and_crlf(tmp_path):
    """Windows Notepad writes a BOM and CRLF line ends."""
    path = tmp_path / ".env"
    path.write_bytes(b"\xef\xbb\xbfGIGACHAT_CREDENTIALS=" + KEY.encode() + b"\r\nGIGACHAT_MODEL=GigaChat-2-Max\r\n")
    config = make(tmp_path, {})
    assert config.credentials == KEY
    assert config.model == "GigaChat-2-Max"


def test_malformed_dot_env_is_an_error_naming_file_and_line(tmp_path):
    write_env_file(tmp_path, "# settings\nGIGACHAT_CREDENTIALS=%s\nthis line is wrong\n" % KEY)
    message = make_error(tmp_path, {})
    assert ".env" in message
    assert "line 3" in message


def test_env_file_flag(tmp_path):
    custom = write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % KEY, name="custom.env")
    assert make(tmp_path, {}, argv=["--env-file", custom]).credentials == KEY


def test_env_file_flag_relative_to_cwd(tmp_path):
    write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % KEY, name="custom.env")
    assert make(tmp_path, {}, argv=["--env-file", "custom.env"]).credentials == KEY


def test_env_file_variable(tmp_path):
    custom = write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % KEY, name="custom.env")
    assert make(tmp_path, {"GIGAPROXY_ENV_FILE": custom}).credentials == KEY


def test_explicit_env_file_replaces_dot_env(tmp_path):
    write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\nGIGACHAT_MODEL=FromDotEnv\n" % KEY)
    custom = write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % OTHER_KEY, name="custom.env")
    config = make(tmp_path, {}, argv=["--env-file", custom])
    assert config.credentials == OTHER_KEY
    assert config.model == gigaproxy.DEFAULT_MODEL


def test_env_file_flag_beats_variable(tmp_path):
    by_flag = write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % KEY, name="flag.env")
    by_env = write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % OTHER_KEY, name="var.env")
    config = make(tmp_path, {"GIGAPROXY_ENV_FILE": by_env}, argv=["--env-file", by_flag])
    assert config.credentials == KEY


def test_env_file_flag_missing_is_an_error(tmp_path):
    missing = str(tmp_path / "missing.env")
    message = make_error(tmp_path, with_key(), argv=["--env-file", missing])
    assert "missing.env" in message
    assert "--env-file" in message or "GIGAPROXY_ENV_FILE" in message


def test_env_file_variable_missing_is_an_error(tmp_path):
    missing = str(tmp_path / "missing.env")
    message = make_error(tmp_path, with_key(GIGAPROXY_ENV_FILE=missing))
    assert "missing.env" in message
    assert "GIGAPROXY_ENV_FILE" in message


def test_environment_beats_env_file_for_credentials(tmp_path):
    write_env_file(tmp_path, "GIGACHAT_CREDENTIALS=%s\n" % OTHER_KEY)
    assert make(tmp_path, {"GIGACHAT_CREDENTIALS": KEY}).credentials == KEY


# --------------------------------------------------------------------------
# parse_env_file
# --------------------------------------------------------------------------
def test_env_file_comments_and_blank_lines():
    text = "# a comment\n\n   \n  # indented comment\nA=1\n\nB=2\n"
    assert parse_env_file(text) == {"A": "1", "B": "2"}


def test_env_file_export_prefix():
    assert parse_env_file("export A=1\nexport   B='two'\n") == {"A": "1", "B": "two"}


def test_env_file_single_quotes_are_literal():
    text = "A='a\\nb'\nB='x # not a comment'\nC='has \"double\" inside'\nD='$HOME'\n"
    assert parse_env_file(text) == {
        "A": "a\\nb",
        "B": "x # not a comment",
        "C": 'has "double" inside',
        "D": "$HOME",
    }


def test_env_file_double_quotes_with_escapes():
    text = 'A="line1\\nline2"\nB="tab\\there"\nC="say \\"hi\\""\nD="back\\\\slash"\nE="x # kept"\n'
    assert parse_env_file(text) == {
        "A": "line1\nline2",
        "B": "tab\there",
        "C": 'say "hi"',
        "D": "back\\slash",
        "E": "x # kept",
    }


def test_env_file_quoted_value_then_comment():
    assert parse_env_file("A=\"v\" # note\nB='w'   # note\n") == {"A": "v", "B": "w"}


def test_env_file_inline_comment_on_unquoted_value():
    text = "A=value # a comment\nC=val#ue\nD=  spaced   \nE=a b c  # words\n"
    result = parse_env_file(text)
    assert result["A"] == "value"
    assert result["C"] == "val#ue", "a '#' not preceded by whitespace is part of the value"
    assert result["D"] == "spaced"
    assert result["E"] == "a b c"


def test_env_file_inline_comment_after_a_tab():
    """python-dotenv (whose syntax the docstring promises) starts a comment at any whitespace + '#'."""
    assert parse_env_file("B=value\t# tab comment\n") == {"B": "value"}


def test_env_file_equals_inside_values():
    text = "KEY=%s\nURL=https://h.test/p?a=1&b=2\nQ=\"a=b\"\n" % KEY
    assert parse_env_file(text) == {"KEY": KEY, "URL": "https://h.test/p?a=1&b=2", "Q": "a=b"}


def test_env_file_empty_values():
    assert parse_env_file("A=\nB=''\nC=\"\"\nD= \n") == {"A": "", "B": "", "C": "", "D": ""}


def test_env_file_spaces_around_equals():
    assert parse_env_file("A = 1\nB= two\n") == {"A": "1", "B": "two"}


def test_env_file_crlf():
    assert parse_env_file("A=1\r\nB='2'\r\n") == {"A": "1", "B": "2"}


@pytest.mark.parametrize("text,lineno", [
    ("A=1\njust some words\n", 2),
    ("# c\n\nA=1\n=novalue\n", 4),
    ("1BAD=x\n", 1),
    ("A=1\nB=2\nC='unterminated\n", 3),
    ('A="unterminated\n', 1),
    ("A='ok' trailing junk\n", 1),
    ("BAD KEY=1\n", 1),
])
def test_env_file_malformed_line_names_file_and_line(text, lineno):
    with pytest.raises(ConfigError) as info:
        parse_env_file(text, "/etc/gigaproxy/my.env")
    message = str(info.value)
    assert "/etc/gigaproxy/my.env" in message
    assert "line %d" % lineno in message
    assert "\n" not in message


def test_env_file_error_on_malformed_line_does_not_print_a_quoted_secret():
    with pytest.raises(ConfigError) as info:
        parse_env_file("GIGACHAT_CREDENTIALS='%s\n" % KEY, ".env")
    assert KEY not in str(info.value)


def test_env_file_error_on_malformed_line_does_not_echo_the_value():
    """A line missing its '=' is usually 'NAME value': echoing the line prints the secret to the terminal."""
    with pytest.raises(ConfigError) as info:
        parse_env_file("GIGACHAT_CREDENTIALS %s\n" % KEY, ".env")
    message = str(info.value)
    assert "line 1" in message
    assert KEY[:8] not in message


# --------------------------------------------------------------------------
# repr never shows a secret
# --------------------------------------------------------------------------
def test_repr_hides_credentials(tmp_path):
    config = make(tmp_path, {"GIGACHAT_CREDENTIALS": "Basic " + KEY})
    for text in (repr(config), str(config), "%r" % (config,), "{}".format(config)):
        assert KEY not in text
        assert "***" in text


def test_repr_hides_password_token_and_key_password(tmp_path, readable):
    config = make(tmp_path, {
        "GIGACHAT_USER": "alice",
        "GIGACHAT_PASSWORD": "pa55w0rd-value",
        "GIGACHAT_ACCESS_TOKEN": "static-token-value",
        "GIGACHAT_CERT_FILE": readable("c.pem"),
        "GIGACHAT_KEY_FILE": readable("c.key"),
        "GIGACHAT_KEY_FILE_PASSWORD": "key-pass-value",
    })
    text = repr(config)
    for secret in ("pa55w0rd-value", "static-token-value", "key-pass-value"):
        assert secret not in text
    assert "alice" in text, "non-secret fields stay visible (repr is for debugging)"


def test_repr_hides_proxy_password(tmp_path):
    """Proxy credentials in HTTPS_PROXY are credentials too (issue: 'never appear in any log')."""
    config = make(tmp_path, with_key(HTTPS_PROXY="http://bob:pr0xy-pa55@proxy.corp.test:3128"))
    assert "pr0xy-pa55" not in repr(config)


def test_repr_shows_unset_secrets_as_none(tmp_path):
    text = repr(make(tmp_path, with_key()))
    assert "password=None" in text and "access_token=None" in text


# --------------------------------------------------------------------------
# proxy_bypassed (NO_PROXY, as curl reads it)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("no_proxy", [None, "", " ", ",", " , "])
def test_no_proxy_empty_bypasses_nothing(no_proxy):
    assert proxy_bypassed("gigachat.devices.sberbank.ru", 443, no_proxy) is False


@pytest.mark.parametrize("host", ["gigachat.devices.sberbank.ru", "10.1.2.3", "::1", "localhost"])
def test_no_proxy_star_bypasses_everything(host):
    assert proxy_bypassed(host, 443, "*") is True


@pytest.mark.parametrize("entry", ["sberbank.ru", ".sberbank.ru", "devices.sberbank.ru", "SBERBANK.RU"])
@pytest.mark.parametrize("host,expected", [
    ("gigachat.devices.sberbank.ru", True),
    ("ngw.devices.sberbank.ru", True),
    ("GigaChat.Devices.Sberbank.RU", True),
    ("gigachat.devices.sberbank.ru.", True),
    ("notsberbank.ru", False),
    ("sberbank.ru.evil.test", False),
    ("sberbank.rux", False),
    ("example.test", False),
])
def test_no_proxy_domain_and_subdomains(entry, host, expected):
    assert proxy_bypassed(host, 443, entry) is expected


@pytest.mark.parametrize("entry", ["sberbank.ru", ".sberbank.ru"])
def test_no_proxy_domain_matches_itself(entry):
    assert proxy_bypassed("sberbank.ru", 443, entry) is True


def test_no_proxy_list_separators():
    no_proxy = "localhost, 127.0.0.1 ,.corp.test  example.test,,other.test"
    for host in ("localhost", "127.0.0.1", "git.corp.test", "example.test", "other.test"):
        assert proxy_bypassed(host, 443, no_proxy) is True, host
    assert proxy_bypassed("gigachat.devices.sberbank.ru", 443, no_proxy) is False


def test_no_proxy_host_and_port():
    assert proxy_bypassed("ngw.devices.sberbank.ru", 9443, "ngw.devices.sberbank.ru:9443") is True
    assert proxy_bypassed("ngw.devices.sberbank.ru", 443, "ngw.devices.sberbank.ru:9443") is False
    assert proxy_bypassed("gigachat.devices.sberbank.ru", 443, ".sberbank.ru:443") is True
    assert proxy_bypassed("gigachat.devices.sberbank.ru", 8443, ".sberbank.ru:443") is False
    assert proxy_bypassed("10.1.2.3", 8443, "10.1.2.3:8443") is True
    assert proxy_bypassed("10.1.2.3", 443, "10.1.2.3:8443") is False


def test_no_proxy_ip_addresses():
    assert proxy_bypassed("10.1.2.3", 443, "10.1.2.3") is True
    assert proxy_bypassed("10.1.2.4", 443, "10.1.2.3") is False
    assert proxy_bypassed("127.0.0.1", 443, "localhost,127.0.0.1") is True


def test_no_proxy_cidr():
    assert proxy_bypassed("10.1.2.3", 443, "10.0.0.0/8") is True
    assert proxy_bypassed("11.0.0.1", 443, "10.0.0.0/8") is False
    assert proxy_bypassed("192.168.5.6", 443, "172.16.0.0/12,192.168.0.0/16") is True
    assert proxy_bypassed("172.32.0.1", 443, "172.16.0.0/12") is False


def test_no_proxy_ip_entry_does_not_match_names():
    """No DNS lookups: a name is never compared against an address or a CIDR block."""
    assert proxy_bypassed("gigachat.devices.sberbank.ru", 443, "10.0.0.0/8,10.1.2.3") is False


def test_no_proxy_name_entry_does_not_match_addresses():
    assert proxy_bypassed("10.1.2.3", 443, "sberbank.ru,localhost") is False
    assert proxy_bypassed("10.1.2.3", 443, "2.3") is False


@pytest.mark.parametrize("host", ["::1", "[::1]"])
def test_no_proxy_ipv6(host):
    assert proxy_bypassed(host, 443, "::1") is True
    assert proxy_bypassed(host, 443, "[::1]") is True
    assert proxy_bypassed(host, 443, "::2") is False
    assert proxy_bypassed(host, 8443, "[::1]:8443") is True
    assert proxy_bypassed(host, 443, "[::1]:8443") is False


def test_no_proxy_ipv6_cidr():
    assert proxy_bypassed("fd12:3456::1", 443, "fd00::/8") is True
    assert proxy_bypassed("2001:db8::1", 443, "fd00::/8") is False
    assert proxy_bypassed("2001:db8::1", 443, "localhost,2001:db8::/32") is True


def test_no_proxy_ipv4_host_not_matched_by_ipv6_entry():
    assert proxy_bypassed("10.1.2.3", 443, "::/0") is False
