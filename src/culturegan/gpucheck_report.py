"""The GPU check's result against issue 13's GPU targets, and its markdown rendering
(`culturegan.gpucheck` measures and writes both after every measurement)."""

from __future__ import annotations

import json
from typing import Any

# Targets of issue 13 (GPU): tuned vs plain at 256x256, resnet 9 blocks, ngf 64, batch 1-8.
TARGET_SPEEDUP = 2.0
TARGET_MEM_RATIO = 0.6
TARGET_IMAGES_PER_S = 100.0


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """Issue 13's GPU targets, per batch: best tuned vs plain on img/s and on peak memory."""
    rows = [r for r in result.get("matrix", []) if "images_per_s" in r]
    out: dict[str, Any] = {
        "speedup_min": TARGET_SPEEDUP,
        "mem_ratio_max": TARGET_MEM_RATIO,
        "images_per_s_min": TARGET_IMAGES_PER_S,
        "per_batch": {},
    }
    best_ips = 0.0
    for batch in sorted({r["batch"] for r in rows}):
        plain = [r for r in rows if r["batch"] == batch and r["kind"] == "plain"]
        tuned = [r for r in rows if r["batch"] == batch and r["kind"] == "tuned"]
        if not plain or not tuned:
            continue
        fastest = max(tuned, key=lambda r: r["images_per_s"])
        leanest = min(tuned, key=lambda r: r["peak_mem_mb"])
        best_ips = max(best_ips, fastest["images_per_s"])
        speedup = fastest["images_per_s"] / plain[0]["images_per_s"]
        mem_ratio = fastest["peak_mem_mb"] / plain[0]["peak_mem_mb"]
        out["per_batch"][str(batch)] = {
            "fastest": {k: fastest[k] for k in ("precision", "compile", "channels_last")},
            "speedup": round(speedup, 3),
            "mem_ratio_of_fastest": round(mem_ratio, 3),
            "mem_ratio_leanest": round(leanest["peak_mem_mb"] / plain[0]["peak_mem_mb"], 3),
            "speedup_met": speedup >= TARGET_SPEEDUP,
            "mem_met": mem_ratio <= TARGET_MEM_RATIO,
        }
    out["best_images_per_s"] = best_ips
    out["images_per_s_met"] = best_ips >= TARGET_IMAGES_PER_S
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def to_markdown(result: dict[str, Any]) -> str:
    env = result.get("env", {})
    lines = [
        "# GPU check",
        "",
        (f"{env.get('gpu', env.get('cpu', {}).get('model', '?'))}, torch {env.get('torch')}, "
        f"{result.get('mode')} mode, {result.get('image_size')}x{result.get('image_size')}, "
        f"generator {result.get('generator')}, discriminator {result.get('discriminator')}, "
        f"{result.get('elapsed_s')} s of a {result.get('budget_s')} s budget."),
        "",
        "| batch | path | precision | compile | channels_last | img/s | step ms | peak MB | warm-up s | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.get("matrix", []):
        status = r.get("status", "ok")
        if status != "ok":
            status = f"{status}: {r.get('error') or r.get('reason', '')}"[:120]
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k in (
            "batch", "kind", "precision", "compile", "channels_last", "images_per_s", "step_ms",
            "peak_mem_mb", "warmup_s")) + f" | {status} |")
    t = result.get("targets", {})
    lines += ["", (f"Targets: >= {TARGET_SPEEDUP}x plain img/s, <= {TARGET_MEM_RATIO}x plain peak "
              f"memory, >= {TARGET_IMAGES_PER_S:.0f} img/s. Best: {_fmt(t.get('best_images_per_s'))} img/s "
              f"(met: {t.get('images_per_s_met')})."), ""]
    for batch, b in t.get("per_batch", {}).items():
        lines.append(f"- batch {batch}: fastest {b['fastest']}, {b['speedup']}x plain "
                     f"(met: {b['speedup_met']}), memory {b['mem_ratio_of_fastest']}x plain "
                     f"(leanest {b['mem_ratio_leanest']}x; met: {b['mem_met']})")
    lay = result.get("layouts")
    if lay:
        lines += ["", "## layouts", ""]
        if lay.get("status") != "ok":
            lines.append(f"{lay.get('status')}: {lay.get('error') or lay.get('reason', '')}")
        else:
            lines.append("Wrong output or gradient (error against float64 above "
                         f"{lay['tolerance']}): {', '.join(lay['faults']) or 'none'}.")
            header = ("| norm | dtype | batch | input channels_last | gradient channels_last "
                      "| output error | gradient error |")
            lines += ["", header, "|---|---|---|---|---|---|---|"]
            lines += ["| " + " | ".join(_fmt(r[k]) for k in (
                "norm", "dtype", "batch", "input_channels_last", "grad_channels_last",
                "output_error", "gradient_error")) + " |"
                for r in lay["rows"]]
    for name in ("loader", "train_eval"):
        lines += ["", f"## {name}", "", "```json", json.dumps(result.get(name), indent=1, default=str), "```"]
    return "\n".join(lines) + "\n"
