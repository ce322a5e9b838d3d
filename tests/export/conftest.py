"""Fixtures for the export tests: tiny checkpoints (U-Net "tiny" on the "tiny" audio preset) made with the checkpoint API.

The U-Net zero-initialises its output layers (an untrained model predicts v̂ = 0), which would make any parity check pass
trivially, so every weight gets a small seeded perturbation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch

from pdd.export.bundle_writer import ExportOptions, ExportReport, export_bundle
from pdd.runtime.config import get_preset
from pdd.training.checkpoint import CHECKPOINT_FORMAT, CheckpointInfo, make_checkpoint_state, save_checkpoint
from pdd.training.unet1d import UNet1D, unet_config
from pdd.training.vocoder import VOCODER_GATE, MelVocoder, VocoderConfig, VocoderInfo


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


def _vocoder_checkpoint(path: Path, preset: str = "tiny", seed: int = 0) -> Path:
    audio = get_preset(preset)
    config = VocoderConfig(name="t", dim=16, intermediate=32, layers=1)
    torch.manual_seed(seed)
    model = MelVocoder(audio, config)
    info = VocoderInfo(audio, config, VOCODER_GATE, {"test": "fixture"})
    state = {"format": CHECKPOINT_FORMAT, "kind": "vocoder", "info": info.to_dict(),
             "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    return save_checkpoint(path, state)


@pytest.fixture(scope="session")
def make_vocoder_checkpoint() -> Callable[..., Path]:
    """A factory: make_vocoder_checkpoint(path, preset="tiny", seed=0) writes a small random learned-vocoder checkpoint."""
    return _vocoder_checkpoint


@pytest.fixture(scope="session")
def neural_bundle(tiny_checkpoints, tmp_path_factory) -> Path:
    """The 2-step tiny student exported with a learned vocoder (pdd-engine/2, the neural back end by default)."""
    root = tmp_path_factory.mktemp("neural")
    vocoder = _vocoder_checkpoint(root / "vocoder.pt")
    out = root / "tiny-neural"
    export_bundle(ExportOptions(ckpt=tiny_checkpoints["student"], steps=2, out=out, gl_iters=3, vocoder_ckpt=vocoder))
    return out
