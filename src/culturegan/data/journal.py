"""The ingest journal (`data.cache_dir/ingest-journal.jsonl`): every file's result, one JSON line.

A line holds the file's origin, the sha256 of its bytes, the task key (what else the result
depends on: ingest_workers._task_key), the hash of the ingest code that wrote it and the result's
fields, so a rerun, or a run after a kill, takes a file's result from here instead of decoding it
again.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from culturegan.fileio import atomic_path

JOURNAL_NAME = "ingest-journal.jsonl"


_RESULT_FIELDS = (
    "status",
    "split",
    "reason",
    "detail",
    "path",
    "width",
    "height",
    "mode",
    "phash",
    "intensity_std",
    "tiles",
    "blank_tiles",
)


def read_journal(path: Path) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(origin, task key) -> sha256 -> result; a line cut short by a kill is skipped."""
    known: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    if not path.is_file():
        return known
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
                known[(entry["origin"], entry["key"])][entry["sha256"]] = entry["result"]
            except (ValueError, KeyError, TypeError):
                continue
    return known


def journal_line(key: str, res: dict[str, Any], code: str) -> str:
    """One result as a journal line; `code` is the hash of the ingest code that produced it."""
    result = {k: res[k] for k in _RESULT_FIELDS if k in res}
    return json.dumps(
        {"origin": res["origin"], "sha256": res["sha256"], "key": key, "code": code, "result": result},
        sort_keys=True,
    )


def compact_journal(path: Path, code: str) -> None:
    """Keep one line per (origin, key, sha256), and only lines of this ingest `code` (no other
    code's line can ever match a key again), so reruns and code changes do not grow the journal
    without bound."""
    lines = path.read_text(encoding="utf-8").splitlines()
    latest: dict[tuple[str, str, str], str] = {}
    for line in lines:
        try:
            e = json.loads(line)
            if e.get("code") == code:
                latest[(e["origin"], e["key"], e["sha256"])] = line
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    if len(latest) != len(lines):
        with atomic_path(path) as tmp:
            tmp.write_text("".join(v + "\n" for v in latest.values()), encoding="utf-8")
