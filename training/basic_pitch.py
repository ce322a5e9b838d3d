"""FD-BP embeddings: Spotify's Basic Pitch network, run from the ONNX file inside its PyPI wheel (a metric
that needs no model hub: docs/architecture.md, "Quality and the three floors").

Why this and not VGGish (FAD, as the design first named it): VGGish weights are downloaded from a model hub at run time, which this project cannot
do. Basic Pitch (Bittner et al. 2022, a polyphonic note-transcription CNN trained on real instruments) ships its weights as
`basic_pitch/saved_models/icassp_2022/nmp.onnx` inside the wheel. Install it without its TensorFlow dependency:

    pip install --no-deps basic-pitch==0.4.0

We never import the `basic_pitch` package (its import pulls librosa/TensorFlow checks and prints warnings); we only locate the
file. The graph's ReLU activations (contour branch 8 ch × 264 bins, note branch 32 × 88, onset branch 32 × 88 in 0.4.0) are added
as extra graph outputs in memory with `onnx`; each is averaged over its frequency axis, giving a 72-channel activation per
frame (86 frames/s), which is then averaged over blocks of ~1 s. One embedding per block, not per clip, so K clips of ~9 s give
~9·K samples — enough to fit a 72-dimensional Gaussian. These numbers are FD-BP, not FAD: compare rows of one table only.

The same forward pass also gives Basic Pitch's note posteriorgrams (note, onset, contour), which `transcribe` turns into note
events with a numpy port of basic-pitch's own decoder (`note_creation.output_to_notes_polyphonic` with `predict`'s defaults):
its module imports librosa, mir_eval, resampy and pretty_midi, none of which a `--no-deps` install brings.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal

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

# The graph's posteriorgram outputs, named as basic_pitch/inference.py (Model.predict, ONNX branch) reads them.
POSTERIOR_OUTPUTS = {"note": "StatefulPartitionedCall:1", "onset": "StatefulPartitionedCall:2",
                     "contour": "StatefulPartitionedCall:0"}
# Note decoding, basic_pitch/inference.py `predict` defaults: onset 0.5, frame 0.3, minimum note 127.70 ms (11 frames).
ONSET_THRESHOLD = 0.5
FRAME_THRESHOLD = 0.3
MIN_NOTE_FRAMES = int(np.round(127.70 / 1000 * (SAMPLE_RATE / FFT_HOP)))
ENERGY_TOLERANCE = 11  # frames below the frame threshold that end a note (note_creation's energy_tol)
MIDI_OFFSET = 21  # posteriorgram bin 0 is A0, MIDI 21
MAX_FREQ_IDX = 87
MODEL_WINDOW_FRAMES = FRAMES_PER_SECOND * 2  # ANNOT_N_FRAMES: frames of one 2-s window in basic-pitch's time correction


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

    def _run_windows(self, windows: np.ndarray, posteriors: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
        """(n, WINDOW_SAMPLES) → (n, frames, channels): each ReLU activation averaged over its frequency axis; with
        `posteriors`, also the note and onset posteriorgrams (n, frames, 88) of the same forward pass."""
        extra = [POSTERIOR_OUTPUTS["note"], POSTERIOR_OUTPUTS["onset"]] if posteriors else []
        outputs = self._session.run(list(self.activation_names) + extra,
                                    {self._input: windows[..., None].astype(np.float32)})
        per_frame = []
        for act in outputs[: len(self.activation_names)]:
            if act.ndim != 4:
                raise BasicPitchUnavailable(f"unexpected Basic Pitch activation shape {act.shape}; use `{INSTALL_HINT}`")
            per_frame.append(act.mean(axis=3).transpose(0, 2, 1))  # (n, C, frames, freq) → (n, frames, C)
        acts = np.concatenate(per_frame, axis=2)
        if not posteriors:
            return acts
        note, onset = outputs[len(self.activation_names):]
        if note.ndim != 3 or note.shape[2] != 88 or onset.shape != note.shape:
            raise BasicPitchUnavailable(f"unexpected Basic Pitch posteriorgram shape {note.shape}; use `{INSTALL_HINT}`")
        return acts, note, onset

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

    def _frames(self, wave: np.ndarray, sample_rate: int, posteriors: bool) -> list[np.ndarray]:
        """One mono wave → [activations (frames, dim)] or [activations, note, onset] at 86 frames/s, each unwrapped from
        the overlapping windows as basic-pitch's `unwrap_output` does (half the overlap trimmed on each side)."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise ConfigError(f"expected a non-empty mono wave, got shape {wave.shape}")
        wave = resample(wave, sample_rate, SAMPLE_RATE)
        windows = self._windows(wave)
        chunks = []
        for i in range(0, len(windows), self.batch_windows):
            out = self._run_windows(windows[i:i + self.batch_windows], posteriors)
            chunks.append(out if isinstance(out, tuple) else (out,))
        trim = OVERLAP_FRAMES // 2
        n_frames = max(1, int(np.floor(wave.shape[0] * FRAMES_PER_SECOND / SAMPLE_RATE)))
        result = []
        for parts in zip(*chunks):
            stacked = np.concatenate(parts, axis=0)
            result.append(stacked[:, trim:-trim, :].reshape(-1, stacked.shape[2])[:n_frames])
        return result

    def frame_activations(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono wave → (frames, dim) activations at 86 frames/s (Basic Pitch's own unwrapping of the windows)."""
        return self._frames(wave, sample_rate, posteriors=False)[0]

    def _blocks(self, frames: np.ndarray) -> np.ndarray:
        n_blocks = frames.shape[0] // self.block_frames
        if n_blocks == 0:
            return frames.mean(axis=0, keepdims=True).astype(np.float64)
        usable = frames[: n_blocks * self.block_frames]
        return usable.reshape(n_blocks, self.block_frames, -1).mean(axis=1).astype(np.float64)

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono wave → (blocks, dim): activations averaged over consecutive ~1-s blocks (a short tail block is kept only
        when the clip is shorter than one block)."""
        return self._blocks(self.frame_activations(wave, sample_rate))

    def analyse(self, wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """One mono wave → (embedding blocks as `embed`, note events as `transcribe`) from one forward pass."""
        acts, note, onset = self._frames(wave, sample_rate, posteriors=True)
        return self._blocks(acts), posteriors_to_notes(note, onset)

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """One mono wave → (n, 4) note events [onset_s, offset_s, midi_pitch, velocity 0–1], sorted by onset."""
        _, note, onset = self._frames(wave, sample_rate, posteriors=True)
        return posteriors_to_notes(note, onset)

    def embed_many(self, waves: list[np.ndarray] | np.ndarray, sample_rate: int) -> np.ndarray:
        """A set of clips → (total blocks, dim): the feature set FD-BP fits its Gaussian to."""
        blocks = [self.embed(np.asarray(w), sample_rate) for w in waves]
        if not blocks:
            raise ConfigError("no clips to embed")
        return np.concatenate(blocks, axis=0)


# -- note events: a numpy port of basic_pitch/note_creation.py (0.4.0) -----------------------------------------------------

def _inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    """`get_infered_onsets`: onsets plus large rises of the frame posteriorgram, rescaled to the onsets' maximum."""
    diffs = []
    for n in range(1, n_diff + 1):
        shifted = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(shifted[n:, :] - shifted[:-n, :])
    frame_diff = np.min(diffs, axis=0)
    frame_diff[frame_diff < 0] = 0
    frame_diff[:n_diff, :] = 0
    peak = np.max(frame_diff)
    if peak <= 0:  # silence: the original divides by zero here and turns every onset into NaN
        return onsets
    frame_diff = np.max(onsets) * frame_diff / peak
    return np.maximum(onsets, frame_diff)


def _clear_neighbours(energy: np.ndarray, rows: slice | int, freq: int) -> None:
    """Zero a note's own bin and its two neighbours (a semitone either side) over `rows`, as the original does."""
    energy[rows, freq] = 0
    if freq < MAX_FREQ_IDX:
        energy[rows, freq + 1] = 0
    if freq > 0:
        energy[rows, freq - 1] = 0


def _decode_frames(frames: np.ndarray, onsets: np.ndarray) -> list[tuple[int, int, int, float]]:
    """`output_to_notes_polyphonic` with predict()'s defaults (inferred onsets, melodia trick, no frequency limits):
    [(start_frame, end_frame, midi_pitch, amplitude)]."""
    n_frames = frames.shape[0]
    onsets = _inferred_onsets(onsets, frames)
    peak_mat = np.zeros(onsets.shape)
    peaks = scipy.signal.argrelmax(onsets, axis=0)
    peak_mat[peaks] = onsets[peaks]
    onset_time, onset_freq = np.where(peak_mat >= ONSET_THRESHOLD)
    remaining = frames.astype(np.float64).copy()
    events: list[tuple[int, int, int, float]] = []
    for start, freq in zip(onset_time[::-1], onset_freq[::-1]):  # backwards in time, as the original
        if start >= n_frames - 1:
            continue
        i, k = start + 1, 0  # walk forward until ENERGY_TOLERANCE frames in a row fall below the frame threshold
        while i < n_frames - 1 and k < ENERGY_TOLERANCE:
            k = k + 1 if remaining[i, freq] < FRAME_THRESHOLD else 0
            i += 1
        i -= k
        if i - start <= MIN_NOTE_FRAMES:
            continue
        _clear_neighbours(remaining, slice(start, i), freq)
        events.append((int(start), int(i), int(freq) + MIDI_OFFSET, float(np.mean(frames[start:i, freq]))))
    # The melodia trick: notes without a detected onset, grown both ways from the strongest remaining frame.
    while np.max(remaining) > FRAME_THRESHOLD:
        mid, freq = np.unravel_index(np.argmax(remaining), remaining.shape)
        remaining[mid, freq] = 0
        i, k = mid + 1, 0
        while i < n_frames - 1 and k < ENERGY_TOLERANCE:
            k = k + 1 if remaining[i, freq] < FRAME_THRESHOLD else 0
            _clear_neighbours(remaining, i, freq)
            i += 1
        end = i - 1 - k
        i, k = mid - 1, 0
        while i > 0 and k < ENERGY_TOLERANCE:
            k = k + 1 if remaining[i, freq] < FRAME_THRESHOLD else 0
            _clear_neighbours(remaining, i, freq)
            i -= 1
        start = i + 1 + k
        if end - start <= MIN_NOTE_FRAMES:
            continue
        events.append((int(start), int(end), int(freq) + MIDI_OFFSET, float(np.mean(frames[start:end, freq]))))
    return events


def frame_times(n_frames: int) -> np.ndarray:
    """`model_frames_to_time`: frame k's time in seconds, with basic-pitch's per-window drift correction (its windows are
    one hop shorter than 2 s but are unwrapped as 172 frames each)."""
    index = np.arange(n_frames)
    window_offset = (FFT_HOP / SAMPLE_RATE) * (MODEL_WINDOW_FRAMES - WINDOW_SAMPLES / FFT_HOP) + 0.0018  # basic-pitch's
    return index * FFT_HOP / SAMPLE_RATE - window_offset * np.floor(index / MODEL_WINDOW_FRAMES)


def posteriors_to_notes(note: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Unwrapped (frames, 88) note and onset posteriorgrams → (n, 4) [onset_s, offset_s, midi_pitch, velocity], sorted
    by onset then pitch. Velocity is basic-pitch's amplitude: the mean note posterior over the note, in 0–1."""
    note = np.asarray(note, dtype=np.float64)
    onset = np.asarray(onset, dtype=np.float64)
    if note.ndim != 2 or note.shape[1] != 88 or onset.shape != note.shape:
        raise ConfigError(f"expected two (frames, 88) posteriorgrams, got {note.shape} and {onset.shape}")
    events = _decode_frames(note, onset)
    if not events:
        return np.zeros((0, 4))
    times = frame_times(note.shape[0])
    notes = np.array([(times[s], times[e], pitch, amp) for s, e, pitch, amp in events], dtype=np.float64)
    return notes[np.lexsort((notes[:, 2], notes[:, 0]))]
