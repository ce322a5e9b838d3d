"""The manifest's hash must pin the weights that run: onnxruntime reads a graph's external data relative to the graph's
own folder, so a graph moved into a subfolder beside other weights must be refused — two bundles whose manifest.json is
byte-identical must never play different audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, write_manifest
from pdd.runtime.cli_run import app
from pdd.runtime.errors import BundleError

from hostile_checks import Guard, error_line, invoke

WEIGHTS = "weights.data"


def graph_in_subfolder(bundle: Path, weights: np.ndarray) -> None:
    """sampler.onnx moved to sub/, with `weights` as sub/weights.data beside it; the manifest hashes only the root
    weights.data (what a check relative to the bundle folder would accept)."""
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    (bundle / "sub").mkdir()
    shutil.move(bundle / "sampler.onnx", bundle / "sub" / "sampler.onnx")
    (bundle / "sub" / WEIGHTS).write_bytes(weights.tobytes())
    manifest["graphs"]["sampler"]["file"] = "sub/sampler.onnx"
    manifest.pop("files")
    write_manifest(bundle, manifest)


@pytest.fixture
def twins(tiny_bundle_master: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two bundles with the same manifest.json: one beside honest weights, one beside doctored ones."""
    honest = np.fromfile(tiny_bundle_master / WEIGHTS, dtype=np.float32)
    pair = []
    for name, weights in (("honest", honest), ("doctored", honest * -3.0)):
        bundle = tmp_path / name
        shutil.copytree(tiny_bundle_master, bundle)
        graph_in_subfolder(bundle, weights)
        pair.append(bundle)
    return pair[0], pair[1]


def test_twin_bundles_have_the_same_manifest_and_both_are_refused(twins: tuple[Path, Path]) -> None:
    honest, doctored = twins
    assert (honest / MANIFEST_NAME).read_bytes() == (doctored / MANIFEST_NAME).read_bytes()
    for bundle in twins:
        with pytest.raises(BundleError, match="sub/weights.data.*does not hash"):
            load_bundle(bundle, check_graphs=False)


def test_pdd_run_refuses_the_doctored_twin_and_writes_nothing(twins: tuple[Path, Path], tmp_path: Path) -> None:
    _, doctored = twins
    out = tmp_path / "out"
    guard = Guard(tmp_path)
    assert "does not hash" in error_line(invoke(app, "--engine", doctored, "-n", 1, "--out", out))
    guard.unchanged()
    assert not out.exists() or not any(out.iterdir())


def test_a_graph_in_a_subfolder_with_its_weights_hashed_loads(tiny_bundle_master: Path, tmp_path: Path) -> None:
    """The rule is "the file onnxruntime reads is hashed", not "graphs live at the top": hashing sub/weights.data too
    makes the same layout a valid bundle."""
    bundle = tmp_path / "engine"
    shutil.copytree(tiny_bundle_master, bundle)
    graph_in_subfolder(bundle, np.fromfile(bundle / WEIGHTS, dtype=np.float32))
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["graphs"]["sampler"]["file"] = "sub/sampler.onnx"
    manifest["files"] = {}
    write_manifest(bundle, manifest)
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    from pdd.runtime.manifest import sha256_file

    manifest["files"]["sub/weights.data"] = sha256_file(bundle / "sub" / WEIGHTS)
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert load_bundle(bundle).graph_path("sampler") == (bundle / "sub" / "sampler.onnx").resolve()
