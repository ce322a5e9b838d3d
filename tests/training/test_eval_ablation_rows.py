"""pdd-eval's ablation rows: a DDPM@N row beside DDIM, the busy/flat statistics on every row, and a teacher packed another
way than its cache (--pack reshape) evaluated on that cache."""

from __future__ import annotations

import json

import pytest
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.training.cache import write_synthetic_cache
from pdd.training.checkpoint import CheckpointInfo, make_checkpoint_state, save_checkpoint
from pdd.training.evaluate import EvalSettings, evaluate_models
from pdd.training.models import build_denoiser, model_config

TINY = get_preset("tiny")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ddpm_row_and_statistics_for_a_reshape_teacher(tmp_path) -> None:
    cache = write_synthetic_cache(tmp_path / "cache", TINY, n_train=4, n_heldout=8)
    audio = TINY.with_pack_mode("reshape")
    config = model_config("unet1d", "tiny", audio)
    torch.manual_seed(0)
    model = build_denoiser(config)
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)
    teacher = save_checkpoint(tmp_path / "teacher.pt", make_checkpoint_state(
        model, CheckpointInfo(kind="teacher", audio=audio, model=config)))
    settings = EvalSettings(clips=3, steps=(2,), reference_steps=2, fd_bp=False, wavs=False, gl_iters=2, ddpm_steps=20)
    result = evaluate_models(teacher, None, cache, tmp_path / "eval", settings, device="cpu", log=lambda _: None)
    rows = {r.name: r for r in result.rows}
    assert list(rows) == ["real vs real", "Griffin-Lim ceiling", "teacher DDIM@2", "teacher DDPM@20"]
    ddpm = rows["teacher DDPM@20"]
    assert ddpm.kind == "teacher-ddpm" and ddpm.steps == 20 and ddpm.sample_s_per_clip > 0
    assert all(0.0 <= r.silent_fraction <= 1.0 and r.band_std > 0 for r in result.rows)
    saved = json.loads((tmp_path / "eval" / "table.json").read_text())
    assert saved["settings"]["ddpm_steps"] == 20 and "silent_fraction" in saved["rows"][-1]
    assert result.comparisons == []  # no students: DDPM never enters the student-vs-DDIM comparisons
    with pytest.raises(ConfigError, match="DDPM steps"):
        EvalSettings(ddpm_steps=-1)
