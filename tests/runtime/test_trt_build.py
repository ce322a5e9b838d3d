"""The one TensorRT builder, run against a stand-in `tensorrt` module that records what it is told: one set of flags per
precision and graph, the profile over the batch range, the timing cache, one-line errors. (Real plans: the gpu-marked
tests in test_backends.py and tests/export.)"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pdd.runtime.backends.trt_build import (
    WORKSPACE_BYTES,
    BatchRange,
    TrtBuildError,
    build_plan,
    network_flags,
    plan_settings,
)
from pdd.runtime.bundle import TensorSpec
from pdd.runtime.errors import BundleError


class FakeConfig:
    def __init__(self, log: dict) -> None:
        self.log = log

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.log["workspace"] = (pool, size)

    def set_flag(self, flag: str) -> None:
        self.log.setdefault("set", []).append(flag)

    def clear_flag(self, flag: str) -> None:
        self.log.setdefault("cleared", []).append(flag)

    def create_timing_cache(self, data: bytes) -> bytes:
        self.log["cache_in"] = data
        return data

    def set_timing_cache(self, cache: bytes, ignore_mismatch: bool) -> None:
        self.log["ignore_mismatch"] = ignore_mismatch

    def get_timing_cache(self) -> SimpleNamespace:
        return SimpleNamespace(serialize=lambda: b"cache-out")

    def add_optimization_profile(self, profile: dict) -> None:
        self.log["profile"] = profile


def fake_tensorrt(*, strongly_typed: bool = True, parses: bool = True, builds: bool = True) -> SimpleNamespace:
    """A `tensorrt` stand-in: flags are strings, the log says what the builder did."""
    log: dict = {}
    creation = {"STRONGLY_TYPED": 5, "EXPLICIT_BATCH": 0} if strongly_typed else {"EXPLICIT_BATCH": 0}

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Parser:
        num_errors = 1

        def __init__(self, network: object, logger: object) -> None:
            pass

        def parse_from_file(self, path: str) -> bool:
            log["parsed"] = path
            return parses

        def get_error(self, index: int) -> SimpleNamespace:
            return SimpleNamespace(desc=lambda: "unsupported op", node_name=lambda: "n1", node_operator=lambda: "Foo")

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> str:
            log["network_flags"] = flags
            return "network"

        def create_builder_config(self) -> FakeConfig:
            return FakeConfig(log)

        def create_optimization_profile(self) -> dict:
            profile: dict = {}
            profile_setter = SimpleNamespace(set_shape=lambda name, lo, opt, hi: profile.__setitem__(name, (lo, opt, hi)))
            log["profile_object"] = profile
            return profile_setter

        def build_serialized_network(self, network: object, config: FakeConfig) -> bytes | None:
            return b"plan-bytes" if builds else None

    return SimpleNamespace(
        log=log, Logger=Logger,
        NetworkDefinitionCreationFlag=SimpleNamespace(**creation),
        BuilderFlag=SimpleNamespace(FP16="FP16", TF32="TF32"), MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        Builder=Builder, OnnxParser=Parser,
    )


INPUTS = [TensorSpec("z_1", "float32", ("batch", 6, 4))]


def test_network_flags_prefer_strong_typing() -> None:
    assert network_flags(fake_tensorrt(strongly_typed=True)) == (1 << 5, True)
    assert network_flags(fake_tensorrt(strongly_typed=False)) == (1 << 0, False)


@pytest.mark.parametrize("strongly_typed", [True, False])
def test_one_set_of_flags_per_precision_and_graph(strongly_typed: bool) -> None:
    trt = fake_tensorrt(strongly_typed=strongly_typed)
    for precision in ("fp32", "fp16"):
        for graph in ("denoiser", "sampler", "vocoder"):
            settings = plan_settings(trt, precision, graph)
            assert settings.strongly_typed is strongly_typed and settings.workspace_bytes == WORKSPACE_BYTES
            # TF32 off only for Griffin-Lim; the FP16 flag only where types cannot come from the graph, never the vocoder
            assert settings.tf32 is (graph != "vocoder")
            assert settings.fp16_flag is (precision == "fp16" and not strongly_typed and graph != "vocoder")


def test_build_applies_the_settings_profile_and_timing_cache(tmp_path: Path) -> None:
    trt = fake_tensorrt(strongly_typed=False)
    cache = tmp_path / "trt" / "timing.cache"
    plan = build_plan(trt, tmp_path / "sampler.onnx", "sampler", INPUTS, precision="fp16", batch=BatchRange(1, 2, 8),
                      timing_cache=cache)
    assert plan == b"plan-bytes" and cache.read_bytes() == b"cache-out"
    log = trt.log
    assert log["parsed"] == str(tmp_path / "sampler.onnx") and log["workspace"] == ("WORKSPACE", WORKSPACE_BYTES)
    assert log["set"] == ["FP16"] and "cleared" not in log and log["ignore_mismatch"] is False
    assert log["profile_object"] == {"z_1": ((1, 6, 4), (2, 6, 4), (8, 6, 4))}
    vocoder = fake_tensorrt(strongly_typed=False)
    build_plan(vocoder, tmp_path / "vocoder.onnx", "vocoder", INPUTS, precision="fp16", batch=BatchRange(1, 1, 1))
    assert vocoder.log["cleared"] == ["TF32"] and "set" not in vocoder.log


def test_parse_and_build_failures_are_one_line_bundle_errors(tmp_path: Path) -> None:
    with pytest.raises(TrtBuildError, match=r"cannot parse d.onnx: node n1 \(Foo\): unsupported op; re-export"):
        build_plan(fake_tensorrt(parses=False), tmp_path / "d.onnx", "denoiser", INPUTS, precision="fp32", batch=BatchRange(1, 1, 1))
    with pytest.raises(BundleError, match="failed to build a plan for d.onnx"):
        build_plan(fake_tensorrt(builds=False), tmp_path / "d.onnx", "denoiser", INPUTS, precision="fp32", batch=BatchRange(1, 1, 1))
