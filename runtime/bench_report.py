"""`pdd-bench`'s report: its JSON schema, the performance targets it is checked against, and its renderings for people
(markdown tables, a PNG, one summary line). Nothing here measures; `bench.run_benchmark` assembles the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pdd.runtime.bench_timing import STAGES
from pdd.runtime.errors import AudioError, ConfigError
from pdd.runtime.fileio import atomic_write_text

REPORT_FORMAT = "pdd-bench/1"
# The CPU targets (docs/architecture.md, "Performance targets"), met only under their own conditions: 2 cores, batch 1,
# the paper preset, 8 steps, Griffin-Lim 32 iterations on the CPU.
TARGETS = {
    "end_to_end_ms": 150.0,
    "cold_start_s": 0.5,
    "peak_rss_mb": 250.0,
    "gl_over_fft_floor": 4.0,
    "speedup_vs_torch": 3.0,
}
TARGET_CONDITIONS = {"audio": "paper", "batch": 1, "steps": 8, "gl_iters": 32, "device": "cpu"}


def check_targets(report: dict[str, Any], torch_speedup: float | None = None) -> dict[str, Any]:
    """The CPU targets (`TARGETS`) against this report; `applies` says whether the run matched their conditions."""
    resolved = report["resolved"]
    first = next((r for r in report["results"] if r["batch"] == 1), None)
    applies = (
        report["engine"]["audio"] == TARGET_CONDITIONS["audio"] and first is not None
        and resolved["steps"] == TARGET_CONDITIONS["steps"] and resolved["gl_iters"] == TARGET_CONDITIONS["gl_iters"]
        and report["backend"]["device"] == TARGET_CONDITIONS["device"]
    )
    checks: dict[str, Any] = {}

    def add(name: str, measured: float | None, target: float, higher_is_better: bool = False) -> None:
        if measured is None:
            return
        met = measured >= target if higher_is_better else measured <= target
        checks[name] = {"measured": measured, "target": target, "met": bool(met)}

    if first is not None:
        add("end_to_end_ms", first["end_to_end"]["p50"], TARGETS["end_to_end_ms"])
    cold = report.get("cold_start")
    if cold:
        add("cold_start_s", cold["total_s"], TARGETS["cold_start_s"])
        add("peak_rss_mb", cold["peak_rss_mb"], TARGETS["peak_rss_mb"])
    ab = report.get("side_by_side") or {}
    if "griffin_lim_vs_fft_floor" in ab:
        add("gl_over_fft_floor", ab["griffin_lim_vs_fft_floor"]["ratio"]["median"], TARGETS["gl_over_fft_floor"])
    if torch_speedup is not None:
        add("speedup_vs_torch", torch_speedup, TARGETS["speedup_vs_torch"], higher_is_better=True)
    return {"applies": bool(applies), "conditions": TARGET_CONDITIONS, "checks": checks}


def report_keys() -> dict[str, Any]:
    """The report's required top-level keys and the keys of each per-batch result (the JSON schema tests check)."""
    return {
        "top": ["format", "pdd_version", "created", "engine", "options", "backend", "resolved", "machine", "load_average",
                "results", "cold_start", "peak_rss_mb", "gpu_memory_mb", "side_by_side", "targets", "warnings"],
        "result": ["batch", "steps", "mode", "audio_seconds_per_request", "end_to_end", "end_to_end_with_io", "stages",
                   "denoiser_step", "rtf", "clips_per_s", "device_ms", "vocoder", "gl_iters"],
        "stages": [*STAGES, "host_overhead"],
        "stats": ["n", "p50", "p90", "p99", "mean", "min", "max"],
    }


def check_output_paths(paths: Sequence[Path | None], overwrite: bool) -> None:
    """Refuse before measuring anything: an output that exists (without overwrite), or whose folder is missing."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise AudioError(f"{path} is a folder; give a file name")
        if path.exists() and not overwrite:
            raise AudioError(f"{path} already exists; pass --overwrite to replace it")
        if not path.parent.is_dir():
            raise AudioError(f"cannot write {path}: folder {path.parent} does not exist")


def write_json(path: Path, report: dict[str, Any], *, overwrite: bool) -> Path:
    return atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n", overwrite=overwrite)


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as tables for people."""
    sections = (_header_lines, _latency_lines, _stage_lines, _device_lines, _cold_start_lines, _memory_lines,
                _side_by_side_lines, _target_lines)
    return "\n".join(line for section in sections for line in section(report)) + "\n"


def _header_lines(report: dict[str, Any]) -> list[str]:
    eng, machine, backend, resolved = report["engine"], report["machine"], report["backend"], report["resolved"]
    lines = [
        f"# pdd-bench: {eng['name']} ({eng['model']}, {eng['audio']} preset, {eng['clip_seconds']:.2f} s clips)",
        "",
        f"- backend: {backend['detail']} on {backend['device']}; mode {resolved['mode']}, "
        f"{resolved['steps']} steps, vocoder {resolved['vocoder']} ({resolved['gl_iters']} GL it.)",
        f"- machine: {machine['cpu']}, {machine['cores_available']} cores available, threads {machine.get('threads')}, "
        f"onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}, python {machine['python']}",
        f"- load average (1/5/15 min) at start {report['load_average']['start']}, at end {report['load_average']['end']}",
        f"- {report['options']['warmup']} warm-up + {report['options']['runs']} timed requests per batch size; times in ms",
    ]
    lines += [f"- **warning: {warning}**" for warning in report.get("warnings", [])]
    lines += [f"- GPU: {gpu['name']}, driver {gpu['driver']}, {gpu['memory']}" for gpu in machine.get("gpus", [])]
    if machine.get("jetson"):
        jet = machine["jetson"]
        lines.append(f"- Jetson: {jet['model']}, nvpmodel {jet['nvpmodel']!r}, clocks locked: {jet['clocks_locked']}")
    return lines


def _latency_lines(report: dict[str, Any]) -> list[str]:
    lines = ["", "## End to end and throughput", "",
             "| batch | p50 | p90 | p99 | mean | min | with I/O p50 | RTF (audio s / s) | clips/s |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        e = r["end_to_end"]
        lines.append(f"| {r['batch']} | {_ms(e['p50'])} | {_ms(e['p90'])} | {_ms(e['p99'])} | {_ms(e['mean'])} | "
                     f"{_ms(e['min'])} | {_ms(r['end_to_end_with_io']['p50'])} | {r['rtf']:.1f} | {r['clips_per_s']:.2f} |")
    return lines


def _percentiles(stats: dict[str, float]) -> str:
    return f"{_ms(stats['p50'])} / {_ms(stats['p90'])} / {_ms(stats['p99'])}"


def _stage_lines(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Stages (p50 / p90 / p99, ms per request)", "",
             "| batch | " + " | ".join([*STAGES, "host_overhead", "denoiser per step"]) + " |",
             "|---:|" + "---:|" * (len(STAGES) + 2)]
    for r in report["results"]:
        cells = [_percentiles(r["stages"][s]) for s in [*STAGES, "host_overhead"]] + [_percentiles(r["denoiser_step"])]
        lines.append(f"| {r['batch']} | " + " | ".join(cells) + " |")
    lines += ["", f"Denoiser per step = {report['results'][0]['denoiser_step']['what']}."]
    return lines


def _device_lines(report: dict[str, Any]) -> list[str]:
    if not any(r["device_ms"] for r in report["results"]):
        return []
    lines = ["", "## Device time (CUDA events, p50 ms per request)", ""]
    for r in report["results"]:
        parts = ", ".join(f"{g} {_ms(s['p50'])}" for g, s in r["device_ms"].items())
        lines.append(f"- batch {r['batch']}: {parts}")
    return lines


def _cold_start_lines(report: dict[str, Any]) -> list[str]:
    cold = report.get("cold_start")
    if not cold:
        return []
    return ["", f"## Cold start (fresh process, batch 1, median of {cold['runs']})", "",
            "| interpreter | imports | bundle verification | sessions | first request | total (after interpreter) | "
            "peak RSS | torch imported |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {cold['interpreter_s'] * 1e3:.0f} ms | {cold['imports_s'] * 1e3:.0f} ms | {cold['verify_s'] * 1e3:.0f} ms | "
            f"{cold['sessions_s'] * 1e3:.0f} ms | {cold['first_request_s'] * 1e3:.0f} ms | {cold['total_s'] * 1e3:.0f} ms | "
            f"{cold['peak_rss_mb']:.0f} MB | {cold['torch_imported']} |"]


def _memory_lines(report: dict[str, Any]) -> list[str]:
    lines = ["", f"Peak RSS of this benchmark process: {report['peak_rss_mb']['this_process']:.0f} MB "
             f"(torch imported: {report['peak_rss_mb']['torch_imported']})."]
    if report.get("gpu_memory_mb") is not None:
        lines.append(f"GPU memory held by this process (nvidia-smi): {report['gpu_memory_mb']:.0f} MiB.")
    return lines


def _side_by_side_lines(report: dict[str, Any]) -> list[str]:
    ab = report.get("side_by_side")
    if not ab:
        return []
    lines = ["", "## Side by side (interleaved A/B; ratio = median of per-round ratios, [p10, p90])", "",
             "| comparison | arm A p50 | arm B p50 | ratio | spread |", "|---|---:|---:|---:|---|"]
    for name, res in ab.items():
        if name == "skipped":
            continue
        (a_name, a), (b_name, b) = list(res["arms"].items())[:2]
        ratio = res["ratio"]
        lines.append(f"| {name}: {res.get('what', '')} | {a_name} {_ms(a['p50'])} | {b_name} {_ms(b['p50'])} | "
                     f"{ratio['of']} = {ratio['median']:.2f} | [{ratio['p10']:.2f}, {ratio['p90']:.2f}] |")
    lines += [f"| {name}: skipped ({why}) | | | | |" for name, why in (ab.get("skipped") or {}).items()]
    floor = ab.get("griffin_lim_vs_fft_floor")
    if floor:
        lines += ["", f"Griffin-Lim's FFT work: {floor['fft_gflop']:.2f} GFLOP per request; the floor runs it at "
                  f"{floor['fft_floor_gflops_per_s']:.1f} GFLOP/s."]
    return lines


def _target_lines(report: dict[str, Any]) -> list[str]:
    targets = report.get("targets")
    if not (targets and targets["checks"]):
        return []
    note = "" if targets["applies"] else " (this run does not match the targets' conditions: informational only)"
    lines = ["", f"## Targets (docs/architecture.md, performance targets: {targets['conditions']}){note}", "",
             "| target | measured | limit | met |", "|---|---:|---:|---|"]
    for name, check in targets["checks"].items():
        sign = "≥" if name == "speedup_vs_torch" else "≤"
        lines.append(f"| {name} | {check['measured']:.3g} | {sign} {check['target']:g} | {'yes' if check['met'] else 'no'} |")
    return lines


def write_markdown(path: Path, report: dict[str, Any], *, overwrite: bool) -> Path:
    return atomic_write_text(path, markdown(report), overwrite=overwrite)


def write_plot(path: Path, report: dict[str, Any], *, overwrite: bool) -> Path:
    """Stacked per-stage p50 per batch size (left) and per-clip end-to-end latency (right), as a PNG."""
    from pdd.runtime.plots import pyplot, save_figure

    try:
        plt = pyplot()
    except ConfigError:
        raise ConfigError("--plot needs matplotlib: pip install 'pdd[plot]'") from None
    path = Path(path)
    if path.exists() and not overwrite:
        raise AudioError(f"{path} already exists; pass --overwrite to replace it")
    results = report["results"]
    labels = [str(r["batch"]) for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    bottom = np.zeros(len(results))
    for stage in STAGES:
        values = np.array([r["stages"][stage]["p50"] for r in results])
        left.bar(labels, values, bottom=bottom, label=stage)
        bottom += values
    left.set_xlabel("batch")
    left.set_ylabel("ms per request (p50)")
    left.set_title("stages")
    left.legend(fontsize=8)
    per_clip = [r["end_to_end"]["p50"] / r["batch"] for r in results]
    right.plot(labels, per_clip, marker="o")
    right.set_xlabel("batch")
    right.set_ylabel("ms per clip (p50)")
    right.set_title(f"end to end, {report['engine']['clip_seconds']:.1f} s clips")
    fig.suptitle(f"pdd-bench {report['engine']['name']} — {report['backend']['detail']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def summary_line(report: dict[str, Any]) -> str:
    """One line per batch size for the terminal."""
    parts = []
    for r in report["results"]:
        e = r["end_to_end"]
        parts.append(f"batch {r['batch']}: p50 {_ms(e['p50'])} ms (p99 {_ms(e['p99'])}), RTF {r['rtf']:.1f}")
    return "; ".join(parts)
