"""Hygiene (design.md "A hygiene test"): importing gigaproxy has no side effects, every
import is standard library, the source is Python 3.8 syntax, the metadata is sound and
the bundled Russian Trusted Root CA is the expected certificate.

Import side effects are observed in a fresh interpreter (a subprocess with an
environment built from scratch), never in the test process, where pytest and other
tests have already imported gigaproxy.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import os
import re
import ssl
import subprocess
import sys
import sysconfig
import tokenize
import warnings
from typing import Any, Dict, List, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import gigaproxy  # noqa: E402
from conftest import clean_env  # noqa: E402

SOURCE_PATH = os.path.join(ROOT, "gigaproxy.py")
CA_PATH = os.path.join(ROOT, "russian_trusted_root_ca.pem")
CA_SHA256 = ("D2:6D:2D:02:31:B7:C3:9F:92:CC:73:85:12:BA:54:10:"
             "35:19:E4:40:5D:68:B5:BD:70:3E:97:88:CA:8E:CF:31")


def read_source() -> str:
    with open(SOURCE_PATH, encoding="utf-8") as fh:
        return fh.read()


def parse_source() -> ast.Module:
    return ast.parse(read_source(), SOURCE_PATH)


def imported_modules(tree: ast.AST) -> Set[str]:
    """Every module named by an import statement anywhere in the file (functions included)."""
    names = set()  # type: Set[str]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in a single-file module (line %d)" % node.lineno
            assert node.module
            names.add(node.module)
    return names


# --------------------------------------------------------------------------
# import side effects, observed in a fresh interpreter
# --------------------------------------------------------------------------
CHILD = r'''
import builtins, collections.abc, importlib, io, json, logging, os, signal, socket, ssl, sys, threading, warnings

root, out_path = sys.argv[1], sys.argv[2]
modules = json.loads(sys.argv[3])
sys.path.insert(0, root)

# The standard-library modules gigaproxy imports are imported first, so that what is
# observed below is gigaproxy's own import-time code only.
for name in modules:
    importlib.import_module(name)


class RecordingEnviron(collections.abc.MutableMapping):
    """Stands in for os.environ (and so for os.getenv); records every access."""

    def __init__(self, real, log):
        self._real, self._log = real, log

    def __getitem__(self, key):
        self._log.append("get %s" % (key,))
        return self._real[key]

    def __setitem__(self, key, value):
        self._log.append("set %s" % (key,))
        self._real[key] = value

    def __delitem__(self, key):
        self._log.append("del %s" % (key,))
        del self._real[key]

    def __iter__(self):
        self._log.append("iterate")
        return iter(self._real)

    def __len__(self):
        self._log.append("len")
        return len(self._real)

    def __contains__(self, key):
        self._log.append("contains %s" % (key,))
        return key in self._real

    def get(self, key, default=None):
        self._log.append("get %s" % (key,))
        return self._real.get(key, default)

    def copy(self):
        self._log.append("copy")
        return dict(self._real)


env_log = []
os.environ = RecordingEnviron(os.environ, env_log)
if hasattr(os, "environb"):
    os.environb = RecordingEnviron(os.environb, env_log)

sockets = []
RealSocket = socket.socket


class RecordingSocket(RealSocket):
    def __init__(self, *args, **kwargs):
        sockets.append(repr(args))
        super().__init__(*args, **kwargs)


socket.socket = RecordingSocket

thread_starts = []
real_start = threading.Thread.start


def recording_start(self, *args, **kwargs):
    thread_starts.append(self.name)
    return real_start(self, *args, **kwargs)


threading.Thread.start = recording_start

opened = []
real_open = builtins.open


def recording_open(file, *args, **kwargs):
    opened.append(str(file))
    return real_open(file, *args, **kwargs)


builtins.open = recording_open
io.open = recording_open

# The recorders must themselves work, or an empty record proves nothing.
os.getenv("GIGAPROXY_PROBE")
probe_env = list(env_log)
probe_socket = RecordingSocket(socket.AF_INET, socket.SOCK_STREAM)
probe_socket.close()
probe_sockets = list(sockets)
del env_log[:], sockets[:]


def handler_snapshot():
    loggers = {"<root>": logging.getLogger()}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            loggers[name] = logger
    return {name: [repr(h) for h in logger.handlers] for name, logger in loggers.items()}


def signal_snapshot():
    result = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"):
        if hasattr(signal, name):
            result[name] = repr(signal.getsignal(getattr(signal, name)))
    return result


def process_state():
    return {
        "threads": threading.active_count(),
        "handlers": handler_snapshot(),
        "root_level": logging.getLogger().level,
        "signals": signal_snapshot(),
        "sys_path": list(sys.path),
        "warning_filters": repr(warnings.filters),
        "excepthook": repr(sys.excepthook),
        "default_timeout": socket.getdefaulttimeout(),
        "https_context": repr(ssl._create_default_https_context),
        "cwd": os.getcwd(),
    }


before = process_state()

captured_out, captured_err = io.StringIO(), io.StringIO()
real_out, real_err = sys.stdout, sys.stderr
sys.stdout, sys.stderr = captured_out, captured_err
try:
    import gigaproxy
finally:
    sys.stdout, sys.stderr = real_out, real_err

after = process_state()
after["handlers"] = {k: v for k, v in after["handlers"].items() if k in before["handlers"] or v}

report = {
    "stdout": captured_out.getvalue(),
    "stderr": captured_err.getvalue(),
    "env_reads": list(env_log),
    "sockets": list(sockets),
    "thread_starts": list(thread_starts),
    "opened": list(opened),
    "before": before,
    "after": after,
    "probe_env": probe_env,
    "probe_sockets": probe_sockets,
    "gigaproxy_handlers": [repr(h) for h in logging.getLogger("gigaproxy").handlers],
    "module_file": gigaproxy.__file__,
}
builtins.open = real_open
io.open = real_open
with real_open(out_path, "w", encoding="utf-8") as fh:
    json.dump(report, fh)
'''


@pytest.fixture(scope="module")
def import_report(tmp_path_factory):
    """Import gigaproxy once in an instrumented fresh interpreter; return what it observed."""
    directory = tmp_path_factory.mktemp("hygiene")
    script = directory / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    out_path = directory / "report.json"
    modules = sorted(imported_modules(parse_source()) - {"__future__"})
    proc = subprocess.run(
        [sys.executable, "-W", "default", str(script), ROOT, str(out_path), json.dumps(modules)],
        cwd=str(directory), env=clean_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
    )
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    with open(str(out_path), encoding="utf-8") as fh:
        report = json.load(fh)
    report["process_stdout"] = proc.stdout.decode("utf-8", "replace")
    report["process_stderr"] = proc.stderr.decode("utf-8", "replace")
    return report


def test_instrumented_import_is_of_this_checkout(import_report):
    assert os.path.samefile(import_report["module_file"], SOURCE_PATH)


def test_recorders_work(import_report):
    """os.getenv goes through the recording mapping, and socket creation is seen."""
    assert import_report["probe_env"] == ["get GIGAPROXY_PROBE"]
    assert len(import_report["probe_sockets"]) == 1


def test_import_prints_nothing(import_report):
    assert import_report["stdout"] == ""
    assert import_report["stderr"] == ""
    assert import_report["process_stdout"] == ""
    assert import_report["process_stderr"] == "", "warnings or output at import time"


def test_import_reads_no_environment(import_report):
    assert import_report["env_reads"] == []


def test_import_opens_no_socket(import_report):
    assert import_report["sockets"] == []


def test_import_starts_no_thread(import_report):
    assert import_report["thread_starts"] == []
    assert import_report["after"]["threads"] == import_report["before"]["threads"]


def test_import_opens_no_file(import_report):
    assert import_report["opened"] == []


def test_import_adds_no_logging_handlers(import_report):
    before, after = import_report["before"], import_report["after"]
    assert after["handlers"] == before["handlers"]
    assert after["root_level"] == before["root_level"]
    assert import_report["gigaproxy_handlers"] == []


@pytest.mark.parametrize("what", ["signals", "sys_path", "warning_filters", "excepthook", "default_timeout",
                                  "https_context", "cwd"])
def test_import_changes_no_process_state(import_report, what):
    assert import_report["after"][what] == import_report["before"][what]


def test_plain_import_is_silent(tmp_path):
    """``python -c "import gigaproxy"``, warnings shown: no output at all."""
    code = "import sys; sys.path.insert(0, %r); import gigaproxy" % ROOT
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=str(tmp_path), env=clean_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert proc.stderr == b""


def test_import_without_site_packages(tmp_path):
    """With ``-S -s`` no site-packages directory is on sys.path: only the standard library is there."""
    code = ("import sys; sys.path.insert(0, %r); import gigaproxy; "
            "assert not any('site-packages' in p or 'dist-packages' in p for p in sys.path), sys.path" % ROOT)
    proc = subprocess.run([sys.executable, "-S", "-s", "-c", code], cwd=str(tmp_path), env=clean_env(),
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# every import is standard library
# --------------------------------------------------------------------------
def _stdlib_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    dirs = []
    for key in ("stdlib", "platstdlib"):
        if paths.get(key):
            dirs.append(os.path.normcase(os.path.realpath(paths[key])))
    return dirs


def _is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    names = getattr(sys, "stdlib_module_names", None)  # 3.10+
    if names is not None and top not in names:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    origin = spec.origin
    if origin in (None, "built-in", "frozen"):
        return True
    path = os.path.normcase(os.path.realpath(origin))
    parts = re.split(r"[\\/]", path)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return any(path.startswith(d + os.sep) for d in _stdlib_dirs())


def test_imports_found():
    modules = imported_modules(parse_source())
    # sanity: the walk sees the imports the proxy obviously needs, and those made inside
    # functions (start-up time: hmac and email.utils are imported where they are used)
    for name in ("ssl", "json", "socket", "argparse", "logging", "hmac", "email.utils"):
        assert name in modules


def test_every_import_is_standard_library():
    offenders = sorted(name for name in imported_modules(parse_source()) if not _is_stdlib(name))
    assert offenders == []


def test_stdlib_classifier_rejects_third_party():
    """The classifier must be able to say no: pytest itself is not standard library."""
    assert not _is_stdlib("pytest")
    assert not _is_stdlib("no_such_module_anywhere_xyz")
    assert _is_stdlib("json") and _is_stdlib("http.client") and _is_stdlib("sys")


def test_no_dynamic_imports():
    for node in ast.walk(parse_source()):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            assert name not in ("__import__", "import_module"), "dynamic import at line %d" % node.lineno


# --------------------------------------------------------------------------
# Python 3.8 syntax and APIs
# --------------------------------------------------------------------------
def test_parses_and_compiles_without_warnings():
    source = read_source()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. invalid escape sequences (SyntaxWarning / DeprecationWarning)
        compile(source, SOURCE_PATH, "exec", dont_inherit=True)


def test_parses_as_python_3_8():
    try:
        ast.parse(read_source(), SOURCE_PATH, feature_version=(3, 8))
    except TypeError:  # pragma: no cover - ast.parse without feature_version (< 3.8)
        pytest.skip("ast.parse has no feature_version here")
    except ValueError as exc:  # pragma: no cover - (3, 8) no longer supported by this parser
        pytest.skip("feature_version=(3, 8) unsupported: %s" % exc)


def test_no_parenthesised_context_managers():
    """``with (a as x, b as y):`` is 3.9+ grammar; ast's feature_version does not reject it, so look at tokens."""
    tokens = list(tokenize.generate_tokens(io.StringIO(read_source()).readline))
    problems = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME or tok.string != "with":
            continue
        if i + 1 >= len(tokens) or tokens[i + 1].string != "(":
            continue
        depth = 0
        for later in tokens[i + 1:]:
            if later.string in "([{" and later.type == tokenize.OP:
                depth += 1
            elif later.string in ")]}" and later.type == tokenize.OP:
                depth -= 1
                if depth == 0:
                    break
            elif depth == 1 and later.type == tokenize.NAME and later.string == "as":
                problems.append("parenthesised context managers at line %d" % tok.start[0])
                break
    assert problems == []


def _annotation_nodes(tree: ast.AST) -> Set[int]:
    """ids of every node inside an annotation (strings at runtime thanks to __future__ annotations)."""
    roots = []  # type: List[ast.AST]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.returns is not None:
                roots.append(node.returns)
            args = node.args
            for arg in list(args.args) + list(args.kwonlyargs) + list(getattr(args, "posonlyargs", [])) + \
                    [a for a in (args.vararg, args.kwarg) if a is not None]:
                if arg.annotation is not None:
                    roots.append(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(sub) for root in roots for sub in ast.walk(root)}


def test_future_annotations():
    tree = parse_source()
    futures = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    assert any(alias.name == "annotations" for n in futures for alias in n.names)


# typing names and modules that do not exist on Python 3.8
NEWER_TYPING = {"Annotated", "TypeAlias", "ParamSpec", "Concatenate", "TypeGuard", "Self", "Never",
                "LiteralString", "Required", "NotRequired", "Unpack", "TypeVarTuple", "override",
                "assert_never", "assert_type", "reveal_type", "dataclass_transform", "is_typeddict",
                "get_overloads", "clear_overloads", "TypeIs", "ReadOnly", "NoDefault"}
NEWER_MODULES = {"zoneinfo", "graphlib", "tomllib"}
NEWER_METHODS = {"removeprefix", "removesuffix"}  # str/bytes methods added in 3.9
NEWER_FUNCTIONS = {("functools", "cache"), ("itertools", "pairwise"), ("itertools", "batched"), ("math", "lcm"),
                   ("math", "nextafter"), ("math", "ulp"), ("random", "randbytes"), ("asyncio", "to_thread"),
                   ("os", "waitstatus_to_exitcode"), ("sys", "orig_argv"), ("sys", "stdlib_module_names")}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}


def test_no_runtime_features_newer_than_3_8():
    tree = parse_source()
    in_annotation = _annotation_nodes(tree)
    problems = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if type(node).__name__ in ("Match", "TryStar", "TypeAlias"):
            problems.append("%s statement at line %d" % (type(node).__name__, line))
        if isinstance(node, ast.ImportFrom) and node.module == "typing":
            problems.extend("typing.%s (line %d)" % (a.name, line) for a in node.names if a.name in NEWER_TYPING)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            problems.extend("import %s (line %d)" % (n, line) for n in names if n.split(".")[0] in NEWER_MODULES)
        if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS and id(node) not in in_annotation:
            problems.append(".%s() at line %d" % (node.attr, line))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                (node.value.id, node.attr) in NEWER_FUNCTIONS:
            problems.append("%s.%s at line %d" % (node.value.id, node.attr, line))
        if isinstance(node, ast.Subscript) and id(node) not in in_annotation:
            if isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
                problems.append("%s[...] at runtime, line %d" % (node.value.id, line))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in in_annotation:
            sides = (node.left, node.right)
            if any(isinstance(s, ast.Constant) and s.value is None for s in sides) or \
                    any(isinstance(s, ast.Name) and s.id in ("str", "int", "float", "bytes", "bool") for s in sides):
                problems.append("X | Y type union at runtime, line %d" % line)
        if isinstance(node, ast.Call) and any(k.arg in ("slots", "kw_only") for k in node.keywords):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "dataclass":
                problems.append("dataclass(slots/kw_only) at line %d" % line)
    assert problems == []


# --------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------
def test_version_is_a_string():
    assert isinstance(gigaproxy.__version__, str)
    assert re.match(r"^\d+\.\d+(\.\d+)?([.-]?(a|b|rc|dev|post)\d*)?$", gigaproxy.__version__), gigaproxy.__version__


def test_version_is_used_by_version_flag(capsys):
    with pytest.raises(SystemExit) as info:
        gigaproxy.build_parser().parse_args(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == "gigaproxy " + gigaproxy.__version__


def test_version_is_used_by_server_header_and_user_agent():
    assert gigaproxy.__version__ in gigaproxy.USER_AGENT
    assert gigaproxy.__version__ in gigaproxy.Handler.server_version


def test_version_defined_once():
    tree = parse_source()
    assignments = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == "__version__" for t in n.targets)]
    assert len(assignments) == 1
    assert isinstance(assignments[0].value, ast.Constant) and isinstance(assignments[0].value.value, str)


def test_all_names_exist():
    assert isinstance(gigaproxy.__all__, list)
    assert len(set(gigaproxy.__all__)) == len(gigaproxy.__all__), "duplicates in __all__"
    missing = [name for name in gigaproxy.__all__ if not hasattr(gigaproxy, name)]
    assert missing == []
    assert all(isinstance(name, str) for name in gigaproxy.__all__)


def test_all_covers_the_documented_api():
    for name in ("main", "load_config", "make_server", "to_gigachat_request", "to_openai_response",
                 "StreamTranslator", "Config", "ConfigError", "__version__"):
        assert name in gigaproxy.__all__, name


def test_star_import_works():
    namespace = {}  # type: Dict[str, Any]
    exec("from gigaproxy import *", namespace)  # noqa: S102 - the public API as a vendoring repo sees it
    for name in gigaproxy.__all__:
        assert name in namespace


def test_module_docstring_describes_usage():
    doc = gigaproxy.__doc__ or ""
    assert "GIGACHAT_CREDENTIALS" in doc
    assert "python gigaproxy.py" in doc


# --------------------------------------------------------------------------
# the bundled Russian Trusted Root CA
# --------------------------------------------------------------------------
def test_bundled_root_ca_fingerprint():
    with open(CA_PATH, encoding="ascii") as fh:
        pem = fh.read()
    assert pem.count("-----BEGIN CERTIFICATE-----") == 1
    der = ssl.PEM_cert_to_DER_cert(pem)
    digest = hashlib.sha256(der).hexdigest().upper()
    fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
    assert fingerprint == CA_SHA256


def test_bundled_root_ca_loads_as_a_trust_anchor():
    context = ssl.create_default_context(cafile=CA_PATH)
    subjects = [dict(item[0] for item in cert["subject"]) for cert in context.get_ca_certs()]
    assert any(s.get("commonName") == "Russian Trusted Root CA" for s in subjects), subjects
