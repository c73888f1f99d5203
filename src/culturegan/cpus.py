"""How many CPUs this process may use: its affinity mask (a container's or taskset's limit), not
the machine's core count that os.cpu_count() reports."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1
