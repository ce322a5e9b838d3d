"""The runtime vs the same weights in PyTorch eager, side by side in one run, plus the teacher's many-step cost
(docs/architecture.md, "Performance targets").

Arms, interleaved A/B (each round runs every arm once, alternating the order) so a loaded machine hits them alike:

- ``runtime``: what `pdd-run` does per request — `pdd.runtime.bench_timing.RequestBench` on the bundle (onnxruntime, fused
  sampler or loop, numpy Griffin-Lim on scipy.fft);
- ``torch_eager``: the checkpoint's U-Net in PyTorch eager, `pdd.training.diffusion.sample_ddim` for N steps, the
  vocoder front end (unpack → denormalise → mel⁻¹, `pdd.export.vocoder.GriffinLimVocoder`) and `torch_griffin_lim` below:
  the same fast Griffin-Lim (momentum, β = m/(1+m), ε, zero initial phase, Hann window, centred zero-padded frames) on
  `torch.stft` / `torch.istft` (MKL / pocketfft inside torch);
- Griffin-Lim alone: numpy (`pdd.runtime.griffinlim`) vs `torch_griffin_lim`;
- the teacher: K-step DDIM (default 1024; pass a smaller ``--teacher-steps`` on a slow machine and the 1024-step figure is
  extrapolated as K-step time / K × 1024 + the vocoder's time, and labelled so) in torch eager vs the runtime's denoiser
  graph driven by `pdd.runtime.schedule.ddim_sample`.

Before timing, the two sides are checked to run the same weights: the bundle's provenance names the checkpoint's sha256,
and x̂0 of both for the same noise must agree to 1e-3 of its peak.

    python benchmarks/compare.py random-ckpt --out /tmp/small-8.pt --model small --audio paper --steps 8
    pdd-export --ckpt /tmp/small-8.pt --steps 8 --out /tmp/small-8
    python benchmarks/compare.py run --ckpt /tmp/small-8.pt --engine /tmp/small-8 --runs 20 --json cmp.json --markdown cmp.md

Needs the train extra (torch). Performance numbers go to the report, never into tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pdd.export.vocoder import GriffinLimVocoder
from pdd.runtime.backends import create_backend, physical_cores
from pdd.runtime.bench_report import check_output_paths
from pdd.runtime.bench_timing import RequestBench, TimedBackend, ab_result, interleaved, ratio_stats
from pdd.runtime.machine import load_average, machine_info, package_version
from pdd.runtime.bundle import Bundle, load_bundle, sha256_file
from pdd.runtime.config import AudioConfig, get_preset
from pdd.runtime.errors import ConfigError, PddError
from pdd.runtime.fileio import atomic_write_text
from pdd.runtime.griffinlim import DEFAULT_ITERS, DEFAULT_MOMENTUM, _EPS as GL_EPS, griffin_lim
from pdd.runtime.mel import denormalize, mel_to_magnitude
from pdd.runtime.pack import unpack
from pdd.runtime.sampler import SamplerSettings
from pdd.runtime.schedule import TEACHER_STEPS, ddim_sample, grid
from pdd.runtime.spectral import hann_window
from pdd.training.checkpoint import CheckpointInfo, load_denoiser, make_checkpoint_state, save_checkpoint
from pdd.training.diffusion import sample_ddim
from pdd.training.unet1d import UNet1D, count_parameters, unet_config

COMPARE_FORMAT = "pdd-compare/1"
PARITY_TOLERANCE = 1e-3  # x̂0, relative to its peak: ORT vs torch eager of the same fp32 weights
TEACHER_FULL_STEPS = TEACHER_STEPS


# ---------------------------------------------------------------------------------------------------------------------
# The torch side
# ---------------------------------------------------------------------------------------------------------------------


def torch_griffin_lim(
    magnitude: torch.Tensor, audio: AudioConfig, *, n_iter: int = DEFAULT_ITERS, momentum: float = DEFAULT_MOMENTUM,
    phase0: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n_freqs, T) magnitude → (B, samples) wave: `pdd.runtime.griffinlim.griffin_lim` step for step, on torch.stft/istft.

    Same window (the runtime's `hann_window`), centred frames with zero padding, the inverse normalised by Σw², the same
    momentum extrapolation and ε; so for the same input it returns the runtime's waveform up to float32 rounding.
    """
    window = torch.from_numpy(hann_window(audio.win_length, audio.n_fft).astype(np.float32))
    length = (magnitude.shape[-1] - 1) * audio.hop_length
    stft_args = dict(n_fft=audio.n_fft, hop_length=audio.hop_length, win_length=audio.n_fft, window=window, center=True)

    def istft(spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, length=length, **stft_args)

    def stft(wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, pad_mode="constant", return_complex=True, **stft_args)

    if phase0 is None:
        angles = torch.ones_like(magnitude, dtype=torch.complex64)
    else:
        angles = torch.polar(torch.ones_like(phase0), phase0)
    beta = momentum / (1.0 + momentum)
    previous: torch.Tensor | None = None
    for _ in range(n_iter):
        rebuilt = stft(istft(magnitude * angles))
        angles = rebuilt - beta * previous if (previous is not None and momentum) else rebuilt
        angles = angles / (angles.abs() + float(GL_EPS))
        previous = rebuilt
    return istft(magnitude * angles)


class TorchPipeline:
    """Noise → waveform in PyTorch eager: N-step DDIM with the U-Net, then unpack/denormalise/mel⁻¹ and torch Griffin-Lim."""

    def __init__(self, model: torch.nn.Module, audio: AudioConfig, steps: int, gl_iters: int, momentum: float) -> None:
        self.model, self.audio, self.steps = model, audio, steps
        self.gl_iters, self.momentum = gl_iters, momentum
        self.front = GriffinLimVocoder(audio, n_iter=0)  # its unpack/denormalize/magnitude are the torch front end

    @torch.inference_mode()
    def sample(self, z1: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return sample_ddim(self.model, z1, steps or self.steps)

    @torch.inference_mode()
    def magnitude(self, x0: torch.Tensor) -> torch.Tensor:
        return self.front.magnitude(self.front.denormalize(self.front.unpack(x0)))

    @torch.inference_mode()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        return torch_griffin_lim(self.magnitude(x0), self.audio, n_iter=self.gl_iters, momentum=self.momentum)

    def __call__(self, z1: torch.Tensor) -> torch.Tensor:
        return self.decode(self.sample(z1))


def torch_arms(name: str, threads: int, fn: Callable[[], Any]) -> dict[str, Callable[[], Any]]:
    """The torch arm at `threads`, plus the same on one thread when threads > 1: on a shared, oversubscribed machine
    torch's OpenMP pool can lose more to waiting than it gains, and the runtime is held to the faster configuration."""
    arms = {name: fn}
    if threads > 1:
        arms[f"{name}_1thread"] = with_torch_threads(1, threads, fn)
    return arms


def with_torch_threads(count: int, restore: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with torch on `count` intra-op threads, then back to `restore`."""

    def run() -> Any:
        torch.set_num_threads(count)
        try:
            return fn()
        finally:
            torch.set_num_threads(restore)

    return run


def make_random_checkpoint(path: Path, *, model: str = "small", audio: str = "paper", steps: int = 8,
                           kind: str = "student", seed: int = 0) -> dict[str, Any]:
    """A randomly initialised U-Net checkpoint for speed measurements before a trained one exists (speed does not depend
    on the weights). Zero-initialised tensors (the output conv) get small random values so parity checks see every layer."""
    preset = get_preset(audio)
    config = unet_config(model, preset)
    torch.manual_seed(seed)
    net = UNet1D(config)
    with torch.no_grad():
        for param in net.parameters():
            if not param.any():
                param.normal_(0.0, 0.02)
    info = CheckpointInfo(kind=kind, audio=preset, model=config, steps=steps if kind == "student" else None,
                          lineage=[{"made_by": "benchmarks/compare.py random-ckpt", "seed": seed}])
    save_checkpoint(path, make_checkpoint_state(net, info))
    return {"path": str(path), "model": model, "audio": audio, "kind": kind, "steps": steps, "params": count_parameters(net)}


# ---------------------------------------------------------------------------------------------------------------------
# Side by side
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CompareOptions:
    ckpt: Path
    engine: Path
    batch: int = 1
    mode: str = "sampler"
    gl_iters: int = DEFAULT_ITERS
    runs: int = 20
    warmup: int = 2
    teacher_steps: int = TEACHER_FULL_STEPS
    teacher_runs: int = 3
    threads: int | None = None  # torch intra-op threads; None: the runtime's (physical cores)
    seed: int = 0
    allow_other_checkpoint: bool = False

    def validate(self) -> None:
        for name in ("batch", "runs", "teacher_runs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.teacher_steps < 0:
            raise ConfigError(f"--teacher-steps must be >= 0 (0 skips the teacher), got {self.teacher_steps}")
        if self.warmup < 0 or self.gl_iters < 0:
            raise ConfigError("--warmup and --gl-iters must be >= 0")


def same_weights_check(bundle: Bundle, ckpt: Path, allow_other: bool) -> dict[str, Any]:
    """The bundle must have been exported from this checkpoint (its provenance records the checkpoint's sha256)."""
    recorded = ((bundle.manifest.get("provenance") or {}).get("checkpoint") or {}).get("sha256")
    actual = sha256_file(ckpt)
    if recorded != actual and not allow_other:
        raise ConfigError(
            f"{bundle.path} was not exported from {ckpt} (checkpoint sha256 {actual[:12]}…, the bundle records "
            f"{(recorded or 'none')[:12]}…); export it with `pdd-export --ckpt {ckpt}` or pass --allow-other-checkpoint"
        )
    return {"checkpoint_sha256": actual, "bundle_records": recorded, "match": recorded == actual}


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def run_comparison(options: CompareOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every arm (see the module docstring) and return the report."""
    options.validate()
    say = progress or (lambda message: None)
    load_start = load_average()
    bundle = load_bundle(options.engine, check_graphs=False)
    weights = same_weights_check(bundle, options.ckpt, options.allow_other_checkpoint)
    model, info = load_denoiser(options.ckpt)
    if info.audio != bundle.audio:
        raise ConfigError(f"checkpoint audio preset {info.audio.name!r} differs from the bundle's {bundle.audio.name!r}")
    threads = options.threads or physical_cores()
    torch.set_num_threads(threads)
    audio, batch = bundle.audio, options.batch
    momentum = float(bundle.graph("vocoder").extra["gl_momentum"]) if bundle.has_graph("vocoder") else DEFAULT_MOMENTUM
    steps = bundle.steps
    pipeline = TorchPipeline(model, audio, steps, options.gl_iters, momentum)

    backend = TimedBackend(create_backend("ort", bundle, device="cpu"))
    try:
        settings = SamplerSettings(mode=options.mode, steps=steps, vocoder="numpy", gl_iters=options.gl_iters)
        request = RequestBench(bundle, backend, settings, batch, seed=options.seed)

        # Same weights: x̂0 of both sides for the same noise, and the waveform of both Griffin-Lims for the same x̂0.
        z1 = np.random.default_rng(options.seed).standard_normal((batch, *bundle.packed_shape), dtype=np.float32)
        x0_runtime = np.asarray(backend.to_host(request.sampler.sample_x0(z1)))
        backend.take_calls()
        x0_torch = pipeline.sample(torch.from_numpy(z1)).numpy()
        x0_error = relative_error(x0_runtime, x0_torch)
        if x0_error > PARITY_TOLERANCE and not options.allow_other_checkpoint:
            raise ConfigError(f"the runtime and torch x̂0 differ by {x0_error:.3g} of peak (> {PARITY_TOLERANCE}): not the same "
                              "model; re-export the bundle from this checkpoint")
        magnitude = mel_to_magnitude(denormalize(unpack(x0_runtime, bundle.chunks), audio), audio)
        wave_numpy = griffin_lim(magnitude, audio, n_iter=options.gl_iters, momentum=momentum)
        wave_torch = pipeline.decode(torch.from_numpy(x0_runtime)).numpy()
        parity = {"x0_relative_error": x0_error, "waveform_relative_error": relative_error(wave_torch, wave_numpy),
                  "what": "max |a − b| / max |b|; the waveform after Griffin-Lim from the same x̂0 (float32 drift grows "
                          "with iterations)"}

        z1_torch = torch.from_numpy(z1)
        say(f"pipeline: runtime vs torch eager, {options.warmup} warm-up + {options.runs} interleaved rounds, batch {batch}")
        arms = {"runtime": request, **torch_arms("torch_eager", threads, lambda: pipeline(z1_torch))}
        times = interleaved(arms, options.runs, options.warmup)
        pipeline_ab = ab_result(times, "torch_eager", "runtime")
        pipeline_ab["what"] = (f"noise → waveform, {steps} steps ({options.mode}), Griffin-Lim {options.gl_iters} it., "
                               f"batch {batch}; torch at {threads} thread(s)")
        speedups = {arm: ratio_stats(times[arm], times["runtime"]) for arm in times if arm != "runtime"}
        pipeline_ab["speedup_vs"] = speedups
        best_torch = min(speedups, key=lambda arm: speedups[arm]["median"])

        say("Griffin-Lim: numpy vs torch.stft/istft")
        mag_torch = torch.from_numpy(magnitude)
        gl_times = interleaved({
            "numpy": lambda: griffin_lim(magnitude, audio, n_iter=options.gl_iters, momentum=momentum),
            **torch_arms("torch", threads, lambda: torch_griffin_lim(mag_torch, audio, n_iter=options.gl_iters, momentum=momentum)),
        }, options.runs, options.warmup)
        gl_ab = ab_result(gl_times, "torch", "numpy")
        gl_ab["speedup_vs"] = {arm: ratio_stats(gl_times[arm], gl_times["numpy"]) for arm in gl_times if arm != "numpy"}
        gl_ab["what"] = f"magnitude → waveform, {options.gl_iters} it., batch {batch}"

        say("model only: onnxruntime denoiser call vs torch eager forward")
        backend.prepare(["denoiser"], batch)
        t = np.full((batch,), 0.5, dtype=np.float32)
        t_torch = torch.from_numpy(t)
        with torch.inference_mode():
            step_times = interleaved({
                "runtime": lambda: (backend.run("denoiser", {"z_t": z1, "t": t}), backend.take_calls()),
                **torch_arms("torch_eager", threads, lambda: model(z1_torch, t_torch)),
            }, options.runs, options.warmup)
        step_ab = ab_result(step_times, "torch_eager", "runtime")
        step_ab["speedup_vs"] = {arm: ratio_stats(step_times[arm], step_times["runtime"]) for arm in step_times if arm != "runtime"}
        step_ab["what"] = f"one denoiser forward, batch {batch}"

        teacher = None
        if options.teacher_steps:
            teacher = teacher_comparison(options, bundle, backend, pipeline, z1, times, say)
    finally:
        backend.close()

    speedup = pipeline_ab["speedup_vs"][best_torch]["median"]
    report = {
        "format": COMPARE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {**asdict(options), "ckpt": str(options.ckpt), "engine": str(options.engine)},
        "engine": {"name": bundle.name, "steps": steps, "audio": audio.name, "model": info.model.name,
                   "params": count_parameters(model)},
        "same_weights": weights,
        "parity": parity,
        "threads": {"torch": torch.get_num_threads(), "ort_intra_op": physical_cores()},
        "versions": {"torch": torch.__version__, "mkl": torch.backends.mkl.is_available(),
                     "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu")},
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": load_average()},
        "pipeline": pipeline_ab,
        "griffin_lim": gl_ab,
        "denoiser_step": step_ab,
        "teacher": teacher,
        "targets": {"speedup_vs_torch": {"measured": speedup, "against": best_torch, "target": 3.0, "met": speedup >= 3.0,
                                         "conditions": "paper preset, batch 1, 8 steps, GL 32 it., CPU"}},
    }
    return report


def teacher_comparison(options: CompareOptions, bundle: Bundle, backend: TimedBackend, pipeline: TorchPipeline,
                       z1: np.ndarray, pipeline_times: dict[str, list[float]], say: Callable[[str], None]) -> dict[str, Any]:
    """K-step DDIM in torch eager vs the runtime's denoiser graph (schedule.ddim_sample), extrapolated to 1024 if K < 1024."""
    k, batch = options.teacher_steps, options.batch
    t_buffer = np.empty((batch,), dtype=np.float32)

    def runtime_denoise(z: np.ndarray, t: float) -> np.ndarray:
        t_buffer.fill(t)
        return backend.run("denoiser", {"z_t": z, "t": t_buffer})["v"]

    def runtime_teacher() -> None:
        ddim_sample(runtime_denoise, z1, grid(k))
        backend.take_calls()

    z1_torch = torch.from_numpy(z1)
    say(f"teacher: {k}-step DDIM, runtime denoiser graph vs torch eager, {options.teacher_runs} interleaved rounds")
    threads = torch.get_num_threads()
    times = interleaved({"runtime": runtime_teacher, **torch_arms("torch_eager", threads, lambda: pipeline.sample(z1_torch, k))},
                        options.teacher_runs, warmup=0)
    result = ab_result(times, "torch_eager", "runtime")
    result["speedup_vs"] = {arm: ratio_stats(times[arm], times["runtime"]) for arm in times if arm != "runtime"}
    result["what"] = f"{k}-step DDIM (noise → x̂0), batch {batch}"
    # The vocoder time each side adds: the pipeline's end to end minus its N-step sampling share is not separable here,
    # so use the Griffin-Lim-dominated remainder measured in the pipeline arms: e2e − (N/K)·K-step time.
    n = bundle.steps
    estimate: dict[str, Any] = {}
    for arm in times:
        per_step = float(np.median(times[arm])) / k
        vocoder = max(float(np.median(pipeline_times[arm])) - n * per_step, 0.0)
        estimate[arm] = {"per_step_ms": per_step * 1e3, "end_to_end_ms": (per_step * TEACHER_FULL_STEPS + vocoder) * 1e3}
    fastest_torch = min((arm for arm in times if arm != "runtime"), key=lambda arm: estimate[arm]["end_to_end_ms"])
    estimate["fastest_torch"] = fastest_torch
    estimate["student_speedup_vs_teacher_torch"] = (
        estimate[fastest_torch]["end_to_end_ms"] / (float(np.median(pipeline_times["runtime"])) * 1e3)
    )
    result["teacher_1024"] = {
        **estimate,
        "extrapolated": k != TEACHER_FULL_STEPS,
        "how": ("measured" if k == TEACHER_FULL_STEPS else
                f"extrapolated: ({k}-step time / {k}) × {TEACHER_FULL_STEPS} + the vocoder share of the pipeline arm"),
    }
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------------


def _row(name: str, res: dict[str, Any]) -> str:
    arms = res["arms"]
    cells = "<br>".join(f"{arm} {s['p50']:.1f} (p90 {s['p90']:.1f})" for arm, s in arms.items())
    ratios = res.get("speedup_vs") or {res["ratio"]["of"].split("/")[0]: res["ratio"]}
    shown = "<br>".join(f"{arm}/runtime = {r['median']:.2f} [{r['p10']:.2f}, {r['p90']:.2f}]" if "speedup_vs" in res else
                        f"{res['ratio']['of']} = {r['median']:.2f} [{r['p10']:.2f}, {r['p90']:.2f}]" for arm, r in ratios.items())
    return f"| {name}: {res['what']} | {cells} | {shown} |"


def markdown(report: dict[str, Any]) -> str:
    eng = report["engine"]
    lines = [
        f"# Runtime vs PyTorch eager: {eng['name']} ({eng['model']}, {eng['params'] / 1e6:.2f} M params, {eng['audio']} preset)",
        "",
        f"- threads: {report['threads']}; versions: {report['versions']}",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores_available']} cores; load average at start "
        f"{report['load_average']['start']}, at end {report['load_average']['end']}",
        f"- same weights: checkpoint sha256 match {report['same_weights']['match']}; x̂0 relative error "
        f"{report['parity']['x0_relative_error']:.2g}, waveform {report['parity']['waveform_relative_error']:.2g}",
        "",
        "Interleaved A/B, ms; ratio = median of per-round ratios [p10, p90] (> 1: the runtime is faster).",
        "",
        "| comparison | arms: p50 (p90) | ratio [p10, p90] |",
        "|---|---|---|",
        _row("pipeline", report["pipeline"]),
        _row("Griffin-Lim", report["griffin_lim"]),
        _row("denoiser", report["denoiser_step"]),
    ]
    teacher = report.get("teacher")
    if teacher:
        lines.append(_row("teacher", teacher))
        est = teacher["teacher_1024"]
        fastest = est["fastest_torch"]
        lines += ["", f"Teacher at {TEACHER_FULL_STEPS} steps ({est['how']}): torch eager ({fastest}) "
                  f"{est[fastest]['end_to_end_ms'] / 1e3:.1f} s, runtime {est['runtime']['end_to_end_ms'] / 1e3:.1f} s per "
                  f"request; the {eng['steps']}-step runtime is {est['student_speedup_vs_teacher_torch']:.0f}× faster than the "
                  "teacher in torch eager."]
    target = report["targets"]["speedup_vs_torch"]
    lines += ["", f"Target ≥ {target['target']:g}× faster than PyTorch eager ({target['conditions']}): measured "
              f"{target['measured']:.2f}× against its faster configuration ({target['against']}) — "
              f"{'met' if target['met'] else 'not met'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pdd runtime vs PyTorch eager, side by side (see the module docstring).")
    sub = parser.add_subparsers(dest="command", required=True)
    rnd = sub.add_parser("random-ckpt", help="write a randomly initialised checkpoint (speed does not depend on weights)")
    rnd.add_argument("--out", type=Path, required=True)
    rnd.add_argument("--model", default="small")
    rnd.add_argument("--audio", default="paper")
    rnd.add_argument("--steps", type=int, default=8)
    rnd.add_argument("--kind", default="student", choices=("student", "teacher"))
    rnd.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="time the runtime and torch eager side by side")
    run.add_argument("--ckpt", type=Path, required=True)
    run.add_argument("--engine", type=Path, required=True, help="bundle exported from --ckpt")
    run.add_argument("--batch", type=int, default=1)
    run.add_argument("--mode", default="sampler", choices=("sampler", "loop"))
    run.add_argument("--gl-iters", type=int, default=DEFAULT_ITERS)
    run.add_argument("--runs", type=int, default=20)
    run.add_argument("--warmup", type=int, default=2)
    run.add_argument("--teacher-steps", type=int, default=TEACHER_FULL_STEPS,
                     help="DDIM steps for the teacher arm (0 skips; < 1024 extrapolates to 1024, labelled)")
    run.add_argument("--teacher-runs", type=int, default=3)
    run.add_argument("--threads", type=int, default=None, help="torch threads (default: the runtime's)")
    run.add_argument("--allow-other-checkpoint", action="store_true")
    run.add_argument("--json", type=Path, default=None)
    run.add_argument("--markdown", type=Path, default=None)
    run.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "random-ckpt":
            if args.out.exists():
                raise ConfigError(f"{args.out} already exists; choose another --out")
            print(json.dumps(make_random_checkpoint(args.out, model=args.model, audio=args.audio, steps=args.steps,
                                                    kind=args.kind, seed=args.seed)))
            return 0
        check_output_paths([args.json, args.markdown], args.overwrite)
        options = CompareOptions(
            ckpt=args.ckpt, engine=args.engine, batch=args.batch, mode=args.mode, gl_iters=args.gl_iters, runs=args.runs,
            warmup=args.warmup, teacher_steps=args.teacher_steps, teacher_runs=args.teacher_runs, threads=args.threads,
            allow_other_checkpoint=args.allow_other_checkpoint,
        )
        report = run_comparison(options, progress=lambda m: print(f"compare: {m}", file=sys.stderr, flush=True))
    except PddError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = markdown(report)
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n", overwrite=args.overwrite)
    if args.markdown:
        atomic_write_text(args.markdown, text, overwrite=args.overwrite)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
