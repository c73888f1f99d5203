"""The host-speed yardstick recorded beside benchmarks (culturegan.hostspeed)."""

from __future__ import annotations

import torch

from culturegan.hostspeed import host_speed
from culturegan.training.runtime import cpu_has_native_bf16


def test_host_speed_times_fixed_work_in_one_thread_and_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        speed = host_speed(budget_s=0.01)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert set(speed) == {"conv_fp32_gflops", "conv_bf16_gflops", "copy_gbps"}
    assert speed["conv_fp32_gflops"] > 0 and speed["copy_gbps"] > 0
    # bf16 only where the CPU has it natively (emulated bf16 would measure the emulation)
    assert (speed["conv_bf16_gflops"] is not None) == cpu_has_native_bf16()
    assert speed["conv_bf16_gflops"] is None or speed["conv_bf16_gflops"] > 0
