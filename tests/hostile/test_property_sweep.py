"""Property sweep: mutated manifests, cache indexes and checkpoint configs — any JSON value of any type at any place,
keys deleted — are each either accepted or refused with one one-line pdd error (BundleError for a bundle), never another
exception. Every mutation is written to a file and read back the way the commands read it.

The default suite runs a few hundred mutated files; `-m slow` runs over 2,000 manifests plus 1,000 of each of the others.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdd.runtime.bundle import MANIFEST_NAME, load_bundle
from pdd.runtime.errors import BundleError, PddError

DELETE = object()  # a mutation that removes the key (or list item) instead of replacing it

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 3, 10**12, 10**400, 1e308, "", "../x", "/etc/passwd", "batch", "float32", "snake",
                     "pdd-engine/2", "neural", "gl", "\x1b[2J"]),
    st.text(max_size=6), st.just([]), st.just({}), st.lists(st.integers(-3, 10**6), max_size=3),
    st.dictionaries(st.sampled_from(["threshold", "knee", "file", "chunks"]), st.integers(-2, 2), max_size=2),
    st.just(DELETE),
)
FAST = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW_MANIFESTS = settings(FAST, max_examples=2200)
SLOW_OTHERS = settings(FAST, max_examples=1000)


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every place in a JSON tree (the root excluded), depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from paths(value, prefix + (key,))


def mutate(tree: Any, changes: list[tuple[tuple, Any]]) -> Any:
    """`tree` with each (place, value) applied in order; places a previous change removed are skipped."""
    tree = copy.deepcopy(tree)
    for place, value in changes:
        node = tree
        try:
            for key in place[:-1]:
                node = node[key]
            if value is DELETE:
                del node[place[-1]]
            else:
                node[place[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    return tree


def changes_of(tree: Any) -> st.SearchStrategy:
    return st.lists(st.tuples(st.sampled_from(list(paths(tree))), LEAVES), min_size=1, max_size=3)


def write_json(path: Path, tree: Any) -> bool:
    """Write the mutated tree as a file; False for a tree JSON cannot hold (a float key, NaN is fine)."""
    try:
        path.write_text(json.dumps(tree))
    except (TypeError, ValueError):
        return False
    return True


def assert_one_line(exc: BaseException, kind: type[BaseException] = PddError) -> None:
    assert isinstance(exc, kind), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text


def refused_or_accepted(read: Callable[[], Any], kind: type[BaseException] = PddError) -> None:
    try:
        read()
    except Exception as exc:  # noqa: BLE001 - the property: nothing but one pdd error escapes
        assert_one_line(exc, kind)


# ---------------------------------------------------------------------------------------------------------------------
# Manifests


@pytest.fixture(scope="module")
def sweep_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_master: Path) -> tuple[Path, dict]:
    target = tmp_path_factory.mktemp("sweep") / "engine"
    shutil.copytree(tiny_bundle_master, target)
    return target, json.loads((target / MANIFEST_NAME).read_text())


def read_bundle(folder: Path) -> None:
    bundle = load_bundle(folder, check_graphs=False)
    # what the commands read from a loaded bundle before running anything
    (bundle.name, bundle.precision, bundle.chunks, bundle.gl_gate, bundle.vocoders, bundle.default_vocoder,
     bundle.valid_loop_steps(), bundle.golden_path(), bundle.neural, bundle.trt_plans("k"))


def check_manifest(sweep_bundle: tuple[Path, dict], changes: list) -> None:
    folder, manifest = sweep_bundle
    if write_json(folder / MANIFEST_NAME, mutate(manifest, changes)):
        refused_or_accepted(lambda: read_bundle(folder), BundleError)


def test_manifest_sweep(sweep_bundle: tuple[Path, dict]) -> None:
    @FAST
    @given(changes_of(sweep_bundle[1]))
    def run(changes: list) -> None:
        check_manifest(sweep_bundle, changes)

    run()


@pytest.mark.slow
def test_manifest_sweep_slow(sweep_bundle: tuple[Path, dict]) -> None:
    @SLOW_MANIFESTS
    @given(changes_of(sweep_bundle[1]))
    def run(changes: list) -> None:
        check_manifest(sweep_bundle, changes)

    run()


# ---------------------------------------------------------------------------------------------------------------------
# Cache indexes


@pytest.fixture(scope="module")
def sweep_cache(tmp_path_factory: pytest.TempPathFactory, cache_master: Path) -> tuple[Path, dict]:
    target = tmp_path_factory.mktemp("sweep") / "cache"
    shutil.copytree(cache_master, target)
    return target, json.loads((target / "index.json").read_text())


def read_cache(folder: Path) -> None:
    from pdd.training.cache import open_cache
    from pdd.training.vocoder_train import training_files

    cache = open_cache(folder)
    for split in cache.splits:
        (cache.sources(split), cache.source_ids(split), cache.offsets(split), cache.num_clips(split), cache.clips(split))
    training_files(folder, str(folder))  # what pdd-vocoder train reads from it (its audio folder named by the user)


def check_cache(sweep_cache: tuple[Path, dict], changes: list) -> None:
    folder, index = sweep_cache
    if write_json(folder / "index.json", mutate(index, changes)):
        refused_or_accepted(lambda: read_cache(folder))


def test_cache_index_sweep(sweep_cache: tuple[Path, dict]) -> None:
    @FAST
    @given(changes_of(sweep_cache[1]))
    def run(changes: list) -> None:
        check_cache(sweep_cache, changes)

    run()


@pytest.mark.slow
def test_cache_index_sweep_slow(sweep_cache: tuple[Path, dict]) -> None:
    @SLOW_OTHERS
    @given(changes_of(sweep_cache[1]))
    def run(changes: list) -> None:
        check_cache(sweep_cache, changes)

    run()


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint configs (the U-Net's and the learned vocoder's), written into checkpoint files and loaded back


@pytest.fixture(scope="module")
def sweep_checkpoints(tmp_path_factory: pytest.TempPathFactory, teacher_master: Path) -> dict[str, Any]:
    from pdd.runtime.config import get_preset
    from pdd.training.checkpoint import CHECKPOINT_FORMAT
    from pdd.training.vocoder import VOCODER_GATE, MelVocoder, VocoderInfo, vocoder_preset

    info = VocoderInfo(get_preset("tiny"), vocoder_preset("tiny"), VOCODER_GATE)
    vocoder = {"format": CHECKPOINT_FORMAT, "kind": "vocoder", "info": info.to_dict(),
               "model": MelVocoder(info.audio, info.config, info.gate).state_dict()}
    return {"folder": tmp_path_factory.mktemp("sweep-ckpt"), "teacher": torch.load(teacher_master, weights_only=True),
            "vocoder": vocoder}


def read_checkpoint(kind: str, path: Path) -> None:
    if kind == "teacher":
        from pdd.training.checkpoint import load_denoiser

        load_denoiser(path)
    else:
        from pdd.training.vocoder_train import load_vocoder

        load_vocoder(path)


def check_config(sweep_checkpoints: dict[str, Any], kind: str, changes: list) -> None:
    state = dict(sweep_checkpoints[kind])
    state["info"] = mutate(state["info"], changes)
    path = sweep_checkpoints["folder"] / f"{kind}.pt"
    torch.save(state, path)
    refused_or_accepted(lambda: read_checkpoint(kind, path))


def _info_changes(kind: str) -> Callable[[dict[str, Any]], st.SearchStrategy]:
    return lambda checkpoints: changes_of(checkpoints[kind]["info"])


@pytest.mark.parametrize("kind", ["teacher", "vocoder"])
def test_checkpoint_config_sweep(sweep_checkpoints: dict[str, Any], kind: str, one_torch_thread: None) -> None:
    @settings(FAST, max_examples=60)
    @given(_info_changes(kind)(sweep_checkpoints))
    def run(changes: list) -> None:
        check_config(sweep_checkpoints, kind, changes)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["teacher", "vocoder"])
def test_checkpoint_config_sweep_slow(sweep_checkpoints: dict[str, Any], kind: str, one_torch_thread: None) -> None:
    @settings(SLOW_OTHERS, max_examples=500)
    @given(_info_changes(kind)(sweep_checkpoints))
    def run(changes: list) -> None:
        check_config(sweep_checkpoints, kind, changes)

    run()
