"""Audio I/O: mono/resampling on real formats, safe writes, and one clear error per bad file."""

import io

import numpy as np
import pytest
import soundfile as sf

from pdd.runtime.audio import encode_audio, load_audio, resample, write_audio
from pdd.runtime.errors import AudioError


def _tone(rate, seconds=0.5, freq=440.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize("rate,channels,subtype", [(8000, 1, "PCM_16"), (96000, 2, "PCM_24"), (22050, 1, "FLOAT")])
def test_load_resamples_and_mixes_to_mono(tmp_path, rate, channels, subtype):
    path = tmp_path / "in.wav"
    sf.write(path, _tone(rate, channels=channels), rate, subtype=subtype)
    wave = load_audio(path, 22050)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(11025, abs=2)
    # The 440 Hz tone survives resampling at its level (peak 0.5).
    assert np.abs(wave[1000:-1000]).max() == pytest.approx(0.5, abs=0.02)
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) * 22050 / len(wave) == pytest.approx(440, abs=3)


def test_flac_round_trip(tmp_path):
    wave = _tone(22050).astype(np.float32)
    out = write_audio(tmp_path / "a.flac", wave, 22050)
    back = load_audio(out, 22050)
    assert np.abs(back - wave).max() < 1e-3


def test_write_never_overwrites_by_default(tmp_path):
    path = write_audio(tmp_path / "a.wav", np.zeros(100, np.float32), 22050)
    with pytest.raises(AudioError, match="overwrite"):
        write_audio(path, np.ones(100, np.float32), 22050)
    write_audio(path, np.full(100, 0.5, np.float32), 22050, subtype="float", overwrite=True)
    assert sf.read(path)[0][0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "name,content,message",
    [("empty.wav", b"", "empty"), ("text.wav", b"this is not audio at all\n" * 10, "not a readable audio file")],
)
def test_bad_files_give_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as info:
        load_audio(path, 22050)
    assert "\n" not in str(info.value)


def test_missing_and_zero_sample_files(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav", 22050)
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0,), np.float32), 22050)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path, 22050)


def test_write_errors(tmp_path):
    with pytest.raises(AudioError, match="unsupported output format"):
        write_audio(tmp_path / "a.mp4", np.zeros(10, np.float32), 22050)
    with pytest.raises(AudioError, match="cannot write"):
        write_audio(tmp_path / "no" / "such" / "dir.wav", np.zeros(10, np.float32), 22050)
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "nan.wav", np.array([0.0, np.nan], np.float32), 22050)
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("fmt,subtype", [("wav", "pcm16"), ("wav", "float"), ("flac", "pcm16")])
def test_encoded_bytes_are_the_written_file(tmp_path, fmt, subtype):
    wave = (1.3 * np.sin(np.arange(4000) / 7.0)).astype(np.float32)  # over full scale: pcm16 clips, float keeps it
    encoded = encode_audio(wave, 16000, fmt, subtype=subtype)
    assert encoded == write_audio(tmp_path / f"a.{fmt}", wave, 16000, subtype=subtype).read_bytes()
    decoded, rate = sf.read(io.BytesIO(encoded), dtype="float32")
    assert rate == 16000 and decoded.shape == wave.shape
    assert np.abs(decoded).max() == pytest.approx(1.3 if subtype == "float" else 1.0, abs=1e-4)


def test_encode_errors_are_one_line():
    for args, kwargs, message in [
        (("mp3",), {}, "unsupported output format 'mp3'"), (("flac",), {"subtype": "float"}, "FLAC stores integer"),
        (("wav",), {"subtype": "pcm24"}, "unknown sample format"),
    ]:
        with pytest.raises(AudioError, match=message):
            encode_audio(np.zeros(10, np.float32), 16000, *args, **kwargs)
    with pytest.raises(AudioError, match="NaN/inf"):
        encode_audio(np.array([0.0, np.inf], np.float32), 16000)


def test_resample_identity_and_too_short():
    wave = np.arange(10, dtype=np.float32)
    assert resample(wave, 100, 100) is not None and np.array_equal(resample(wave, 100, 100), wave)
    with pytest.raises(AudioError, match="cannot resample"):
        resample(np.zeros(1, np.float32), 8000, 22050)
