"""The steal share that benchmarks record beside their figures (culturegan.hoststeal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from culturegan.hoststeal import StealMeter, cpu_times, steal_share


def _stat(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "stat"
    path.write_text(line + "\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1\n")
    return path


def test_cpu_times_reads_the_cpu_line_of_proc_stat(tmp_path):
    assert cpu_times(_stat(tmp_path, "cpu  10 1 5 80 2 0 1 7 0 0")) == [10, 1, 5, 80, 2, 0, 1, 7, 0, 0]


@pytest.mark.parametrize("content", ["", "intr 1 2 3", "cpu  10 x 5"])
def test_cpu_times_is_none_for_a_stat_file_it_cannot_read(tmp_path, content):
    path = tmp_path / "stat"
    path.write_text(content)
    assert cpu_times(path) is None
    assert cpu_times(tmp_path / "missing") is None


def test_steal_share_is_the_steal_columns_share_of_all_cpu_time_between_readings():
    before = [100, 0, 50, 800, 0, 0, 0, 50, 0, 0]
    after = [160, 0, 60, 830, 0, 0, 0, 150, 0, 0]  # 200 ticks, of which 100 stolen
    assert steal_share(before, after) == 0.5
    assert steal_share(before, before) is None  # no time passed
    assert steal_share(None, after) is None
    assert steal_share(before[:5], after[:5]) is None  # a kernel without the steal column


def test_steal_meter_takes_one_reading_on_entry_and_one_on_exit():
    readings = iter([[0] * 7 + [0, 0, 0], [30, 0, 10, 40, 0, 0, 0, 20, 0, 0]])
    with StealMeter(read=lambda: next(readings)) as meter:
        assert meter.share is None
    assert meter.share == 0.2

