"""Peak resident memory of a process, or of a process tree, while a block of code runs.

Max RSS counts two kinds of pages: the process's own anonymous memory (tensors, the allocator's
arenas, the interpreter) and the file-backed pages of the shared libraries it has mapped (torch's
are over a gigabyte, and how many of them are resident moves from run to run). Benchmarks keep
both apart (docs/benchmarks.md, "Against the reference again"), so a difference can be placed.
"""

from __future__ import annotations

import contextlib
import threading
from types import TracebackType
from typing import Self

import psutil


class PeakMemory:
    """`with PeakMemory() as m: ...` then `m.rss`, `m.anon`, `m.file`: the largest resident set
    size seen while the block ran, and its anonymous and file-backed parts (bytes; each the
    largest seen, so `anon + file` may exceed `rss`). It samples this process, or with
    `descendants` every descendant of process `pid` (not `pid` itself: e.g. the command that
    `/usr/bin/time` runs), each on its own (the peaks are those of the largest process, not sums
    over the tree), from a thread every `interval` seconds, so a peak shorter than that can be
    missed. Where the platform does not report shared pages, `file` stays 0 and `anon` is RSS.
    """

    def __init__(self, pid: int | None = None, descendants: bool = False, interval: float = 0.005) -> None:
        self.rss = self.anon = self.file = 0
        self._root = psutil.Process(pid)
        self._descendants, self._interval = descendants, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        if not self._descendants:
            return [self._root]
        with contextlib.suppress(psutil.Error):
            return self._root.children(recursive=True)
        return []

    def sample(self) -> None:
        for proc in self._processes():
            with contextlib.suppress(psutil.Error):
                info = proc.memory_info()
                shared = getattr(info, "shared", 0)  # Linux: RssFile + RssShmem
                self.rss = max(self.rss, info.rss)
                self.anon = max(self.anon, info.rss - shared)
                self.file = max(self.file, shared)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
