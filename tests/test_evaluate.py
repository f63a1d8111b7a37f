"""Evaluation: the decode loop, the transcription stages, scoring, the budget, the metrics/plots files and
`dvc plots show`."""
from __future__ import annotations

import json
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import params_with, section

from stages import score as score_stage
from stages import transcribe_compiled, transcribe_fp32
from whisper_npu.audio import clips as A
from whisper_npu.core.errors import StageError
from whisper_npu.core.seeds import lang_rng
from whisper_npu.decoding.greedy import DecodeConfig, DecodeError, greedy_decode, repeated_tail
from whisper_npu.eval import metrics as M
from whisper_npu.eval import transcripts
from whisper_npu.eval.score import score

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------- fixtures

# A tiny vocabulary laid out like Whisper's: text ids, then EOT, SOT, languages, tasks, notimestamps,
# timestamps. The ids are made up for the test; real ones come from generation_config.json.
V, EOT, SOT, DE, JA, TRANSLATE_ID, TRANSCRIBE_ID, NO_TS = 300, 249, 250, 251, 252, 253, 254, 255


def tiny_generation_config(suppress=(1, 2, 3), begin=(220, EOT)) -> dict:
    return {"decoder_start_token_id": SOT, "eos_token_id": EOT, "pad_token_id": EOT, "bos_token_id": EOT,
            "no_timestamps_token_id": NO_TS, "lang_to_id": {"<|de|>": DE, "<|ja|>": JA},
            "task_to_id": {"transcribe": TRANSCRIBE_ID, "translate": TRANSLATE_ID}, "is_multilingual": True,
            "suppress_tokens": list(suppress), "begin_suppress_tokens": list(begin), "max_length": 64}


def tiny_whisper(seed: int = 0, d_model: int = 16, decoder_layers: int = 1, **generation):
    """A tiny random Whisper whose greedy outputs vary (init_std 0.5), with a Whisper-like generation config
    (``generation``: tiny_generation_config's arguments)."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=V, d_model=d_model, encoder_layers=1, decoder_layers=decoder_layers,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
                        decoder_ffn_dim=2 * d_model, max_source_positions=1500, max_target_positions=64,
                        num_mel_bins=80, init_std=0.5, decoder_start_token_id=SOT, eos_token_id=EOT,
                        pad_token_id=EOT, bos_token_id=EOT)
    model = WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = GenerationConfig(**tiny_generation_config(**generation))
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_whisper()


def features(seed: int) -> np.ndarray:
    """[1, 3000, 80] float32 (the NPU layout)."""
    return np.random.default_rng(seed).standard_normal((1, 3000, 80), dtype=np.float32)


def hf_greedy(model, feats: np.ndarray, language: str, task: str, max_new_tokens: int, **kw) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(torch.from_numpy(np.ascontiguousarray(feats.transpose(0, 2, 1))), language=language,
                             task=task, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **kw)
    ids = out[0].tolist()
    return ids[:-1] if ids and ids[-1] == EOT else ids


class ScriptedSession:
    """A fake decoder: logits[t] favour ``script[t]`` (then EOT); records every step's tokens."""

    def __init__(self, script: list[int], vocab: int = V, second: dict[int, int] | None = None):
        self.script, self.vocab, self.second = script, vocab, second or {}
        self.calls: list[list[int]] = []

    def reset(self, encoder_states: np.ndarray) -> None:
        self.calls = []

    def step(self, tokens):
        self.calls.append(list(tokens))
        t = len(self.calls) - 1
        logits = np.zeros(self.vocab, dtype=np.float32)
        logits[self.script[t] if t < len(self.script) else EOT] = 10.0
        if t in self.second:
            logits[self.second[t]] = 5.0
        return logits


def scripted_cfg(**kw) -> DecodeConfig:
    args = dict(max_new_tokens=50, repeat_times=0)
    args.update(kw)
    return DecodeConfig.from_model(tiny_generation_config(), {"vocab_size": V, "max_target_positions": 64}, **args)


# ------------------------------------------------------------------------------------------- decode loop

TIMESTAMPS = list(range(NO_TS + 1, V))


@pytest.mark.parametrize("language,task,seed", [("de", "transcribe", 1), ("ja", "translate", 2),
                                                ("de", "transcribe", 3), ("ja", "transcribe", 4)])
def test_loop_matches_hf_generate(tiny_model, language, task, seed):
    """Timestamps masked on both sides (HF gets them as extra suppress_tokens): the random model emits
    timestamp tokens, and HF generate reads some of those as segment ends and decodes the window again,
    which is not a greedy loop any more."""
    from whisper_npu.runtimes.torch_ref import TorchBackend

    backend = TorchBackend(tiny_model)
    feats = features(seed)
    cfg = DecodeConfig.from_model(tiny_model.generation_config, tiny_model.config, max_new_tokens=30,
                                  suppress_timestamps=True, repeat_times=0)
    ours, stop = greedy_decode(backend.decoder, backend.encoder(feats), cfg.prompt(language, task), cfg)
    assert ours == hf_greedy(tiny_model, feats, language, task, 30, suppress_tokens=[1, 2, 3] + TIMESTAMPS)
    assert len(set(ours)) > 3, "the tiny model should produce varied tokens, or the test proves little"
    assert not set(ours) & set(TIMESTAMPS)
    assert stop in ("eot", "max_new_tokens")


def test_prompt_ids_come_from_the_generation_config():
    cfg = scripted_cfg()
    assert cfg.prompt("de", "transcribe") == [SOT, DE, TRANSCRIBE_ID, NO_TS]
    assert cfg.prompt("ja", "translate") == [SOT, JA, TRANSLATE_ID, NO_TS]
    with pytest.raises(DecodeError, match="fr"):
        cfg.prompt("fr", "transcribe")
    with pytest.raises(DecodeError, match="missing lang_to_id"):
        DecodeConfig.from_model({**tiny_generation_config(), "lang_to_id": None},
                                {"vocab_size": V, "max_target_positions": 64}, max_new_tokens=5)


def test_prompt_is_fed_first_then_one_token_per_step():
    session = ScriptedSession([10, 11, 12])
    tokens, stop = greedy_decode(session, np.zeros((1, 1500, 16), np.float32), [SOT, DE, TRANSCRIBE_ID, NO_TS],
                                 scripted_cfg())
    assert (tokens, stop) == ([10, 11, 12], "eot")
    assert session.calls == [[SOT, DE, TRANSCRIBE_ID, NO_TS], [10], [11], [12]]


def test_suppressed_tokens_are_never_chosen():
    # Step 0 favours EOT (begin-suppressed) -> runner-up 7; step 1 favours token 2 (suppressed) -> 8;
    # step 2 favours a timestamp -> 9.
    session = ScriptedSession([EOT, 2, NO_TS + 5], second={0: 7, 1: 8, 2: 9})
    tokens, stop = greedy_decode(session, None, [SOT, DE, TRANSCRIBE_ID, NO_TS], scripted_cfg())
    assert tokens == [7, 8, 9] and stop == "eot"
    # Without timestamp suppression the timestamp wins, as in HF generate without timestamps.
    session = ScriptedSession([EOT, 2, NO_TS + 5], second={0: 7, 1: 8, 2: 9})
    tokens, _ = greedy_decode(session, None, [SOT], scripted_cfg(suppress_timestamps=False))
    assert tokens == [7, 8, NO_TS + 5]


def test_stops_at_max_new_tokens_and_at_the_position_limit():
    long_script = list(range(10, 200))
    tokens, stop = greedy_decode(ScriptedSession(long_script), None, [SOT, DE, TRANSCRIBE_ID, NO_TS],
                                 scripted_cfg(max_new_tokens=7))
    assert (len(tokens), stop) == (7, "max_new_tokens")
    session = ScriptedSession(long_script)
    tokens, stop = greedy_decode(session, None, [SOT, DE, TRANSCRIBE_ID, NO_TS], scripted_cfg(max_new_tokens=200))
    assert stop == "max_positions" and 4 + len(tokens) == 64
    # Nothing beyond the last position is ever fed to the decoder.
    assert sum(len(c) for c in session.calls) == 63


def test_repeated_tail_finds_the_shortest_loop():
    assert repeated_tail([1, 2, 3, 3, 3, 3], 8, 4) == 1
    assert repeated_tail([9, 5, 6, 5, 6, 5, 6, 5, 6], 8, 4) == 2
    assert repeated_tail([5, 6, 5, 6, 5, 6], 8, 4) == 0          # three times only
    assert repeated_tail([1, 1, 1, 1], 8, 0) == 0                 # guard off
    assert repeated_tail([1, 2, 3] * 4, 2, 4) == 0                # longer than max n-gram
    rng = random.Random(0)
    for _ in range(300):  # property: a k-fold repeated n-gram at the end is found, as it or a shorter loop
        n, k = rng.randint(1, 5), rng.randint(2, 5)
        seq = [rng.randint(0, 3) for _ in range(rng.randint(0, 5))] + [rng.randint(0, 3) for _ in range(n)] * k
        found = repeated_tail(seq, 8, k)
        assert 1 <= found <= n
        assert seq[len(seq) - found * k:] == seq[len(seq) - found:] * k


def test_repetition_guard_stops_a_loop_and_keeps_one_copy():
    script = [20, 21] + [30, 31] * 30
    tokens, stop = greedy_decode(ScriptedSession(script), None, [SOT], scripted_cfg(repeat_times=4, max_new_tokens=60))
    assert (tokens, stop) == ([20, 21, 30, 31], "repetition")
    # Off: runs to max_new_tokens like HF generate.
    tokens, stop = greedy_decode(ScriptedSession(script), None, [SOT], scripted_cfg(repeat_times=0, max_new_tokens=60))
    assert (len(tokens), stop) == (60, "max_new_tokens")
    # Legitimate short repeats ("no no no") survive.
    tokens, stop = greedy_decode(ScriptedSession([40, 40, 40, 41]), None, [SOT], scripted_cfg(repeat_times=4))
    assert (tokens, stop) == ([40, 40, 40, 41], "eot")


def test_logits_shorter_than_the_vocabulary_are_refused():
    with pytest.raises(DecodeError, match="logits"):
        greedy_decode(ScriptedSession([1], vocab=V - 1), None, [SOT], scripted_cfg())


# ------------------------------------------------------------------------------------------- scoring

def test_wer_cer_on_known_strings():
    # Substitution sat->sit, deletion of "the": 2 edits over 6 reference words.
    assert M.error_rate(["The cat sat on the mat."], ["the cat sit on mat"], "de_de") == pytest.approx(2 / 6)
    assert M.error_rate(["Hallo Welt"], ["hallo, welt!"], "de_de") == 0.0
    # Corpus level: edits and reference words summed over clips (1 + 0 edits over 2 + 3 words).
    assert M.error_rate(["a b", "c d e"], ["a x", "c d e"], "de_de") == pytest.approx(1 / 5)
    # CER without spaces: one substituted character out of six.
    assert M.unit("cmn_hans_cn") == "cer"
    assert M.error_rate(["今天天气很好"], ["今天天汽很好"], "cmn_hans_cn") == pytest.approx(1 / 6)
    assert M.error_rate(["今天 天气很好。"], ["今天天气很好"], "cmn_hans_cn") == 0.0
    assert M.error_rate([], [], "de_de") is None


def test_units_follow_the_language_table():
    from whisper_npu.core import languages as langs

    for code, lang in langs.LANGUAGES.items():
        assert M.unit(code) == ("cer" if lang.cer else "wer")
    assert {M.unit(c) for c in ("ja_jp", "th_th", "cmn_hans_cn")} == {"cer"}


def test_normalizer_per_language():
    assert M.normalizer_name("en_us") == M.ENGLISH_NORMALIZER
    assert M.normalizer_name("de_de") == M.BASIC_NORMALIZER
    # English: spelled-out titles and contractions (EnglishTextNormalizer); others: case + punctuation only.
    assert M.normalize("Mr. Smith isn't here.", "en_us") == "mister smith is not here"
    assert M.normalize("Mr. Smith isn't here.", "de_de") == "mr smith isn t here"
    assert M.error_rate(["Mr. Smith isn't here."], ["mister smith is not here"], "en_us") == 0.0


def test_edit_distance_properties():
    rng = random.Random(1)
    for _ in range(100):
        a = [rng.randint(0, 4) for _ in range(rng.randint(0, 8))]
        b = [rng.randint(0, 4) for _ in range(rng.randint(0, 8))]
        c = [rng.randint(0, 4) for _ in range(rng.randint(0, 8))]
        d = M.edit_distance(a, b)
        assert d == M.edit_distance(b, a)
        assert abs(len(a) - len(b)) <= d <= max(len(a), len(b))
        assert M.edit_distance(a, c) <= d + M.edit_distance(b, c)
        assert M.edit_distance(a, a) == 0


def test_bleu_on_known_strings():
    ref = "today the weather is nice and we are going to the park"
    assert M.bleu([ref], [ref]) == pytest.approx(100.0)
    assert M.bleu(["completely different words here"], [ref]) < 5
    partial = M.bleu(["today the weather is nice and we go to a park"], [ref])
    assert 5 < partial < 100
    assert M.bleu([], []) is None


def test_agreement():
    a = M.agreement(["Hoy hace sol.", "Vamos al parque"], ["hoy hace sol", "vamos al pueblo"], "es_419")
    assert a == {"exact_match": 0.5, "wer": pytest.approx(1 / 6)}
    assert M.agreement(["", ""], ["", ""], "es_419") == {"exact_match": 1.0, "wer": 0.0}


def test_sdi_counts_come_from_the_alignment():
    # "the cat sat on the mat" -> "the cat sit on mat mat": sat->sit (S), "the" deleted... jiwer aligns
    # the minimum edit script; S + D + I is the Levenshtein distance either way.
    e = M.clip_errors("The cat sat on the mat.", "the cat sit on the mat mat", "de_de")
    assert (e.substitutions, e.deletions, e.insertions, e.ref_units) == (1, 0, 1, 6)
    e = M.clip_errors("a b c d", "a d", "de_de")
    assert (e.substitutions, e.deletions, e.insertions) == (0, 2, 0)
    e = M.clip_errors("", "extra words", "de_de")
    assert (e.insertions, e.ref_units, e.rate) == (2, 0, None)
    rng = random.Random(3)
    for _ in range(50):
        a = " ".join(rng.choice("wxyz") for _ in range(rng.randint(1, 8)))
        b = " ".join(rng.choice("wxyz") for _ in range(rng.randint(0, 8)))
        assert M.clip_errors(a, b, "de_de").edits == M.edit_distance(a.split(), b.split())


def test_diacritics_are_ignored_only_where_the_source_has_none():
    ref, hyp = "Opcion invalida, numero", "Opción inválida, número"
    assert M.error_rate([ref], [hyp], "es_419") == 1.0
    assert M.error_rate([ref], [hyp], "es_419", diacritics=False) == 0.0
    assert M.strip_diacritics("Ça coûte été") == "Ca coute ete"


def _counts(pairs):
    """ErrorCount per clip from (edits, units) pairs."""
    return [M.ErrorCount(e, 0, 0, n) for e, n in pairs]


def test_bootstrap_is_deterministic_with_the_seed_and_paired():
    base = _counts([(1, 10), (0, 8), (2, 12), (0, 9)] * 5)
    other = _counts([(2, 10), (0, 8), (3, 12), (1, 9)] * 5)
    a = M.bootstrap_rate_delta(base, other, 500, lang_rng(0, "en_us", "transcribe"))
    b = M.bootstrap_rate_delta(base, other, 500, lang_rng(0, "en_us", "transcribe"))
    c = M.bootstrap_rate_delta(base, other, 500, lang_rng(1, "en_us", "transcribe"))
    assert a == b and a != c
    # every clip is one edit worse or equal: every resample's delta is > 0, so the interval is too
    assert 0 < a["low"] <= 15 / 195 <= a["high"]
    # identical systems: a point interval at 0 (pairing removes the clips' own spread)
    assert M.bootstrap_rate_delta(base, base, 200, lang_rng(0, "x", "y")) == {"low": 0.0, "high": 0.0}
    assert M.bootstrap_rate_delta([], [], 100, lang_rng(0, "x", "y")) is None


def test_bleu_bootstrap():
    refs = ["the weather is nice today", "we go to the park", "it is a good day"] * 4
    worse = [r.replace("park", "forest").replace("nice", "bad") for r in refs]
    ci = M.bootstrap_bleu_delta(refs, worse, refs, 200, lang_rng(0, "de_de", "translate"))
    assert ci["high"] < 0
    assert M.bootstrap_bleu_delta([], [], [], 100, lang_rng(0, "de_de", "translate")) is None


def test_verdict_logic_on_constructed_intervals():
    v = M.verdict
    assert v({"low": -0.02, "high": 0.05}, 0.10, 30, 10) == "pass"
    assert v({"low": 0.0, "high": 0.10}, 0.10, 30, 10) == "pass"             # at the budget passes
    assert v({"low": 0.12, "high": 0.30}, 0.10, 30, 10) == "fail"
    assert v({"low": 0.05, "high": 0.15}, 0.10, 30, 10) == "inconclusive"   # straddles the budget
    assert v({"low": -0.02, "high": 0.05}, 0.10, 2, 10) == "inconclusive"   # too few clips to decide
    assert v(None, 0.10, 30, 10) == "unscored"


def test_constructed_runs_give_each_verdict():
    """score() end to end on constructed decode records: one language clearly within budget, one clearly
    over, one that straddles it."""
    p = section("score", max_wer_increase=0.10, bootstrap_samples=500, min_verdict_clips=10)
    ref = "one two three four five six seven eight nine ten"
    clips, records = [], []
    plan = {"de_de": [0] * 30,                      # compiled identical: pass
            "fr_fr": [5] * 30,                      # five of ten words wrong everywhere: fail
            "it_it": [0] * 27 + [10] * 3}           # three clips fully wrong: delta 0.1, straddles
    for lang, wrong in plan.items():
        for i, k in enumerate(wrong):
            cid = f"{lang}_{i:04d}"
            clips.append(A.Clip(cid, lang, Path("x.wav"), 3.0, ref, None, "asterisk"))
            hyp = " ".join(w if j >= k else "x" for j, w in enumerate(ref.split()))
            for system, text in (("fp32", ref), ("compiled", hyp)):
                records.append({"system": system, "id": cid, "task": "transcribe", "lang": lang, "text": text,
                                "tokens": [len(text)], "stop": "eot", "seconds": 0.1})
    m = score(records, clips, p, seed=0)
    assert {k: e["verdict"] for k, e in m["languages"].items()} == \
        {"de_de": "pass", "fr_fr": "fail", "it_it": "inconclusive"}
    assert m["budget"]["verdict"] == "fail" and m["budget"]["fail"] == "fr_fr"
    assert m["budget"]["counts"]["real"] == {"pass": 1, "fail": 1, "inconclusive": 1, "unscored": 0,
                                             "not_checked": 0}
    assert m["languages"]["fr_fr"]["compiled"]["substitutions"] == 150
    assert score(records, clips, p, seed=0) == m       # seeded: the same metrics twice


# ------------------------------------------------------------------------------------------- metrics files

def synthetic_run():
    """Clips and decode records for two languages without a model (for shape tests)."""
    en = "Hello world, today the weather is nice and we go to the park"
    clips = [A.Clip("de_1", "de_de", Path("x.wav"), 2.0, "Hallo Welt", en, "synth"),
             A.Clip("de_2", "de_de", Path("y.wav"), 3.0, "Guten Morgen", None, "synth"),
             A.Clip("ja_1", "ja_jp", Path("z.wav"), 5.0, "今日は", "Today", "synth")]
    texts = {("fp32", "de_1", "transcribe"): "hallo welt", ("compiled", "de_1", "transcribe"): "hallo wald",
             ("fp32", "de_1", "translate"): en, ("compiled", "de_1", "translate"): en.replace("park", "forest"),
             ("fp32", "de_2", "transcribe"): "guten morgen", ("compiled", "de_2", "transcribe"): "guten morgen",
             ("fp32", "ja_1", "transcribe"): "今日は", ("compiled", "ja_1", "transcribe"): "今日わ",
             ("fp32", "ja_1", "translate"): "Today", ("compiled", "ja_1", "translate"): "Today"}
    records = [{"system": s, "id": i, "task": t, "lang": i[:2] + ("_de" if i.startswith("de") else "_jp"),
                "text": x, "tokens": [len(x)], "stop": "eot", "seconds": 0.5} for (s, i, t), x in texts.items()]
    records[-1]["stop"] = "max_new_tokens"      # compiled ja_1 translate: cut by the cap
    return clips, records


PARAMS = section("score", min_verdict_clips=1, bootstrap_samples=200)


def test_metrics_shape_and_values():
    clips, records = synthetic_run()
    m = score(records, clips, PARAMS, seed=0)
    de, ja = m["languages"]["de_de"], m["languages"]["ja_jp"]
    assert de["unit"] == "wer" and ja["unit"] == "cer" and de["speech"] == "synthetic"
    assert de["fp32"]["wer"] == 0.0 and de["compiled"]["wer"] == pytest.approx(0.25)
    assert (de["compiled"]["substitutions"], de["compiled"]["deletions"], de["compiled"]["insertions"]) == (1, 0, 0)
    assert de["compiled"]["reference_units"] == 4
    assert de["delta"]["wer"] == pytest.approx(0.25)
    # the two clips resampled: delta 0 (de_2 twice), 0.5 (de_1 twice) or 0.25; the interval spans them
    assert de["ci95"]["transcribe"] == {"low": 0.0, "high": 0.5} and de["verdict"] == "inconclusive"
    assert de["ci95"]["translate"]["high"] < 0 and ja["ci95"]["translate"] == {"low": 0.0, "high": 0.0}
    assert ja["compiled"]["cer"] == pytest.approx(1 / 3) and ja["verdict"] == "fail"
    assert de["fp32"]["rtf"] == pytest.approx(2 * 0.5 / 5.0)       # transcribe seconds / audio seconds
    assert de["agreement"]["exact_match"] == 0.5
    assert de["fp32"]["bleu"] > de["compiled"]["bleu"]
    assert ja["compiled"]["stops"] == {"eot": 1, "max_new_tokens": 1, "max_positions": 0, "repetition": 0}
    assert ja["compiled"]["cut_by_cap"] == 1 and m["overall"]["compiled"]["cut_by_cap"] == 1
    assert m["budget"]["verdict"] == "fail" and m["budget"]["fail"] == "ja_jp"
    assert m["budget"]["counts"]["synthetic"]["inconclusive"] == 1
    # WER and CER languages summarised apart, never one mean across both
    assert set(m["summary"]) == {"wer", "cer"}
    assert m["summary"]["wer"]["synthetic"]["languages"] == "de_de"
    assert m["summary"]["cer"]["synthetic"]["compiled"] == pytest.approx(1 / 3, abs=1e-6)
    assert "error_rate" not in json.dumps(m["overall"])
    # Everything dvc metrics can show is plain JSON.
    json.dumps(m)
    msg = score_stage.budget_failure(m)
    assert "ja_jp +0.333" in msg and "95 % CI" in msg and "score.strict" in msg and "de_de" not in msg


def test_metrics_without_a_compiled_run():
    clips, records = synthetic_run()
    m = score([r for r in records if r["system"] == "fp32"], clips, PARAMS, seed=0, compiled_run=False)
    assert m["budget"]["verdict"] == "not_checked"
    assert {e["verdict"] for e in m["languages"].values()} == {"not_checked"}
    assert m["languages"]["de_de"]["compiled"] is None and m["languages"]["de_de"]["fp32"]["wer"] == 0.0
    wer_rows, _ = score_stage.plot_rows(m)
    assert wer_rows[0] == {"language": "de_de", "unit": "wer", "fp32": 0.0, "compiled": None}
    assert score_stage.budget_failure(m) is None


def test_plot_rows_shape():
    clips, records = synthetic_run()
    wer_rows, bleu_rows = score_stage.plot_rows(score(records, clips, PARAMS, 0))
    assert [r["language"] for r in wer_rows] == ["de_de", "ja_jp"]
    assert set(wer_rows[0]) == {"language", "unit", "fp32", "compiled"}
    assert all(isinstance(r["fp32"], float) and isinstance(r["compiled"], float) for r in wer_rows + bleu_rows)
    assert [r["language"] for r in bleu_rows] == ["de_de", "ja_jp"]


def test_transcripts_are_sorted_and_carry_references():
    clips, records = synthetic_run()
    rows = transcripts.merged(list(reversed(records)), clips)
    assert [(r["lang"], r["id"], r["task"], r["system"]) for r in rows] == \
        sorted((r["lang"], r["id"], r["task"], r["system"]) for r in rows)
    assert all("seconds" not in r for r in rows)
    assert {r["reference"] for r in rows if r["id"] == "de_1" and r["task"] == "translate"} == {clips[0].text_en}


def test_transcript_files_round_trip_what_scoring_needs(tmp_path):
    """A transcription stage's file carries every fact scoring reads (references, durations, sources,
    diacritics); its timings live in their own file. Reading both back scores exactly like the originals."""
    clips, records = synthetic_run()
    for system in ("fp32", "compiled"):
        recs = [r for r in records if r["system"] == system]
        transcripts.write(tmp_path / f"{system}.jsonl", recs, clips)
        transcripts.write_timings(tmp_path / f"{system}.timing.json", recs)
        assert "seconds" not in (tmp_path / f"{system}.jsonl").read_text()
    back, back_clips = [], None
    for system in ("fp32", "compiled"):
        recs, back_clips = transcripts.read(tmp_path / f"{system}.jsonl", tmp_path / f"{system}.timing.json")
        back += recs
    assert [c.tasks() for c in back_clips] == [c.tasks() for c in sorted(clips, key=lambda c: (c.lang, c.id))]
    assert score(back, back_clips, PARAMS, 0) == score(records, clips, PARAMS, 0)


# ------------------------------------------------------------------------------------------- stage main

class StubTokenizer:
    def decode(self, tokens, skip_special_tokens=True):
        return " ".join(f"w{t}" for t in tokens)


class BrokenBackend:
    """A 'compiled' model that always says one word: far outside any budget."""
    name = "broken"

    def __init__(self):
        self.encoder = lambda feats: np.zeros((1, 1500, 16), np.float32)
        self.decoder = ScriptedSession([5])

    def close(self) -> None:
        pass


def write_audio(root: Path, langs_: list[str], n_eval: int = 1) -> None:
    """The audio stage's layout: one calibration clip and ``n_eval`` evaluation clips per language, in
    <root>/calibration/<lang>/ and <root>/evaluation/<lang>/."""
    rng = np.random.default_rng(0)
    for lang in langs_:
        ids = {"calibration": [f"{lang}_0000"], "evaluation": [f"{lang}_eval_{i:04d}" for i in range(n_eval)]}
        for split, names in ids.items():
            folder = root / split / lang
            folder.mkdir(parents=True)
            rows = []
            for cid in names:
                sf.write(folder / f"{cid}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
                rows.append({"id": cid, "file": f"{cid}.wav", "lang": lang, "split": split, "duration": 1.0,
                             "text": "placeholder", "text_en": "placeholder" if lang != "en_us" else None,
                             "source": "test"})
            (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def stage_run(tmp_path, tiny_model, monkeypatch):
    """The three evaluation stages' mains on tmp_path: transcribe_fp32 with the tiny model, transcribe_compiled with a
    broken 'compiled' model, score. References are set to the fp32 output, so fp32 scores 0 and the compiled model
    is over budget."""
    import yaml
    from transformers import WhisperFeatureExtractor

    from whisper_npu.audio.features import npu_features
    from whisper_npu.audio.prepare import read_wav
    from whisper_npu.runtimes import torch_ref

    # The tiny model knows de and ja only.
    tiny_model.generation_config.lang_to_id = {"<|de|>": DE, "<|ja|>": JA}
    processor = types.SimpleNamespace(feature_extractor=WhisperFeatureExtractor(), tokenizer=StubTokenizer())
    write_audio(tmp_path / "audio", ["de_de", "ja_jp"])
    fp32 = torch_ref.TorchBackend(tiny_model)
    cfg = DecodeConfig.from_params(tiny_model.generation_config, tiny_model.config,
                                   section("transcribe", max_new_tokens=96))
    for lang in ("de_de", "ja_jp"):
        manifest = tmp_path / "audio" / "evaluation" / lang / "manifest.jsonl"
        rows = [json.loads(x) for x in manifest.read_text().splitlines()]
        for r in rows:
            feats = npu_features(processor.feature_extractor, read_wav(manifest.parent / r["file"]))
            wl = lang[:2]
            r["text"] = StubTokenizer().decode(greedy_decode(fp32.decoder, fp32.encoder(feats),
                                                             cfg.prompt(wl, "transcribe"), cfg)[0])
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(torch_ref, "load_torch_backend", lambda model_dir, device="cpu": (fp32, processor))
    monkeypatch.setattr(transcribe_compiled, "load_compiled", lambda enc, dec, config, npu: BrokenBackend())
    monkeypatch.setattr(transcribe_compiled, "compiled_backend_name", lambda enc, dec: "onnxruntime")
    monkeypatch.setattr(transcribe_compiled, "load_configs",
                        lambda model_dir: (tiny_model.config, tiny_model.generation_config))
    monkeypatch.setattr(transcribe_compiled, "load_processor", lambda model_dir: processor)
    for d in ("enc", "dec", "model/hf"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "enc" / "m.onnx").write_bytes(b"x" * 10)
    (tmp_path / "dec" / "embed_tokens.npy").write_bytes(b"x" * 6)
    (tmp_path / "dec" / "provenance.json").write_text("{}")
    (tmp_path / "model" / "hf" / "model.safetensors").write_bytes(b"x" * 40)
    params = tmp_path / "params.yaml"
    # one clip per language: let a single clip decide, to reach a fail verdict
    params.write_text(yaml.safe_dump(params_with({"languages": ["de_de", "ja_jp"], "transcribe": {"max_new_tokens": 96},
                                                  "score": {"min_verdict_clips": 1}})))
    work = tmp_path / "work"
    common = ["--params", str(params), "--model", str(tmp_path / "model")]
    for lang in ("de_de", "ja_jp"):
        transcribe_fp32.main(common + ["--lang", lang, "--audio", str(tmp_path / "audio" / "evaluation" / lang),
                                       "--out", str(work / "fp32" / f"{lang}.jsonl"),
                                       "--timing", str(work / "fp32" / f"{lang}.timing.json")])

    def compiled() -> None:
        transcribe_compiled.main(common + ["--encoder", str(tmp_path / "enc"), "--decoder", str(tmp_path / "dec"),
                                           "--audio", str(tmp_path / "audio"), "--out", str(work / "compiled"),
                                           "--timing", str(work / "compiled.timing.json")])

    def run(strict: bool) -> Path:
        data = yaml.safe_load(params.read_text())
        data["score"]["strict"] = strict
        params.write_text(yaml.safe_dump(data))
        if not (work / "compiled").exists():
            compiled()
        out = tmp_path / "out"
        score_stage.main(["--params", str(params), "--fp32", str(work / "fp32"), "--compiled", str(work / "compiled"),
                          "--compiled-timing", str(work / "compiled.timing.json"),
                          "--metrics", str(out / "metrics.json"), "--wer-plot", str(out / "wer.json"),
                          "--bleu-plot", str(out / "bleu.json"), "--transcripts", str(out / "transcripts.jsonl")])
        return out
    run.work = work
    return run


def test_main_reports_budget_failure_without_failing(stage_run):
    out = stage_run(strict=False)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["languages"]) == {"de_de", "ja_jp"}
    assert m["languages"]["de_de"]["fp32"]["wer"] == 0.0 and m["languages"]["ja_jp"]["fp32"]["cer"] == 0.0
    assert m["languages"]["de_de"]["compiled"]["wer"] > 0.5
    assert m["budget"]["verdict"] == "fail" and m["budget"]["fail"] == "de_de,ja_jp"
    assert m["compiled_run"] == {"status": "run", "reason": None}
    assert m["backends"] == {"fp32": "torch", "compiled": "broken"}
    assert m["compiled_device"] is None   # a backend that does not say (the ORT and .mxq backends do)
    assert m["sizes"] == {"fp32_bytes": 40, "compiled_model_bytes": 10, "embedding_table_bytes": 6,
                          "compiled_bytes": 16, "compression": 2.5}
    assert m["normalizer"] == {"en": M.ENGLISH_NORMALIZER, "other": M.BASIC_NORMALIZER}
    assert m["languages"]["de_de"]["fp32"]["rtf"] > 0   # from the timing files
    # where each system ran: this machine's CPU and the extensions that pick its kernels
    from whisper_npu.core.machine import cpu
    assert m["machines"] == {"fp32": {"device": "cpu", "cpu": cpu()}, "compiled": {"device": "cpu", "cpu": cpu()}}
    assert "avx2" in cpu()["isa"] and cpu()["model"]
    rows = [json.loads(x) for x in (out / "transcripts.jsonl").read_text().splitlines()]
    # Only evaluation clips (ids ..._eval_0000), never the calibration clip (..._0000); both tasks, both systems.
    assert {r["id"] for r in rows} == {"de_de_eval_0000", "ja_jp_eval_0000"}
    assert len(rows) == 2 * 2 * 2
    assert set(rows[0]) == set(transcripts.TRANSCRIPT_KEYS)
    wer = json.loads((out / "wer.json").read_text())
    assert [r["language"] for r in wer] == ["de_de", "ja_jp"] and wer[0]["fp32"] == 0.0
    # the stage transcripts hold no wall-clock figure: they are reproducible
    for f in (stage_run.work / "fp32" / "de_de.jsonl", stage_run.work / "compiled" / "de_de.jsonl"):
        assert "seconds" not in f.read_text()


def test_main_scores_fp32_when_the_compiled_model_cannot_run_here(stage_run, monkeypatch):
    """The contract with the runtimes: load_compiled raising CompiledNotRunnable (a stand-in for .mxq files on
    a host without Mobilint's runtime) is recorded in run.json, fp32 is still scored, no budget is checked."""
    from whisper_npu.artifacts import CompiledNotRunnable

    device = {"runtime": None, "target_device": "aries-rb", "encoder": {"dev_no": 0, "core_mode": "single",
                                                                        "cores": [[0, 0]]}}

    def not_runnable(enc, dec, config, npu):
        raise CompiledNotRunnable("compiled/decoder: mobilint runtime (maccel) is not installed", device)
    monkeypatch.setattr(transcribe_compiled, "load_compiled", not_runnable)
    out = stage_run(strict=True)   # strict: even so no failure, nothing was checked
    assert sorted(p.name for p in (stage_run.work / "compiled").iterdir()) == ["run.json"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["compiled_run"] == {"status": "not_run",
                                 "reason": "compiled/decoder: mobilint runtime (maccel) is not installed"}
    assert m["compiled_device"] == device   # where it was asked to run
    assert m["budget"]["verdict"] == "not_checked"
    assert m["compiled_device"] == device   # where it was asked to run
    assert {e["verdict"] for e in m["languages"].values()} == {"not_checked"}
    assert m["languages"]["de_de"]["fp32"]["wer"] == 0.0
    wer = json.loads((out / "wer.json").read_text())
    assert [r["compiled"] for r in wer] == [None, None] and [r["fp32"] for r in wer] == [0.0, 0.0]
    rows = [json.loads(x) for x in (out / "transcripts.jsonl").read_text().splitlines()]
    assert {r["system"] for r in rows} == {"fp32"}
    from whisper_npu.eval.report import table
    assert "not run: compiled/decoder" in table(m)


def test_main_strict_fails_naming_languages_and_leaves_no_outputs(stage_run):
    out = stage_run(strict=False)
    assert (out / "metrics.json").is_file()
    with pytest.raises(StageError, match=r"de_de \+.*ja_jp"):
        stage_run(strict=True)
    # Nothing DVC could take for a finished run, not even the previous run's files.
    assert not any(out.iterdir())


def test_read_clips_reads_only_listed_languages_and_evaluation_split(tmp_path):
    write_audio(tmp_path, ["de_de", "ja_jp", "fr_fr"], n_eval=2)
    clips = A.read_clips(tmp_path, ["ja_jp", "de_de"], "evaluation")
    assert [c.id for c in clips] == ["de_de_eval_0000", "de_de_eval_0001", "ja_jp_eval_0000", "ja_jp_eval_0001"]
    with pytest.raises(StageError, match="audio@ko_kr"):
        A.read_clips(tmp_path, ["ko_kr"], "evaluation")
    assert A.Clip("a", "en_us", Path("a"), 1.0, "x", "x").tasks() == ["transcribe"]
    assert A.Clip("a", "de_de", Path("a"), 1.0, "x", None).tasks() == ["transcribe"]
    assert A.Clip("a", "de_de", Path("a"), 1.0, None, "y").tasks() == ["transcribe", "translate"]


def test_compiled_backend_from_provenance(tmp_path):
    for d in ("enc", "dec"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "provenance.json").write_text(json.dumps({"backend": "onnxruntime"}))
    from whisper_npu.artifacts import compiled_backend_name

    assert compiled_backend_name(tmp_path / "enc", tmp_path / "dec") == "onnxruntime"
    (tmp_path / "dec" / "provenance.json").write_text(json.dumps({"backend": "qbcompiler"}))
    with pytest.raises(StageError, match="different backends"):
        compiled_backend_name(tmp_path / "enc", tmp_path / "dec")


# ------------------------------------------------------------------------------------------- MXQ backend

def test_mxq_backend_refuses_clearly_without_the_runtime(tmp_path, monkeypatch):
    from whisper_npu.runtimes.mobilint import runtime as mxq_runtime

    for name in mxq_runtime.RUNTIME_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # import fails even where the runtime exists
    with pytest.raises(mxq_runtime.RuntimeUnavailable, match="qbruntime"):
        mxq_runtime.import_runtime()
    # Refused before any file is read (the folders do not even exist).
    with pytest.raises(mxq_runtime.RuntimeUnavailable, match="compile.backend=onnxruntime"):
        mxq_runtime.load_mxq_backend(tmp_path / "nope", tmp_path / "nope", None, None, None)
    calls = {"resolved": {"calls": {"mxq_compile": {"inference_scheme": "all", "target_device": "aries-rb"}}}}
    for d in ("enc", "dec"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "provenance.json").write_text(json.dumps({"backend": "qbcompiler", **calls}))
    from whisper_npu.runtimes.registry import load_compiled

    with pytest.raises(StageError, match="Mobilint's runtime"):
        load_compiled(tmp_path / "enc", tmp_path / "dec", None, section("npu"))


# The .mxq runner's call protocol is tested against the real qbruntime/maccel wheels and a stand-in built
# from qbruntime's method set in tests/test_mxq_runtime.py (the fake that was here encoded the
# reset_cache_memory() call qbruntime 1.x no longer has).


# ------------------------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_loop_matches_hf_generate_on_real_whisper(reference_model_dir, tmp_path):
    """whisper-base on espeak-ng speech: the torch backend + our loop = HF greedy generate, token for token."""
    import subprocess

    import librosa
    import torch

    from whisper_npu.audio.features import npu_features
    from whisper_npu.runtimes.torch_ref import load_torch_backend

    backend, processor = load_torch_backend(reference_model_dir)
    model = backend.model
    wav = tmp_path / "es.wav"
    subprocess.run(["espeak-ng", "-v", "es-419", "-w", str(wav), "Hoy hace buen tiempo y vamos al parque."],
                   check=True)
    y, sr = sf.read(wav, dtype="float32")
    feats = npu_features(processor.feature_extractor, librosa.resample(y, orig_sr=sr, target_sr=16000))
    cfg = DecodeConfig.from_model(model.generation_config, model.config, max_new_tokens=40, repeat_times=0,
                                  suppress_timestamps=False)
    eot = cfg.eot
    for task in ("transcribe", "translate"):
        ours, stop = greedy_decode(backend.decoder, backend.encoder(feats), cfg.prompt("es", task), cfg)
        with torch.inference_mode():
            hf = model.generate(torch.from_numpy(np.ascontiguousarray(feats.transpose(0, 2, 1))), language="es",
                                task=task, max_new_tokens=40, do_sample=False, num_beams=1)[0].tolist()
        assert ours == [t for t in hf if t != eot] and stop == "eot"
        if task == "transcribe":
            assert "parque" in processor.tokenizer.decode(ours, skip_special_tokens=True)


def write_metric_fixture(repo: Path) -> dict:
    clips, records = synthetic_run()
    m = score(records, clips, PARAMS, 0)
    wer_rows, bleu_rows = score_stage.plot_rows(m)
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "plots").mkdir(exist_ok=True)
    (repo / "metrics" / "evaluate.json").write_text(json.dumps(m))
    (repo / "plots" / "wer.json").write_text(json.dumps(wer_rows))
    (repo / "plots" / "bleu.json").write_text(json.dumps(bleu_rows))
    return m


@pytest.mark.slow
def test_dvc_metrics_and_plots_render(project):
    from conftest import run

    repo = project()  # the copy carries .dvc/plots, DVC's template folder (the grouped-bar template)
    write_metric_fixture(repo)
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    (workspace,) = shown.values()   # keyed "workspace" or "" depending on the git state
    data = workspace["data"]["metrics/evaluate.json"]["data"]
    assert data["languages"]["de_de"]["fp32"]["wer"] == 0.0
    assert data["languages"]["ja_jp"]["compiled"]["cer"] == pytest.approx(1 / 3, abs=1e-6)
    run(["dvc", "plots", "show", "-o", "report"], repo)
    html = (repo / "report" / "index.html").read_text()
    assert "WER or CER per language (fp32 vs compiled)" in html
    assert "Translation BLEU per language (fp32 vs compiled)" in html
    assert "de_de" in html and "compiled" in html
    # the compiled model not run here: compiled is null in every row, and the plots still render
    clips, records = synthetic_run()
    m = score([r for r in records if r["system"] == "fp32"], clips, PARAMS, 0, compiled_run=False)
    wer_rows, bleu_rows = score_stage.plot_rows(m)
    (repo / "plots" / "wer.json").write_text(json.dumps(wer_rows))
    (repo / "plots" / "bleu.json").write_text(json.dumps(bleu_rows))
    run(["dvc", "plots", "show", "-o", "report-not-run"], repo)
    assert "de_de" in (repo / "report-not-run" / "index.html").read_text()


@pytest.mark.slow
def test_pipeline_end_to_end_with_a_tiny_model(tiny_pipeline, tmp_path):
    """The tests' tiny pipeline (its full `dvc repro` is the conftest fixture: the tiny random model as a local
    folder, es_419 synthetic, en_us real speech from the Asterisk packages fetched by the audio stage into an empty
    cache), then `dvc metrics show`, `dvc plots show` and `dvc status` on a copy. Numbers from a random model are
    meaningless; the test checks that every stage connects, the real-speech source reaches the metrics, and the
    metrics/plots are where DVC looks for them."""
    from conftest import TINY_REAL_ENGLISH, assert_status_clean, copy_project, run

    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    m = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert set(m["languages"]) == {"es_419", "en_us"} and m["backends"]["compiled"].startswith("onnxruntime")
    es, en = m["languages"]["es_419"], m["languages"]["en_us"]
    assert (es["clips"], es["speech"], es["source"]) == (1, "synthetic", "synth")
    assert (en["clips"], en["speech"], en["source"]) == (TINY_REAL_ENGLISH["eval_clips"], "real", "asterisk")
    assert es["verdict"] == "inconclusive"                    # one clip < min_verdict_clips
    assert set(m["budget"]["counts"]) == {"real", "synthetic"}
    assert m["compiled_run"] == {"status": "run", "reason": None}
    assert m["sizes"]["compiled_bytes"] > 0 and m["sizes"]["fp32_bytes"] > 0
    cache = Path(yaml.safe_load((repo / "params.yaml").read_text())["audio"]["asterisk"]["cache"])
    assert any(cache.glob("asterisk-core-sounds-en-wav_*.deb"))   # fetched by the stage
    manifest = (repo / "data" / "audio" / "evaluation" / "en_us" / "manifest.jsonl").read_text()
    assert '"license": "CC-BY-SA-3.0"' in manifest and str(cache) not in manifest and str(tiny_pipeline) not in manifest
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo).stdout)
    (workspace,) = shown.values()
    data = workspace["data"]["metrics/evaluate.json"]["data"]
    assert "substitutions" in data["languages"]["en_us"]["fp32"] and "ci95" in data["languages"]["en_us"]
    run(["dvc", "plots", "show", "-o", "report"], repo)
    html = (repo / "report" / "index.html").read_text()
    assert "WER or CER per language" in html and "en_us" in html
    assert_status_clean(repo)


def test_report_table_lists_every_language_the_summaries_and_the_verdicts():
    from whisper_npu.eval.report import table

    clips, records = synthetic_run()
    metrics = score(records, clips, PARAMS, 0)
    metrics["backends"] = {"fp32": "torch", "compiled": "onnxruntime-dynamic"}
    text = table(metrics)
    for lang in metrics["languages"]:
        assert f"| {lang} | synthetic |" in text
    assert "| wer | synthetic | 1 | 2 |" in text and "| cer | synthetic | 1 | 1 |" in text
    assert "+0.000..+0.500 | inconclusive" in text
    assert "verdict fail" in text and "synthetic: 1 fail, 1 inconclusive" in text


def test_normalizers_are_whispers_own_without_importing_torch():
    """The score stage loads openai-whisper's normalizers from their files (no ``whisper/__init__``: torch, numba):
    same text out as ``whisper.normalizers``, and a fresh interpreter that scores never imports torch."""
    import subprocess
    import sys

    from whisper.normalizers import BasicTextNormalizer, EnglishTextNormalizer

    from whisper_npu.eval.metrics import normalize

    for text in ("Hello, Mr. Smith! It's 20 dollars, isn't it?", "colour  1st 2nd"):
        assert normalize(text, "en_us") == " ".join(EnglishTextNormalizer()(text).split())
    assert (normalize("¡Opción inválida, señor!", "es_419")
            == " ".join(BasicTextNormalizer()("¡Opción inválida, señor!").split()))
    code = ("import sys; from whisper_npu.eval.metrics import normalize; normalize('Mr. Smith', 'en_us'); "
            "normalize('¡Hola!', 'es_419'); "
            "print(sorted(m for m in ('torch', 'whisper', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
