"""The hostile-input suite: every case is a bad or malicious input to a real command, and every case checks the same four
things — the exit code (2), exactly one `error: …` line, no traceback, and an unchanged sha256 for every file the
command does not own (the inputs, the user's files, files planted outside its folders).

Fixtures: a tiny engine bundle (the runtime tests' hand-made graphs), a tiny teacher checkpoint, a tiny mel cache, and
`Guard`, which snapshots a folder tree before a command and proves afterwards that nothing outside the command's own
outputs changed.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _runtime_fixtures() -> Any:
    """tests/runtime/conftest.py as a module (pytest's importlib mode does not make conftests importable)."""
    spec = importlib.util.spec_from_file_location("_pdd_runtime_fixtures", ROOT / "tests" / "runtime" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(Path(__file__).parent))  # the test modules import hostile_checks

from hostile_checks import Guard  # noqa: E402


@pytest.fixture
def guard(tmp_path: Path) -> Callable[[], Guard]:
    return lambda: Guard(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs to attack


@pytest.fixture(scope="session")
def tiny_bundle_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _runtime_fixtures().build_tiny_bundle(tmp_path_factory.mktemp("hostile-engines") / "tiny")


@pytest.fixture
def bundle(tiny_bundle_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny bundle at tmp_path/engine, free to corrupt."""
    target = tmp_path / "engine"
    shutil.copytree(tiny_bundle_master, target)
    return target


@pytest.fixture(scope="session")
def teacher_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from pdd.runtime.config import get_preset
    from pdd.training.checkpoint import CheckpointInfo, make_checkpoint_state, save_checkpoint
    from pdd.training.unet1d import UNet1D, unet_config

    audio = get_preset("tiny")
    config = unet_config("tiny", audio)
    torch.manual_seed(0)
    model = UNet1D(config)
    info = CheckpointInfo(kind="teacher", audio=audio, model=config, lineage=[{"kind": "teacher", "data": "none"}])
    return save_checkpoint(tmp_path_factory.mktemp("hostile-ckpt") / "teacher.pt", make_checkpoint_state(model, info))


@pytest.fixture(scope="session")
def cache_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pdd.runtime.config import get_preset
    from pdd.training.cache import write_synthetic_cache

    return write_synthetic_cache(tmp_path_factory.mktemp("hostile-cache") / "cache", get_preset("tiny"), 8, 4)


@pytest.fixture
def cache(cache_master: Path, tmp_path: Path) -> Path:
    target = tmp_path / "cache"
    shutil.copytree(cache_master, target)
    return target
