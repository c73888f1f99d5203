"""Does instance norm compute the right output and gradient in both memory layouts on a device?

torch 2.14.1's CPU `F.instance_norm` returns a wrong input gradient for a single image whose output
gradient is channels-last (docs/benchmarks.md, "Channels-last, made to pay"); the networks'
`InstanceNorm` avoids that kernel on a CPU but calls it on every other device, where its behaviour
has not been measured. `layout_errors` measures one case against the formula in float64;
`check_channels_last` refuses channels-last training on a device where the networks' norm gets
any case wrong (a few milliseconds, before any training work), and the GPU check's `layouts`
part reports every case for torch's kernel and the networks' norm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from culturegan.errors import ConfigError

# Largest error against float64 accepted, by dtype (unit-scale inputs and gradients; the CPU
# fault's gradient error is 1.6-2.2, bf16 rounding stays under 0.05).
LAYOUT_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.1}
# The dtypes a training precision runs its norms in (autocast leaves some in float32).
PRECISION_DTYPES = {
    "fp32": ("float32",), "bf16": ("float32", "bfloat16"), "bf16-full": ("float32", "bfloat16"),
    "fp16": ("float32", "float16"),
}


def layout_errors(
    norm: Callable[[torch.Tensor], torch.Tensor], device: str | torch.device, dtype: str,
    batch: int, input_cl: bool, grad_cl: bool, channels: int = 16, size: int = 12,
) -> dict[str, Any]:
    """Largest error of `norm`'s output and input gradient against instance norm computed in
    float64 on the CPU from its formula, for an input and an output gradient each in the default
    or the channels-last memory layout on `device`."""
    gen = torch.Generator().manual_seed(batch * 100 + channels)
    x64 = torch.randn(batch, channels, size, size, dtype=torch.float64, generator=gen) * 3 + 2
    g64 = torch.randn(batch, channels, size, size, dtype=torch.float64, generator=gen)
    ref_x = x64.clone().requires_grad_()
    mean = ref_x.mean(dim=(2, 3), keepdim=True)
    var = ref_x.var(dim=(2, 3), unbiased=False, keepdim=True)
    ref_y = (ref_x - mean) / torch.sqrt(var + 1e-5)
    (ref_g,) = torch.autograd.grad((ref_y * g64).sum(), ref_x)

    def on_device(t: torch.Tensor, cl: bool) -> torch.Tensor:
        fmt = torch.channels_last if cl else torch.contiguous_format
        return t.to(device=device, dtype=getattr(torch, dtype)).contiguous(memory_format=fmt)

    x, g = on_device(x64, input_cl).requires_grad_(), on_device(g64, grad_cl)
    y = norm(x)
    (gx,) = torch.autograd.grad((y * g).sum(), x)
    out_err = float((y.detach().double().cpu() - ref_y.detach()).abs().max())
    grad_err = float((gx.double().cpu() - ref_g).abs().max())
    tol = LAYOUT_TOLERANCE[dtype]
    return {
        "dtype": dtype, "batch": batch, "input_channels_last": input_cl, "grad_channels_last": grad_cl,
        "output_error": round(out_err, 6), "gradient_error": round(grad_err, 6),
        "ok": out_err <= tol and grad_err <= tol,
    }


def check_channels_last(device: torch.device, precision: str) -> None:
    """A ConfigError naming train.channels_last if the networks' instance norm computes a wrong
    output or gradient for channels-last tensors on `device` in `precision`'s dtypes (one and two
    images, every combination of input and gradient layout)."""
    from culturegan.models.networks import InstanceNorm

    norm = InstanceNorm(16).to(device)
    for dtype in PRECISION_DTYPES[precision]:
        for batch in (1, 2):
            for input_cl, grad_cl in ((True, True), (False, True), (True, False)):
                r = layout_errors(norm, device, dtype, batch, input_cl, grad_cl)
                if not r["ok"]:
                    raise ConfigError(
                        f"train.channels_last: on {device}, instance norm computes a wrong "
                        f"{'gradient' if r['output_error'] <= LAYOUT_TOLERANCE[dtype] else 'output'} "
                        f"for channels-last tensors ({dtype}, {batch} image(s), input "
                        f"{'channels-last' if input_cl else 'default'}, gradient "
                        f"{'channels-last' if grad_cl else 'default'}: error "
                        f"{max(r['output_error'], r['gradient_error']):.3g} against float64)",
                        hint="set train.channels_last: false for this device (docs/benchmarks.md)",
                    )
