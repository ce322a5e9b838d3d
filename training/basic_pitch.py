"""FD-BP embeddings: Spotify's Basic Pitch network, run from the ONNX file inside its PyPI wheel (a metric
that needs no model hub: docs/architecture.md, "Quality and the three floors").

Why this and not VGGish (the seed's FAD): VGGish weights are downloaded from a model hub at run time, which this project cannot
do. Basic Pitch (Bittner et al. 2022, a polyphonic note-transcription CNN trained on real instruments) ships its weights as
`basic_pitch/saved_models/icassp_2022/nmp.onnx` inside the wheel. Install it without its TensorFlow dependency:

    pip install --no-deps basic-pitch==0.4.0

We never import the `basic_pitch` package (its import pulls librosa/TensorFlow checks and prints warnings); we only locate the
file. The graph's ReLU activations (contour branch 8 ch × 264 bins, note branch 32 × 88, onset branch 32 × 88 in 0.4.0) are added
as extra graph outputs in memory with `onnx`; each is averaged over its frequency axis, giving a 72-channel activation per
frame (86 frames/s), which is then averaged over blocks of ~1 s. One embedding per block, not per clip, so K clips of ~9 s give
~9·K samples — enough to fit a 72-dimensional Gaussian. These numbers are FD-BP, not FAD: compare rows of one table only.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pdd.runtime.audio import resample
from pdd.runtime.errors import BackendUnavailable, ConfigError

INSTALL_HINT = "pip install --no-deps basic-pitch==0.4.0"
MODEL_PARTS = ("saved_models", "icassp_2022", "nmp.onnx")

# Basic Pitch's own framing (basic_pitch/constants.py and inference.py, 0.4.0): 2-s windows at 22050 Hz minus one hop,
# 256-sample hops (86 frames/s), 30 overlapping frames between windows of which half are trimmed on each side.
SAMPLE_RATE = 22050
WINDOW_SAMPLES = SAMPLE_RATE * 2 - 256
FFT_HOP = 256
FRAMES_PER_SECOND = SAMPLE_RATE // FFT_HOP
OVERLAP_FRAMES = 30
OVERLAP_SAMPLES = OVERLAP_FRAMES * FFT_HOP
WINDOW_HOP = WINDOW_SAMPLES - OVERLAP_SAMPLES


class BasicPitchUnavailable(BackendUnavailable):
    """basic-pitch (its ONNX file), onnx or onnxruntime is not installed: FD-BP cannot be computed."""


def find_model_file() -> Path:
    """Path of the nmp.onnx that the installed basic-pitch wheel ships, or BasicPitchUnavailable saying how to install it."""
    spec = importlib.util.find_spec("basic_pitch")  # locates the package without running its __init__
    if spec is None or spec.origin is None:
        raise BasicPitchUnavailable(f"FD-BP needs basic-pitch's bundled ONNX model; install it with `{INSTALL_HINT}`")
    path = Path(spec.origin).parent.joinpath(*MODEL_PARTS)
    if not path.is_file():
        raise BasicPitchUnavailable(f"basic-pitch is installed but {path} is missing; reinstall with `{INSTALL_HINT}`")
    return path


@dataclass(frozen=True)
class EmbedderInfo:
    """What produced the embeddings (goes into the evaluation table)."""

    model_file: str
    model_sha256: str
    activations: tuple[str, ...]
    dim: int
    block_seconds: float


class BasicPitchEmbedder:
    """Audio → (blocks, 72) Basic Pitch activation embeddings, one per ~1 s block.

    `threads` caps onnxruntime's intra-op threads (the evaluation shares the CPU with Griffin-Lim and the models).
    """

    def __init__(self, model_path: str | Path | None = None, *, block_seconds: float = 1.0, threads: int = 0,
                 batch_windows: int = 16) -> None:
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as exc:
            raise BasicPitchUnavailable(f"FD-BP needs onnx and onnxruntime ({exc.name} is missing)") from None
        path = Path(model_path) if model_path is not None else find_model_file()
        if not path.is_file():
            raise BasicPitchUnavailable(f"{path}: Basic Pitch model not found; install it with `{INSTALL_HINT}`")
        if block_seconds <= 0:
            raise ConfigError(f"block_seconds must be positive, got {block_seconds}")
        raw = path.read_bytes()
        try:
            model = onnx.load_from_string(raw)
        except Exception as exc:  # onnx raises DecodeError and friends from protobuf
            raise BasicPitchUnavailable(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
        self.activation_names = self._expose_relu_outputs(model, onnx)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # the TF-converted graph triggers harmless shape-merge warnings
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.block_frames = max(1, int(round(block_seconds * FRAMES_PER_SECOND)))
        self.batch_windows = max(1, batch_windows)
        self.dim = self._probe_dim()
        self.info = EmbedderInfo(
            model_file=str(path), model_sha256=hashlib.sha256(raw).hexdigest(), activations=self.activation_names,
            dim=self.dim, block_seconds=self.block_frames / FRAMES_PER_SECOND,
        )

    @staticmethod
    def _expose_relu_outputs(model, onnx) -> tuple[str, ...]:  # noqa: ANN001 (onnx module passed in: imported lazily)
        """Add every ReLU activation as a graph output (in memory) and return their names."""
        names = tuple(node.output[0] for node in model.graph.node if node.op_type == "Relu")
        if not names:
            raise BasicPitchUnavailable(f"the Basic Pitch graph has no ReLU activations; use `{INSTALL_HINT}`")
        existing = {out.name for out in model.graph.output}
        for name in names:
            if name not in existing:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        return names

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        """(n, WINDOW_SAMPLES) → (n, frames, channels): each ReLU activation averaged over its frequency axis."""
        outputs = self._session.run(list(self.activation_names), {self._input: windows[..., None].astype(np.float32)})
        per_frame = []
        for act in outputs:
            if act.ndim != 4:
                raise BasicPitchUnavailable(f"unexpected Basic Pitch activation shape {act.shape}; use `{INSTALL_HINT}`")
            per_frame.append(act.mean(axis=3).transpose(0, 2, 1))  # (n, C, frames, freq) → (n, frames, C)
        return np.concatenate(per_frame, axis=2)

    def _probe_dim(self) -> int:
        return int(self._run_windows(np.zeros((1, WINDOW_SAMPLES), dtype=np.float32)).shape[2])

    @staticmethod
    def _windows(wave: np.ndarray) -> np.ndarray:
        """Basic Pitch's framing: half an overlap of leading zeros, then windows every WINDOW_HOP samples, zero-padded."""
        padded = np.concatenate([np.zeros(OVERLAP_SAMPLES // 2, dtype=np.float32), wave.astype(np.float32)])
        starts = range(0, padded.shape[0], WINDOW_HOP)
        out = np.zeros((len(starts), WINDOW_SAMPLES), dtype=np.float32)
        for row, start in enumerate(starts):
            chunk = padded[start:start + WINDOW_SAMPLES]
            out[row, : chunk.shape[0]] = chunk
        return out

    def frame_activations(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono wave → (frames, dim) activations at 86 frames/s (Basic Pitch's own unwrapping of the windows)."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise ConfigError(f"expected a non-empty mono wave, got shape {wave.shape}")
        wave = resample(wave, sample_rate, SAMPLE_RATE)
        windows = self._windows(wave)
        chunks = [self._run_windows(windows[i:i + self.batch_windows]) for i in range(0, len(windows), self.batch_windows)]
        acts = np.concatenate(chunks, axis=0)
        trim = OVERLAP_FRAMES // 2
        acts = acts[:, trim:-trim, :].reshape(-1, acts.shape[2])
        n_frames = max(1, int(np.floor(wave.shape[0] * FRAMES_PER_SECOND / SAMPLE_RATE)))
        return acts[:n_frames]

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono wave → (blocks, dim): activations averaged over consecutive ~1-s blocks (a short tail block is kept only
        when the clip is shorter than one block)."""
        frames = self.frame_activations(wave, sample_rate)
        n_blocks = frames.shape[0] // self.block_frames
        if n_blocks == 0:
            return frames.mean(axis=0, keepdims=True).astype(np.float64)
        usable = frames[: n_blocks * self.block_frames]
        return usable.reshape(n_blocks, self.block_frames, -1).mean(axis=1).astype(np.float64)

    def embed_many(self, waves: list[np.ndarray] | np.ndarray, sample_rate: int) -> np.ndarray:
        """A set of clips → (total blocks, dim): the feature set FD-BP fits its Gaussian to."""
        blocks = [self.embed(np.asarray(w), sample_rate) for w in waves]
        if not blocks:
            raise ConfigError("no clips to embed")
        return np.concatenate(blocks, axis=0)
