"""Hostile engine bundles against `pdd-run` (and `--verify`): paths outside the bundle, absurd numbers, broken JSON,
poisoned golden files. Each is one `error:` line, exit 2, and no file anywhere changes."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from pdd.runtime.bundle import MANIFEST_NAME, write_manifest
from pdd.runtime.cli_run import app

from hostile_checks import Guard, error_line, invoke


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST_NAME).read_text())


def _save(bundle: Path, manifest: dict) -> None:
    """Write the manifest as an attacker would: by hand, keeping the recorded hashes."""
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))


def edit(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(bundle: Path) -> None:
        manifest = _manifest(bundle)
        change(manifest)
        _save(bundle, manifest)
    return apply


def graph_outside(bundle: Path) -> None:
    shutil.copy(bundle / "sampler.onnx", bundle.parent / "outside.onnx")
    edit(lambda m: m["graphs"]["sampler"].update(file="../outside.onnx"))(bundle)


def graph_absolute(bundle: Path) -> None:
    shutil.copy(bundle / "sampler.onnx", bundle.parent / "outside.onnx")
    edit(lambda m: m["graphs"]["sampler"].update(file=str(bundle.parent / "outside.onnx")))(bundle)


def graph_symlink_outside(bundle: Path) -> None:
    shutil.copy(bundle / "sampler.onnx", bundle.parent / "outside.onnx")
    (bundle / "sampler.onnx").unlink()
    (bundle / "sampler.onnx").symlink_to(bundle.parent / "outside.onnx")


def files_system_file(bundle: Path) -> None:
    edit(lambda m: m["files"].update({"/etc/hostname": "0" * 64}))(bundle)


def files_traversal(bundle: Path) -> None:
    (bundle.parent / "secret.txt").write_text("not yours")
    edit(lambda m: m["files"].update({"../secret.txt": "0" * 64}))(bundle)


def onnx_external_data_outside(bundle: Path) -> None:
    """Rewrite the external-data location inside denoiser.onnx to ../weights.d (same length), re-hash honestly."""
    shutil.copy(bundle / "weights.data", bundle.parent / "weights.d")
    raw = (bundle / "denoiser.onnx").read_bytes()
    assert b"\x12\x0cweights.data" in raw
    (bundle / "denoiser.onnx").write_bytes(raw.replace(b"\x12\x0cweights.data", b"\x12\x0c../weights.d"))
    write_manifest(bundle, _manifest(bundle))


def onnx_external_data_reordered(bundle: Path) -> None:
    """A location key not followed by its value (another field order): refused, not guessed at."""
    raw = (bundle / "denoiser.onnx").read_bytes()
    (bundle / "denoiser.onnx").write_bytes(raw.replace(b"\x0a\x08location\x12", b"\x0a\x08location\x1a", 1))
    write_manifest(bundle, _manifest(bundle))


def deeply_nested(bundle: Path) -> None:
    text = (bundle / MANIFEST_NAME).read_text()
    (bundle / MANIFEST_NAME).write_text(text[:-2] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


def invalid_utf8(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).write_bytes((bundle / MANIFEST_NAME).read_bytes().replace(b'"tiny-test"', b'"tiny-\xff\xfe"'))


def huge_sparse_manifest(bundle: Path) -> None:
    with open(bundle / MANIFEST_NAME, "r+b") as handle:
        handle.truncate(80 << 20)  # sparse: costs no disk, must not be read


def golden_header_claims_huge_array(bundle: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000, 1000), }"
    header += " " * (64 - (10 + len(header) + 1) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\x00" * 16
    with zipfile.ZipFile(bundle / "golden.npz", "w") as archive:
        archive.writestr("sampler.z_1.npy", npy)
    write_manifest(bundle, _manifest(bundle))


def golden_wrong_shapes(bundle: Path) -> None:
    with np.load(bundle / "golden.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["sampler.z_1"] = arrays["sampler.z_1"][:, :5, :7]
    arrays["denoiser.z_t"] = arrays["denoiser.z_t"].astype(np.float64)
    np.savez(bundle / "golden.npz", **arrays)
    write_manifest(bundle, _manifest(bundle))


def golden_pickled(bundle: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"evil": "object"}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(bundle / "golden.npz", "w") as archive:
        archive.writestr("sampler.z_1.npy", buffer.getvalue())
    write_manifest(bundle, _manifest(bundle))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "graph ../ path": (graph_outside, "outside"),
    "graph absolute path": (graph_absolute, "outside"),
    "graph symlink out of the bundle": (graph_symlink_outside, "outside"),
    "files entry /etc/hostname": (files_system_file, "outside"),
    "files entry ../secret": (files_traversal, "outside"),
    "golden ../": (edit(lambda m: m.update(golden="../golden.npz")), "outside"),
    "external_data ../": (edit(lambda m: m.update(external_data="../weights.data")), "outside"),
    "external data inside the ONNX file ../": (onnx_external_data_outside, "outside"),
    "external data entry in another field order": (onnx_external_data_reordered, "external-data"),
    "graph file not a string": (edit(lambda m: m["graphs"]["sampler"].update(file=123)), "file"),
    "trt plan ../../etc/passwd": (edit(lambda m: m.update(trt={"plans": {"k": {"graphs": {"sampler": {
        "file": "../../etc/passwd", "sha256": "0", "source_sha256": "0", "batch": {"min": 1, "opt": 1, "max": 1}}}}}})),
        "outside"),
    "steps 1e9": (edit(lambda m: (m.update(steps=10**9), m["schedule"].update(steps=10**9))), "steps"),
    "gl_iters 1e12": (edit(lambda m: m["graphs"]["vocoder"].update(gl_iters=10**12)), "manifest graphs.vocoder.gl_iters"),
    "gl_momentum nan": (edit(lambda m: m["graphs"]["vocoder"].update(gl_momentum=float("nan"))), "gl_momentum"),
    "sample_rate 1e12": (edit(lambda m: m["audio"].update(sample_rate=10**12)), "sample_rate"),
    "frames 1e9": (edit(lambda m: m["audio"].update(frames=10**9)), "frames"),
    "tensor dim 1e12": (edit(lambda m: m["graphs"]["sampler"]["inputs"][0].update(shape=["batch", 10**12, 1])), "has shape"),
    "tensor rank 1000": (edit(lambda m: m["graphs"]["sampler"]["inputs"][0].update(shape=["batch"] * 1000)), "at most 8"),
    "10 000 files entries": (edit(lambda m: m["files"].update({f"f{i}": "0" for i in range(10_000)})), "at most"),
    "manifest nested 100 000 deep": (deeply_nested, "nested too deeply"),
    "manifest invalid UTF-8": (invalid_utf8, "not valid JSON"),
    "manifest 80 MB": (huge_sparse_manifest, "over"),
    "manifest is a list": (lambda b: (b / MANIFEST_NAME).write_text("[1, 2]"), "not a JSON object"),
    "format is 1 MB of text": (edit(lambda m: m.update(format="x" * (1 << 20))), "not supported"),
    # wrong JSON types where the loader reads a value (a sweep of mutated manifests found each of these)
    "tensor shape is a number": (edit(lambda m: m["graphs"]["sampler"]["inputs"][0].update(shape=5)), "shape a list"),
    "tensor dtype is a list": (edit(lambda m: m["graphs"]["sampler"]["inputs"][0].update(dtype=["float32"])), "text"),
    "tensor dtype is not one a graph uses": (edit(lambda m: m["graphs"]["sampler"]["inputs"][0].update(dtype="V16")),
                                             "unknown dtype"),
    "graph inputs is null": (edit(lambda m: m["graphs"]["sampler"].update(inputs=None)), "must be lists"),
    "audio.fmax is text": (edit(lambda m: m["audio"].update(fmax="../x")), "fmax must be a finite number"),
    "audio.sample_rate is a float": (edit(lambda m: m["audio"].update(sample_rate=16000.5)), "must be an integer"),
    "audio.fmin is a 400-digit integer": (edit(lambda m: m["audio"].update(fmin=10**400)), "over the limit"),
    "schedule.t holds a 400-digit integer": (edit(lambda m: m["schedule"]["t"].__setitem__(0, 10**400)), "schedule.t"),
    "gl_momentum is a 400-digit integer": (edit(lambda m: m["graphs"]["vocoder"].update(gl_momentum=10**400)),
                                           "gl_momentum"),
    "pack is a list": (edit(lambda m: m.update(pack=[3])), "pack must be an object"),
    "silence gate knee 1e-300": (edit(lambda m: m["decode"]["silence_gate"].update(knee=1e-300)), "silence gate knee"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_bundle_is_one_error_and_changes_nothing(bundle: Path, tmp_path: Path, case: str) -> None:
    attack, fragment = CASES[case]
    attack(bundle)
    out = tmp_path / "out"
    guard = Guard(tmp_path)
    line = error_line(invoke(app, "--engine", bundle, "-n", 1, "--out", out))
    assert fragment in line
    guard.unchanged()
    assert not out.exists() or not any(out.iterdir())


VERIFY_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "golden header claims 1e15 elements": (golden_header_claims_huge_array, "unreadable golden file"),
    "golden of the wrong shapes and dtypes": (golden_wrong_shapes, "the graph takes"),
    "golden holding a pickled object": (golden_pickled, "unreadable golden file"),
}


@pytest.mark.parametrize("case", list(VERIFY_CASES))
def test_hostile_golden_file_is_one_error(bundle: Path, tmp_path: Path, case: str) -> None:
    attack, fragment = VERIFY_CASES[case]
    attack(bundle)
    guard = Guard(tmp_path)
    assert fragment in error_line(invoke(app, "--engine", bundle, "--verify", "--backend", "ort", "--device", "cpu"))
    guard.unchanged()


def test_terminal_escapes_in_the_bundle_name_are_printed_escaped(bundle: Path) -> None:
    edit(lambda m: m.update(name="\x1b]0;owned\x07\x1b[2J\x1b[31mred\u202eevil"))(bundle)
    result = invoke(app, "--engine", bundle, "--verify", "--backend", "ort", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
    assert "\\x1b]0;owned" in result.output


def test_a_symlinked_bundle_folder_itself_is_fine(bundle: Path, tmp_path: Path) -> None:
    """Confinement is relative to the bundle as resolved: a user's symlink to a whole bundle keeps working."""
    link = tmp_path / "linked-engine"
    os.symlink(bundle, link)
    result = invoke(app, "--engine", link, "-n", 1, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
