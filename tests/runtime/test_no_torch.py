"""The runtime never imports torch (nor TensorRT/CUDA/onnx at import time): every module under pdd.runtime is imported
in a fresh interpreter with torch blocked, and clips are generated there, by `pdd-run`'s library call and by `Engine`.
Without the [serve] extra (FastAPI blocked too, as in a `.[cpu,dev]` install) only the modules that need it are
left out."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SERVE_EXTRA = ("fastapi", "uvicorn", "starlette")
PROBE = r"""
import importlib, json, pkgutil, sys
blocked = sys.argv[3].split(",")
for module in ["torch", *filter(None, blocked)]:
    sys.modules[module] = None  # any import of it now raises ImportError
import pdd.runtime
names = sorted(m.name for m in pkgutil.walk_packages(pdd.runtime.__path__, "pdd.runtime."))
needs_extra = []
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in blocked:
            raise
        needs_extra.append(name)
imported_heavy = sorted(k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in
                        ("torch", "tensorrt", "cuda", "onnx", "onnxscript", "matplotlib"))
from pdd.runtime.generate import RunOptions, generate
results = generate(RunOptions(engine=sys.argv[1], n=2, batch_size=2, mode="loop", out=sys.argv[2]))
from pdd.runtime import Engine
with Engine.load(sys.argv[1], backend="ort", device="cpu") as engine:
    shape = list(engine.generate(n=2, seed=1, steps=2).audio.shape)
after = sorted(k for k, v in sys.modules.items() if v is not None and k.split(".")[0] in ("torch", "tensorrt", "cuda", "onnx"))
print(json.dumps({"modules": names, "heavy": imported_heavy, "after": after, "written": [r.audio.name for r in results],
                  "engine_audio": shape, "needs_extra": needs_extra}))
"""


@pytest.mark.parametrize("without_serve", [False, True], ids=["all-extras", "without-serve-extra"])
def test_runtime_imports_and_runs_with_torch_blocked(tiny_bundle_dir: Path, tmp_path: Path, without_serve: bool) -> None:
    if not without_serve and importlib.util.find_spec("fastapi") is None:
        pytest.skip("the [serve] extra is not installed (a .[cpu,dev] lane): the blocked variant covers it")
    blocked = ",".join(SERVE_EXTRA) if without_serve else ""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_bundle_dir), str(tmp_path / "out"), blocked],
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
    assert report["engine_audio"][0] == 2
    if without_serve:  # only the ASGI app needs FastAPI; the service behind it is plain Python
        assert report["needs_extra"] == ["pdd.runtime.serve.app"], report["needs_extra"]
    elif importlib.util.find_spec("fastapi") is not None:
        assert report["needs_extra"] == []
