"""Fixtures for the export tests: tiny checkpoints (U-Net "tiny" on the "tiny" audio preset) made with the checkpoint API.

The U-Net zero-initialises its output layers (an untrained model predicts v̂ = 0), which would make any parity check pass
trivially, so every weight gets a small seeded perturbation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
