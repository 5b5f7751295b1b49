"""The compiled SIP core (mypyc) is used only when built from the sources in the tree, and
the sources pass the same battery when run as they are."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.sip import compiled

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """A copy of the core's sources with a (dummy) complete build and its manifest."""
    for name in compiled.MODULES:
        shutil.copy(compiled.HERE / f"{name}.py", tmp_path)
        (tmp_path / f"{name}{SUFFIX}").write_bytes(b"")
    (tmp_path / f"{compiled.GROUP}__mypyc{SUFFIX}").write_bytes(b"")
    (tmp_path / compiled.MANIFEST.name).write_text(json.dumps(
        {"python": sys.implementation.cache_tag, "sources": compiled.fingerprint(tmp_path)}))
    return tmp_path


def test_a_build_of_the_current_sources_is_used(build: Path) -> None:
    assert compiled.choose(build, {}) == "compiled"


def test_an_edited_source_runs_from_source_and_says_which(build: Path) -> None:
    with (build / "message.py").open("a") as source:
        source.write("# edited after the build\n")
    assert compiled.choose(build, {}) == \
        "source: message.py changed since the build (make setup rebuilds it)"


def test_a_build_without_manifest_or_for_another_python_is_not_used(build: Path) -> None:
    manifest = build / compiled.MANIFEST.name
    manifest.write_text(json.dumps({"python": "cpython-00", "sources": {}}))
    assert compiled.choose(build, {}).startswith("source: compiled for another Python")
    manifest.write_text("{not json")
    assert compiled.choose(build, {}).startswith("source: the compiled build has no manifest")


def test_a_partial_build_or_none_runs_from_source(build: Path) -> None:
    (build / f"uri{SUFFIX}").unlink()
    assert compiled.choose(build, {}).startswith("source: the compiled build is incomplete")
    for path in compiled.extensions(build):
        path.unlink()
    assert compiled.choose(build, {}).startswith("source: not compiled")


def test_mcx_sip_pure_runs_from_source(build: Path) -> None:
    assert compiled.choose(build, {"MCX_SIP_PURE": "1"}) == "source: MCX_SIP_PURE=1"


def test_the_modules_loaded_are_the_ones_the_state_names() -> None:
    for name in compiled.MODULES:
        module = importlib.import_module(f"emulator.sip.{name}")
        is_extension = not str(module.__file__).endswith(".py")
        assert is_extension == (compiled.STATE == "compiled"), (name, module.__file__)


NESTED = "test_the_sources_pass_the_sip_battery_uncompiled"


@pytest.mark.slow
def test_the_sources_pass_the_sip_battery_uncompiled() -> None:
    # CI runs the compiled core (a missing build fails it: tests/support/tools.py), so the
    # sources, which a machine without a compiler runs, are checked here, in a process of
    # their own: the same battery, RFC 4475 and the fuzzers included.
    env = {**os.environ, "MCX_SIP_PURE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/sip", "-q", "-n", "0", "-p", "no:cacheprovider",
         "--deselect", f"tests/sip/test_compiled.py::{NESTED}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def _annotations(cls: type) -> list[str]:
    """The field annotations of ``cls`` as its source writes them (compiled, the dataclass
    fields' types lose their unions)."""
    source = (compiled.HERE / f"{cls.__module__.rpartition('.')[2]}.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return [ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign)]
    raise AssertionError(f"no class {cls.__name__} in its module's source")


def _sample(annotation: str, n: int) -> object:
    """A value of the field's type (the compiled classes check it), distinct for each n."""
    from emulator.sip.events import Address
    from emulator.sip.headers import NameAddress
    from emulator.sip.message import parse_message
    from emulator.sip.uri import URI
    base = annotation.removesuffix(" | None")
    if base == "str":
        return f"v{n}"
    if base == "int":
        return n
    if base == "bool":
        return n % 2 == 0
    if base == "URI":
        return URI("sip", host=f"h{n}.example")
    if base == "NameAddress":
        return NameAddress(URI("sip", host=f"h{n}.example"))
    if base == "Address":
        return Address("udp", "192.0.2.1", n)
    if base in ("Request", "Response"):
        start = "REGISTER sip:x SIP/2.0" if base == "Request" else "SIP/2.0 200 OK"
        return parse_message(
            f"{start}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK{n}\r\nFrom: <sip:a@x>;tag=1\r\n"
            f"To: <sip:a@x>\r\nCall-ID: c{n}\r\nCSeq: 1 REGISTER\r\n"
            "Content-Length: 0\r\n\r\n".encode())
    if base == "Bindings":
        from emulator.sip.headers import Contact
        from emulator.sip.registrar import Binding
        return (Binding(Contact.parse(f"<sip:u{n}@h.example>"), f"c{n}", n, float(n)),)
    if base in ("TransactionKey", "tuple[str, ...]"):
        return (f"k{n}",)
    if base.startswith("tuple"):
        return ((f"p{n}", f"v{n}"),)
    if base.startswith("list"):
        return []
    if base.startswith("dict"):
        return {}
    raise AssertionError(f"no sample for {annotation}")


def test_written_out_initialisers_take_what_their_dataclass_declares() -> None:
    """The hot value classes write their ``__init__`` out, which mypyc compiles (the one
    dataclass generates stays interpreted): each must take the dataclass's fields, in
    order, with the same defaults, and set each of them."""
    from emulator.sip import events
    from emulator.sip import headers
    from emulator.sip import registrar
    from emulator.sip import uri
    classes = [headers.Via, headers.NameAddress, headers.Contact, headers.CSeq,
               headers.ContentType, uri.URI, events.RequestReceived, events.ResponseReceived,
               events.TransactionTimedOut, events.TransportFailed, events.MessageDropped,
               registrar.Registered]
    for cls in classes:
        assert "<string>" not in getattr(cls.__init__, "__code__", compile("", "x", "exec")
                                         ).co_filename, f"{cls.__name__}: dataclass's __init__"
        fields = dataclasses.fields(cls)
        annotations = _annotations(cls)
        assert len(annotations) == len(fields), cls.__name__
        values = [_sample(a, n) for n, a in enumerate(annotations, 1)]
        by_keyword = cls(**{f.name: value for f, value in zip(fields, values, strict=True)})
        by_position = cls(*values)
        for made in (by_keyword, by_position):
            assert [getattr(made, f.name) for f in fields] == values, cls.__name__
        required = [value for f, value in zip(fields, values, strict=True)
                    if f.default is dataclasses.MISSING]
        defaulted = cls(*required)
        assert [getattr(defaulted, f.name) for f in fields if f.default is not dataclasses.MISSING
                ] == [f.default for f in fields if f.default is not dataclasses.MISSING], \
            cls.__name__
