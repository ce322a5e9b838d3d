"""The vocoder graph: packed normalised mel x̂0 → waveform, as a torch module that exports to a small ONNX graph.

Same arithmetic as the runtime's numpy path (one algorithm, two implementations, tested against each other): `pdd.runtime.pack.unpack` → `pdd.runtime.mel.denormalize` → `pdd.runtime.silence.gate_power` →
`pdd.runtime.mel.mel_to_magnitude` → `pdd.runtime.griffinlim.griffin_lim`. The STFT and its inverse are a Conv1d and a
ConvTranspose1d with DFT bases, because ONNX has no inverse-STFT op and TensorRT parses no DFT, while Conv/ConvTranspose run on
every backend. The bases are built inside `forward` from integer ranges (cos/sin of 2π·((k·n) mod N)/N), so the exported graph
holds a few ops instead of 2·(n_fft/2+1)·n_fft floats (~34 MB per basis pair at n_fft 2048); TensorRT folds them at build time.
The phase initialisation is an input, so the graph is deterministic and reproduces the numpy path for the same phase.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from pdd.runtime.config import AudioConfig
from pdd.runtime.graphs import GRAPHS
from pdd.runtime.griffinlim import _EPS as GL_EPS
from pdd.runtime.griffinlim import DEFAULT_ITERS, DEFAULT_MOMENTUM
from pdd.runtime.mel import mel_pseudo_inverse, reference_power
from pdd.runtime.pack import unpack_index
from pdd.runtime.silence import DEFAULT_GATE, SilenceGate, gate_power
from pdd.runtime.spectral import StftPlan

if TYPE_CHECKING:
    import numpy as np
    import onnx

    from pdd.export.parity import Parity


class GriffinLimVocoder(nn.Module):
    """(x0 (B, C·F, L) in [-1, 1], phase0 (B, n_fft/2+1, frames) radians) → waveform (B, (frames−1)·hop) float32."""

    def __init__(self, audio: AudioConfig, *, n_iter: int = DEFAULT_ITERS, momentum: float = DEFAULT_MOMENTUM,
                 gate: SilenceGate | None = DEFAULT_GATE) -> None:
        super().__init__()
        if n_iter < 0:
            raise ValueError(f"Griffin-Lim iterations must be >= 0, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Griffin-Lim momentum must be in [0, 1), got {momentum}")
        self.audio = audio
        self.n_iter = int(n_iter)
        self.momentum = float(momentum)
        self.gate = gate  # the runtime's silence gate, same arithmetic (pdd.runtime.silence)
        plan = StftPlan.from_config(audio)
        self.window_sum = plan.window_sum
        self.length = plan.n_samples(audio.frames)
        # Small constants (a permutation of T frames and the (n_freqs, n_mels) pseudo-inverse) are stored; the big DFT bases
        # are not (see module docstring).
        # The inverse of the model's pack order (snake or reshape), from the one pack home.
        unsnake = unpack_index(audio.frames, audio.pack_chunks, audio.pack_order)
        self.register_buffer("unsnake", torch.from_numpy(unsnake.copy()), persistent=False)
        self.register_buffer("mel_inverse", torch.from_numpy(mel_pseudo_inverse(audio).copy()), persistent=False)

    # -- front: the runtime's unpack / denormalize / mel_to_magnitude ---------------------------------------------------
    def unpack(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, C·F, L) → (B, F, T), as `pdd.runtime.pack.unpack`."""
        chunks, n_mels, length = self.audio.pack_chunks, self.audio.n_mels, self.audio.packed_length
        split = x0.reshape(-1, chunks, n_mels, length)
        flat = split.permute(0, 2, 1, 3).reshape(-1, n_mels, chunks * length)  # packed time order
        return torch.index_select(flat, 2, self.unsnake)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → mel power, as `pdd.runtime.mel.denormalize` (10^(db/10) written as exp(db·ln10/10))."""
        top_db = self.audio.top_db
        db = (x.clamp(-1.0, 1.0) - 1.0) * (top_db / 2.0)
        return reference_power(self.audio) * torch.exp(db * (math.log(10.0) / 10.0))

    def magnitude(self, mel_power: torch.Tensor) -> torch.Tensor:
        """Mel power (B, F, T) → linear magnitude (B, n_freqs, T), as `pdd.runtime.mel.mel_to_magnitude`."""
        power = torch.matmul(self.mel_inverse, mel_power)
        return torch.sqrt(power.clamp(min=0.0)) * self.window_sum

    # -- STFT pair as convolutions -------------------------------------------------------------------------------------
    def _window(self) -> torch.Tensor:
        """Periodic Hann window zero-padded to n_fft, as `pdd.runtime.spectral.hann_window`, built from a range."""
        n_fft, win = self.audio.n_fft, self.audio.win_length
        n = torch.arange(win, dtype=torch.float32)
        window = 0.5 - 0.5 * torch.cos(n * (2.0 * math.pi / win))
        left = (n_fft - win) // 2
        return F.pad(window, (left, n_fft - win - left))

    def _dft_angles(self) -> torch.Tensor:
        """(n_freqs, n_fft) angles 2π·((k·n) mod N)/N; the integer remainder keeps float32 angles exact to ~1e-7 rad."""
        n_fft = self.audio.n_fft
        k = torch.arange(n_fft // 2 + 1, dtype=torch.int32).unsqueeze(1)
        n = torch.arange(n_fft, dtype=torch.int32).unsqueeze(0)
        phase_index = torch.remainder(k * n, n_fft)
        return phase_index.to(torch.float32) * (2.0 * math.pi / n_fft)

    def bases(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Analysis kernel (2·n_freqs, 1, N), synthesis kernel (2·n_freqs, 1, N) and overlap-add envelope kernel (1, 1, N)."""
        n_fft = self.audio.n_fft
        window = self._window()
        angles = self._dft_angles()
        cos, sin = torch.cos(angles), torch.sin(angles)
        analysis = torch.cat([cos * window, -sin * window], dim=0).unsqueeze(1)
        # irfft: DC and Nyquist count once, the other bins twice (their negative-frequency twins); 1/N normalisation.
        k = torch.arange(n_fft // 2 + 1, dtype=torch.int32).unsqueeze(1)
        single = (k == 0) | (k * 2 == n_fft)
        weight = torch.where(single, 1.0 / n_fft, 2.0 / n_fft)
        synthesis = torch.cat([cos * weight * window, -sin * weight * window], dim=0).unsqueeze(1)
        return analysis, synthesis, (window * window).reshape(1, 1, n_fft)

    def stft(self, wave: torch.Tensor, analysis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) → real, imag (B, n_freqs, T): centred frames, zero padding (as `StftPlan.forward_frames`)."""
        pad = self.audio.n_fft // 2
        padded = F.pad(wave.unsqueeze(1), (pad, pad))
        spec = F.conv1d(padded, analysis, stride=self.audio.hop_length)
        return spec.chunk(2, dim=1)

    def istft(self, real: torch.Tensor, imag: torch.Tensor, synthesis: torch.Tensor, inv_envelope: torch.Tensor) -> torch.Tensor:
        """real, imag (B, n_freqs, T) → (B, samples): windowed overlap-add over the squared-window envelope."""
        frames = torch.cat([real, imag], dim=1)
        signal = F.conv_transpose1d(frames, synthesis, stride=self.audio.hop_length).squeeze(1)
        pad = self.audio.n_fft // 2
        return (signal * inv_envelope)[:, pad : pad + self.length]

    def inverse_envelope(self, env_kernel: torch.Tensor) -> torch.Tensor:
        """1 / Σ w² over the overlapping frames (0 where it vanishes), (1, (T−1)·hop + N), as the runtime's `_window_envelope`."""
        ones = torch.ones(1, 1, self.audio.frames, dtype=torch.float32)
        env = F.conv_transpose1d(ones, env_kernel, stride=self.audio.hop_length).squeeze(1)
        tiny = torch.finfo(torch.float32).tiny
        return torch.where(env > tiny, 1.0 / env.clamp(min=tiny), torch.zeros_like(env))

    # -- Griffin-Lim ------------------------------------------------------------------------------------------------------
    def griffin_lim(self, magnitude: torch.Tensor, phase0: torch.Tensor) -> torch.Tensor:
        """Fast Griffin-Lim with momentum, iteration for iteration `pdd.runtime.griffinlim.griffin_lim` (complex as re/im)."""
        analysis, synthesis, env_kernel = self.bases()
        inv_envelope = self.inverse_envelope(env_kernel)
        beta = self.momentum / (1.0 + self.momentum)
        eps = float(GL_EPS)
        ang_re, ang_im = torch.cos(phase0), torch.sin(phase0)
        prev_re = prev_im = None
        for _ in range(self.n_iter):
            wave = self.istft(magnitude * ang_re, magnitude * ang_im, synthesis, inv_envelope)
            reb_re, reb_im = self.stft(wave, analysis)
            if self.momentum and prev_re is not None:
                ang_re, ang_im = reb_re - beta * prev_re, reb_im - beta * prev_im
            else:  # first iteration: the previous projection is zero
                ang_re, ang_im = reb_re, reb_im
            norm = torch.sqrt(ang_re * ang_re + ang_im * ang_im) + eps
            ang_re, ang_im = ang_re / norm, ang_im / norm
            prev_re, prev_im = reb_re, reb_im
        return self.istft(magnitude * ang_re, magnitude * ang_im, synthesis, inv_envelope)

    def forward(self, x0: torch.Tensor, phase0: torch.Tensor) -> torch.Tensor:
        mel = self.unpack(x0)
        magnitude = self.magnitude(gate_power(self.denormalize(mel), mel, self.gate))
        return self.griffin_lim(magnitude, phase0)


def export_gl_vocoder(audio: AudioConfig, x0: "np.ndarray", phase0: "np.ndarray", *, n_iter: int, momentum: float,
                      gate: SilenceGate | None = DEFAULT_GATE) -> tuple["onnx.ModelProto", "np.ndarray", list["Parity"]]:
    """The Griffin-Lim graph for `audio`, its PyTorch golden waveform for (x0, phase0), and its parity against PyTorch and
    the runtime's numpy Griffin-Lim (ExportError when either fails)."""
    from pdd.export.errors import ExportError
    from pdd.export.graphs import VOCODER_FOLD_LIMIT
    from pdd.export.graphs import EXAMPLE_BATCH, assert_batch_is_dynamic, export_graph
    from pdd.export.parity import compare, numpy_vocoder, run_graph

    module = GriffinLimVocoder(audio, n_iter=n_iter, momentum=momentum, gate=gate).eval()
    with torch.no_grad():
        want = module(torch.from_numpy(x0), torch.from_numpy(phase0)).numpy()
    examples = (torch.zeros(EXAMPLE_BATCH, *audio.packed_shape), torch.zeros(EXAMPLE_BATCH, audio.n_freqs, audio.frames))
    proto = export_graph(module, examples, "vocoder", fold_limit=VOCODER_FOLD_LIMIT)
    proto.graph.name = "vocoder"
    assert_batch_is_dynamic(proto)
    contract = GRAPHS["vocoder"]
    got = run_graph(proto, dict(zip(contract.input_names, (x0, phase0))))[contract.output]
    checks = [compare("vocoder", "fp32", "torch", got, want),
              compare("vocoder", "fp32", "numpy", got, numpy_vocoder(x0, phase0, audio, n_iter, momentum, gate))]
    failed = [p for p in checks if not p.passed]
    if failed:
        raise ExportError("Griffin-Lim graph parity failed: " + "; ".join(p.describe() for p in failed))
    return proto, want, checks
