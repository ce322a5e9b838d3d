"""Fixtures for the export tests: tiny checkpoints (U-Net "tiny" on the "tiny" audio preset) made with the checkpoint API.

The U-Net zero-initialises its output layers (an untrained model predicts v̂ = 0), which would make any parity check pass
trivially, so every weight gets a small seeded perturbation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pdd.export.bundle_writer import ExportOptions, ExportReport, export_bundle
from pdd.runtime.config import get_preset
from pdd.training.checkpoint import CheckpointInfo, make_checkpoint_state, save_checkpoint
from pdd.training.unet1d import UNet1D, unet_config


def make_tiny_checkpoint(path: Path, kind: str, steps: int | None, seed: int = 0) -> Path:
    audio = get_preset("tiny")
    config = unet_config("tiny", audio)
    torch.manual_seed(seed)
    model = UNet1D(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    info = CheckpointInfo(kind=kind, audio=audio, model=config, steps=steps, lineage=[{"test": "fixture"}])
    return save_checkpoint(path, make_checkpoint_state(model, info))


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    return {
        "student": make_tiny_checkpoint(root / "student-2.pt", "student", 2),
        "teacher": make_tiny_checkpoint(root / "teacher.pt", "teacher", None, seed=1),
    }


@pytest.fixture(scope="session")
def student_bundle(tiny_checkpoints, tmp_path_factory) -> tuple[Path, ExportReport]:
    """The 2-step tiny student exported once (fp32, 3 Griffin-Lim iterations), with an evaluation JSON in provenance."""
    out = tmp_path_factory.mktemp("engines") / "tiny-2"
    eval_json = out.parent / "eval.json"
    eval_json.write_text(json.dumps({"fd_mel": 12.5, "steps": 2}))
    report = export_bundle(ExportOptions(ckpt=tiny_checkpoints["student"], steps=2, out=out, gl_iters=3, eval_json=eval_json))
    eval_json.unlink()
    return out, report
