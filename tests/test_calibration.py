"""Calibration stages: the tutorial's file formats, exact task mix, determinism, the tutorial's defects fixed."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, default_params, params_with, run

from stages import calibrate_decoder as dec_stage
from stages import calibrate_encoder as enc_stage
from whisper_npu import specs
from whisper_npu.audio import clips as A_clips
from whisper_npu.audio.features import npu_features
from whisper_npu.audio.prepare import read_wav
from whisper_npu.calibration import lists
from whisper_npu.calibration import sequences as cal
from whisper_npu.calibration import sets as calib_sets
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import sha256_tree
from whisper_npu.core.languages import TRANSLATE

LANGS = ["ta_in", "ko_kr", "en_us"]   # Tamil: the language the tutorial's map left out


# ---------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def store(tiny_model_dir) -> Path:
    """A model store with tiny random weights and the real Whisper tokenizer and generation config."""
    return Path(tiny_model_dir)


def make_audio(root: Path, langs=LANGS, n_calib: int = 4, n_eval: int = 1, labels: Path | None = None) -> Path:
    """The audio stage's layout: data/audio/<split>/<lang>/<id>.wav + manifest.jsonl (rows out of order on
    purpose); calibration ids <lang>_0000.., evaluation ids <lang>_eval_0000.."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    for lang in langs:
        rows = []
        for i in range(n_calib + n_eval):
            split = "calibration" if i < n_calib else "evaluation"
            cid = f"{lang}_{i:04d}" if i < n_calib else f"{lang}_eval_{i - n_calib:04d}"
            folder = root / split / lang
            folder.mkdir(parents=True, exist_ok=True)
            t = np.arange(16000 * (1 + i % 3)) / 16000
            audio = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)
                     + 0.05 * rng.standard_normal(t.size)).astype("float32")
            sf.write(folder / f"{cid}.wav", audio, 16000, subtype="PCM_16")
            text = {"ko_kr": f"안녕하세요 {i}번", "ta_in": f"வணக்கம் {i}"}.get(lang, f"Hello number {i}.")
            rows.append({"id": cid, "file": f"{cid}.wav", "lang": lang, "duration": t.size / 16000,
                         "split": split, "text": text, "text_en": f"Hello number {i}.", "source": "synth"})
        for split in ("calibration", "evaluation"):
            (root / split / lang).mkdir(parents=True, exist_ok=True)
            (root / split / lang / "manifest.jsonl").write_text("".join(
                json.dumps(r, ensure_ascii=False) + "\n" for r in reversed(rows) if r["split"] == split),
                encoding="utf-8")
        if labels is not None:
            labels.mkdir(parents=True, exist_ok=True)
            (labels / f"{lang}.jsonl").write_text("".join(json.dumps(
                {"id": r["id"], "lang": lang, "transcription": "라벨 " + r["text"],
                 "translation": "Label " + r["text_en"], "labeler": "test"}, ensure_ascii=False) + "\n" for r in rows),
                encoding="utf-8")
    if labels is not None:   # what the labels stage hands calibrate_decoder (data/decoder_text.jsonl)
        (labels.parent / "decoder_text.jsonl").write_text("".join(
            (labels / f"{lang}.jsonl").read_text(encoding="utf-8") for lang in sorted(langs)), encoding="utf-8")
    return root


def write_params(path: Path, **calibration) -> Path:
    data = params_with({"seed": 0, "languages": LANGS, "audio": {"calibration_clips": 4, "eval_clips": 1,
                                                                 "per_language": {}},
                        "calibration": {"samples_per_language": 3, "translate_ratio": 0.34, "batch_size": 2,
                                        "max_new_tokens": 6, "text_source": "generated", **calibration}})
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def run_encoder(tmp: Path, store: Path, out: Path, params: Path) -> Path:
    enc_stage.main(["--params", str(params), "--audio", str(tmp / "audio"),
                    "--feature-config", str(store / "hf" / "preprocessor_config.json"),
                    "--model-config", str(store / "hf" / "config.json"), "--out", str(out)])
    return out


def run_decoder(tmp: Path, store: Path, out: Path, params: Path) -> Path:
    dec_stage.main(["--params", str(params), "--audio", str(tmp / "audio"),
                    "--text", str(tmp / "decoder_text.jsonl"), "--model", str(store), "--out", str(out),
                    "--metrics", str(out.parent / f"{out.name}.metric.json")])
    return out


def model_config(store: Path) -> dict:
    return json.loads((store / "hf" / "config.json").read_text())


def tokenizer(store: Path, fast: bool = True):
    from transformers import WhisperTokenizer, WhisperTokenizerFast

    cls = WhisperTokenizerFast if fast else WhisperTokenizer
    return cls.from_pretrained(str(store / "hf"), local_files_only=True)


def clip(cid: str, lang: str, text: str | None = None, text_en: str | None = None) -> A_clips.Clip:
    return A_clips.Clip(cid, lang, Path(f"{cid}.wav"), text=text, text_en=text_en)


@pytest.fixture(scope="module")
def built(tmp_path_factory, store) -> Path:
    """Both sets built once by the stages' mains (generated text, 3 languages x 3 clips); tests copy it
    before changing anything."""
    tmp = tmp_path_factory.mktemp("calibration")
    make_audio(tmp / "audio", labels=tmp / "labels")
    params = write_params(tmp / "params.yaml")
    run_encoder(tmp, store, tmp / "calibration" / "encoder", params)
    run_decoder(tmp, store, tmp / "calibration" / "decoder", params)
    return tmp


# ---------------------------------------------------------------------------------------------- task mix

@pytest.mark.parametrize("n,ratio,expected", [(6, 0.2, 1), (5, 0.5, 3), (20, 0.2, 4), (3, 0.0, 0), (3, 1.0, 3),
                                              (7, 0.5, 4), (1, 0.49, 0), (1, 0.5, 1)])
def test_n_translate_rounds_half_up(n, ratio, expected):
    assert cal.n_translate(n, ratio) == expected


def test_task_mix_is_exact_per_language_and_seeded():
    clips = [clip(f"{lang}_{i:04d}", lang) for lang in ("ko_kr", "de_de", "ta_in") for i in range(20)]
    for ratio in (0.0, 0.2, 0.33, 0.5, 1.0):
        tasks = cal.task_mix(clips, ratio, seed=0)
        for lang in ("ko_kr", "de_de", "ta_in"):
            n_tr = sum(tasks[c.id] == TRANSLATE for c in clips if c.lang == lang)
            assert n_tr == cal.n_translate(20, ratio)
    a, b = cal.task_mix(clips, 0.2, seed=0), cal.task_mix(list(reversed(clips)), 0.2, seed=0)
    assert a == b                                         # input order does not matter
    assert a != cal.task_mix(clips, 0.2, seed=1)          # the seed does
    # a language's draw does not depend on which other languages are listed
    ko = [c for c in clips if c.lang == "ko_kr"]
    only_ko = cal.task_mix(ko, 0.2, seed=0)
    assert only_ko == {c.id: a[c.id] for c in ko}
    # not just the first clips: the permutation spreads the choice
    assert {c.id for c in ko if a[c.id] == TRANSLATE} != {c.id for c in ko[:4]}


# ---------------------------------------------------------------------------------------------- clips

def test_read_clips_reads_only_listed_languages_sorted_calibration_split(tmp_path):
    root = make_audio(tmp_path / "audio", langs=["ko_kr", "ta_in", "de_de"], n_calib=4, n_eval=2)
    clips = A_clips.read_clips(root, ["ta_in", "ko_kr"], "calibration", 3)
    assert [c.id for c in clips] == [f"ko_kr_{i:04d}" for i in range(3)] + [f"ta_in_{i:04d}" for i in range(3)]
    assert all(c.audio.is_file() for c in clips)
    assert {c.whisper_lang for c in clips} == {"ko", "ta"}
    # evaluation clips never used even when more are asked for than exist
    assert ([c.id for c in A_clips.read_clips(root, ["ko_kr"], "calibration", 10)]
            == [f"ko_kr_{i:04d}" for i in range(4)])
    with pytest.raises(StageError, match="fr_fr"):
        A_clips.read_clips(root, ["ko_kr", "fr_fr"], "calibration", 3)


def test_features_are_npu_layout(store):
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor.from_pretrained(str(store / "hf"))
    audio = np.random.default_rng(0).standard_normal(16000).astype("float32") * 0.1
    feats = npu_features(fe, audio)
    hf = fe(audio, sampling_rate=16000, return_tensors="np").input_features
    specs.encoder_spec(model_config(store)).inputs[0].check(feats)
    # our own CPU-independent log-mel (audio/features.py), not transformers' bytes: the same values to float32 noise
    assert feats.flags.c_contiguous and np.allclose(feats[0], hf[0].T, atol=1e-4)


# ---------------------------------------------------------------------------------------------- tokens

def test_sequence_from_generated_strips_prefix_cuts_at_eot_and_truncates():
    prefix, eot = [1, 2, 3, 4], 9
    assert cal.sequence_from_generated(prefix, [1, 2, 3, 4, 7, 8, 9, 9, 9], eot, 448) == ([1, 2, 3, 4, 7, 8, 9], False)
    assert cal.sequence_from_generated(prefix, [7, 8, 9, 9], eot, 448) == ([1, 2, 3, 4, 7, 8, 9], False)
    assert cal.sequence_from_generated(prefix, [1, 2, 3, 4, 9], eot, 448) == ([1, 2, 3, 4, 9], False)
    ids, truncated = cal.sequence_from_generated(prefix, [1, 2, 3, 4] + [5] * 20, eot, 10)
    assert truncated and ids == [1, 2, 3, 4, 5, 5, 5, 5, 5, 9] and len(ids) == 10


def test_prefix_matches_the_tutorials_slow_tokenizer_and_fast_agrees(store):
    slow, fast = tokenizer(store, fast=False), tokenizer(store, fast=True)
    for lang, task, text in (("ko", "transcribe", "안녕하세요"), ("ta", "translate", "hello there")):
        # The tutorial: tokenizer.language / .task, then tokenizer(text, add_special_tokens=True).
        slow.set_prefix_tokens(language=lang, task=task, predict_timestamps=False)
        tutorial = slow(text, add_special_tokens=True).input_ids
        for tok in (slow, fast):
            prefix = cal.prefix_ids(tok, lang, task)
            sp = cal.SpecialTokens.from_tokenizer(tok)
            ids, _ = cal.sequence_from_text(tok, prefix, text, sp.eot, 448)
            assert ids[:4] == tutorial[:4] and ids[-1] == tutorial[-1] == sp.eot
            assert tok.decode(ids[4:-1]) == " " + text   # text kept as written (leading space: Whisper's style)
    with pytest.raises(StageError, match="xx"):
        cal.prefix_ids(fast, "xx", "transcribe")


def test_non_english_text_is_not_normalized(store):
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    tok = tokenizer(store)
    sp = cal.SpecialTokens.from_tokenizer(tok)
    tutorial_normalize = EnglishTextNormalizer({})   # WhisperTokenizer.normalize, spelling map aside
    for lang, text in (("ko", "서울은 한국의 수도입니다."), ("ta", "தமிழ் ஒரு மொழி"), ("th", "สวัสดีครับ")):
        ids, _ = cal.sequence_from_text(tok, cal.prefix_ids(tok, lang, "transcribe"), text, sp.eot, 448)
        decoded = tok.decode(ids[4:-1])
        assert decoded.strip() == text
        assert tutorial_normalize(text) != text     # what the tutorial's normalizer did to it


def test_decoder_inputs_equal_what_the_decoder_feeds_its_first_layer(store):
    import torch

    from whisper_npu.model.store import load_hf

    model, processor = load_hf(store)
    ids = cal.prefix_ids(processor.tokenizer, "ko", "transcribe") + [400, 500, 600, 50257]
    ours = specs.embed(*specs.embedding_tables(model), ids)
    seen = {}

    def capture(_module, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    hook = model.model.decoder.layers[0].register_forward_pre_hook(capture, with_kwargs=True)
    enc = torch.zeros(1, model.config.max_source_positions, model.config.d_model)
    with torch.inference_mode():
        model.model.decoder(input_ids=torch.tensor([ids]), encoder_hidden_states=enc, use_cache=False)
    hook.remove()
    assert ours.shape == (1, len(ids), model.config.d_model) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, seen["h"].numpy())


# ---------------------------------------------------------------------------------------------- stages

def read_like_the_tutorial(enc_out: Path, dec_out: Path) -> tuple[list[str], dict]:
    """What the tutorial's compile scripts hand to mxq_compile: the .txt path and the .json path."""
    enc_list = enc_out / specs.ENCODER_LIST
    dec_json = dec_out / specs.DECODER_JSON
    lines = [ln for ln in enc_list.read_text().splitlines() if ln]
    return lines, json.loads(dec_json.read_text())


def test_stages_write_the_tutorials_formats_with_resolvable_relative_paths(tmp_path, built, store):
    enc_out, dec_out = built / "calibration" / "encoder", built / "calibration" / "decoder"
    cfg = model_config(store)
    d, frames, mels = cfg["d_model"], cfg["max_source_positions"] * 2, cfg["num_mel_bins"]

    lines, data = read_like_the_tutorial(enc_out, dec_out)
    assert lines == [f"encoder_calib_{lang}_{i:04d}.npy" for lang in sorted(LANGS) for i in range(3)]
    for ln in lines:
        arr = np.load(enc_out / ln)
        assert arr.shape == (1, frames, mels) and arr.dtype == np.float32 and arr.flags.c_contiguous

    assert data["info"]["input names"] == ["decoder_hidden_states", "encoder_hidden_states"]
    assert data["info"]["input shapes"] == [[1, -1, d], [1, cfg["max_source_positions"], d]]
    assert len(data["calib paths"]) == len(data["metadata"]) == 9
    eot = tokenizer(store).convert_tokens_to_ids("<|endoftext|>")
    for (dec_path, enc_path), meta in zip(data["calib paths"], data["metadata"]):
        assert not Path(dec_path).is_absolute() and dec_path.endswith("decoder_hidden_states.npy")
        assert enc_path == f"sample_{meta['clip_id']}/encoder_hidden_states.npy"
        dh, eh = np.load(dec_out / dec_path), np.load(dec_out / enc_path)
        assert dh.shape == (1, meta["length"], d) and eh.shape == (1, cfg["max_source_positions"], d)
        assert dh.dtype == eh.dtype == np.float32 and meta["length"] <= cfg["max_target_positions"]
        assert meta["tokens"][-1] == eot and len(meta["tokens"]) == meta["length"]
        assert meta["length"] <= 4 + 6 + 1           # prefix + max_new_tokens + EOT
        assert meta["task_type"] in ("transcription_with_lang", "translation_with_lang")
        assert meta["use_translation"] == (meta["task"] == "translate")
    assert {m["source_language"] for m in data["metadata"]} == {"ta", "ko", "en"}   # Tamil included
    decoded = json.loads((dec_out / specs.DECODER_METADATA_JSON).read_text())
    assert decoded == [m["decoded_tokens"] for m in data["metadata"]]

    # exact task mix, recorded per sample and in the metric
    metric = json.loads((dec_out.parent / "decoder.metric.json").read_text())
    for lang in LANGS:
        n_tr = sum(m["use_translation"] for m in data["metadata"] if m["language"] == lang)
        assert n_tr == cal.n_translate(3, 0.34) == metric["per_language"][lang]["translate"]
    assert metric["samples"] == 9

    # the encoder states saved are the reference encoder's output for the encoder set's features
    import torch

    from whisper_npu.model.store import load_hf

    model, _ = load_hf(store)
    feats = np.load(enc_out / "encoder_calib_ko_kr_0001.npy")
    with torch.inference_mode():
        states = model.model.encoder(torch.from_numpy(feats.transpose(0, 2, 1).copy())).last_hidden_state.numpy()
    np.testing.assert_allclose(np.load(dec_out / "sample_ko_kr_0001" / "encoder_hidden_states.npy"), states,
                               rtol=1e-4, atol=1e-4)

    # the readers resolve everything; a moved folder still works (no absolute paths inside)
    moved = tmp_path / "elsewhere"
    shutil.copytree(built / "calibration", moved)
    assert lists.validate_encoder_set(moved / "encoder" / specs.ENCODER_LIST, cfg) == 9
    assert lists.validate_decoder_set(moved / "decoder" / specs.DECODER_JSON, cfg) == 9
    info, pairs = lists.read_decoder_json(moved / "decoder" / specs.DECODER_JSON)
    assert all(p.is_file() and str(p).startswith(str(moved)) for pair in pairs for p in pair)

    # the copies with absolute paths that the compile stage hands a compiler (whisper_npu/calibration/sets.py)
    enc_set = calib_sets.read_calib_set("encoder", moved / "encoder" / specs.ENCODER_LIST)
    abs_txt = calib_sets.write_absolute(enc_set, list(range(len(enc_set))), tmp_path / "abs")
    assert [Path(p) for p in abs_txt.read_text().splitlines()] == [
        Path(os.path.abspath(moved / "encoder" / ln)) for ln in lines]
    dec_set = calib_sets.read_calib_set("decoder", moved / "decoder" / specs.DECODER_JSON)
    abs_json = calib_sets.write_absolute(dec_set, list(range(len(dec_set))), tmp_path / "abs")
    absdata = json.loads(abs_json.read_text())
    assert [[Path(p) for p in pair] for pair in absdata["calib paths"]] == [
        [Path(os.path.abspath(p)) for p in pair] for pair in pairs]
    assert absdata["info"] == data["info"]


def test_stages_are_deterministic(tmp_path, built, store):
    params = built / "params.yaml"
    enc = run_encoder(built, store, tmp_path / "encoder", params)
    dec = run_decoder(built, store, tmp_path / "decoder", params)
    assert sha256_tree(enc) == sha256_tree(built / "calibration" / "encoder")
    assert sha256_tree(dec) == sha256_tree(built / "calibration" / "decoder")


def manifest_rows(audio: Path) -> dict[str, dict]:
    rows = {}
    for lang, split in ((lang, split) for lang in LANGS for split in ("calibration", "evaluation")):
        for line in (audio / split / lang / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


@pytest.mark.parametrize("source,ratio", [("labels", 0.0), ("reference", 1.0), ("labels", 0.5)])
def test_text_sources_and_task_ratio(tmp_path, built, store, source, ratio):
    params = write_params(tmp_path / "params.yaml", text_source=source, translate_ratio=ratio)
    out = run_decoder(built, store, tmp_path / "decoder", params)
    meta = json.loads((out / specs.DECODER_JSON).read_text())["metadata"]
    tok = tokenizer(store)
    task_ids = {t: tok.convert_tokens_to_ids(f"<|{t}|>") for t in ("transcribe", "translate")}
    rows = manifest_rows(built / "audio")
    for lang in LANGS:
        assert sum(m["task"] == "translate" for m in meta if m["language"] == lang) == cal.n_translate(3, ratio)
    for m in meta:
        row = rows[m["clip_id"]]
        assert m["tokens"][2] == task_ids[m["task"]] and m["text_source"] == source
        field = "text_en" if m["task"] == "translate" else "text"
        expected = row[field] if source == "reference" else \
            ("Label " + row["text_en"] if m["task"] == "translate" else "라벨 " + row["text"])
        assert tok.decode(m["tokens"][4:-1]) == " " + expected   # as written: no normalizer, no lower-casing


def test_reference_without_translation_is_an_error_except_english(tmp_path):
    make_audio(tmp_path / "audio", langs=["ko_kr", "en_us"])
    for lang in ("ko_kr", "en_us"):
        mf = tmp_path / "audio" / "calibration" / lang / "manifest.jsonl"
        rows = [json.loads(ln) for ln in mf.read_text().splitlines()]
        mf.write_text("".join(json.dumps({**r, "text_en": ""}, ensure_ascii=False) + "\n" for r in rows))
    clips = A_clips.read_clips(tmp_path / "audio", ["en_us", "ko_kr"], "calibration", 2)
    tasks = {c.id: TRANSLATE for c in clips}
    en = dec_stage.plan_samples([c for c in clips if c.lang == "en_us"], tasks, "reference")
    assert [s.text for s in en] == [c.text for c in clips if c.lang == "en_us"]
    with pytest.raises(StageError, match="ko_kr_0000.*text_en"):
        dec_stage.plan_samples(clips, tasks, "reference")


def test_missing_language_folder_fails_naming_it(tmp_path, store):
    make_audio(tmp_path / "audio", langs=["ko_kr", "en_us"])
    params = write_params(tmp_path / "params.yaml")
    with pytest.raises(StageError, match="ta_in"):
        run_encoder(tmp_path, store, tmp_path / "enc", params)
    assert not (tmp_path / "enc").exists()


def test_batch_grouping_shares_language_and_task():
    clips = [clip(f"{lang}_{i:04d}", lang) for lang in ("ko_kr", "ta_in") for i in range(5)]
    tasks = cal.task_mix(clips, 0.4, seed=3)
    samples = dec_stage.plan_samples(clips, tasks, "generated")
    batches = list(dec_stage.batches(samples, 2))
    assert all(len({(s.clip.lang, s.task) for s in b}) == 1 and 1 <= len(b) <= 2 for b in batches)
    assert sorted(s.clip.id for b in batches for s in b) == sorted(c.id for c in clips)   # each clip once


# ---------------------------------------------------------------------------------------------- spec checks

def test_validation_rejects_files_that_break_the_specs(tmp_path, built, store):
    shutil.copytree(built / "calibration", tmp_path / "calibration")
    enc, dec = tmp_path / "calibration" / "encoder", tmp_path / "calibration" / "decoder"
    cfg = model_config(store)
    d, maxlen = cfg["d_model"], cfg["max_target_positions"]
    enc_file = lists.read_encoder_list(enc / specs.ENCODER_LIST)[0]
    _, pairs = lists.read_decoder_json(dec / specs.DECODER_JSON)
    bad_cases = [
        (enc_file, np.zeros((1, 80, 3000), np.float32), "shape"),               # untransposed HF layout
        (enc_file, np.zeros((1, 3000, 80), np.float64), "dtype"),
        (enc_file, np.full((1, 3000, 80), np.nan, np.float32), "NaN"),
        (pairs[0][0], np.zeros((1, maxlen + 1, d), np.float32), "dynamic length"),
        (pairs[0][0], np.zeros((1, 5, d + 1), np.float32), "shape"),
        (pairs[0][1], np.zeros((1, 1499, d), np.float32), "shape"),
        (pairs[0][1], np.asfortranarray(np.zeros((1, 1500, d), np.float32)), "contiguous"),
    ]
    for path, arr, message in bad_cases:
        good = path.read_bytes()
        np.save(path, arr)
        validate = lists.validate_encoder_set if path == enc_file else lists.validate_decoder_set
        target = enc / specs.ENCODER_LIST if path == enc_file else dec / specs.DECODER_JSON
        with pytest.raises(StageError, match=message):
            validate(target, cfg)
        path.write_bytes(good)
    assert lists.validate_decoder_set(dec / specs.DECODER_JSON, cfg) == 9
    # a listed file that is missing, and info that disagrees with the model
    pairs[1][1].rename(pairs[1][1].with_suffix(".gone"))
    with pytest.raises(StageError, match="does not exist"):
        lists.validate_decoder_set(dec / specs.DECODER_JSON, cfg)
    pairs[1][1].with_suffix(".gone").rename(pairs[1][1])
    with pytest.raises(StageError, match="shapes"):
        lists.validate_decoder_set(dec / specs.DECODER_JSON, {**cfg, "d_model": d * 2})


# ---------------------------------------------------------------------------------------------- real dvc CLI

def _lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: lock[name]["outs"][0]["md5"] for name in ("calibrate_encoder", "calibrate_decoder")}


def _status(repo: Path) -> set[str]:
    out = run(["dvc", "status", "--json", "calibrate_encoder", "calibrate_decoder"], repo).stdout
    return set(json.loads(out or "{}"))


@pytest.mark.slow
def test_dvc_reruns_only_what_changed_and_is_reproducible(project, store):
    """Through the real dvc CLI on a tiny profile (2 languages x 3 clips, tiny model). The upstream stages'
    outputs are put in place by hand and the calibration stages run alone (-s), so this test depends only
    on the calibration stages and the store layout."""
    params = default_params()
    params["languages"] = ["ko_kr", "ta_in"]
    params["audio"].update(calibration_clips=3, eval_clips=1)
    params["calibration"].update(samples_per_language=3, batch_size=2, max_new_tokens=4, translate_ratio=0.34,
                                 text_source="generated")
    repo = project(params)
    make_audio(repo / "data" / "audio", langs=params["languages"], n_calib=3, n_eval=1, labels=repo / "data" / "labels")
    shutil.copytree(store, repo / "models" / "reference")
    stages = ["labels", "calibrate_encoder", "calibrate_decoder"]

    run(["dvc", "repro", "-s", *stages], repo)
    first = _lock_outs(repo)
    assert _status(repo) == set()
    metric = json.loads((repo / "metrics" / "calibration.json").read_text())
    assert {lang: m["translate"] for lang, m in metric["per_language"].items()} == {"ko_kr": 1, "ta_in": 1}

    run(["dvc", "repro", "-f", "-s", *stages], repo)       # forced rerun: the same bytes
    assert _lock_outs(repo) == first

    def set_param(section: str, key: str, value) -> None:
        data = yaml.safe_load((repo / "params.yaml").read_text())
        node = data
        for part in section.split("."):
            node = node[part]
        node[key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))

    set_param("compile", "opset", params["compile"]["opset"] + 1)      # a compile option: no calibration rerun
    set_param("compile.onnxruntime", "mode", "static")
    assert _status(repo) == set()

    set_param("calibration", "translate_ratio", 1.0)                  # only the decoder set reruns
    assert _status(repo) == {"calibrate_decoder"}
    out = run(["dvc", "repro", "-s", *stages], repo).stdout
    assert "Stage 'calibrate_encoder' didn't change, skipping" in out
    assert "Running stage 'calibrate_decoder'" in out
    second = _lock_outs(repo)
    assert second["calibrate_encoder"] == first["calibrate_encoder"]
    assert second["calibrate_decoder"] != first["calibrate_decoder"]
    metric = json.loads((repo / "metrics" / "calibration.json").read_text())
    assert metric["translate"] == metric["samples"] == 6

    # a labeler change: the labels stage reruns, the decoder set (its text generated) does not
    labels = repo / "data" / "labels" / "ko_kr.jsonl"
    labels.write_text(labels.read_text(encoding="utf-8").replace("라벨", "레이블"), encoding="utf-8")
    assert set(json.loads(run(["dvc", "status", "--json", *stages], repo).stdout or "{}")) == {"labels"}
    out = run(["dvc", "repro", "-s", *stages], repo).stdout
    assert "Running stage 'labels'" in out and "Stage 'calibrate_decoder' didn't change, skipping" in out
    assert _lock_outs(repo)["calibrate_decoder"] == second["calibrate_decoder"]

    # the list files hold no path of this machine
    for f in (repo / "calibration" / "encoder" / specs.ENCODER_LIST,
              repo / "calibration" / "decoder" / specs.DECODER_JSON):
        assert str(repo) not in f.read_text()


# ---------------------------------------------------------------------------------------------- recipe knobs

def test_strip_final_eot_keeps_the_room_for_text():
    prefix, eot = [1, 2, 3, 4], 9
    assert cal.sequence_from_generated(prefix, [7, 8, 9, 9], eot, 448, strip_eot=True) == ([1, 2, 3, 4, 7, 8], False)
    ids, truncated = cal.sequence_from_generated(prefix, [5] * 20, eot, 10, strip_eot=True)
    assert ids == prefix + [5] * 6 and truncated and eot not in ids


def test_task_mix_is_exact_and_seeded_per_fraction():
    clips = [clip(f"{lang}_{i:04d}", lang) for lang in ("en_us", "ko_kr") for i in range(20)]
    fractions = [0.2, 0.4, 0.6, 0.8, 1.0]
    mixes = {f: cal.task_mix(clips, 0.2, seed=42, fraction=f) for f in fractions}
    for f, tasks in mixes.items():
        for lang in ("en_us", "ko_kr"):
            assert sum(t == TRANSLATE for c, t in tasks.items() if c.startswith(lang)) == cal.n_translate(20, 0.2)
        assert tasks == cal.task_mix(list(reversed(clips)), 0.2, seed=42, fraction=f)    # order-free, seeded
    assert mixes[1.0] == cal.task_mix(clips, 0.2, seed=42)      # the whole clip keeps the seed's draw
    assert len({tuple(sorted(m.items())) for m in mixes.values()}) > 1, "each fraction draws on its own stream"


@pytest.mark.parametrize("over,match", [
    ({"prefix_fractions": []}, "calibration.prefix_fractions = \\[\\]"),
    ({"prefix_fractions": [0.0, 1.0]}, "calibration.prefix_fractions\\[0\\] = 0.0: must be > 0"),
    ({"prefix_fractions": [1.0, 0.5]}, "must be increasing and distinct"),
    ({"prefix_fractions": [0.5, 1.0], "text_source": "labels"}, "need calibration.text_source = generated"),
    ({"json_layout": "compact"}, "calibration.json_layout = 'compact': must be one of full, minimal"),
    ({"min_tokens": -1}, "calibration.min_tokens = -1: must be >= 0"),
])
def test_recipe_knobs_are_checked(over, match):
    from whisper_npu.params.base import ParamsError
    from whisper_npu.params.full import parse_params

    with pytest.raises(ParamsError, match=match):
        parse_params(params_with({"calibration": over}))


def test_latest_recipe_prefixes_eot_strip_min_tokens_minimal_json(tmp_path, built, store):
    """The newest public recipe's knobs through the stage's main: 2 prefixes per clip, final EOT removed,
    short samples skipped (and listed), the minimal JSON; byte-identical on rerun."""
    import torch

    from whisper_npu.model.store import load_hf

    knobs = {"prefix_fractions": [0.5, 1.0], "strip_final_eot": True, "min_tokens": 7, "json_layout": "minimal"}
    params = write_params(tmp_path / "params.yaml", **knobs)
    out = run_decoder(built, store, tmp_path / "decoder", params)
    data = json.loads((out / specs.DECODER_JSON).read_text())
    cfg = model_config(store)
    assert set(data) == {"info", "calib paths"} and set(data["info"]) == {"input names", "input shapes"}
    metric = json.loads((out.parent / "decoder.metric.json").read_text())
    skipped = {(s["clip_id"], s["fraction"]) for s in metric["skipped"]}
    assert all(s["length"] < 7 for s in metric["skipped"]) and metric["skipped_short"] == len(skipped)
    kept = [(Path(d).parent.name, Path(e).parent.name) for d, e in data["calib paths"]]
    assert all(a == b for a, b in kept)
    folder = {1.0: "sample_{}", 0.5: "sample_{}_p050"}
    expected = sorted(folder[f].format(f"{lang}_{i:04d}") for lang in LANGS for i in range(3) for f in (0.5, 1.0)
                      if (f"{lang}_{i:04d}", f) not in skipped)
    assert sorted(k[0] for k in kept) == expected and metric["samples"] == len(expected)
    eot = tokenizer(store).convert_tokens_to_ids("<|endoftext|>")
    model, processor = load_hf(store)
    for dec_path, enc_path in data["calib paths"]:
        dh = np.load(out / dec_path)
        assert dh.shape[1] >= 7                                           # min_tokens
        # the last input row is not EOT's embedding (+ its position): the final EOT was stripped
        last = (model.model.decoder.embed_tokens.weight[eot]
                + model.model.decoder.embed_positions.weight[dh.shape[1] - 1])
        assert not np.allclose(dh[0, -1], last.detach().numpy(), atol=1e-5)
    # a prefix sample's encoder states are the reference encoder's on the first half of the clip's audio
    name = next(k[0] for k in kept if k[0].endswith("_p050"))
    cid = name[len("sample_"):-len("_p050")]
    lang = cid.rsplit("_", 1)[0]
    audio = read_wav(built / "audio" / "calibration" / lang / f"{cid}.wav")
    feats = npu_features(processor.feature_extractor, audio[: int(len(audio) * 0.5)])
    with torch.inference_mode():
        states = model.model.encoder(torch.from_numpy(feats.transpose(0, 2, 1).copy())).last_hidden_state.numpy()
    np.testing.assert_allclose(np.load(out / name / cal.ENCODER_STATES), states, rtol=1e-4, atol=1e-4)
    assert lists.validate_decoder_set(out / specs.DECODER_JSON, cfg) == len(expected)
    again = run_decoder(built, store, tmp_path / "again" / "decoder", params)
    assert sha256_tree(again) == sha256_tree(out)


def test_min_tokens_skips_exactly_the_short_samples(tmp_path, built, store):
    """Reference texts of different token lengths: exactly those under min_tokens (prefix + text, EOT
    stripped) are skipped and listed; the rest are kept."""
    params = write_params(tmp_path / "params.yaml", text_source="reference", translate_ratio=0.0,
                          strip_final_eot=True, min_tokens=11)
    out = run_decoder(built, store, tmp_path / "decoder", params)
    tok = tokenizer(store)
    rows = manifest_rows(built / "audio")
    length = {cid: 4 + len(tok.encode(" " + r["text"].strip(), add_special_tokens=False))
              for cid, r in rows.items() if r["split"] == "calibration" and int(cid[-4:]) < 3}
    short = {cid for cid, n in length.items() if n < 11}
    assert short and short != set(length), "the texts must give some short and some long samples"
    metric = json.loads((out.parent / "decoder.metric.json").read_text())
    assert {s["clip_id"] for s in metric["skipped"]} == short and metric["skipped_short"] == len(short)
    meta = json.loads((out / specs.DECODER_JSON).read_text())["metadata"]
    assert {m["clip_id"] for m in meta} == set(length) - short
    assert all(m["length"] == length[m["clip_id"]] and m["tokens"][-1] != tok.convert_tokens_to_ids("<|endoftext|>")
               for m in meta)


def test_recipe_knobs_rerun_only_the_decoder_set_and_what_follows():
    """dvc.yaml: the encoder set reads only calibration.samples_per_language; compile@encoder depends on the
    encoder set only; the decoder set reads the whole calibration section."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["calibrate_encoder"]["params"] == ["languages", "calibration.samples_per_language"]
    assert "calibration" in stages["calibrate_decoder"]["params"]
    assert "calibration/${key}" in stages["compile"]["do"]["deps"]
