"""Golden tensors: loading a bundle's golden.npz and the one tolerance table that `pdd-run --verify` and export's parity
check apply to them (docs/architecture.md, "Tolerances").
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pdd.runtime.errors import BundleError
from pdd.runtime.manifest import REEXPORT
from pdd.runtime.untrusted import check_npz_sizes

MAX_GOLDEN_ELEMENTS = 1 << 26  # per golden tensor (256 MB of float32)


def load_golden(path: Path) -> dict[str, np.ndarray]:
    """The golden tensors of the file at `path`, keyed "<graph>.<tensor>"; BundleError when it is unreadable."""
    try:
        check_npz_sizes(path, MAX_GOLDEN_ELEMENTS)
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: unreadable golden file ({exc}); {REEXPORT}") from None


# `pdd-run --verify` tolerances: max |backend − golden| relative to max |golden| (one figure fits any output scale),
# the same table export's parity check applies to onnxruntime vs PyTorch (export/parity.py). Column "fp16" also serves
# TensorRT running fp32 bundles, which uses TF32 (10-bit mantissa) for fp32 convolutions on Ampere and newer.
# The vocoder graph is always fp32; on TensorRT its 32 momentum iterations amplify TF32 rounding further.
GOLDEN_TOLERANCE: dict[tuple[str, str], float] = {
    ("denoiser", "fp32"): 1e-4,
    ("denoiser", "fp16"): 3e-2,
    ("sampler", "fp32"): 1e-3,
    ("sampler", "fp16"): 5e-2,
    ("vocoder", "fp32"): 1e-2,  # momentum Griffin-Lim amplifies float32 rounding to ~1e-3; a real bug is off by ~1
    ("vocoder", "fp16"): 2e-2,
    # The learned vocoder: one feed-forward pass (no iteration to amplify rounding); ~1e-6 of peak seen at export.
    ("neural_vocoder", "fp32"): 1e-3,
    ("neural_vocoder", "fp16"): 3e-2,
    ("neural_vocoder_wave", "fp32"): 1e-3,
    ("neural_vocoder_wave", "fp16"): 3e-2,
}
VOCODER_GRAPHS = ("vocoder", "neural_vocoder", "neural_vocoder_wave")  # always exported in fp32


def golden_tolerance(graph: str, precision: str, *, tensorrt: bool = False) -> float:
    """Relative tolerance for `graph` of a `precision` bundle; `tensorrt` when TensorRT (native or EP) runs it."""
    column = "fp16" if precision == "fp16" or tensorrt else "fp32"
    if graph in VOCODER_GRAPHS and not tensorrt:
        column = "fp32"  # exported in fp32 whatever the bundle precision
    return GOLDEN_TOLERANCE[(graph, column)]


__all__ = ["GOLDEN_TOLERANCE", "VOCODER_GRAPHS", "MAX_GOLDEN_ELEMENTS", "golden_tolerance", "load_golden"]
