"""Log-mel features in the encoder's NPU layout, computed one way for every stage that feeds the encoder (calibration,
transcription) and for the command line, with bytes that do not depend on the CPU.

:func:`log_mel` computes what transformers' ``WhisperFeatureExtractor`` computes (zero-padded / truncated to 30 s,
centred reflect-padded STFT with a periodic Hann window, last frame dropped, power spectrum, the extractor's slaney
mel filterbank, log10 of max(., 1e-10), floor at max - 8, (x + 4) / 4) and agrees with its torch path to float32
rounding noise (about 3e-5). It does not call it: that path runs MKL's FFT and SGEMM, whose kernels (and bytes) depend
on the CPU (an AVX-512 Xeon and an AVX2 EPYC gave other encoder calibration sets). Every operation here is one of:

* exact in float64: float32 -> float64, padding, framing, float32 window x float32 sample (24+24 bit mantissas fit
  in 53), max / maximum (exact in any order), frexp;
* a correctly rounded IEEE elementwise operation (+ - * /): one result whatever the SIMD width or dispatch target;
  numpy applies each ufunc separately, so nothing is fused into an FMA;
* a reduction in a fixed order written out here (the filterbank: per mel band, its bins summed in ascending order,
  as elementwise adds; no BLAS, no einsum);
* numpy's pocketfft (``np.fft.rfft``, float64): compiled once for the wheel's baseline (x86-64-v2: no FMA, no AVX,
  no runtime dispatch); its only libm use is its twiddle table, which glibc's FMA and SSE2 variants give identically
  for n = 400;
* log10 written out with frexp and a fixed polynomial (``np.log10`` is dispatched: SVML on AVX-512, libm otherwise).

Constants (window, filterbank) are rounded to float32 once, with a guard that refuses values so close to a float32
rounding boundary that an ulp-level libm difference in their float64 computation could flip them; the result is
rounded to float32 once, at the end. tests/test_features.py computes the features under every kernel switch this
machine offers (MKL_CBWR, ATEN_CPU_CAPABILITY, numpy's dispatch, glibc's libm variant, OpenBLAS core type, threads)
and compares bytes.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from whisper_npu.audio.prepare import SAMPLE_RATE

_LN2_LOG10 = 0.30102999566398119521373889472449302676818988146211  # log10(2)
_INV_LN10 = 0.43429448190325182765112891891660508229439700580366   # 1 / ln(10)
_ATANH_COEF = [1.0 / (2 * k + 1) for k in range(12)]                # 2 atanh(s) = 2 s sum s^2k / (2k+1)


def _guarded_f32(values: np.ndarray, what: str) -> np.ndarray:
    """Round float64 constants to float32, refusing any that sit within 2^-40 (relative) of a rounding boundary or
    are tiny non-zeros: there a 1-ulp difference in the float64 input could change the float32 value."""
    v = np.asarray(values, dtype=np.float64)
    f = v.astype(np.float32)
    nz = v != 0
    if np.any(nz & (np.abs(v) < 1e-30)):
        raise ValueError(f"{what}: tiny non-zero constant; its float32 value is not stable")
    # distance to the nearest float32 rounding boundary (midpoint between f and its neighbour)
    up = np.nextafter(f, np.float32(np.inf)).astype(np.float64)
    dn = np.nextafter(f, np.float32(-np.inf)).astype(np.float64)
    fd = f.astype(np.float64)
    margin = np.minimum(np.abs(v - (fd + up) / 2), np.abs(v - (fd + dn) / 2))
    if np.any(nz & (margin < np.abs(v) * 2.0 ** -40)):
        raise ValueError(f"{what}: a constant is within 2^-40 of a float32 rounding boundary")
    return f


def _periodic_hann(n: int) -> np.ndarray:
    # libm cos per value (Python math), rounded to float32 under the guard; torch.hann_window's values are float32 too
    w = np.array([0.5 - 0.5 * math.cos(2.0 * math.pi * i / n) for i in range(n)], dtype=np.float64)
    return _guarded_f32(w, "hann window")


def _log10(x: np.ndarray) -> np.ndarray:
    """log10 of positive finite float64, from + - * / and frexp only (error a few float64 ulps)."""
    m, e = np.frexp(x)                        # x = m 2^e, m in [0.5, 1): exact
    small = m < 0.70710678118654752440        # move m into [sqrt(1/2), sqrt(2)): exact doubling
    m = np.where(small, m * 2.0, m)
    e = np.where(small, e - 1, e).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)                 # |s| <= 0.1716; m - 1 is exact (Sterbenz)
    z = s * s
    p = np.full_like(z, _ATANH_COEF[-1])
    for c in reversed(_ATANH_COEF[:-1]):      # Horner, fixed order; z^11/23 < 1e-18
        p = p * z + c
    ln_m = 2.0 * s * p
    return e * _LN2_LOG10 + ln_m * _INV_LN10


def log_mel(audio: np.ndarray, fe) -> np.ndarray:
    """[1, n_mels, n_frames] float32 log-mel of one mono 16 kHz clip, like ``fe(audio, sampling_rate=16000,
    return_tensors="np").input_features`` (``fe``: transformers WhisperFeatureExtractor), CPU-independent bytes."""
    n_fft, hop, n_samples = int(fe.n_fft), int(fe.hop_length), int(fe.n_samples)
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"log_mel: expected mono 1-D audio, got shape {x.shape}")
    x = x.astype(np.float32)                                  # the extractor works on float32 samples
    wav = np.zeros(n_samples, dtype=np.float64)
    k = min(len(x), n_samples)                                # truncate / zero-pad to 30 s
    wav[:k] = x[:k]
    padded = np.pad(wav, n_fft // 2, mode="reflect")          # torch.stft(center=True, pad_mode="reflect")
    n_frames = n_samples // hop                               # 3000: the STFT's last frame is dropped
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    window = _periodic_hann(n_fft).astype(np.float64)
    spec = np.fft.rfft(frames * window, axis=-1)              # [n_frames, n_fft//2 + 1] complex128, pocketfft
    power = spec.real * spec.real + spec.imag * spec.imag     # |X|^2, elementwise
    power = np.ascontiguousarray(power.T)                     # [bins, frames]

    filters = _guarded_f32(fe.mel_filters, "mel filterbank").astype(np.float64)   # [bins, mels]
    n_bins, n_mels = filters.shape
    mel = np.zeros((n_mels, n_frames), dtype=np.float64)
    for b in range(n_bins):                                   # ascending bins: each band's sum has a fixed order
        bands = np.flatnonzero(filters[b])
        for m in bands:
            mel[m] = mel[m] + filters[b, m] * power[b]

    log_spec = _log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec.astype(np.float32)[None]


def npu_features(feature_extractor: Any, audio: np.ndarray) -> np.ndarray:
    """Log-mel in the encoder .mxq's layout: ``[1, mels, frames]`` transposed to ``[1, frames, mels]`` float32,
    C-contiguous (as the tutorial's ``.transpose(1, 2)``), with the extractor's settings and filterbank."""
    if int(feature_extractor.sampling_rate) != SAMPLE_RATE:
        raise ValueError(f"feature extractor at {feature_extractor.sampling_rate} Hz; the audio is {SAMPLE_RATE} Hz")
    return np.ascontiguousarray(log_mel(np.asarray(audio), feature_extractor).transpose(0, 2, 1))
