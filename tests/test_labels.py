"""Labels: the openai-whisper labeler (options, determinism, model choice, English-only models), the
label@<lang> and labels stages, and (slow) the DAG through the real dvc CLI and real whisper-base labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stages import label as label_stage
from stages import labels as labels_stage
from whisper_npu import labeler as L
from whisper_npu.audio import write_wav
from whisper_npu.io import StageError, read_json, read_jsonl, write_jsonl

from conftest import default_params, run

SR = 16000


def make_checkpoint(path: Path, multilingual: bool = True, seed: int = 0) -> Path:
    """A tiny openai-whisper checkpoint whose decoder always prefers end-of-text.

    Random weights make openai-whisper decode 224 tokens per window at every fallback temperature
    (minutes per clip); here the final layer norm outputs a constant vector that the EOT embedding
    points along, so each decode is a couple of steps. Everything else is the real openai-whisper path.
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
        model.decoder.ln.weight.zero_()
        model.decoder.ln.bias.fill_(1.0)
        eot = get_tokenizer(multilingual, num_languages=model.num_languages).eot
        model.decoder.token_embedding.weight[eot] = 10.0
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": dims.__dict__, "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("model") / "reference"
    make_checkpoint(d / L.CHECKPOINT)
    (d / "model.json").write_text('{"name": "tiny-eot"}')
    return d


def speechlike(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(len(t))
            ).astype(np.float32)


def make_audio_dir(folder: Path, lang: str, n: int) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        cid = f"{lang}_{i:04d}"
        write_wav(folder / f"{cid}.wav", speechlike(1.0 + 0.25 * i, seed=i))
        rows.append({"id": cid, "file": f"{cid}.wav", "lang": lang, "split": "calibration", "duration": 1.0,
                     "text": None, "text_en": None, "source": {}})
    write_jsonl(folder / "manifest.jsonl", rows[::-1])  # unsorted on purpose: the stage sorts
    return rows


# ---------------------------------------------------------------------------------------------- labeler

class FakeModel:
    """Records what the labeler asks openai-whisper for."""
    def __init__(self, multilingual: bool = True):
        self.is_multilingual = multilingual
        self.calls: list[dict] = []

    def transcribe(self, audio, **options):
        self.calls.append({"audio": audio, **options})
        return {"text": f"  {options['task']} {options['language']} {torch.randint(0, 1000, (1,)).item()} "}


def test_labeler_uses_the_tutorials_transcribe_with_fallback() -> None:
    fake = FakeModel()
    lab = L.Labeler(fake, "fake")
    text, translation = L.label_clip(lab, speechlike().astype(np.float64), "ko", beam_size=1, seed=5)
    assert text.startswith("transcribe ko ") and translation.startswith("translate ko ") and text == text.strip()
    for call, task in zip(fake.calls, ("transcribe", "translate")):
        assert call["task"] == task and call["language"] == "ko" and call["fp16"] is False
        assert call["temperature"] == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
        assert "beam_size" not in call
        assert "logprob_threshold" not in call  # openai-whisper's default (-1.0) applies
        assert call["audio"].dtype == np.float32
    L.label_clip(lab, speechlike(), "ko", beam_size=5, seed=5, logprob_fallback=False)
    assert fake.calls[-1]["beam_size"] == 5 and fake.calls[-1]["logprob_threshold"] is None
    # seeded: the same seed gives the same (sampled) output, another seed another one
    again = L.label_clip(L.Labeler(FakeModel(), "fake"), speechlike(), "ko", 1, 5)
    assert again == (text, translation)
    assert L.label_clip(L.Labeler(FakeModel(), "fake"), speechlike(), "ko", 1, 6) != again


def test_english_only_model() -> None:
    lab = L.Labeler(FakeModel(multilingual=False), "tiny.en")
    with pytest.raises(StageError, match="English-only model cannot transcribe or translate ja_jp"):
        L.check_language(lab, "ja", "ja_jp")
    L.check_language(lab, "en", "en_us")
    text, translation = L.label_clip(lab, speechlike(), "en", 1, 0)
    assert text == translation and [c["task"] for c in lab.model.calls] == ["transcribe"]


def test_load_labeler_choices(model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    lab = L.load_labeler("reference", model_dir)
    assert lab.name == "reference:tiny-eot" and lab.multilingual
    assert L.load_labeler(str(model_dir / L.CHECKPOINT), None).name == L.CHECKPOINT
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
    import whisper
    import urllib.error

    def offline(*a, **k):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(whisper, "_download", offline)
    with pytest.raises(StageError, match="large-v3.*could not download") as e:
        L.load_labeler("large-v3", None)
    assert "\n" not in str(e.value)


def test_real_decode_is_deterministic(model_dir: Path) -> None:
    lab = L.load_labeler("reference", model_dir)
    audio = speechlike()
    a = L.label_clip(lab, audio, "de", 1, 3)
    b = L.label_clip(lab, audio, "de", 1, 3)
    assert a == b and all(isinstance(x, str) for x in a)


# ---------------------------------------------------------------------------------------------- stages

def test_label_stage_main(model_dir: Path, tmp_path: Path) -> None:
    rows = make_audio_dir(tmp_path / "audio" / "it_it", "it_it", 3)
    out = tmp_path / "labels" / "it_it.jsonl"
    argv = ["--lang", "it_it", "--audio", str(tmp_path / "audio" / "it_it"), "--model", str(model_dir),
            "--out", str(out), "--params", str(write_params(tmp_path))]
    label_stage.main(argv)
    labels = read_jsonl(out)
    assert [r["id"] for r in labels] == [r["id"] for r in rows]
    assert all(set(r) == {"id", "lang", "transcription", "translation", "labeler"} for r in labels)
    assert all(r["lang"] == "it_it" and r["labeler"] == "reference:tiny-eot" for r in labels)
    first = out.read_bytes()
    label_stage.main(argv)
    assert out.read_bytes() == first
    # a manifest of another language is refused
    with pytest.raises(StageError, match="not de_de"):
        label_stage.main(["--lang", "de_de", *argv[2:]])


def test_label_stage_english_only_model_fails_for_other_languages(tmp_path: Path) -> None:
    make_audio_dir(tmp_path / "audio" / "ko_kr", "ko_kr", 1)
    ckpt = make_checkpoint(tmp_path / "en.pt", multilingual=False)
    with pytest.raises(StageError, match="English-only"):
        label_stage.main(["--lang", "ko_kr", "--audio", str(tmp_path / "audio" / "ko_kr"), "--model", str(tmp_path),
                          "--out", str(tmp_path / "ko.jsonl"),
                          "--params", str(write_params(tmp_path, labels={"labeler": str(ckpt), "beam_size": 1}))])
    assert not (tmp_path / "ko.jsonl").exists()


def write_params(folder: Path, languages: list[str] | None = None, labels: dict | None = None) -> Path:
    params = default_params()
    if languages:
        params["languages"] = languages
    if labels:
        params["labels"] = labels
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
    params["audio"].update(clips=2, eval_clips=1)
    params["calibration"]["samples_per_language"] = 1
    return params


@pytest.mark.slow
def test_dvc_labels_add_and_remove_language(project) -> None:
    repo = project(tiny_profile(["de_de", "ko_kr"]))
    # the reference model is the model stage's output; here a tiny checkpoint stands in for it, so the
    # copy drops the model stage and the labels DAG is audio@* -> label@* -> labels
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    pipeline["stages"].pop("model", None)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    make_checkpoint(repo / "models" / "reference" / L.CHECKPOINT)

    out = run(["dvc", "repro", "labels"], repo).stdout
    assert ran(out) == {"audio@de_de", "audio@ko_kr", "label@de_de", "label@ko_kr", "labels"}, out
    keys = set(read_json(repo / "data" / "transcriptions.json"))
    assert keys == {f"{lang}_{i:04d}.wav" for lang in ("de_de", "ko_kr") for i in range(2)}

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
    assert {k[:5] for k in translations} == {"de_de", "ru_ru"}
    assert translations["ru_ru_0001.wav"]["source_language_whisper"] == "ru"
    assert run(["dvc", "repro", "labels"], repo).stdout.count("Running stage") == 0


@pytest.mark.slow
def test_reference_whisper_base_labels_spanish_synth(reference_model_dir: Path, tmp_path: Path) -> None:
    """Real weights: whisper-base (the offline reference) through openai-whisper labels espeak Spanish."""
    from stages import audio as audio_stage
    from whisper_npu import sources
    from whisper_npu.params import AudioParams

    p = AudioParams(source="synth", clips=1, eval_clips=0)
    kept, skipped, ids = audio_stage.build("es_419", p, 0, sources.get_clips("es_419", p, 0))
    audio_stage.write(tmp_path / "es_419", kept, skipped, ids)
    lab = L.load_labeler("reference", reference_model_dir)
    assert lab.name == "reference:whisper-base"
    rows = label_stage.label_rows(lab, "es_419", tmp_path / "es_419", read_jsonl(tmp_path / "es_419" / "manifest.jsonl"),
                                  beam_size=1, seed=0, logprob_fallback=False)
    # whisper-base on espeak-ng speech is rough (~0.2-0.4 CER, shared/notes/offline-whisper-facts.md §2)
    from whisper_npu.metrics import edit_distance, normalize
    ref, hyp = normalize(kept[0].row["text"], "es_419"), normalize(rows[0]["transcription"], "es_419")
    cer = edit_distance(ref, hyp) / max(1, len(ref))
    assert cer < 0.5, rows
    assert rows[0]["translation"].isascii() and rows[0]["translation"] != rows[0]["transcription"], rows
