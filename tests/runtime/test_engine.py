"""`Engine`: the Python API gives `pdd-run`'s bytes, reports how it ran, refuses bad arguments in one line, and the
README's Python section runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pdd.runtime.audio import write_audio
from pdd.runtime.bundle import load_bundle
from pdd.runtime.cli_run import app
from pdd.runtime.engine import Engine, engines_root, resolve_engine
from pdd.runtime.errors import BundleError, PddError

README = Path(__file__).resolve().parents[2] / "README.md"
runner = CliRunner()


def pdd_run(*args: object) -> "object":
    return runner.invoke(app, [str(a) for a in args])


def assert_same_bytes_as_pdd_run(made, run_dir: Path, seed: int, scratch: Path) -> None:
    for i, wave in enumerate(made.audio):
        mine = write_audio(scratch / f"engine-{seed}-{i}.wav", wave, made.sample_rate).read_bytes()
        assert mine == (run_dir / f"pdd-{seed}-{i}.wav").read_bytes(), f"clip {i}"
        sidecar = json.loads((run_dir / f"pdd-{seed}-{i}.json").read_text())
        assert sidecar["peak_guard_gain_db"] == round(made.gain_db[i], 2)
        assert (sidecar["steps"], sidecar["mode"], sidecar["vocoder"]) == (
            made.settings.steps, made.settings.mode, made.settings.vocoder)


@pytest.mark.parametrize("flags,kwargs", [
    ((), {}),
    (("--mode", "loop", "--steps", 2, "--batch-size", 2), {"steps": 2, "batch_size": 2}),
    (("--vocoder", "numpy", "--gl-iters", 3), {"vocoder": "numpy", "gl_iters": 3}),
    (("--seamless", 2, "--crossfade", 0.1), {"seamless": 2, "crossfade": 0.1}),
], ids=["fused", "loop", "numpy-griffin-lim", "seamless"])
def test_generate_gives_the_bytes_pdd_run_writes(tiny_bundle_dir: Path, tmp_path: Path, flags, kwargs) -> None:
    out = tmp_path / "run"
    result = pdd_run("--engine", tiny_bundle_dir, "-n", 3, "--seed", 5, "--backend", "ort", "--device", "cpu",
                     "--out", out, "-q", *flags)
    assert result.exit_code == 0, result.output
    with Engine.load(tiny_bundle_dir, backend="ort", device="cpu") as engine:
        made = engine.generate(n=3, seed=5, **kwargs)
    assert_same_bytes_as_pdd_run(made, out, 5, tmp_path)


def test_the_shipped_engine_by_name_gives_pdd_runs_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real decode path: the learned vocoder and Griffin-Lim with its peak guard (measured peaks reach 1.9); both
    name the engine as a user in any folder would."""
    monkeypatch.chdir(tmp_path)
    assert resolve_engine("small-piano") == engines_root() / "small-piano"
    with Engine.load("small-piano", backend="ort", device="cpu") as engine:
        for vocoder in ("auto", "gl"):
            out = tmp_path / vocoder
            result = pdd_run("--engine", "small-piano", "-n", 1, "--seed", 3, "--vocoder", vocoder, "--backend", "ort",
                             "--device", "cpu", "--out", out, "-q")
            assert result.exit_code == 0, result.output
            made = engine.generate(n=1, seed=3, vocoder=vocoder)
            assert_same_bytes_as_pdd_run(made, out, 3, tmp_path / vocoder)


def test_the_output_says_what_ran(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    with Engine.load(tiny_bundle_dir, backend="ort", device="cpu") as engine:
        made = engine.generate(n=2, seed=4)
        joined = engine.generate(n=2, seed=4, seamless=2, crossfade=0.0, steps=2)
    assert made.audio.shape == (2, bundle.audio.clip_samples) and made.audio.dtype == np.float32
    assert made.sample_rate == bundle.audio.sample_rate and made.seconds == pytest.approx(bundle.audio.clip_seconds)
    assert made.seeds == (4, 4) and made.stream_clips == ((0, 0), (1, 1)) and len(made.gain_db) == 2
    assert (made.settings.mode, made.settings.steps, made.settings.graphs[0]) == ("sampler", bundle.steps, "sampler")
    assert made.timings["sample_ms"] > 0 and made.timings["total_ms"] >= made.timings["sample_ms"]
    assert made.engine["manifest_sha256"] == bundle.hash
    json.dumps(made.settings.to_dict())
    # a step count off the bundle's N runs the loop; two clips joined per row, no crossfade: plain concatenation
    assert (joined.settings.mode, joined.settings.steps) == ("loop", 2)
    assert joined.audio.shape == (2, 2 * bundle.audio.clip_samples) and joined.stream_clips == ((0, 1), (2, 3))


@pytest.mark.parametrize("kwargs,fragment", [
    ({"n": 0}, "-n must be >= 1"),
    ({"n": 1.5}, "-n must be a whole number"),
    ({"seed": -1}, "--seed must be >= 0"),
    ({"steps": 3}, "--steps 3 is not on this bundle's 4-step grid"),
    ({"steps": 3, "mode": "sampler"}, "runs exactly 4 steps; use --mode loop"),
    ({"vocoder": "fast"}, "unknown vocoder 'fast'"),
    ({"vocoder": "neural"}, "has no learned vocoder"),
    ({"mode": "fast"}, "unknown mode 'fast'"),
    ({"batch_size": 0}, "--batch-size must be >= 1"),
    ({"seamless": 2, "crossfade": 60.0}, "--crossfade must be in [0, "),
])
def test_bad_arguments_are_one_line_errors(tiny_bundle_dir: Path, kwargs, fragment) -> None:
    with Engine.load(tiny_bundle_dir, backend="ort", device="cpu") as engine:
        with pytest.raises(PddError) as caught:
            engine.generate(**kwargs)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_a_closed_engine_refuses_and_a_missing_one_is_one_line(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    with Engine.load(tiny_bundle_dir, backend="ort", device="cpu") as engine:
        engine.generate()
    with pytest.raises(PddError, match="is closed; load it again"):
        engine.generate()
    with pytest.raises(BundleError) as caught:
        Engine.load(tmp_path / "no-such-engine")
    assert "\n" not in str(caught.value)
    assert resolve_engine("no-such-engine") == Path("no-such-engine")  # not shipped: the path, for its own error


def test_the_readme_python_section_runs_and_help_shows_it() -> None:
    section = README.read_text().split("\n## Python\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    import pdd.runtime

    for line in code.strip().splitlines():
        assert line.strip() in (Engine.__doc__ or ""), line
        assert line.strip() in (pdd.runtime.__doc__ or ""), line
    scope: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own three lines
    out = scope["out"]
    assert out.audio.shape[0] == 2 and out.audio.dtype == np.float32 and out.sample_rate == 22050  # type: ignore[attr-defined]
