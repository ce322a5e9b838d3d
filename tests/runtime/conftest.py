"""Fixtures for the runtime tests: the tiny engine bundle of `tests.support.tiny_bundle` (built once per session, or
as variants) and the numpy reference of its graphs.

`make_tiny_bundle(dir, **options)` (fixture) builds variants; `tiny_bundle` is one shared, read-only bundle per session.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from pdd.runtime.config import get_preset
from tests.support.tiny_bundle import (TINY_STEPS, build_tiny_bundle, reference_denoiser, reference_sampler,
                                       reference_vocoder, tiny_manifest, tiny_weights)

__all__ = ["build_tiny_bundle"]  # tests/hostile/conftest.py still reads it from this file


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One shared tiny bundle (do not modify it: copy with `tiny_bundle_copy`)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("engines") / "tiny")


@pytest.fixture
def tiny_bundle_copy(tiny_bundle_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the tiny bundle for tests that corrupt it."""
    target = tmp_path / "tiny"
    shutil.copytree(tiny_bundle_dir, target)
    return target


@pytest.fixture
def make_tiny_bundle(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "variant", **options: Any) -> Path:
        return build_tiny_bundle(tmp_path / name, **options)

    return make


@pytest.fixture(scope="session")
def tiny_reference() -> SimpleNamespace:
    """The tiny graphs' arithmetic in numpy: weights, denoiser, sampler, vocoder (to check what backends compute)."""
    w1, w2 = tiny_weights(get_preset("tiny").packed_shape)
    return SimpleNamespace(
        w1=w1, w2=w2, steps=TINY_STEPS, manifest=tiny_manifest,
        denoiser=lambda z, t: reference_denoiser(z, t, w1, w2),
        sampler=lambda z1, steps=TINY_STEPS: reference_sampler(z1, steps, w1, w2),
        vocoder=lambda x0: reference_vocoder(x0, get_preset("tiny").clip_samples),
    )
