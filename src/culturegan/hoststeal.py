"""How much CPU time the host took from this virtual machine while a benchmark ran ("steal").

On a VM whose host is busy, the hypervisor runs other guests while this one wants the CPU; the
kernel counts that time as steal (/proc/stat). Benchmarks keep the share beside their figures, since
a busy host slows runs by tens of percent, and unevenly (docs/benchmarks.md, "The AMX box").
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

STEAL_FIELD = 7  # user nice system idle iowait irq softirq steal guest guest_nice


def cpu_times(stat: Path = Path("/proc/stat")) -> list[int] | None:
    """The machine's CPU time counters (the "cpu" line of /proc/stat), or None where there are none."""
    try:
        first = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    try:
        return [int(x) for x in first[1:]]
    except ValueError:
        return None


def steal_share(before: list[int] | None, after: list[int] | None) -> float | None:
    """Steal as a share of all CPU time between two readings, or None if it cannot be told."""
    if not before or not after or len(before) != len(after) or len(before) <= STEAL_FIELD:
        return None
    delta = [a - b for a, b in zip(after, before, strict=True)]
    total = sum(delta)
    return round(delta[STEAL_FIELD] / total, 3) if total > 0 else None


class StealMeter:
    """`with StealMeter() as m: ...` then `m.share`: the steal share over the block (None if
    unknown, e.g. not on Linux)."""

    def __init__(self, read: Callable[[], list[int] | None] = cpu_times) -> None:
        self._read = read
        self._before: list[int] | None = None
        self.share: float | None = None

    def __enter__(self) -> Self:
        self._before = self._read()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.share = steal_share(self._before, self._read())
