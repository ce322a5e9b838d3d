"""The runtime never imports torch (nor TensorRT/CUDA/onnx at import time): every module under pdd.runtime is imported
in a fresh interpreter with torch blocked, and a clip is generated there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import importlib, json, pkgutil, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import pdd.runtime
names = sorted(m.name for m in pkgutil.walk_packages(pdd.runtime.__path__, "pdd.runtime."))
for name in names:
    importlib.import_module(name)
imported_heavy = sorted(k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in
                        ("torch", "tensorrt", "cuda", "onnx", "onnxscript", "matplotlib"))
from pdd.runtime.generate import RunOptions, generate
results = generate(RunOptions(engine=sys.argv[1], n=2, batch_size=2, mode="loop", out=sys.argv[2]))
after = sorted(k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in ("torch", "tensorrt", "cuda", "onnx"))
print(json.dumps({"modules": names, "heavy": imported_heavy, "after": after, "written": [r.audio.name for r in results]}))
"""


def test_runtime_imports_and_runs_with_torch_blocked(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_bundle_dir), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {
        "pdd.runtime.bundle", "pdd.runtime.sampler", "pdd.runtime.generate", "pdd.runtime.cli_run",
        "pdd.runtime.backends", "pdd.runtime.backends.ort", "pdd.runtime.backends.trt",
        "pdd.runtime.manifest", "pdd.runtime.golden", "pdd.runtime.plans", "pdd.runtime.graphs",
    }
    assert expected <= set(report["modules"]), report["modules"]
    assert report["heavy"] == [], report["heavy"]
    assert report["after"] == [], report["after"]
    assert report["written"] == ["pdd-0-0.wav", "pdd-0-1.wav"]
