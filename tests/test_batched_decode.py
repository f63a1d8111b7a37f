"""Batched greedy decoding (greedy_decode_batch, transcribe.batch_size) gives, per clip, the tokens and the
stop reason of batch 1: on a tiny random Whisper (fast) and on real English speech with whisper-base (slow)."""
from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from tests.test_evaluate import JA, SOT, tiny_whisper
from whisper_npu.audio.clips import Clip
from whisper_npu.decoding.greedy import DecodeConfig, DecodeError, batched, greedy_decode, greedy_decode_batch
from whisper_npu.decoding.run import run_clips

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model():
    """A tiny random multilingual Whisper (init_std 0.5: its greedy outputs vary in length and stop reason)."""
    return tiny_whisper(seed=1, d_model=32, decoder_layers=2, suppress=(1, 2, 3), begin=(220,))


def _feats(seed: int) -> np.ndarray:
    # Scaled random log-mel: different clips give different outputs.
    return (np.random.default_rng(seed).standard_normal((1, 3000, 80), dtype=np.float32) * (0.2 + 0.3 * (seed % 4)))


def _batch_vs_single(backend, states: list[np.ndarray], prompts: list[list[int]], cfg: DecodeConfig):
    single = [greedy_decode(backend.decoder, s, p, cfg) for s, p in zip(states, prompts)]
    batch = greedy_decode_batch(backend.decoder, np.concatenate(states), prompts, cfg)
    return single, batch


def test_batched_equals_batch_1_on_a_tiny_random_whisper(tiny_model) -> None:
    from whisper_npu.runtimes.torch_ref import TorchBackend

    backend = TorchBackend(tiny_model)
    assert batched(backend.decoder)
    cfg = DecodeConfig.from_model(tiny_model.generation_config, tiny_model.config, max_new_tokens=40,
                                  repeat_max_ngram=4, repeat_times=3)
    states = [backend.encoder(_feats(seed)) for seed in range(12)]
    # both tasks and both languages mixed in one batch, as evaluate does (prompts of one length)
    prompts = [cfg.prompt(("de", "ja")[i % 2], ("transcribe", "translate")[(i // 2) % 2]) for i in range(12)]
    single, batch = _batch_vs_single(backend, states, prompts, cfg)
    assert batch == single
    # rows finish at different steps (select() is exercised) and for different reasons
    assert len({len(t) for t, _ in single}) > 2
    assert len({s for _, s in single}) >= 2, f"one stop reason only: {single}"


def test_batched_refuses_prompts_of_different_lengths(tiny_model) -> None:
    from whisper_npu.runtimes.torch_ref import TorchBackend

    backend = TorchBackend(tiny_model)
    cfg = DecodeConfig.from_model(tiny_model.generation_config, tiny_model.config, max_new_tokens=5)
    states = np.concatenate([backend.encoder(_feats(s)) for s in range(2)])
    with pytest.raises(DecodeError, match="different lengths"):
        greedy_decode_batch(backend.decoder, states, [cfg.prompt("de", "transcribe"), [SOT, JA]], cfg)


class Batch1Session:
    """A decoder with only the batch-1 protocol (as the ONNX and .mxq sessions): run_backend must not batch it."""

    def __init__(self, inner):
        self.inner, self.resets = inner, 0

    def reset(self, encoder_states):
        self.resets += 1
        self.inner.reset(encoder_states)

    def step(self, tokens):
        return self.inner.step(tokens)


def _clips(n: int) -> list[Clip]:
    langs = ("de_de", "ja_jp")
    return [Clip(f"c{i:02d}", langs[i % 2], Path(f"c{i:02d}.wav"), 1.0, "x", "y", "test") for i in range(n)]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_run_backends_records_do_not_depend_on_the_batch_size(tiny_model, monkeypatch, batch_size) -> None:
    """Same records as batch 1 (timings apart) for the batching torch backend and a batch-1 backend; features
    are computed once per clip and system (each transcription stage computes its own)."""
    from whisper_npu.runtimes.torch_ref import TorchBackend

    # The tiny model knows de and ja only (evaluation languages de_de and ja_jp).
    cfg = DecodeConfig.from_model(tiny_model.generation_config, tiny_model.config, max_new_tokens=30)
    clips = _clips(7)
    seeds = {c.id: i for i, c in enumerate(clips)}
    computed: list[str] = []

    def features(clip):
        computed.append(clip.id)
        return _feats(seeds[clip.id])

    def run(bs):
        fp32 = TorchBackend(tiny_model)
        one = types.SimpleNamespace(name="b1", encoder=fp32.encoder,
                                    decoder=Batch1Session(TorchBackend(tiny_model).decoder))
        recs = [r for system, backend in (("fp32", fp32), ("compiled", one))
                for r in run_clips(system, backend, clips, features, cfg, str, bs)]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in recs], recs, one.decoder.resets

    want, _, _ = run(1)
    computed.clear()
    got, raw, resets = run(batch_size)
    key = lambda r: (r["system"], r["id"], r["task"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key)
    assert sorted(computed) == sorted(2 * [c.id for c in clips])
    assert resets == sum(len(c.tasks()) for c in clips)      # the batch-1 backend decoded one item at a time
    assert all(r["seconds"] > 0 for r in raw)


def test_transcribe_batch_size_is_a_typed_param() -> None:
    import yaml

    from whisper_npu.params.base import ParamsError
    from whisper_npu.params.full import load_params, parse_params

    assert load_params(ROOT / "params.yaml").transcribe.batch_size >= 1
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for bad in (0, 1.5, True):
        raw["transcribe"]["batch_size"] = bad
        with pytest.raises(ParamsError, match="transcribe.batch_size"):
            parse_params(raw)


# ------------------------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_batched_equals_batch_1_on_real_english_with_whisper_base(reference_model_dir) -> None:
    """whisper-base on real English prompts (Debian's asterisk-core-sounds-en-wav): every clip, both tasks,
    one batch: the tokens and stop reasons of batch 1."""
    from bench.label_speed import AptUnavailable, asterisk_english
    from whisper_npu.audio.features import npu_features
    from whisper_npu.runtimes.torch_ref import load_torch_backend

    try:
        clips = asterisk_english(8, min_seconds=2.0, max_seconds=12.0)
    except AptUnavailable as e:
        pytest.fail(str(e))
    backend, processor = load_torch_backend(reference_model_dir)
    model = backend.model
    cfg = DecodeConfig.from_model(model.generation_config, model.config, max_new_tokens=220)
    states = [backend.encoder(npu_features(processor.feature_extractor, y)) for _, y in clips]
    prompts = [cfg.prompt("en", task) for task in ("transcribe", "translate") for _ in clips]
    single, batch = _batch_vs_single(backend, states + states, prompts, cfg)
    assert batch == single
    texts = [processor.tokenizer.decode(t, skip_special_tokens=True) for t, _ in single[:len(clips)]]
    assert sum(len(t.split()) >= 2 for t in texts) >= len(clips) - 1, texts   # real speech, real words
    assert json.dumps(batch)   # plain ids and strings


def test_only_the_torch_reference_batches() -> None:
    """The ONNX decoder is exported in the NPU's batch-1 layout and the .mxq decoder is compiled for batch 1:
    the transcription stages decode them one clip at a time."""
    from whisper_npu.runtimes.mobilint.runtime import MxqDecoderSession
    from whisper_npu.runtimes.onnxruntime import OrtDecoderSession
    from whisper_npu.runtimes.torch_ref import TorchDecoderSession
    from whisper_npu.specs import decoder_spec

    assert batched(TorchDecoderSession)
    assert not batched(OrtDecoderSession) and not batched(MxqDecoderSession)
    spec = decoder_spec({"d_model": 8, "max_source_positions": 1500, "vocab_size": 10, "max_target_positions": 4})
    assert spec.inputs[0].shape[0] == 1 and spec.inputs[1].shape[0] == 1
