"""Sampling modes, step-count rules, vocoder choice and seeded noise (CPU, tiny bundle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pdd.runtime.silence import DEFAULT_GATE, silence_gain
import pytest

from pdd.runtime.backends import Backend, create_backend
from pdd.runtime.schedule import ScheduleConfig
from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, schedule_entry, write_manifest
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import griffin_lim
from pdd.runtime.mel import denormalize, mel_to_magnitude
from pdd.runtime.pack import unpack
from pdd.runtime.sampler import (NoiseStream, ResolvedSettings, Sampler, SamplerSettings, initial_noise, offered_steps,
                                 resolve_settings)
from pdd.runtime.schedule import ddim_sample, grid


@pytest.fixture(scope="module")
def bundle(tiny_bundle_dir: Path):
    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="module")
def cpu(bundle):
    with create_backend("ort", bundle, device="cpu") as backend:
        yield backend


def test_initial_noise_is_seeded_and_batch_independent() -> None:
    a = initial_noise(3, 4, (96, 32))
    assert a.shape == (4, 96, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, initial_noise(3, 4, (96, 32)))
    assert not np.array_equal(a, initial_noise(4, 4, (96, 32)))
    stream = NoiseStream(3, (96, 32))
    np.testing.assert_array_equal(np.concatenate([stream.take(1), stream.take(2), stream.take(1)]), a)
    with pytest.raises(ConfigError):
        initial_noise(0, 0, (2,))


def test_sampler_mode_runs_the_fused_graph(bundle, cpu, tiny_reference) -> None:
    sampler = Sampler(bundle, cpu, SamplerSettings(mode="sampler"), batch=2)
    z1 = initial_noise(0, 2, bundle.packed_shape)
    np.testing.assert_allclose(sampler.sample_x0(z1), tiny_reference.sampler(z1), atol=1e-5)


def test_loop_and_sampler_modes_agree(bundle, cpu) -> None:
    z1 = initial_noise(5, 2, bundle.packed_shape)
    fused = Sampler(bundle, cpu, SamplerSettings(mode="sampler"), batch=2)
    loop = Sampler(bundle, cpu, SamplerSettings(mode="loop"), batch=2)
    np.testing.assert_allclose(loop.sample_x0(z1), fused.sample_x0(z1), atol=1e-5)
    np.testing.assert_allclose(loop(z1), fused(z1), atol=1e-4)
    assert loop.timings.batches == 1 and loop.timings.sample_ms > 0 and loop.timings.decode_ms > 0


def test_loop_mode_with_a_divisor_of_the_grid_is_ddim(bundle, cpu, tiny_reference) -> None:
    z1 = initial_noise(1, 2, bundle.packed_shape)
    loop = Sampler(bundle, cpu, SamplerSettings(mode="loop", steps=2), batch=2)
    expected = ddim_sample(lambda z, t: tiny_reference.denoiser(z, np.full(z.shape[0], t)), z1.astype(np.float64), grid(2))
    np.testing.assert_allclose(loop.sample_x0(z1), expected, atol=1e-5)
    assert loop.steps == 2


def test_settings_resolve_without_a_backend_exactly_as_the_sampler_runs_them(bundle, cpu) -> None:
    for settings in (SamplerSettings(), SamplerSettings(mode="loop", steps=2), SamplerSettings(vocoder="numpy", gl_iters=3),
                     SamplerSettings(mode="auto", steps=1), SamplerSettings(vocoder="graph")):
        resolved = resolve_settings(bundle, settings, "cpu")
        assert Sampler(bundle, cpu, settings, batch=1).resolved == resolved
        assert ResolvedSettings(**{**resolved.to_dict(), "graphs": tuple(resolved.graphs)}) == resolved
        json.dumps(resolved.to_dict())
    auto = resolve_settings(bundle, SamplerSettings(mode="auto", steps=2), "cpu")
    assert (auto.mode, auto.steps, auto.graphs) == ("loop", 2, ("denoiser",))
    assert resolve_settings(bundle, SamplerSettings(mode="auto"), "cpu").mode == "sampler"
    # where the backend runs changes `auto` choices: the Griffin-Lim graph keeps x̂0 on a GPU
    assert resolve_settings(bundle, SamplerSettings(vocoder="gl"), "cuda").vocoder_impl == "graph"
    assert resolve_settings(bundle, SamplerSettings(vocoder="gl"), "cpu").vocoder_impl == "numpy"
    with pytest.raises(ConfigError, match="--steps 3 is not on this bundle's 4-step grid"):
        resolve_settings(bundle, SamplerSettings(mode="auto", steps=3), "cpu")
    assert offered_steps(bundle) == (1, 2, 4)


def test_one_step_rule_for_a_teacher_asked_for_more_steps_than_its_grid(tiny_bundle_copy: Path) -> None:
    manifest = json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text())
    manifest["schedule"] = schedule_entry(ScheduleConfig(steps=4, continuous=True))
    write_manifest(tiny_bundle_copy, manifest)
    teacher = load_bundle(tiny_bundle_copy)
    rule = teacher.schedule_config
    assert rule.allows(1024) and not rule.allows(2000)
    assert 2000 not in teacher.valid_loop_steps(limit=4096) and teacher.valid_loop_steps(limit=4096)[-1] == 1024
    with pytest.raises(ConfigError, match="--steps 2000 is finer than this model's finest grid; it runs 1 to 1024"):
        resolve_settings(teacher, SamplerSettings(mode="loop", steps=2000), "cpu")
    assert resolve_settings(teacher, SamplerSettings(mode="loop", steps=3), "cpu").steps == 3
    assert offered_steps(teacher) == tuple(range(1, 65))


def test_step_counts_off_the_grid_are_refused(bundle, cpu) -> None:
    with pytest.raises(ConfigError, match=r"--steps 3 is not on this bundle's 4-step grid; loop mode runs 1, 2, 4"):
        Sampler(bundle, cpu, SamplerSettings(mode="loop", steps=3), batch=1)
    with pytest.raises(ConfigError, match=r"fused sampler graph runs exactly 4 steps; use --mode loop"):
        Sampler(bundle, cpu, SamplerSettings(mode="sampler", steps=2), batch=1)
    assert bundle.schedule_config.steps_problem(0) == "--steps must be >= 1, got 0"
    with pytest.raises(ConfigError, match="unknown mode"):
        Sampler(bundle, cpu, SamplerSettings(mode="fast"), batch=1)
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        Sampler(bundle, cpu, SamplerSettings(), batch=0)


def test_continuous_bundle_accepts_any_loop_count(tiny_bundle_copy: Path) -> None:
    manifest = json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text())
    manifest["schedule"] = schedule_entry(ScheduleConfig(steps=4, continuous=True))
    write_manifest(tiny_bundle_copy, manifest)
    bundle = load_bundle(tiny_bundle_copy)
    with create_backend("ort", bundle, device="cpu") as backend:
        sampler = Sampler(bundle, backend, SamplerSettings(mode="loop", steps=3), batch=1)
        assert sampler(initial_noise(0, 1, bundle.packed_shape)).shape == (1, bundle.audio.clip_samples)


def test_numpy_vocoder_is_the_runtime_griffin_lim(bundle, cpu) -> None:
    sampler = Sampler(bundle, cpu, SamplerSettings(vocoder="numpy", gl_iters=3), batch=2)
    assert (sampler.vocoder_impl, sampler.gl_iters, sampler.gl_momentum) == ("numpy", 3, 0.99)
    x0 = np.clip(initial_noise(2, 2, bundle.packed_shape), -1, 1)
    mel = unpack(x0, 3)
    gated = denormalize(mel, bundle.audio) * silence_gain(mel, bundle.gl_gate)  # the floor decodes as silence
    magnitude = mel_to_magnitude(gated, bundle.audio)
    expected = griffin_lim(magnitude, bundle.audio, n_iter=3, momentum=0.99)
    np.testing.assert_allclose(sampler.decode(x0), expected, atol=1e-6)
    assert bundle.gl_gate == DEFAULT_GATE
    assert expected.shape == (2, bundle.audio.clip_samples)


def test_vocoder_choice(bundle, cpu, tiny_reference) -> None:
    auto = Sampler(bundle, cpu, SamplerSettings(), batch=1)
    assert (auto.vocoder, auto.vocoder_impl, auto.gl_iters) == ("gl", "numpy", 4)  # CPU: numpy, with the graph's iteration count
    graph = Sampler(bundle, cpu, SamplerSettings(vocoder="graph"), batch=2)
    x0 = initial_noise(4, 2, bundle.packed_shape)
    np.testing.assert_allclose(graph.decode(x0), tiny_reference.vocoder(x0), atol=1e-6)
    with pytest.raises(ConfigError, match="Griffin-Lim graph runs exactly 4 iterations"):
        Sampler(bundle, cpu, SamplerSettings(vocoder="graph", gl_iters=8), batch=1)
    with pytest.raises(ConfigError, match="--gl-iters must be >= 0"):
        Sampler(bundle, cpu, SamplerSettings(gl_iters=-1), batch=1)


class RecordingGpu(Backend):
    """A stand-in GPU backend: delegates to the CPU backend and records what stays 'on the device'."""

    name = "fake"
    device = "cuda"

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner.bundle)
        self.inner, self.calls = inner, []

    def prepare(self, graphs: Sequence[str], batch: int) -> None:
        self.inner.prepare(graphs, batch)

    def run(self, graph: str, inputs: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        self.calls.append((graph, tuple(keep)))
        out = self.inner.run(graph, {k: v.value if isinstance(v, Device) else v for k, v in inputs.items()})
        return {k: Device(v) if k in keep else v for k, v in out.items()}

    def to_host(self, value: Any) -> np.ndarray:
        return value.value if isinstance(value, Device) else value

    def describe(self) -> str:
        return "fake gpu"


class Device:
    def __init__(self, value: np.ndarray) -> None:
        self.value = value


def test_gpu_backends_keep_x0_on_device_for_the_vocoder_graph(bundle, cpu, tiny_reference) -> None:
    gpu = RecordingGpu(cpu)
    sampler = Sampler(bundle, gpu, SamplerSettings(), batch=2)
    assert sampler.vocoder_impl == "graph"
    z1 = initial_noise(0, 2, bundle.packed_shape)
    wave = sampler(z1)
    assert gpu.calls == [("sampler", ("x0",)), ("vocoder", ())]
    np.testing.assert_allclose(wave, tiny_reference.vocoder(tiny_reference.sampler(z1)), atol=1e-5)
    # Asking for other iterations than the graph's falls back to numpy Griffin-Lim (auto only).
    assert Sampler(bundle, gpu, SamplerSettings(gl_iters=2), batch=2).vocoder_impl == "numpy"


def test_bundle_without_vocoder_graph(tiny_bundle_copy: Path) -> None:
    manifest = json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text())
    del manifest["graphs"]["vocoder"]
    write_manifest(tiny_bundle_copy, manifest)
    bundle = load_bundle(tiny_bundle_copy)
    with create_backend("ort", bundle, device="cpu") as backend:
        sampler = Sampler(bundle, backend, SamplerSettings(), batch=1)
        assert (sampler.vocoder_impl, sampler.gl_iters) == ("numpy", 32)
        with pytest.raises(ConfigError, match="no Griffin-Lim graph; use --vocoder numpy"):
            Sampler(bundle, backend, SamplerSettings(vocoder="graph"), batch=1)


def test_same_seed_same_audio_whatever_the_batch(bundle, cpu) -> None:
    one = Sampler(bundle, cpu, SamplerSettings(), batch=1)
    three = Sampler(bundle, cpu, SamplerSettings(), batch=3)
    stream = NoiseStream(9, bundle.packed_shape)
    singles = np.concatenate([one(stream.take(1)) for _ in range(3)])
    np.testing.assert_allclose(three(initial_noise(9, 3, bundle.packed_shape)), singles, atol=1e-5)
    with pytest.raises(ConfigError, match="differs from the prepared batch"):
        three(initial_noise(9, 2, bundle.packed_shape))


def test_start_phases_are_per_clip_and_reach_griffin_lim(bundle, cpu) -> None:
    sampler = Sampler(bundle, cpu, SamplerSettings(vocoder="numpy"), batch=2)
    whole = NoiseStream(5, bundle.packed_shape).take_phase(2, sampler.phase_shape)
    split = NoiseStream(5, bundle.packed_shape)
    np.testing.assert_array_equal(np.concatenate([split.take_phase(1, sampler.phase_shape) for _ in range(2)]), whole)
    assert whole.shape == (2, bundle.audio.n_freqs, bundle.audio.frames) and np.abs(whole).max() <= np.pi
    x0 = np.clip(initial_noise(3, 2, bundle.packed_shape), -1, 1)
    mel = unpack(x0, 3)
    magnitude = mel_to_magnitude(denormalize(mel, bundle.audio) * silence_gain(mel, bundle.gl_gate), bundle.audio)
    expected = griffin_lim(magnitude, bundle.audio, n_iter=sampler.gl_iters, phase0=whole)
    np.testing.assert_allclose(sampler.decode(x0, whole), expected, atol=1e-6)
    assert np.abs(sampler.decode(x0, whole) - sampler.decode(x0)).max() > 1e-3  # zeros are a different start
