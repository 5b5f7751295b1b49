"""What a node keeps across a restart, on disk in the run directory.

A real registrar, MC server, IdMS or P-CSCF keeps its bindings, authorisations,
refresh tokens, replay cache and attachments in a database, so a crash and a
restart lose none of them (Kamailio's usrloc ``db_mode``; an OAuth server's token
store).  Here each durable node has a journal: one JSON line per change,
``{"t": table, "k": key, "v": value}`` (``v`` absent: the key was deleted),
written through to the kernel before the change is acted upon.  A SIGKILL loses
nothing the kernel holds; only a torn last line is possible, and reading skips it.

Reading the journal at start gives the tables back.  The file is rewritten from
the live tables when it has grown past twice their size, so it stays bounded by
what the node holds, which each node bounds itself.  Values are JSON data; the
node decides what they mean and drops what has expired.

A node that serves (an event loop runs) rewrites in steps, one turn of the loop each
(:class:`_Rewrite`): read back at once, 2,000 registered users' journal held the SIP
core for 13-20 ms every second or so at 3,000 REGISTER/s, a stall its overload control
saw as a standing queue when it came on top of a garbage collection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from json.decoder import scanstring  # type: ignore[attr-defined]  # not in typeshed
from json.encoder import c_make_encoder  # type: ignore[attr-defined]  # not in typeshed
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MIN_COMPACTION = 1024
"""Lines appended before a rewrite is worth it, whatever the live size."""
REWRITE_STEP = 64 * 1024
"""Bytes of the old file a serving node's rewrite reads back per turn of its event loop:
a few hundred lines, about half a millisecond (project-defined)."""

Tables = dict[str, dict[str, Any]]


class Journal:
    """A node's durable tables; ``Journal(None)`` keeps nothing (a node outside a run).

    The journal holds no row in memory, only each live row's key (the node's own tables
    hold the same key objects): the node has its tables, and even the rows' JSON lines
    cost every registered user about half a kilobyte in each durable node
    (``benchmarks/scale.py``).  A rewrite reads the file back instead and keeps each key's
    last line, a transient copy that goes when the rewrite is done.  The price is time: a
    rewrite reads every line back, ~40 ms at 10,000 registered UEs (once per twice that many
    changes), where writing held lines took ~5 ms.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._keys: dict[str, set[str]] = {}
        """table -> the keys it holds."""
        self.restored = 0
        """Entries read back at open: what the node had before it (re)started."""
        self._fd: int | None = None
        """The file, open for appending: written with one ``os.write`` per line, no buffer
        between (a buffered file's layers cost a third more a line)."""
        self._appended = 0
        self._live = 0
        self._rewriting: _Rewrite | None = None
        """The rewrite in progress, read back a step per turn of the loop."""

    @property
    def tables(self) -> Tables:
        """The live tables, decoded: what a restart would read back (from the file)."""
        if self.path is None or not self.path.exists():
            return {}
        return _decoded(_scan(self.path))

    def open(self) -> Tables:
        """Read what an earlier life of the node kept; start appending.  Returns the tables."""
        if self.path is None:
            return {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = _scan(self.path) if self.path.exists() else {}
        self._keys = {table: set(rows) for table, rows in lines.items()}
        self.restored = self._live = sum(len(rows) for rows in lines.values())
        self._rewrite(lines)
        return _decoded(lines)

    def put(self, table: str, key: str, value: Any) -> None:
        if self.path is None:
            return
        keys = self._keys.setdefault(table, set())
        if key not in keys:
            keys.add(key)
            self._live += 1
        self._append(_line(table, key, value))

    def delete(self, table: str, key: str) -> None:
        keys = self._keys.get(table)
        if keys is None or key not in keys:
            return
        keys.discard(key)
        self._live -= 1
        self._append(f'{_HEAD}{table}","k":{_string(key)}}}\n')

    def close(self) -> None:
        if self._rewriting is not None:
            self._rewriting.cancel()
            self._rewriting = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, line: str) -> None:
        if self._fd is None:
            return
        # One write() per change: the kernel has it before the node answers anyone.
        try:
            data = line.encode()
            written = os.write(self._fd, data)
            while written < len(data):  # a short write (a signal, a disk filling): the rest
                data = data[written:]
                written = os.write(self._fd, data)
        except OSError as exc:  # a full disk costs durability, never the node
            logger.warning("%s: not kept: %s", self.path, exc)
            return
        self._appended += 1
        if self._appended > max(MIN_COMPACTION, 2 * self._live) and self._rewriting is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # nothing else to serve meanwhile: at once
                self._rewrite()
                return
            self._appended = 0
            self._rewriting = _Rewrite(self, loop)
            self._rewriting.start()

    def _rewrite(self, lines: dict[str, dict[str, str]] | None = None) -> None:
        """The live tables (``lines``, or the file's last line per key), at once."""
        assert self.path is not None
        self._appended = 0
        try:
            self._replace(_scan(self.path) if lines is None else lines)
        except OSError as exc:
            logger.warning("%s: not rewritten: %s", self.path, exc)

    def _replace(self, lines: dict[str, dict[str, str]], tail: bytes = b"") -> None:
        """``lines``, then ``tail`` (appended since they were read, so newer than any of
        them), atomically in place of the file: a crash keeps old or new.

        If it cannot (no descriptor left under a flood, a full disk), OSError: the node
        goes on appending to the file it has, and tries again after as many lines more.
        """
        assert self.path is not None
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as out:
            for rows in lines.values():
                out.writelines(rows.values())
            out.write(tail.decode("utf-8", "replace"))
        fresh = os.open(temporary, os.O_WRONLY | os.O_APPEND)
        os.replace(temporary, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fresh


class _Rewrite:
    """A serving node's rewrite: the file as it was when the rewrite began, read back
    :data:`REWRITE_STEP` bytes per turn of the loop (``call_soon``: what the node has to
    serve comes between two steps); then, at once, its live lines and what was appended
    meanwhile take its place.  The node appends to the old file all along, so a crash at
    any point reads back whole."""

    def __init__(self, journal: Journal, loop: asyncio.AbstractEventLoop) -> None:
        self._journal = journal
        self._loop = loop
        self._fd: int | None = None
        self._lines: dict[str, dict[str, str]] = {}
        self._partial = b""
        self._number = 0
        self._offset = 0
        self._end = 0
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        journal = self._journal
        assert journal.path is not None and journal._fd is not None
        try:
            self._fd = os.open(journal.path, os.O_RDONLY)
            self._end = os.fstat(journal._fd).st_size
        except OSError as exc:
            self._give_up(exc)
            return
        self._handle = self._loop.call_soon(self._step)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _give_up(self, exc: OSError) -> None:
        logger.warning("%s: not rewritten: %s", self._journal.path, exc)
        self.cancel()
        self._journal._rewriting = None

    def _step(self) -> None:
        self._handle = None
        assert self._fd is not None
        path = self._journal.path
        try:
            chunk = os.pread(self._fd, min(REWRITE_STEP, self._end - self._offset),
                             self._offset)
        except OSError as exc:
            self._give_up(exc)
            return
        self._offset += len(chunk)
        *whole, self._partial = (self._partial + chunk).split(b"\n")
        for raw in whole:
            self._number += 1
            _take(self._lines, raw.decode("utf-8", "replace") + "\n", path, self._number)
        if chunk and self._offset < self._end:
            self._handle = self._loop.call_soon(self._step)
            return
        if self._partial:  # a torn line: skipped, as reading at start skips it
            _take(self._lines, self._partial.decode("utf-8", "replace"), path, self._number + 1)
        journal = self._journal
        try:
            tail = os.pread(self._fd, max(0, os.fstat(self._fd).st_size - self._end),
                            self._end)
            journal._replace(self._lines, tail)
        except OSError as exc:
            self._give_up(exc)
            return
        self.cancel()
        journal._rewriting = None


def _not_json(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not JSON data")


_chunks = c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", False, False,
                         True)
"""json's C encoder, made once: ``json.dumps`` (or an encoder's ``encode``) makes one per
call, a third of a line's encoding.  Compact separators, ASCII, no check for circular
references (values are the nodes' own plain data)."""
_string = encode_basestring_ascii


def _line(table: str, key: str, value: Any) -> str:
    """``{"t":table,"k":key,"v":value}`` as one compact JSON line."""
    return f'{_HEAD}{table}","k":{_string(key)},"v":{"".join(_chunks(value, 0))}}}\n'


def _scan(path: Path) -> dict[str, dict[str, str]]:
    """table -> key -> the last line that set it, for the keys the file leaves live."""
    tables: dict[str, dict[str, str]] = {}
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            _take(tables, line, path, number)
    return tables


def _take(tables: dict[str, dict[str, str]], line: str, path: Path | None,
          number: int) -> None:
    """One line of the file into ``tables`` (table -> key -> the last line that set it)."""
    try:
        table, key, sets = _record(line)
    except (ValueError, KeyError, TypeError) as exc:
        # A SIGKILL mid-write tears at most the last line; anything else is damage.
        logger.warning("%s:%d: skipped (%s)", path, number, exc)
        return
    if sets:
        tables.setdefault(table, {})[key] = line if line.endswith("\n") else line + "\n"
    else:
        tables.get(table, {}).pop(key, None)


_HEAD = '{"t":"'


def _record(line: str) -> tuple[str, str, bool]:
    """(table, key, whether it sets a value) of one line; ValueError, KeyError or TypeError
    for anything else.

    Lines are :func:`_line`'s, so table and key are read where it put them, with json's C
    string scanner, and the value is not decoded: a rewrite reads every line, and decoding
    each in full made it 6x slower.  A whole line (ending in a newline) of any other shape
    is decoded in full; a value damaged inside a whole line is found by :func:`_decoded`.
    """
    if line.startswith(_HEAD) and line.endswith("}\n"):
        table, at = scanstring(line, len(_HEAD))
        if line.startswith(',"k":"', at):
            key, at = scanstring(line, at + 6)
            if line.startswith(',"v":', at):
                return table, key, True
            if line[at:] == "}\n":
                return table, key, False
    record = json.loads(line)
    table, key = record["t"], record["k"]
    if not isinstance(table, str) or not isinstance(key, str):
        raise TypeError("table and key must be strings")
    return table, key, "v" in record


def _decoded(lines: dict[str, dict[str, str]]) -> Tables:
    tables: Tables = {table: {} for table in lines}
    for table, rows in lines.items():
        for key, line in rows.items():
            try:
                tables[table][key] = json.loads(line)["v"]
            except (ValueError, KeyError) as exc:
                logger.warning("journal row %s/%s skipped (%s)", table, key, exc)
    return tables


__all__ = ["Journal", "Tables"]
