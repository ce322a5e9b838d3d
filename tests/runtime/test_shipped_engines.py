"""Every engine shipped under engines/ reproduces its own golden outputs on the CPU backend with onnxruntime — what
`pdd-run --verify` checks for a user — within the one tolerance table (`bundle.golden_tolerance`, its fp16 column for the
fp16 engine). Each engine's graphs are all run: denoiser, fused sampler and Griffin-Lim vocoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdd.runtime.bundle import golden_tolerance, load_bundle
from pdd.runtime.engine import engines_root
from pdd.runtime.generate import verify

SHIPPED = sorted(path.parent for path in engines_root().glob("*/manifest.json"))


def test_the_default_and_its_fp16_export_are_shipped() -> None:
    assert {"small-piano", "small-piano-fp16"} <= {path.name for path in SHIPPED}


@pytest.mark.parametrize("engine", SHIPPED, ids=lambda path: path.name)
def test_shipped_engine_verifies_on_cpu(engine: Path) -> None:
    pytest.importorskip("onnxruntime")
    from pdd.runtime.backends import create_backend

    bundle = load_bundle(engine)
    backend = create_backend("ort", bundle, device="cpu")
    try:
        checks = verify(bundle, backend)
    finally:
        backend.close()
    assert {check.graph for check in checks} >= {"sampler", "vocoder"}
    for check in checks:
        assert check.tolerance == golden_tolerance(check.graph, bundle.precision), check
        assert check.ok, f"{engine.name} {check.graph}.{check.tensor}: {check.relative_error:.3g} of peak > {check.tolerance:g}"
