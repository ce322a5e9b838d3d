"""Checkpoint → verified engine bundle: graphs, golden tensors, parity, manifest, optional TensorRT plans
(docs/architecture.md, "Engine bundles").

`export_bundle(ExportOptions(...))` is what `pdd-export` calls. Everything is built in a temporary folder next to the
destination and renamed into place only after parity passed and the runtime's own `load_bundle` accepted the result, so a
failed export leaves nothing behind and an existing bundle is replaced only with `force`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch

from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, pack_entry, schedule_entry, sha256_file, write_manifest
from pdd.runtime.config import AudioConfig
from pdd.runtime.fileio import files_below, remove_stale_temps, temp_prefix
from pdd.runtime.graphs import GRAPHS
from pdd.runtime.untrusted import is_inside, load_json, printable
from pdd.runtime.griffinlim import DEFAULT_ITERS, DEFAULT_MOMENTUM, initial_phase
from pdd.runtime.schedule import TEACHER_STEPS, ScheduleConfig
from pdd.runtime.silence import DEFAULT_GATE, SilenceGate
from pdd.export.graphs import (
    EXAMPLE_BATCH,
    OPSET,
    UnrolledSampler,
    WeightStore,
    assert_batch_is_dynamic,
    export_graph,
    graph_op_types,
    io_specs,
    save_with_shared_weights,
    strip_metadata,
    to_fp16,
    unroll_sampler,
)
from pdd.export.errors import ExportError  # noqa: F401 — re-exported: callers import it from here too
from pdd.export.parity import Parity, compare, run_graph
from pdd.export.vocoder import export_gl_vocoder

PRECISIONS = ("fp32", "fp16")
MAX_TEACHER_STEPS = TEACHER_STEPS  # the finest DDIM grid we sample a teacher on
MAX_UNROLLED_STEPS = 64  # beyond this the fused sampler graph gets huge; the bundle then has the denoiser (loop mode) only
WEIGHTS_FILE = "weights.onnx.data"
GOLDEN_FILE = "golden.npz"
GOLDEN_BATCH = 2
GOLDEN_SEED = 0


@dataclass
class ExportOptions:
    ckpt: Path
    steps: int
    out: Path
    force: bool = False
    precision: str = "fp32"
    gl_iters: int = DEFAULT_ITERS
    gl_momentum: float = DEFAULT_MOMENTUM
    name: str | None = None
    eval_json: Path | None = None
    trt: bool = False
    trt_max_batch: int = 8
    seed: int = GOLDEN_SEED
    vocoder_ckpt: Path | None = None  # a `pdd-vocoder train` checkpoint: the bundle also gets the learned vocoder
    vocoder_gate: SilenceGate | None = None  # its silence gate; None: the one it was trained with


@dataclass
class ExportReport:
    out: Path
    seconds: float
    files: dict[str, int]
    parity: list[Parity]
    graphs: list[str]
    notes: list[str] = field(default_factory=list)
    trt_key: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # progress message → seconds until the next one

    def parity_dicts(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self.parity]


# ---------------------------------------------------------------------------------------------------------------------
# Checks before any work


def check_options(options: ExportOptions) -> None:
    """Refuse bad requests before loading anything heavy (the checkpoint checks come in `load_model`)."""
    if options.precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {options.precision!r}")
    if options.steps < 1:
        raise ExportError(f"--steps must be a positive integer, got {options.steps}")
    if options.gl_iters < 0:
        raise ExportError(f"--gl-iters must be >= 0, got {options.gl_iters}")
    if not 0.0 <= options.gl_momentum < 1.0:
        raise ExportError(f"Griffin-Lim momentum must be in [0, 1), got {options.gl_momentum}")
    out = Path(options.out)
    if out.exists() and not options.force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; choose another --out")
    if out.exists():
        refuse_foreign_files(out, [options.ckpt] + ([options.eval_json] if options.eval_json else []))
    if options.eval_json is not None:
        read_eval_json(options.eval_json)
    if options.vocoder_ckpt is not None and not Path(options.vocoder_ckpt).is_file():
        raise ExportError(f"--vocoder-ckpt {options.vocoder_ckpt}: no such file (the vocoder.pt of a `pdd-vocoder train` run)")


def refuse_foreign_files(out: Path, inputs: list[Path]) -> None:
    """--force replaces `out` whole, so it must hold nothing but an earlier export: never this export's own inputs
    (the checkpoint), never a user's files (`--out .` in a project). ExportError names what is in the way."""
    for source in inputs:
        if is_inside(out, source):
            raise ExportError(f"{source} lies inside --out {out}, which --force would replace; choose another --out")
    foreign = foreign_bundle_files(out)
    if foreign:
        shown = ", ".join(printable(p.relative_to(out).as_posix(), 120) for p in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise ExportError(f"--out {out} holds files pdd-export did not write ({shown}{more}); --force replaces only a "
                          "bundle: move those away or choose another --out")


def foreign_bundle_files(out: Path) -> list[Path]:
    """Files below `out` that are not part of a bundle pdd-export wrote: its manifest, the files it lists with matching
    sha256, and TensorRT plans, their records and timing cache under trt/. Symlinks always count as foreign."""
    manifest_path = out / MANIFEST_NAME
    try:
        manifest = load_json(manifest_path, "manifest", ExportError) if manifest_path.is_file() else None
    except ExportError:
        manifest = None
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    listed = listed if isinstance(listed, dict) else {}
    foreign = []
    for path in files_below(out):
        name = path.relative_to(out).as_posix()
        if path.is_symlink():
            foreign.append(path)
        elif name == MANIFEST_NAME and isinstance(manifest, dict):
            continue
        elif name.startswith("trt/") and (path.suffix in (".plan", ".json") or path.name == "timing.cache"):
            continue
        elif name not in listed or sha256_file(path) != listed[name]:
            foreign.append(path)
    return foreign


def read_eval_json(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise ExportError(f"--eval-json {path}: no such file")
    try:
        data = load_json(path, "--eval-json", ExportError)  # size-capped; bad UTF-8 or deep nesting is one error
    except ExportError as exc:
        raise ExportError(f"--eval-json {path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise ExportError(f"--eval-json {path}: expected a JSON object (pdd-eval's output)")
    return data


def check_steps(kind: str, trained_steps: int | None, steps: int, ckpt: Path) -> None:
    """A student samples exactly its own step count; a teacher (continuous t) any count up to MAX_TEACHER_STEPS."""
    if kind == "student":
        if steps != trained_steps:
            raise ExportError(
                f"{ckpt} is a {trained_steps}-step student; export it with --steps {trained_steps} (asked for {steps})"
            )
    elif steps > MAX_TEACHER_STEPS:
        raise ExportError(f"{ckpt} is a teacher; its DDIM grid allows at most {MAX_TEACHER_STEPS} steps (asked for {steps})")


def load_model(options: ExportOptions) -> tuple[torch.nn.Module, Any]:
    from pdd.training.checkpoint import load_denoiser

    model, info = load_denoiser(options.ckpt)
    check_steps(info.kind, info.steps, options.steps, Path(options.ckpt))
    info.model.check_audio(info.audio)
    return model.float().eval(), info


# ---------------------------------------------------------------------------------------------------------------------
# The export


def export_bundle(options: ExportOptions, progress: Callable[[str], None] | None = None) -> ExportReport:
    """Write the bundle for `options`; raises ExportError (or another PddError) with one line on any failure."""
    started = time.perf_counter()
    stages: list[tuple[str, float]] = []

    def say(message: str) -> None:
        stages.append((message, time.perf_counter()))
        if progress is not None:
            progress(message)

    check_options(options)
    if options.trt:
        from pdd.export.trt import preflight

        preflight(options.precision)  # no TensorRT or no GPU: say so before minutes of export work
    say("loading checkpoint")
    model, info = load_model(options)
    if options.vocoder_ckpt is not None:  # a vocoder for another preset is refused before minutes of export work
        from pdd.training.vocoder_train import load_vocoder

        if info.audio.pack_mode != "snake":  # its graphs unpack as the vocoder's own (snake) preset does
            raise ExportError(f"--vocoder-ckpt: the learned vocoder's graphs unpack snake-packed mels and this model packs "
                              f"{info.audio.pack_mode!r}; export it without --vocoder-ckpt (Griffin-Lim decodes any packing)")

        load_vocoder(options.vocoder_ckpt, info.audio)
    out = Path(options.out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out.parent)  # temp folders of exports killed by SIGKILL
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
    try:
        report = _build(options, model, info, tmp, say)
        _install(tmp, out, options.force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out = out
    report.seconds = time.perf_counter() - started
    ends = [t for _, t in stages[1:]] + [started + report.seconds]
    report.stage_seconds = {message: end - begin for (message, begin), end in zip(stages, ends)}
    return report


def _build(options: ExportOptions, model: torch.nn.Module, info: Any, tmp: Path, say: Callable[[str], None]) -> ExportReport:
    audio: AudioConfig = info.audio
    steps = options.steps
    cf, length = audio.packed_shape
    notes: list[str] = []
    with_sampler = steps <= MAX_UNROLLED_STEPS
    if not with_sampler:
        notes.append(f"no fused sampler: {steps} steps exceed {MAX_UNROLLED_STEPS} unrolled calls; the runtime loops the denoiser")

    # -- golden inputs and PyTorch outputs ------------------------------------------------------------------------------
    rng = np.random.default_rng(options.seed)
    golden: dict[str, np.ndarray] = {
        "denoiser.z_t": rng.standard_normal((GOLDEN_BATCH, cf, length)).astype(np.float32),
        "denoiser.t": rng.uniform(0.0, 1.0, GOLDEN_BATCH).astype(np.float32),
        "sampler.z_1": rng.standard_normal((GOLDEN_BATCH, cf, length)).astype(np.float32),
    }
    sampler = UnrolledSampler(model, steps).eval()
    say("running PyTorch for the golden outputs")
    with torch.no_grad():
        golden["denoiser.v"] = model(torch.from_numpy(golden["denoiser.z_t"]), torch.from_numpy(golden["denoiser.t"])).numpy()
        x0 = sampler(torch.from_numpy(golden["sampler.z_1"])).numpy()
        if with_sampler:
            golden["sampler.x0"] = x0
        else:  # z_1 only fed the vocoder's input; a bundle without the graph has no golden for it
            del golden["sampler.z_1"]
        golden["vocoder.x0"] = x0.astype(np.float32)
        # A seeded random phase, not zeros: from zero phase, Griffin-Lim with momentum amplifies float32 rounding ~100×
        # more (1.5e-2 vs 2e-4 of peak after 32 iterations, measured), so no two backends could agree on the golden.
        golden["vocoder.phase0"] = initial_phase((GOLDEN_BATCH, audio.n_freqs, audio.frames), seed=options.seed)

    vocoder_checks: list[Parity] = []

    def vocoder_golden_then_export() -> onnx.ModelProto:
        # PyTorch Griffin-Lim is the slow part of the golden: run it only once the U-Net graphs have passed.
        proto, golden["vocoder.waveform"], checks = export_gl_vocoder(
            audio, golden["vocoder.x0"], golden["vocoder.phase0"], n_iter=options.gl_iters, momentum=options.gl_momentum)
        vocoder_checks.extend(checks)  # against PyTorch and the runtime's numpy Griffin-Lim
        return proto

    # -- ONNX graphs, each checked as soon as it exists (a failing graph stops the export early) ---------------------
    example = torch.zeros(EXAMPLE_BATCH, cf, length)
    jobs: list[tuple[str, Callable[[], onnx.ModelProto]]] = [
        ("denoiser", lambda: export_graph(model, (example, torch.full((EXAMPLE_BATCH,), 0.5)), "denoiser")),
    ]
    if with_sampler:
        jobs.append(("sampler", lambda: unroll_sampler(fp32_protos["denoiser"], steps)))
    jobs.append(("vocoder", vocoder_golden_then_export))
    fp32_protos: dict[str, onnx.ModelProto] = {}
    protos: dict[str, onnx.ModelProto] = {}  # what the bundle ships (fp16 where asked)
    parity: list[Parity] = []
    for name, job in jobs:
        say(f"unrolling {steps} denoiser steps into the sampler graph" if name == "sampler" else f"exporting {name}")
        proto = job()
        proto.graph.name = name
        assert_batch_is_dynamic(proto)
        if name == "sampler" and graph_op_types(proto) & {"Loop", "If", "Scan"}:
            raise ExportError("the sampler graph contains control flow (Loop/If/Scan); it must be straight-line")
        checks = list(vocoder_checks) if name == "vocoder" else [_parity(name, "fp32", proto, golden)]
        fp32_protos[name] = proto
        if name != "vocoder" and options.precision == "fp16":
            # The fp16 sampler repeats the fp16 denoiser (same initializers; the DDIM update between steps stays fp32).
            proto = to_fp16(proto) if name == "denoiser" else unroll_sampler(protos["denoiser"], steps)
            checks.append(_parity(name, "fp16", proto, golden))
        parity.extend(checks)
        failed = [p for p in checks if not p.passed]
        if failed:
            raise ExportError("parity check failed: " + "; ".join(p.describe() for p in failed))
        protos[name] = proto

    neural = None
    if options.vocoder_ckpt is not None:
        from pdd.export.neural_vocoder import build_parts

        say("exporting the learned vocoder")
        neural = build_parts(Path(options.vocoder_ckpt), audio, golden["vocoder.x0"], gate=options.vocoder_gate)
        parity.extend(neural.parity)

    # -- files ------------------------------------------------------------------------------------------------------------
    say("writing bundle")
    store = WeightStore(tmp / WEIGHTS_FILE)
    for name in ("denoiser", "sampler"):
        if name in protos:
            save_with_shared_weights(protos[name], tmp / f"{name}.onnx", store)
    onnx.save_model(strip_metadata(protos["vocoder"]), str(tmp / "vocoder.onnx"))
    stored = _golden_to_store(golden)
    if neural is not None:
        from pdd.export.neural_vocoder import golden_to_store, write_parts

        write_parts(neural, tmp)
        stored.update(golden_to_store(neural.golden))
    np.savez_compressed(tmp / GOLDEN_FILE, **stored)

    manifest = _manifest(options, info, protos, parity, notes, external=store.size > 0)
    manifest["decode"] = decode_section(neural.decode if neural is not None else None)
    if neural is not None:
        manifest["graphs"].update(neural.graphs)
    if store.size == 0:
        (tmp / WEIGHTS_FILE).unlink()

    trt_key = None
    if options.trt:
        from pdd.export.trt import build_plans

        say("building TensorRT plans")
        trt_key, plans = build_plans(tmp, manifest, protos_on_disk=[n for n in ("sampler", "denoiser", "vocoder") if n in protos],
                                     precision=options.precision, max_batch=options.trt_max_batch)
        manifest["trt"] = {"plans": {trt_key: plans}}
    write_manifest(tmp, manifest)
    load_bundle(tmp)  # the runtime's own verification: hashes, shapes, I/O names, schedule
    files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    return ExportReport(out=tmp, seconds=0.0, files=files, parity=parity, graphs=list(protos), notes=notes, trt_key=trt_key)


def decode_section(neural: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's `decode` entry: Griffin-Lim behind the default silence gate, and the learned vocoder (the default)
    when there is one."""
    section: dict[str, Any] = {"silence_gate": DEFAULT_GATE.to_dict(), "default_vocoder": "gl" if neural is None else "neural"}
    if neural is not None:
        section["neural"] = neural
    return section


def _golden_to_store(golden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """All of the golden, except that the vocoder keeps one item: its random phase is incompressible (1.5 MB per item at
    n_fft 2048) and the shipped bundle has a size budget. Parity at export ran on the whole batch."""
    return {key: (value[:1] if key.startswith("vocoder.") else value) for key, value in golden.items()
            if not key.startswith("neural_vocoder")}


def _inputs(graph: str, golden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: golden[f"{graph}.{name}"] for name in GRAPHS[graph].input_names}


def _parity(graph: str, precision: str, proto: onnx.ModelProto, golden: dict[str, np.ndarray]) -> Parity:
    outputs = run_graph(proto, _inputs(graph, golden))
    output = GRAPHS[graph].output
    return compare(graph, precision, "torch", outputs[output], golden[f"{graph}.{output}"])


def _manifest(
    options: ExportOptions, info: Any, protos: dict[str, onnx.ModelProto], parity: list[Parity], notes: list[str], external: bool
) -> dict[str, Any]:
    graphs: dict[str, Any] = {}
    for name, proto in protos.items():
        inputs, outputs = io_specs(proto)
        graphs[name] = {"file": f"{name}.onnx", "inputs": inputs, "outputs": outputs}
    graphs["vocoder"].update(gl_iters=int(options.gl_iters), gl_momentum=float(options.gl_momentum))
    provenance: dict[str, Any] = {
        "pdd_version": _version("pdd"),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checkpoint": {
            "file": Path(options.ckpt).name,
            "sha256": sha256_file(options.ckpt),
            "kind": info.kind,
            "steps": info.steps,
            "train_step": info.train_step,
            "lineage": info.lineage,
        },
        "parity": [p.to_dict() for p in parity],
        "notes": notes,
    }
    if options.eval_json is not None:
        provenance["evaluation"] = read_eval_json(options.eval_json)
    # A teacher was trained on continuous t (any step count runs); a student only on its own grid k/N.
    schedule = ScheduleConfig(steps=int(options.steps), continuous=info.kind == "teacher",
                              parameterization=info.parameterization)
    return {
        "name": options.name or Path(options.out).name,
        "audio": info.audio.to_dict(),
        "pack": pack_entry(info.audio),
        "schedule": schedule_entry(schedule),
        "steps": int(options.steps),
        "model": info.model.to_dict(),
        "precision": options.precision,
        "graphs": graphs,
        "external_data": WEIGHTS_FILE if external else None,
        "golden": GOLDEN_FILE,
        "opset": OPSET,
        "provenance": provenance,
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _install(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished temp folder to `out`; an existing `out` (only with force) is moved aside first, then removed."""
    if out.exists():
        if not force:
            raise ExportError(f"{out} already exists; pass --force to replace it")
        refuse_foreign_files(out, [])  # again: minutes have passed since check_options
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, aside / out.name)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(aside / out.name, out)
            raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, out)
    # mkdtemp makes 0700 folders; a bundle is meant to be shared and packaged.
    os.chmod(out, 0o755)


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    exponent = min(int(math.log(size, 1024)), 3)
    return f"{size / 1024 ** exponent:.1f} {('B', 'KB', 'MB', 'GB')[exponent]}"
