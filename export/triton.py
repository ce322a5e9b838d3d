"""A Triton Inference Server model repository from an engine bundle (`pdd-export --triton DIR`; docs/architecture.md,
"Beyond one machine").

    DIR/
      pdd_sampler/config.pbtxt   1/model.onnx + weights.onnx.data     onnxruntime backend, dynamic batching
      pdd_vocoder/config.pbtxt   1/model.onnx                         onnxruntime backend, dynamic batching
      pdd_sampler_trt/…          1/model.plan                         tensorrt_plan, CUDA graphs (only with TensorRT plans)
      pdd_vocoder_trt/…          1/model.plan
      pdd_generate/config.pbtxt  1/                                   ensemble: (z_1, phase0) → sampler → vocoder → waveform

The ensemble uses the TensorRT models when plans were built, the ONNX ones otherwise. Noise and the Griffin-Lim phase are
inputs (seeded by the client), as in the runtime, so a server and `pdd-run` give the same audio for the same seed.
Configs are protobuf text format of Triton's `inference.ModelConfig` (model_config.proto); the tests parse them with it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pdd.runtime.bundle import Bundle, load_bundle
from pdd.runtime.errors import PddError

PREFIX = "pdd"
DEFAULT_MAX_BATCH = 8
QUEUE_DELAY_US = 200  # how long the dynamic batcher may hold a request to fill a batch
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}


class TritonError(PddError):
    """A Triton repository that cannot be written as asked."""


class Enum(str):
    """A protobuf enum value: rendered bare (KIND_GPU), not quoted."""


def render(message: dict[str, Any], indent: int = 0) -> str:
    """Protobuf text format for a nested dict: dicts are messages, lists repeated fields, Enum bare, str quoted."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{")
                lines.append(render(item, indent + 1))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    return "\n".join(line for line in lines if line)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _tensors(specs: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Triton I/O entries: the batch axis is implicit (max_batch_size > 0), so dims drop the leading "batch"."""
    out = []
    for spec in specs:
        if spec.dtype not in TRITON_DTYPES:
            raise TritonError(f"tensor {spec.name} has dtype {spec.dtype}, which this writer does not map to Triton")
        dims = [int(d) for d in spec.shape[1:]]
        out.append({"name": spec.name, "data_type": Enum(TRITON_DTYPES[spec.dtype]), "dims": dims})
    return out


def model_config(bundle: Bundle, graph: str, name: str, platform: str, max_batch: int) -> dict[str, Any]:
    spec = bundle.graph(graph)
    config: dict[str, Any] = {"name": name}
    if platform == "onnx":
        config["backend"] = "onnxruntime"
        config["default_model_filename"] = "model.onnx"
    else:
        config["platform"] = "tensorrt_plan"
        config["default_model_filename"] = "model.plan"
    config["max_batch_size"] = int(max_batch)
    config["input"] = _tensors(spec.inputs)
    config["output"] = _tensors(spec.outputs)
    config["dynamic_batching"] = {"max_queue_delay_microseconds": QUEUE_DELAY_US}
    if platform == "onnx":
        config["instance_group"] = [{"count": 1, "kind": Enum("KIND_AUTO")}]
    else:
        config["instance_group"] = [{"count": 1, "kind": Enum("KIND_GPU")}]
        # Fixed shapes per batch size: Triton captures one CUDA graph per batch size it serves.
        config["optimization"] = {"cuda": {"graphs": True}}
    return config


def ensemble_config(bundle: Bundle, name: str, sampler: str, vocoder: str, max_batch: int) -> dict[str, Any]:
    z_1 = bundle.graph("sampler").input("z_1")
    phase0 = bundle.graph("vocoder").input("phase0")
    waveform = bundle.graph("vocoder").output("waveform")
    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": int(max_batch),
        "input": _tensors((z_1, phase0)),
        "output": _tensors((waveform,)),
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": sampler,
                    "model_version": -1,
                    "input_map": [{"key": "z_1", "value": "z_1"}],
                    "output_map": [{"key": "x0", "value": "x0"}],
                },
                {
                    "model_name": vocoder,
                    "model_version": -1,
                    "input_map": [{"key": "x0", "value": "x0"}, {"key": "phase0", "value": "phase0"}],
                    "output_map": [{"key": "waveform", "value": "waveform"}],
                },
            ]
        },
    }


def write_repository(
    bundle_dir: str | os.PathLike[str],
    repo_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    max_batch: int = DEFAULT_MAX_BATCH,
    trt_key: str | None = None,
) -> list[str]:
    """Write the repository atomically (temp folder, then rename); returns the model names written."""
    bundle = load_bundle(bundle_dir)
    repo = Path(repo_dir).absolute()
    if repo.exists() and not force:
        raise TritonError(f"{repo} already exists; pass --force to replace it")
    for graph in ("sampler", "vocoder"):
        if not bundle.has_graph(graph):
            raise TritonError(f"bundle {bundle.name!r} has no {graph} graph, which the Triton ensemble needs")
    if max_batch < 1:
        raise TritonError(f"Triton max batch size must be >= 1, got {max_batch}")
    plans = bundle.trt_plans(trt_key) if trt_key else None
    if trt_key and not plans:
        raise TritonError(f"bundle {bundle.name!r} has no TensorRT plans under key {trt_key!r}")
    if plans:
        for graph in ("sampler", "vocoder"):
            if graph not in plans["graphs"]:
                raise TritonError(f"TensorRT plans {trt_key!r} lack the {graph} graph")
            if plans["graphs"][graph]["batch"]["max"] < max_batch:
                raise TritonError(f"the {graph} plan serves batches up to {plans['graphs'][graph]['batch']['max']}, "
                                  f"below max batch {max_batch}; rebuild the plans or lower the batch")

    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", suffix=".tmp", dir=repo.parent))
    names: list[str] = []
    try:
        for graph in ("sampler", "vocoder"):
            name = f"{PREFIX}_{graph}"
            _write_model(tmp, name, model_config(bundle, graph, name, "onnx", max_batch))
            version = tmp / name / "1"
            shutil.copy2(bundle.graph_path(graph), version / "model.onnx")
            external = bundle.manifest.get("external_data")
            if external and graph != "vocoder":
                shutil.copy2(bundle.path / external, version / external)
            names.append(name)
            if plans:
                trt_name = f"{name}_trt"
                _write_model(tmp, trt_name, model_config(bundle, graph, trt_name, "trt", max_batch))
                shutil.copy2(bundle.path / plans["graphs"][graph]["file"], tmp / trt_name / "1" / "model.plan")
                names.append(trt_name)
        suffix = "_trt" if plans else ""
        ensemble = f"{PREFIX}_generate"
        _write_model(
            tmp, ensemble, ensemble_config(bundle, ensemble, f"{PREFIX}_sampler{suffix}", f"{PREFIX}_vocoder{suffix}", max_batch)
        )
        names.append(ensemble)
        _replace(tmp, repo)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return names


def _write_model(repo: Path, name: str, config: dict[str, Any]) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(render(config) + "\n")


def _replace(tmp: Path, target: Path) -> None:
    if target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, aside / target.name)
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)
    os.chmod(target, 0o755)
