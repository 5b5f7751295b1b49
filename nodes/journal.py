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
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MIN_COMPACTION = 1024
"""Lines appended before a rewrite is worth it, whatever the live size."""

Tables = dict[str, dict[str, Any]]


class Journal:
    """A node's durable tables; ``Journal(None)`` keeps nothing (a node outside a run)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.tables: Tables = {}
        self.restored = 0
        """Entries read back at open: what the node had before it (re)started."""
        self._file: Any = None
        self._appended = 0

    def open(self) -> Tables:
        """Read what an earlier life of the node kept; start appending.  Returns the tables."""
        if self.path is None:
            return self.tables
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self.tables = _read(self.path)
            self.restored = sum(len(rows) for rows in self.tables.values())
        self._rewrite()
        return self.tables

    def put(self, table: str, key: str, value: Any) -> None:
        self.tables.setdefault(table, {})[key] = value
        self._append({"t": table, "k": key, "v": value})

    def delete(self, table: str, key: str) -> None:
        rows = self.tables.get(table)
        if rows is None or rows.pop(key, None) is None:
            return
        self._append({"t": table, "k": key})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        # One write() per change: the kernel has it before the node answers anyone.
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as exc:  # a full disk costs durability, never the node
            logger.warning("%s: not kept: %s", self.path, exc)
            return
        self._appended += 1
        live = sum(len(rows) for rows in self.tables.values())
        if self._appended > max(MIN_COMPACTION, 2 * live):
            self._rewrite()

    def _rewrite(self) -> None:
        """The live tables, atomically in place of the file (a crash keeps old or new).

        If it cannot (no descriptor left under a flood, a full disk), the node goes on
        appending to the file it has, and tries again after as many lines more.
        """
        assert self.path is not None
        self._appended = 0
        temporary = self.path.with_suffix(".tmp")
        try:
            with temporary.open("w") as out:
                for table, rows in self.tables.items():
                    for key, value in rows.items():
                        out.write(json.dumps({"t": table, "k": key, "v": value},
                                             separators=(",", ":")) + "\n")
            fresh = temporary.open("a", buffering=1)  # line-buffered: a write per line
        except OSError as exc:
            logger.warning("%s: not rewritten: %s", self.path, exc)
            return
        os.replace(temporary, self.path)
        self.close()
        self._file = fresh


def _read(path: Path) -> Tables:
    tables: Tables = {}
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                table, key = record["t"], record["k"]
                if not isinstance(table, str) or not isinstance(key, str):
                    raise TypeError("table and key must be strings")
            except (ValueError, KeyError, TypeError) as exc:
                # A SIGKILL mid-write tears at most the last line; anything else is damage.
                logger.warning("%s:%d: skipped (%s)", path, number, exc)
                continue
            if "v" in record:
                tables.setdefault(table, {})[key] = record["v"]
            else:
                tables.get(table, {}).pop(key, None)
    return tables


__all__ = ["Journal", "Tables"]
