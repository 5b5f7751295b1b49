"""Whether the SIP core runs compiled (mypyc) or from its sources.

``make setup`` compiles the core's modules (:data:`MODULES`) with mypyc into C
extensions beside their sources (``scripts/compile_sip.py``): the same code, typed
as mypy already checks it, runs about twice as fast (``benchmarks/sip_core.py``).
Python prefers an extension module to a source file of the same name, so an
extension built from older sources would run code that is no longer in the tree.
This module, imported by the package before any other, prevents that: the build
writes :data:`MANIFEST`, the SHA-256 of every source it compiled, and the extensions
are used only when every source still matches.  Otherwise, or with ``MCX_SIP_PURE=1``,
a finder loads each module from its source and :data:`STATE` says why.

It is never compiled itself: it must run before the extensions are chosen.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)

PACKAGE = __name__.rpartition(".")[0]
HERE = Path(__file__).resolve().parent
MODULES = ("builder", "dialog", "errors", "events", "framing", "grammar", "headers", "message",
           "multipart", "registrar", "status", "timers", "transaction", "uri")
"""The modules the build compiles: all of the package but this one and ``__init__``."""
GROUP = "compiled"
"""mypyc's shared library for them is ``<GROUP>__mypyc``, inside the package."""
MANIFEST = HERE / "compiled.json"


def fingerprint(directory: Path = HERE) -> dict[str, str]:
    """SHA-256 of each compiled module's source, by file name."""
    return {f"{name}.py": hashlib.sha256((directory / f"{name}.py").read_bytes()).hexdigest()
            for name in MODULES}


def extensions(directory: Path = HERE) -> list[Path]:
    """The built extension modules present in ``directory`` (this interpreter's suffix)."""
    found = []
    for name in (*MODULES, f"{GROUP}__mypyc"):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = directory / f"{name}{suffix}"
            if path.exists():
                found.append(path)
                break
    return found


def choose(directory: Path = HERE, environ: Mapping[str, str] = os.environ) -> str:
    """``"compiled"`` when the extensions may be used, else ``"source: <why>"``."""
    if environ.get("MCX_SIP_PURE") == "1":
        return "source: MCX_SIP_PURE=1"
    built = extensions(directory)
    if len(built) < len(MODULES) + 1:
        return "source: not compiled (make setup compiles it)" if not built else \
            "source: the compiled build is incomplete (make setup rebuilds it)"
    try:
        manifest = json.loads((directory / MANIFEST.name).read_text())
    except (OSError, ValueError):
        return "source: the compiled build has no manifest (make setup rebuilds it)"
    if not isinstance(manifest, dict) or manifest.get("python") != sys.implementation.cache_tag:
        return "source: compiled for another Python (make setup rebuilds it)"
    changed = sorted(name for name, digest in fingerprint(directory).items()
                     if manifest.get("sources", {}).get(name) != digest)
    if changed:
        return f"source: {', '.join(changed)} changed since the build (make setup rebuilds it)"
    return "compiled"


class _SourceFinder:
    """Loads the core's modules from their ``.py`` files, passing over the extensions."""

    def __init__(self, package: str, directory: Path) -> None:
        self._names = {f"{package}.{name}": directory / f"{name}.py" for name in MODULES}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        source = self._names.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def _install() -> str:
    state = choose()
    if state != "compiled" and extensions():  # without them, imports find the sources anyway
        sys.meta_path.insert(0, _SourceFinder(PACKAGE, HERE))
        if os.environ.get("MCX_SIP_PURE") != "1":
            logger.warning("SIP core runs from its sources: %s", state.removeprefix("source: "))
    return state


STATE = _install()
"""``"compiled"``, or ``"source: <why>"``: how this process runs the SIP core."""
