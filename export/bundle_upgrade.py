"""`pdd-export --from-bundle DIR [--vocoder-ckpt V]`: give an existing bundle today's back end without its checkpoint.

The U-Net graphs (denoiser, sampler, their weights and golden tensors) are copied byte for byte; the back end is rebuilt:
the Griffin-Lim graph with the silence gate (pdd.runtime.silence), and, with --vocoder-ckpt, the learned vocoder's graphs.
The result is a `pdd-engine/2` bundle, checked like any export (parity, then the runtime's own `load_bundle`) in a temp
folder beside --out and renamed into place only when every check passed. `--out` may be the source bundle itself (with
--force): that is how a shipped `pdd-engine/1` bundle is upgraded in place.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from pdd.export.bundle_writer import GOLDEN_FILE, ExportError, ExportReport, _install, decode_section
from pdd.export.graphs import io_specs, strip_metadata
from pdd.export.vocoder import export_gl_vocoder
from pdd.runtime.bundle import TensorSpec, load_bundle, referenced_files, write_manifest
from pdd.runtime.errors import BundleError
from pdd.runtime.graphs import GRAPHS
from pdd.runtime.silence import SilenceGate
from pdd.runtime.untrusted import resolve_inside

U_NET_GRAPHS = ("denoiser", "sampler")
NEURAL_GRAPHS = ("neural_vocoder", "neural_vocoder_wave")
NEURAL_PREFIXES = ("neural_vocoder.", "neural_vocoder_wave.")
BACK_END_PREFIXES = ("vocoder.", *NEURAL_PREFIXES)


def upgrade_bundle(source: Path, out: Path, vocoder_ckpt: Path | None, *, force: bool, name: str | None = None,
                   progress: Callable[[str], None] | None = None, vocoder_gate: SilenceGate | None = None,
                   drop_vocoder: bool = False) -> ExportReport:
    """Rebuild `source`'s back end into `out`. A learned vocoder the source ships is kept byte for byte unless
    `vocoder_ckpt` replaces it or `drop_vocoder` says to drop it: its checkpoint is often not at hand (a shipped engine
    carries none), so dropping it silently could not be undone."""
    started = time.perf_counter()
    say = progress or (lambda message: None)
    if drop_vocoder and vocoder_ckpt is not None:
        raise ExportError("--drop-vocoder removes the learned vocoder and --vocoder-ckpt replaces it: pass one of them")
    if vocoder_ckpt is not None and not Path(vocoder_ckpt).is_file():
        raise ExportError(f"--vocoder-ckpt {vocoder_ckpt}: no such file (the vocoder.pt of a `pdd-vocoder train` run)")
    out = Path(out).absolute()
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    say(f"checking {source}")
    bundle = load_bundle(source)
    golden = bundle.golden()
    if "vocoder.x0" not in golden or "vocoder.phase0" not in golden:
        raise ExportError(f"{source}: golden.npz has no vocoder inputs to check the new back end on; re-export it from its checkpoint")
    check_back_end_golden(bundle, golden)
    if drop_vocoder and bundle.neural is None:
        raise ExportError(f"--drop-vocoder: {source} ships no learned vocoder to drop")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        keep = bundle.neural is not None and vocoder_ckpt is None and not drop_vocoder
        report = _build(bundle, golden, vocoder_ckpt, tmp, name, say, vocoder_gate, keep)
        _install(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out, report.seconds = out, time.perf_counter() - started
    return report


def check_back_end_golden(bundle: Any, golden: dict[str, np.ndarray]) -> None:
    """The golden inputs the new back end is built and checked on must have the shapes the graphs take (golden.npz is
    untrusted: a wrong shape must be one line here, not a torch or onnxruntime traceback minutes later)."""
    from pdd.runtime.generate import check_golden_inputs

    check_golden_inputs("vocoder", back_end_inputs(bundle), {k: golden[f"vocoder.{k}"] for k in ("x0", "phase0")})


def back_end_inputs(bundle: Any) -> tuple[TensorSpec, ...]:
    """The Griffin-Lim graph's input specs: the bundle's own, else (a bundle without the graph) the contract's."""
    if bundle.has_graph("vocoder"):
        return bundle.graph("vocoder").inputs
    contract = GRAPHS["vocoder"]
    return tuple(TensorSpec(name, contract.tensor(name).dtype,
                            tuple("batch" if d is None else d for d in contract.tensor(name).shape(bundle.audio)))
                 for name in contract.input_names)


def _copy_from_bundle(bundle: Any, relpath: str, tmp: Path) -> None:
    """One file of the source bundle, byte for byte, to the same place in the new one (inside the bundle only)."""
    target = tmp / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(resolve_inside(bundle.path, relpath, f"{bundle.path}: manifest file", BundleError), target)


def _keep_learned_vocoder(bundle: Any, manifest: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Copy the source's learned-vocoder graphs and weights unchanged; its decode.neural entry."""
    for graph in NEURAL_GRAPHS:
        if graph in manifest["graphs"]:
            _copy_from_bundle(bundle, manifest["graphs"][graph]["file"], tmp)
    neural = copy.deepcopy(bundle.neural)
    if neural.get("external_data"):
        _copy_from_bundle(bundle, neural["external_data"], tmp)
    return neural


def _build(bundle: Any, golden: dict[str, np.ndarray], vocoder_ckpt: Path | None, tmp: Path, name: str | None,
           say: Callable[[str], None], vocoder_gate: SilenceGate | None = None, keep_neural: bool = False) -> ExportReport:
    audio = bundle.audio
    manifest = copy.deepcopy(bundle.manifest)
    for graph in U_NET_GRAPHS:  # the U-Net side travels unchanged
        if graph in manifest["graphs"]:
            _copy_from_bundle(bundle, manifest["graphs"][graph]["file"], tmp)
    if manifest.get("external_data"):
        _copy_from_bundle(bundle, manifest["external_data"], tmp)
    kept = {k: v for k, v in golden.items() if not k.startswith(BACK_END_PREFIXES)}
    if keep_neural:
        kept.update({k: v for k, v in golden.items() if k.startswith(NEURAL_PREFIXES)})
    x0, phase0 = golden["vocoder.x0"].astype(np.float32), golden["vocoder.phase0"].astype(np.float32)

    gl = manifest["graphs"].get("vocoder") or {}
    iters, momentum = int(gl.get("gl_iters", 32)), float(gl.get("gl_momentum", 0.99))
    say(f"exporting the Griffin-Lim graph ({iters} iterations, silence gate)")
    proto, waveform, parity = export_gl_vocoder(audio, x0, phase0, n_iter=iters, momentum=momentum)
    onnx.save_model(strip_metadata(proto), str(tmp / "vocoder.onnx"))
    inputs, outputs = io_specs(proto)
    manifest["graphs"]["vocoder"] = {"file": "vocoder.onnx", "inputs": inputs, "outputs": outputs,
                                     "gl_iters": iters, "gl_momentum": momentum}
    stored = dict(kept, **{"vocoder.x0": x0, "vocoder.phase0": phase0, "vocoder.waveform": waveform})
    kept_neural = _keep_learned_vocoder(bundle, manifest, tmp) if keep_neural else None
    if kept_neural is not None:
        say("keeping the learned vocoder (byte for byte; --drop-vocoder drops it)")
    else:
        for stale in NEURAL_GRAPHS:
            manifest["graphs"].pop(stale, None)

    neural = None
    if vocoder_ckpt is not None:
        from pdd.export.neural_vocoder import build_parts, golden_to_store, write_parts

        say("exporting the learned vocoder")
        neural = build_parts(Path(vocoder_ckpt), audio, x0, gate=vocoder_gate)
        parity.extend(neural.parity)
        write_parts(neural, tmp)
        manifest["graphs"].update(neural.graphs)
        stored.update(golden_to_store(neural.golden))
    np.savez_compressed(tmp / GOLDEN_FILE, **stored)

    manifest["decode"] = decode_section(neural.decode if neural is not None else kept_neural)
    if kept_neural is not None:
        manifest["decode"]["default_vocoder"] = bundle.default_vocoder
    manifest.pop("trt", None)  # plans were built from the old graphs; the runtime rebuilds them on first use
    manifest.pop("files", None)
    if name:
        manifest["name"] = name
    manifest["provenance"]["back_end"] = {
        "upgraded_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "from_format": bundle.format, "from_manifest_sha256": bundle.hash,
        "parity": [p.to_dict() for p in parity],
    }
    say("writing bundle")
    write_manifest(tmp, manifest)
    load_bundle(tmp)
    missing = [f for f in referenced_files(manifest) if not (tmp / f).is_file()]
    if missing:
        raise ExportError(f"upgraded bundle lacks {', '.join(missing)}")
    files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    return ExportReport(out=tmp, seconds=0.0, files=files, parity=parity, graphs=sorted(manifest["graphs"]))
