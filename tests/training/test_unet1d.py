"""The 1D U-Net: presets, config serialisation, shapes, zero-initialised output, batch independence."""

from __future__ import annotations

import pytest
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.training.unet1d import UNET_PRESETS, UNet1D, UNetConfig, count_parameters, unet_config

TINY = get_preset("tiny")
PAPER = get_preset("paper")


def trained_like(model: UNet1D, seed: int = 0) -> UNet1D:
    """Perturb every zero-initialised weight so the output depends on the input, as after training."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return model


def test_presets_cover_tiny_small_paper() -> None:
    assert set(UNET_PRESETS) == {"tiny", "small", "paper"}


def test_tiny_has_a_few_hundred_thousand_parameters() -> None:
    n = count_parameters(UNet1D(unet_config("tiny", TINY)))
    assert 100_000 <= n <= 1_000_000


def test_small_is_a_few_million_parameters_and_paper_is_larger() -> None:
    small = count_parameters(UNet1D(unet_config("small", PAPER)))
    paper = count_parameters(UNet1D(unet_config("paper", PAPER)))
    assert 2_000_000 <= small <= 8_000_000
    assert paper > 4 * small


def test_in_channels_come_from_the_audio_preset() -> None:
    assert unet_config("tiny", TINY).in_channels == TINY.packed_channels == 96
    assert unet_config("small", PAPER).in_channels == 384


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="tiny, small, paper"):
        unet_config("huge", TINY)


def test_config_json_round_trip() -> None:
    config = unet_config("small", PAPER)
    again = UNetConfig.from_json(config.to_json())
    assert again == config
    assert isinstance(again.channel_mults, tuple)


def test_config_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown U-Net config fields: wings"):
        UNetConfig.from_dict({"wings": 2})
    with pytest.raises(ConfigError, match="norm_groups"):
        UNetConfig(base_channels=30, norm_groups=8)
    with pytest.raises(ConfigError, match="attention_levels"):
        UNetConfig(channel_mults=(1, 2), attention_levels=(2,))
    with pytest.raises(ConfigError, match="time_input"):
        UNetConfig(time_input="sigma")


def test_length_that_cannot_halve_is_refused() -> None:
    odd = get_preset("tiny").__class__(name="odd", sample_rate=16000, n_fft=512, win_length=512, hop_length=256,
                                       n_mels=32, frames=99, pack_chunks=3)  # packed length 33
    with pytest.raises(ConfigError, match="multiple of 2"):
        unet_config("tiny", odd)


def test_output_has_input_shape_and_starts_at_zero() -> None:
    model = UNet1D(unet_config("tiny", TINY))
    x = torch.randn(3, *TINY.packed_shape)
    out = model(x, torch.rand(3))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv


@pytest.mark.parametrize("time_input", ["t", "logsnr"])
def test_output_depends_on_time_and_items_are_independent(time_input: str) -> None:
    torch.manual_seed(0)
    model = trained_like(UNet1D(unet_config("tiny", TINY, time_input=time_input))).eval()
    x = torch.randn(2, *TINY.packed_shape)
    t = torch.tensor([0.0, 1.0])  # both ends of the schedule must stay finite
    with torch.no_grad():
        both = model(x, t)
        first = model(x[:1], t[:1])
        shifted = model(x[:1], torch.tensor([0.5]))
    assert torch.isfinite(both).all()
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-4)  # batch size never changes a result
    assert not torch.allclose(first, shifted)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = trained_like(UNet1D(unet_config("tiny", TINY)))
    x = torch.randn(2, *TINY.packed_shape)
    model(x, torch.rand(2)).pow(2).mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []


def test_exports_to_onnx_with_a_dynamic_batch(tmp_path) -> None:
    """The export helper's path (dynamo, opset 18, dynamic batch) works and matches eager in onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    model = trained_like(UNet1D(unet_config("tiny", TINY, time_input="logsnr"))).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    example = (torch.randn(2, *TINY.packed_shape), torch.rand(2))
    program = torch.onnx.export(model, example, dynamo=True, opset_version=18,
                                dynamic_shapes=({0: batch}, {0: batch}), input_names=["x", "t"], output_names=["v"])
    program.save(str(tmp_path / "unet.onnx"))
    session = ort.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    for size in (1, 3):
        x, t = torch.randn(size, *TINY.packed_shape), torch.rand(size)
        got = session.run(None, {"x": x.numpy(), "t": t.numpy()})[0]
        with torch.no_grad():
            want = model(x, t).numpy()
        assert got.shape == want.shape
        assert abs(got - want).max() < 1e-4


def test_input_skip_is_on_by_default_and_old_configs_load_without_it() -> None:
    config = unet_config("tiny", TINY)
    assert config.input_skip
    legacy = {k: v for k, v in config.to_dict().items() if k != "input_skip"}
    old = UNetConfig.from_dict(legacy)
    assert not old.input_skip
    assert not hasattr(UNet1D(old), "skip_conv")


def test_the_network_sees_what_the_input_conv_drops() -> None:
    """Noise in the null space of the narrowing input conv changes v̂ only through the full-rank skip."""
    torch.manual_seed(0)
    channels, length = TINY.packed_shape

    def null_direction(model: UNet1D) -> torch.Tensor:
        basis = torch.eye(channels * length).reshape(-1, channels, length)
        with torch.no_grad():
            rows = (model.input_conv(basis) - model.input_conv.bias[:, None]).reshape(channels * length, -1).T.double()
        probe = torch.randn(channels * length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        # Remove the probe's component in the conv's row space: what is left, the conv maps to zero.
        inside = rows.T @ torch.linalg.solve(rows @ rows.T, rows @ probe)
        direction = probe - inside
        return (direction / direction.norm() * 10).float().reshape(1, channels, length)

    x, t = torch.randn(1, channels, length), torch.tensor([0.3])
    for skip in (False, True):
        model = trained_like(UNet1D(unet_config("tiny", TINY, input_skip=skip))).eval()
        direction = null_direction(model)
        with torch.no_grad():
            assert model.input_conv(direction).sub(model.input_conv.bias[:, None]).abs().max() < 1e-4
            change = (model(x + direction, t) - model(x, t)).abs().max().item()
        assert (change > 1e-3) if skip else (change < 1e-4), (skip, change)
