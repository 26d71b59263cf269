"""The input edge: whatever a device delivers (int16 / int32 / float32, 1-6 channels, 8-48 kHz) becomes 16 kHz mono
int16 at the same level. A 0.1 full-scale 440 Hz sine must peak at 3,277 and stay a clean 440 Hz sine from every
format, fed in device-sized blocks or in any other cut."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.audio import SAMPLE_RATE, InputConverter, StreamResampler, resample, to_float, to_int16

AMP = 0.1  # of full scale
FREQ = 440.0
EXPECTED_PEAK = 3277  # 0.1 x 32768
EDGE_S = 0.05  # the converter's first and last few ms are the filter filling up: not judged


def device_block(rate: int, channels: int, dtype: str, seconds: float = 1.0, freq: float = FREQ,
                 amp: float = AMP) -> np.ndarray:
    """What a device delivers: the same sine on every channel, frames x channels, in the device's sample type."""
    t = np.arange(int(round(rate * seconds))) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    if dtype == "int16":
        y = np.rint(x * 32768).astype(np.int16)
    elif dtype == "int32":
        y = np.rint(x * 2.0 ** 31).astype(np.int32)
    else:
        y = x.astype(np.float32)
    return np.repeat(y[:, None], channels, axis=1)


def convert(block: np.ndarray, rate: int, sizes: list[int]) -> np.ndarray:
    """Feed the converter in blocks of the given sizes (cycled), as a device callback would."""
    conv = InputConverter(rate, block.shape[1])
    out, i, k = [], 0, 0
    while i < len(block):
        n = sizes[k % len(sizes)]
        out.append(conv(block[i:i + n]))
        i, k = i + n, k + 1
    for o in out:
        assert o.dtype == np.int16 and o.ndim == 1
    return np.concatenate(out)


def tone_of(samples: np.ndarray) -> tuple[float, float, float]:
    """(frequency, peak, residual) of the middle part: the strongest frequency (zero-padded FFT), the peak, and the
    RMS of what is left after a least-squares fit of one 440 Hz sine (distortion, clipping, noise, a wrong rate)."""
    edge = int(EDGE_S * SAMPLE_RATE)
    x = samples[edge:-edge].astype(np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x)), 16 * len(x)))
    f = float(np.argmax(spec)) * SAMPLE_RATE / (16 * len(x))
    t = np.arange(len(x)) / SAMPLE_RATE
    basis = np.stack([np.sin(2 * np.pi * FREQ * t), np.cos(2 * np.pi * FREQ * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    residual = float(np.sqrt(np.mean((x - basis @ coef) ** 2)))
    return f, float(np.abs(x).max()), residual


FORMATS = [
    (16000, 1, "int16"),
    (16000, 2, "int16"),
    (48000, 2, "float32"),
    (48000, 2, "int16"),  # what MicSource opens when a device refuses 16 kHz mono
    (44100, 4, "int32"),
    (8000, 1, "int16"),
    (22050, 6, "int16"),
    (48000, 6, "int32"),
    (44100, 1, "float32"),
]


@pytest.mark.parametrize(("rate", "channels", "dtype"), FORMATS)
def test_every_device_format_arrives_at_the_same_level_and_frequency(rate, channels, dtype):
    block = device_block(rate, channels, dtype)
    out = convert(block, rate, [int(rate * 0.08)])  # 80 ms callback blocks, as MicSource asks for
    assert abs(len(out) - SAMPLE_RATE) <= 0.002 * SAMPLE_RATE, len(out)  # at most 2 ms held back in the filter
    f, peak, residual = tone_of(out)
    assert abs(peak - EXPECTED_PEAK) <= 0.03 * EXPECTED_PEAK, f"peak {peak}, expected {EXPECTED_PEAK} +-3 %"
    assert abs(f - FREQ) < 0.5, f"frequency {f:.2f} Hz"
    assert residual < 0.005 * EXPECTED_PEAK, f"not a clean sine: residual RMS {residual:.1f}"


@pytest.mark.parametrize(("rate", "channels", "dtype"), [(48000, 2, "float32"), (44100, 4, "int32"),
                                                         (22050, 1, "int16"), (8000, 2, "int16")])
def test_output_does_not_depend_on_how_the_input_is_cut(rate, channels, dtype):
    block = device_block(rate, channels, dtype, seconds=0.7)
    regular = convert(block, rate, [int(rate * 0.08)])
    ragged = convert(block, rate, [1, 37, 441, 1000, 4801, 3, 256])
    one = convert(block, rate, [len(block)])
    n = min(len(regular), len(ragged), len(one))
    assert n >= 0.7 * SAMPLE_RATE - 40
    assert len({len(regular), len(ragged), len(one)}) == 1, "every cut must yield the same number of samples"
    assert np.abs(regular[:n].astype(int) - ragged[:n]).max() <= 1
    assert np.abs(regular[:n].astype(int) - one[:n]).max() <= 1


def test_streaming_matches_whole_signal_resampling():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(44100 * 2) * 0.1).astype(np.float32)
    r = StreamResampler(44100, SAMPLE_RATE)
    y = np.concatenate([r.process(x[i:i + 1764]) for i in range(0, len(x), 1764)])
    whole = resample(x, 44100, SAMPLE_RATE)
    assert len(whole) - 40 <= len(y) <= len(whole)
    assert np.abs(y - whole[:len(y)]).max() < 1e-5


def test_what_a_16_khz_microphone_cannot_carry_is_filtered_not_folded_back():
    # 11 kHz at 48 kHz would alias to 5 kHz without the low-pass
    out = convert(device_block(48000, 2, "int16", freq=11000.0, amp=0.5), 48000, [3840])
    edge = int(EDGE_S * SAMPLE_RATE)
    assert np.abs(out[edge:-edge]).max() < 0.5 * 32768 * 10 ** (-50 / 20)  # at least 50 dB down


def test_one_scale_convention():
    ints = np.array([-32768, -3277, 0, 1, 3277, 32767], dtype=np.int16)
    assert np.array_equal(to_int16(to_float(ints)), ints)
    assert to_float(np.array([2 ** 31 - 1, -2 ** 31], dtype=np.int32)).tolist() == pytest.approx([1.0, -1.0])
    assert to_int16(np.array([0.1, -0.1, 1.5, -1.5], dtype=np.float32)).tolist() == [3277, -3277, 32767, -32768]
    assert to_int16(np.array([0x0CCD0000], dtype=np.int32)).tolist() == [3277]
    assert to_float(np.array([128, 0, 255], dtype=np.uint8)).tolist() == pytest.approx([0.0, -1.0, 127 / 128])


def test_loud_multichannel_input_clips_and_never_wraps():
    out = convert(device_block(16000, 4, "float32", amp=1.2, seconds=0.2), 16000, [1280])
    assert out.max() == 32767 and out.min() == -32768
    # a clipped sine is still positive on its positive half: no wrap-around to the other sign
    t = np.arange(len(out)) / SAMPLE_RATE
    s = np.sin(2 * np.pi * FREQ * t)
    assert np.all(out[s > 0.2] > 0) and np.all(out[s < -0.2] < 0)
