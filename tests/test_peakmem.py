"""PeakMemory: the peak resident memory of this process or of a process tree while a block runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from culturegan.peakmem import PeakMemory

MB = 2**20


def test_own_process_peak_sees_memory_allocated_and_freed_inside_the_block():
    with PeakMemory() as before:
        pass
    with PeakMemory() as during:
        block = np.ones(200 * MB // 8)  # 200 MB, every page touched
        del block
    assert during.rss >= before.rss + 150 * MB  # freed before the block ended, still the peak
    assert during.anon >= 150 * MB
    assert during.anon <= during.rss


def test_descendants_are_sampled_and_the_root_is_not():
    # a parent that only waits for its child; the child holds 200 MB for a second
    holder = "import numpy, time; a = numpy.ones(200 * 2**20 // 8); time.sleep(1.0)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {holder!r}], check=True)"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    with PeakMemory(proc.pid, descendants=True, interval=0.02) as tree:
        proc.wait()
    assert proc.returncode == 0
    assert tree.anon >= 150 * MB and tree.rss >= tree.anon
    # a process without children: nothing is sampled (its own memory is not counted)
    lone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    with PeakMemory(lone.pid, descendants=True) as none:
        lone.wait()
    assert none.rss == none.anon == none.file == 0
