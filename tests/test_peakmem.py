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
    # the child holds 200 MB for a second; the parent (this test) holds nothing new
    code = "import numpy, time; a = numpy.ones(200 * 2**20 // 8); time.sleep(1.0)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    with PeakMemory(descendants=True, interval=0.02) as tree:
        proc.wait()
    with PeakMemory(descendants=True) as none:
        pass  # no descendants left: nothing is sampled, nothing fails
    assert proc.returncode == 0
    assert tree.anon >= 150 * MB and tree.rss >= tree.anon
    assert none.rss == none.anon == none.file == 0
