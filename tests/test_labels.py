"""Labels: the openai-whisper labeler (options, determinism, model choice, English-only models), the
label@<lang> and labels stages, and (slow) the DAG through the real dvc CLI and real whisper-base labels."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import default_params, run, section

from stages import label as label_stage
from stages import labels as labels_stage
from whisper_npu import labeler as L
from whisper_npu.audio.prepare import write_wav
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json, read_jsonl, write_jsonl
from whisper_npu.core.seeds import clip_seed
from whisper_npu.model.store import OPENAI_CKPT

SR = 16000


def make_checkpoint(path: Path, multilingual: bool = True, seed: int = 0) -> Path:
    """A tiny random-weight openai-whisper checkpoint that writes text.

    Random weights mostly pick special tokens (``<|notimestamps|>`` again and again, empty text); here the
    embeddings of the special tokens after end-of-text are zero and the rest scaled down, so greedy decoding
    writes ordinary tokens with a low average log-prob: with ``logprob_fallback`` every temperature of the
    fallback schedule runs and the labels are seeded samples. Tests keep ``sample_len`` small (a few tokens
    per decode). Everything else is the real openai-whisper model.
    """
    from whisper.model import ModelDimensions, Whisper
    from whisper.tokenizer import get_tokenizer

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865 if multilingual else 51864, n_text_ctx=448, n_text_state=32,
                           n_text_head=2, n_text_layer=1)
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        model.decoder.positional_embedding.normal_(0, 0.02)  # torch.empty in openai-whisper
        eot = get_tokenizer(multilingual, num_languages=model.num_languages).eot
        model.decoder.token_embedding.weight.mul_(0.3)
        model.decoder.token_embedding.weight[eot + 1:] = 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model") / "reference"
    make_checkpoint(d / OPENAI_CKPT)
    (d / "model.json").write_text('{"name": "tiny-random"}')
    return d


def speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(len(t))
            ).astype(np.float32)


def make_audio_dir(root: Path, lang: str, n: int, n_eval: int = 0) -> list[dict]:
    """The audio stage's layout below the audio root ``root``: n calibration clips (returned) in
    calibration/<lang>/ and n_eval evaluation clips in evaluation/<lang>/."""
    rows = []
    for i in range(n + n_eval):
        split = "calibration" if i < n else "evaluation"
        cid = f"{lang}_{i:04d}" if i < n else f"{lang}_eval_{i - n:04d}"
        folder = root / split / lang
        folder.mkdir(parents=True, exist_ok=True)
        write_wav(folder / f"{cid}.wav", speechlike(1.0 + 0.25 * i, seed=i))
        rows.append({"id": cid, "file": f"{cid}.wav", "lang": lang, "split": split,
                     "duration": 1.0, "text": None, "text_en": None, "source": {}})
    for split in ("calibration", "evaluation"):
        (root / split / lang).mkdir(parents=True, exist_ok=True)
        write_jsonl(root / split / lang / "manifest.jsonl", [r for r in rows[::-1] if r["split"] == split])  # unsorted
    return rows[:n]


# ---------------------------------------------------------------------------------------------- labeler

# small decodes: the tiny model writes `SAMPLE_LEN` tokens per decode (see make_checkpoint)
SAMPLE_LEN = 6
FAST = {"best_of": 1, "sample_len": SAMPLE_LEN, "without_timestamps": True}


def test_transcribe_options_are_the_tutorials() -> None:
    o = L.transcribe_options("ko", "translate", beam_size=1, logprob_fallback=True, best_of=5)
    assert o == {"language": "ko", "task": "translate", "fp16": False, "temperature": (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                 "verbose": None, "best_of": 5}  # openai-whisper's own thresholds apply (log-prob -1, no-speech 0.6)
    o = L.transcribe_options("ko", "transcribe", beam_size=5, logprob_fallback=False)
    assert o["beam_size"] == 5 and o["logprob_threshold"] is None
    own, dec = L._split_options(L.transcribe_options("de", "transcribe", 1, False, **FAST))
    assert own["compression_ratio_threshold"] == 2.4 and own["no_speech_threshold"] == 0.6  # read from openai-whisper
    assert own["logprob_threshold"] is None and set(dec) == {"language", "task", "fp16", "best_of", "sample_len",
                                                              "without_timestamps"}


def clips(n: int) -> list[tuple[np.ndarray, int]]:
    return [(speechlike(1.0 + 0.5 * i, seed=i), 100 + 7 * i) for i in range(n)]


@pytest.mark.parametrize("logprob_fallback, options, beam_size", [
    (False, FAST, 1),                                             # the offline default's options
    (True, FAST, 1),                                              # every temperature: seeded samples
    (True, {**FAST, "best_of": 2}, 1),                            # several samples per temperature, batched
    (True, {**FAST, "best_of": 2, "without_timestamps": False}, 2),  # tutorial-like: timestamps, beam search
])
def test_label_batch_equals_openai_whisper_transcribe(model_dir: Path, logprob_fallback, options, beam_size) -> None:
    """One encoder pass per clip, batched decoding, fallback only where it fails: the same text as
    openai-whisper's transcribe() per clip and task, seeded the same way, fallbacks included."""
    lab = L.load_labeler("reference", model_dir)
    batch = clips(3 if options["best_of"] == 1 else 2)
    want = [L.label_clip(lab, audio, "de", beam_size, seed, logprob_fallback, **options) for audio, seed in batch]
    stats = L.LabelStats()
    got = L.label_batch(lab, batch, "de", beam_size, logprob_fallback, stats, **options)
    assert got == want
    assert all(text and translation for text, translation in got)  # the comparison is not between empty strings
    assert stats.items == 2 * len(batch)
    if stats.on_demand == 0:
        assert stats.encoder_passes == len(batch)  # one per clip for both tasks and every temperature
    if logprob_fallback:
        assert stats.fallbacks > 0  # the tiny model's log-prob is low: the fallback path ran
        assert len({t for t, _ in got}) == len(batch)  # seeded per clip: samples differ between clips


class EndByContent:
    """A logit filter that ends each row after 1 to 4 tokens, by its first token: rows of one batch end at
    different steps (the tiny model alone never writes EOT before ``sample_len``). It reads the row's own
    tokens only, so a row gets the same treatment in a batch and alone."""
    def __init__(self, begin: int, eot: int):
        self.begin, self.eot = begin, eot

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        written = tokens.shape[1] - self.begin
        if written:
            stop = tokens[:, self.begin] % 4 + 1 <= written
            logits[stop] = -np.inf
            logits[stop, self.eot] = 0.0


@pytest.fixture
def rows_per_step(monkeypatch) -> list[int]:
    """The number of rows of every decoder forward pass of openai-whisper's decoding (recorded, not changed)."""
    from whisper.decoding import PyTorchInference

    rows: list[int] = []
    logits = PyTorchInference.logits

    def counting(self, tokens, audio_features):
        rows.append(tokens.shape[0])
        return logits(self, tokens, audio_features)
    monkeypatch.setattr(PyTorchInference, "logits", counting)
    return rows


def rows_left(rows_per_step: list[int]) -> bool:
    return any(later < first for first, later in zip(rows_per_step, rows_per_step[1:]))


@pytest.mark.parametrize("options", [FAST, {**FAST, "best_of": 2}])  # one / two samples per clip and temperature
def test_finished_clips_leave_the_batch(model_dir: Path, monkeypatch, rows_per_step, options) -> None:
    """Rows ending at different steps: a clip whose rows have all ended leaves the batched decode (fewer rows
    per step), and the labels still equal openai-whisper's transcribe() per clip and task. The tiny model's
    greedy text is the same for every clip, so the rows that end apart are the seeded samples of the fallback
    temperatures; greedy rows ending apart are covered by the real-English test below (whisper-base)."""
    from whisper.decoding import DecodingTask

    init = DecodingTask.__init__

    def with_end_filter(self, model, options):
        init(self, model, options)
        self.logit_filters.append(EndByContent(self.sample_begin, self.tokenizer.eot))
    monkeypatch.setattr(DecodingTask, "__init__", with_end_filter)

    lab = L.load_labeler("reference", model_dir)
    batch = clips(4)
    want = [L.label_clip(lab, audio, "de", 1, seed, True, **options) for audio, seed in batch]
    rows_per_step.clear()
    got = L.label_batch(lab, batch, "de", 1, True, **options)
    assert got == want
    assert rows_left(rows_per_step), rows_per_step


def test_labels_do_not_depend_on_the_batch_size(model_dir: Path, tmp_path: Path) -> None:
    rows = make_audio_dir(tmp_path, "it_it", 3)
    lab = L.load_labeler("reference", model_dir)
    by_size = [label_stage.label_rows(lab, "it_it", tmp_path / "calibration" / "it_it", rows, 1, 0, True, FAST,
                                      batch_size=b)
               for b in (1, 2)]
    assert by_size[0] == by_size[1]
    assert [r["id"] for r in by_size[0]] == [r["id"] for r in rows]


def test_english_only_model(tmp_path: Path) -> None:
    lab = L.load_labeler(str(make_checkpoint(tmp_path / "en.pt", multilingual=False)), None)
    with pytest.raises(StageError, match="English-only model cannot transcribe or translate ja_jp"):
        L.check_language(lab, "ja", "ja_jp")
    L.check_language(lab, "en", "en_us")
    stats = L.LabelStats()
    got = L.label_batch(lab, clips(2), "en", 1, True, stats, **FAST)
    assert all(text == translation and text for text, translation in got) and stats.items == 2  # transcribe only
    assert got == [L.label_clip(lab, audio, "en", 1, seed, True, **FAST) for audio, seed in clips(2)]


def test_load_labeler_choices(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    lab = L.load_labeler("reference", model_dir)
    assert lab.name == "reference:tiny-random" and lab.multilingual
    assert L.load_labeler(str(model_dir / OPENAI_CKPT), None).name == OPENAI_CKPT
    with pytest.raises(StageError, match="run the model stage first"):
        L.load_labeler("reference", tmp_path)
    with pytest.raises(StageError, match="no such checkpoint"):
        L.load_labeler(str(tmp_path / "missing.pt"), None)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match="not a loadable openai-whisper checkpoint"):
        L.load_labeler(str(tmp_path / "bad.pt"), None)
    with pytest.raises(StageError, match="not 'reference', an openai-whisper model name"):
        L.load_labeler("whisper-huge-v9", None)
    # a named model that is not cached and cannot be downloaded: one line, what to do
    import urllib.error

    import whisper

    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(whisper, "_download", offline)
    with pytest.raises(StageError, match="large-v3.*could not download") as e:
        L.load_labeler("large-v3", None)
    assert "\n" not in str(e.value)


def test_real_decode_is_deterministic_and_seeded(model_dir: Path) -> None:
    lab = L.load_labeler("reference", model_dir)
    a = L.label_batch(lab, clips(2), "de", 1, True, **FAST)
    assert a == L.label_batch(lab, clips(2), "de", 1, True, **FAST)
    assert all(text and translation for text, translation in a)  # non-empty: sampled at the fallback temperatures
    reseeded = [(audio, seed + 1000) for audio, seed in clips(2)]
    assert L.label_batch(lab, reseeded, "de", 1, True, **FAST) != a


# ---------------------------------------------------------------------------------------------- stages

def test_label_stage_main(model_dir: Path, tmp_path: Path) -> None:
    rows = make_audio_dir(tmp_path / "audio", "it_it", 3, n_eval=1)
    out = tmp_path / "labels" / "it_it.jsonl"
    argv = ["--lang", "it_it", "--audio", str(tmp_path / "audio"), "--model", str(model_dir),
            "--out", str(out), "--params", str(write_params(tmp_path, labels={"logprob_fallback": True,
                                                                              "batch_size": 2}))]
    label_stage.main(argv)
    labels = read_jsonl(out)
    # labels.splits: [calibration] by default: the evaluation clip is not labelled
    assert [r["id"] for r in labels] == [r["id"] for r in rows]
    assert all(set(r) == {"id", "lang", "transcription", "translation", "labeler"} for r in labels)
    assert all(r["lang"] == "it_it" and r["labeler"] == "reference:tiny-random" for r in labels)
    assert all(r["transcription"] and r["translation"] for r in labels)
    first = out.read_bytes()
    label_stage.main(argv)
    assert out.read_bytes() == first  # byte-identical on rerun, with non-empty sampled labels
    # both splits, as the tutorial: every clip, the calibration rows unchanged
    both = tmp_path / "both.jsonl"
    label_stage.main([*argv[:-4], "--out", str(both), "--params", str(write_params(
        tmp_path / "both",
        labels={"logprob_fallback": True, "batch_size": 3, "splits": ["calibration", "evaluation"]}))])
    assert [r["id"] for r in read_jsonl(both)] == [f"it_it_{i:04d}" for i in range(3)] + ["it_it_eval_0000"]
    assert read_jsonl(both)[:3] == labels
    # a manifest of another language is refused
    shutil.copytree(tmp_path / "audio" / "calibration" / "it_it", tmp_path / "audio" / "calibration" / "de_de")
    with pytest.raises(StageError, match="not de_de"):
        label_stage.main(["--lang", "de_de", *argv[2:]])


def test_read_split_checks_language_and_split(tmp_path: Path) -> None:
    folder = tmp_path / "calibration" / "it_it"
    folder.mkdir(parents=True)
    write_jsonl(folder / "manifest.jsonl", [{"id": "b", "lang": "it_it", "split": "calibration"},
                                            {"id": "a", "lang": "it_it", "split": "calibration"}])
    assert [r["id"] for r in label_stage.read_split(folder, "it_it", "calibration")] == ["a", "b"]
    with pytest.raises(StageError, match=r"manifest.jsonl: row b has split 'calibration', not evaluation"):
        label_stage.read_split(folder, "it_it", "evaluation")
    with pytest.raises(StageError, match=r"manifest.jsonl: missing"):
        label_stage.read_split(tmp_path / "evaluation" / "it_it", "it_it", "evaluation")


def test_label_stage_english_only_model_fails_for_other_languages(tmp_path: Path) -> None:
    make_audio_dir(tmp_path / "audio", "ko_kr", 1)
    ckpt = make_checkpoint(tmp_path / "en.pt", multilingual=False)
    with pytest.raises(StageError, match="English-only"):
        label_stage.main(["--lang", "ko_kr", "--audio", str(tmp_path / "audio"), "--model", str(tmp_path),
                          "--out", str(tmp_path / "ko.jsonl"),
                          "--params", str(write_params(tmp_path, labels={"labeler": str(ckpt)}))])
    assert not (tmp_path / "ko.jsonl").exists()


def test_labels_off_write_nothing_and_load_no_model(tmp_path: Path) -> None:
    """labels.enabled: false: an empty label file, and no model is loaded (the --model folder does not exist)."""
    make_audio_dir(tmp_path / "audio", "ko_kr", 1)
    out = tmp_path / "ko.jsonl"
    label_stage.main(["--lang", "ko_kr", "--audio", str(tmp_path / "audio"), "--model",
                      str(tmp_path / "no-model"), "--out", str(out),
                      "--params", str(write_params(tmp_path, labels={"enabled": False}))])
    assert out.read_text() == ""


def write_params(folder: Path, languages: list[str] | None = None, labels: dict | None = None) -> Path:
    params = default_params()
    params["labels"]["max_new_tokens"] = SAMPLE_LEN
    if languages:
        params["languages"] = languages
    if labels:
        params["labels"].update(labels)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    return path


def test_labels_merge_tutorial_formats_reads_params_languages(tmp_path: Path) -> None:
    d = tmp_path / "labels"
    d.mkdir()
    for lang, whisper_lang in (("ko_kr", "ko"), ("cmn_hans_cn", "zh"), ("ja_jp", "ja")):
        write_jsonl(d / f"{lang}.jsonl", [
            {"id": f"{lang}_{i:04d}", "lang": lang, "transcription": f"{whisper_lang} text {i}",
             "translation": f"English {i}", "labeler": "x"} for i in range(2)])
    tr, tl = tmp_path / "transcriptions.json", tmp_path / "translations.json"
    labels_stage.main(["--labels", str(d), "--transcriptions", str(tr), "--translations", str(tl),
                       "--params", str(write_params(tmp_path, ["ko_kr", "cmn_hans_cn"]))])
    t = read_json(tr)
    assert set(t) == {"ko_kr_0000.wav", "ko_kr_0001.wav", "cmn_hans_cn_0000.wav", "cmn_hans_cn_0001.wav"}
    assert t["cmn_hans_cn_0001.wav"] == "zh text 1"
    assert read_json(tl)["ko_kr_0000.wav"] == {"source_language_fleurs": "ko_kr", "source_language_whisper": "ko",
                                                "target_language": "en", "translation": "English 0"}
    # what the decoder set reads of them: every row only when calibration.text_source is labels
    text = tmp_path / "decoder_text.jsonl"
    for source, n in (("generated", 0), ("labels", 4)):
        params = write_params(tmp_path, ["ko_kr", "cmn_hans_cn"])
        data = yaml.safe_load(params.read_text())
        data["calibration"]["text_source"] = source
        params.write_text(yaml.safe_dump(data, allow_unicode=True))
        labels_stage.main(["--labels", str(d), "--transcriptions", str(tr), "--translations", str(tl),
                           "--decoder-text", str(text), "--params", str(params)])
        assert len(read_jsonl(text)) == n
    # a language in params without labels: a clear error, no output left behind
    with pytest.raises(StageError, match="el_gr.jsonl: missing"):
        labels_stage.main(["--labels", str(d), "--transcriptions", str(tr), "--translations", str(tl),
                           "--params", str(write_params(tmp_path, ["el_gr"]))])


# ---------------------------------------------------------------------------------------------- slow

def ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage '")}


def tiny_profile(languages: list[str]) -> dict:
    params = default_params()
    params["languages"] = languages
    params["audio"].update(calibration_clips=1, eval_clips=1)
    params["calibration"]["samples_per_language"] = 1
    params["labels"]["max_new_tokens"] = SAMPLE_LEN
    return params


def calibration_ids(repo: Path, langs: list[str]) -> set[str]:
    return {f"{r['id']}.wav" for lang in langs
            for r in read_jsonl(repo / "data" / "audio" / "calibration" / lang / "manifest.jsonl")}


@pytest.mark.slow
def test_dvc_labels_add_and_remove_language(project) -> None:
    repo = project(tiny_profile(["de_de", "ko_kr"]))
    # the reference model is the model stage's output; here a tiny checkpoint stands in for it, so the
    # copy drops the model stage and the labels DAG is audio@* -> label@* -> labels
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"].pop("model", None)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    make_checkpoint(repo / "models" / "reference" / OPENAI_CKPT)

    out = run(["dvc", "repro", "labels"], repo).stdout
    assert ran(out) == {"audio@de_de", "audio@ko_kr", "label@de_de", "label@ko_kr", "labels"}, out
    keys = set(read_json(repo / "data" / "transcriptions.json"))
    # labels.splits: [calibration]: one calibration clip per language labelled, the evaluation clip not
    assert keys == calibration_ids(repo, ["de_de", "ko_kr"]) and len(keys) == 2

    def set_languages(langs: list[str]) -> None:
        (repo / "params.yaml").write_text(yaml.safe_dump(tiny_profile(langs), allow_unicode=True, sort_keys=False))

    set_languages(["de_de", "ko_kr", "ru_ru"])
    out = run(["dvc", "repro", "labels"], repo).stdout
    assert ran(out) == {"audio@ru_ru", "label@ru_ru", "labels"}, out
    assert {k[:5] for k in read_json(repo / "data" / "translations.json")} == {"de_de", "ko_kr", "ru_ru"}

    set_languages(["de_de", "ru_ru"])
    out = run(["dvc", "repro", "labels"], repo).stdout
    assert ran(out) == {"labels"}, out
    assert (repo / "data" / "labels" / "ko_kr.jsonl").exists()  # left on disk, but not merged
    translations = read_json(repo / "data" / "translations.json")
    assert set(translations) == calibration_ids(repo, ["de_de", "ru_ru"])
    assert {v["source_language_whisper"] for k, v in translations.items() if k.startswith("ru_ru")} == {"ru"}
    assert run(["dvc", "repro", "labels"], repo).stdout.count("Running stage") == 0


@pytest.mark.slow
def test_reference_whisper_base_labels_spanish_synth(reference_model_dir: Path, tmp_path: Path) -> None:
    """Real weights: whisper-base (the offline reference) through openai-whisper labels espeak Spanish."""
    from stages import audio as audio_stage
    from whisper_npu.sources import loader

    p = section("audio", source="synth", calibration_clips=1, eval_clips=0)
    kept, skipped = audio_stage.build("es_419", "calibration", loader.get_clips("es_419", p, 0).calibration, p)
    audio_stage.write(tmp_path / "es_419", kept, skipped)
    lab = L.load_labeler("reference", reference_model_dir)
    assert lab.name == "reference:whisper-base"
    rows = label_stage.label_rows(lab, "es_419", tmp_path / "es_419",
                                  read_jsonl(tmp_path / "es_419" / "manifest.jsonl"),
                                  beam_size=1, seed=0, logprob_fallback=False)
    # whisper-base on espeak-ng speech is rough (~0.2-0.4 CER, docs/offline-data.md)
    from whisper_npu.eval.metrics import edit_distance, normalize
    ref, hyp = normalize(kept[0].row["text"], "es_419"), normalize(rows[0]["transcription"], "es_419")
    cer = edit_distance(ref, hyp) / max(1, len(ref))
    assert cer < 0.5, rows
    assert rows[0]["translation"].isascii() and rows[0]["translation"] != rows[0]["transcription"], rows


@pytest.fixture(scope="session")
def asterisk_english() -> list[tuple[str, np.ndarray]]:
    """Six real English prompts (Debian's asterisk-core-sounds-en-wav, 8 kHz resampled to 16 kHz), the .deb
    fetched once with apt-get into the whisper-npu cache and checked against its pinned sha256."""
    from bench.label_speed import AptUnavailable, asterisk_english

    try:
        return asterisk_english(6, min_seconds=2.0, max_seconds=12.0)
    except AptUnavailable as e:
        pytest.skip(str(e))


def _equal_to_transcribe(lab: L.Labeler, batch, whisper_lang: str, logprob_fallback: bool, **options):
    want = [L.label_clip(lab, audio, whisper_lang, 1, seed, logprob_fallback, **options) for audio, seed in batch]
    stats = L.LabelStats()
    got = L.label_batch(lab, batch, whisper_lang, 1, logprob_fallback, stats, **options)
    return got, want, stats


@pytest.mark.slow
def test_whisper_base_labels_equal_transcribe_on_real_english(reference_model_dir: Path, asterisk_english,
                                                             rows_per_step) -> None:
    """Real speech, real weights, the offline default's options: the batched labeler gives openai-whisper
    transcribe()'s text for every clip, with one encoder pass per clip, and clips whose greedy text has ended
    leave the batch."""
    lab = L.load_labeler("reference", reference_model_dir)
    batch = [(y, clip_seed(0, name)) for name, y in asterisk_english]
    options = {"best_of": 1, "sample_len": 96, "without_timestamps": True}
    got, want, stats = _equal_to_transcribe(lab, batch, "en", False, **options)
    assert got == want, [(g, w) for g, w in zip(got, want) if g != w]
    assert rows_left(rows_per_step)
    assert stats.encoder_passes == len(batch) and stats.on_demand == 0
    assert sum("pound" in t.lower() or "please" in t.lower() for t, _ in got) >= 2, got  # it is real speech


@pytest.mark.slow
def test_whisper_base_labels_equal_transcribe_on_synthetic_speech_with_fallbacks(reference_model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """espeak-ng Russian with the log-prob fallback on (the tutorial's setting): fallbacks fire, and the text
    still equals transcribe()'s (same per-clip seeds, same draws)."""
    from stages import audio as audio_stage
    from whisper_npu.sources import loader

    p = section("audio", source="synth", calibration_clips=3, eval_clips=0)
    kept, _ = audio_stage.build("ru_ru", "calibration", loader.get_clips("ru_ru", p, 0).calibration, p)
    batch = [(c.samples, clip_seed(0, c.row["id"])) for c in kept]
    lab = L.load_labeler("reference", reference_model_dir)
    got, want, stats = _equal_to_transcribe(lab, batch, "ru", True, best_of=1, sample_len=48,
                                            without_timestamps=True)
    assert got == want, [(g, w) for g, w in zip(got, want) if g != w]
    assert stats.fallbacks > 0, stats
    assert stats.encoder_passes == len(batch)
