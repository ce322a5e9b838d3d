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
from pdd.runtime.bundle import load_bundle, referenced_files, write_manifest
from pdd.runtime.silence import SilenceGate

U_NET_GRAPHS = ("denoiser", "sampler")
BACK_END_PREFIXES = ("vocoder.", "neural_vocoder.", "neural_vocoder_wave.")


def upgrade_bundle(source: Path, out: Path, vocoder_ckpt: Path | None, *, force: bool, name: str | None = None,
                   progress: Callable[[str], None] | None = None, vocoder_gate: SilenceGate | None = None) -> ExportReport:
    started = time.perf_counter()
    say = progress or (lambda message: None)
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        report = _build(bundle, golden, vocoder_ckpt, tmp, name, say, vocoder_gate)
        _install(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report.out, report.seconds = out, time.perf_counter() - started
    return report


def _build(bundle: Any, golden: dict[str, np.ndarray], vocoder_ckpt: Path | None, tmp: Path, name: str | None,
           say: Callable[[str], None], vocoder_gate: SilenceGate | None = None) -> ExportReport:
    audio = bundle.audio
    manifest = copy.deepcopy(bundle.manifest)
    for graph in U_NET_GRAPHS:  # the U-Net side travels unchanged
        if graph in manifest["graphs"]:
            shutil.copy2(bundle.graph_path(graph), tmp / manifest["graphs"][graph]["file"])
    if manifest.get("external_data"):
        shutil.copy2(bundle.path / manifest["external_data"], tmp / manifest["external_data"])
    kept = {k: v for k, v in golden.items() if not k.startswith(BACK_END_PREFIXES)}
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
    for stale in ("neural_vocoder", "neural_vocoder_wave"):
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

    manifest["decode"] = decode_section(neural.decode if neural is not None else None)
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
