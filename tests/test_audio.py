"""Audio stage: decoding/validation of bad files, the three sources, determinism, the split, and
(slow) the per-language foreach through the real dvc CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import default_params, run, section

from stages import audio as stage
from whisper_npu.audio import prepare as A
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import read_json, read_jsonl, sha256_tree
from whisper_npu.params.audio import AudioParams
from whisper_npu.params.full import parse_params
from whisper_npu.sources import loader, synth

SR = 16000


def tone(seconds: float, rate: int = SR, amp: float = 0.3, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    y = amp * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t))
    return np.stack([y * (0.5 + 0.5 * c) for c in range(channels)], axis=1) if channels > 1 else y


def wav_bytes(y: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> bytes:
    import io
    buf = io.BytesIO()
    sf.write(buf, y, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- bad audio corpus

def make_corpus(folder: Path) -> dict[str, str]:
    """Write one file per case into ``folder``; return file name -> expected outcome.

    Outcomes: "ok", "ok-resampled", "ok-clipped", "ok-split", or the start of the skip reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    good = wav_bytes(tone(2.0))
    cases: dict[str, str] = {}

    def put(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        cases[name] = outcome

    put("a_truncated_header.wav", good[:30], "unreadable")
    put("b_zero_length.wav", b"", "unreadable")
    put("c_text_as.wav", b"this is not audio, it is a text file\n" * 50, "unreadable")
    put("d_text_as.mp3", b"not an mp3 either\n" * 100, "unreadable")
    nan = tone(1.0).astype(np.float32)
    nan[100:110] = np.nan
    put("e_nan_float.wav", wav_bytes(nan, subtype="FLOAT"), "non-finite")
    inf = tone(1.0).astype(np.float32)
    inf[5] = np.inf
    put("f_inf_float.wav", wav_bytes(inf, subtype="FLOAT"), "non-finite")
    put("g_8k_stereo.wav", wav_bytes(tone(1.5, rate=8000, channels=2), rate=8000), "ok-resampled")
    put("h_48k.wav", wav_bytes(tone(1.5, rate=48000), rate=48000), "ok-resampled")
    for ext in ("mp3", "flac", "ogg"):
        p = folder / f"i_tone.{ext}"
        sf.write(str(p), tone(1.5), SR)
        cases[p.name] = "ok"
    # ten minutes and a half-second tail: 20 pieces of 30 s, the 0.5 s tail dropped
    p = folder / "j_ten_minutes.flac"
    sf.write(str(p), tone(600.5, amp=0.2), SR)
    cases[p.name] = "ok-split"
    put("k_silence.wav", wav_bytes(np.zeros(SR * 2)), "silent")
    put("l_near_silence.wav", wav_bytes(tone(2.0, amp=0.0005)), "silent")
    clipped = np.clip(tone(2.0, amp=1.6), -1.0, 1.0)
    put("m_clipped.wav", wav_bytes(clipped), "ok-clipped")
    put("n_too_short.wav", wav_bytes(tone(0.05)), "empty")
    return cases


def test_prepare_each_bad_file(tmp_path: Path) -> None:
    cases = make_corpus(tmp_path)
    for name, outcome in cases.items():
        path = tmp_path / name
        if outcome.startswith("ok"):
            prep = A.prepare(path, "split")
            for piece in prep.pieces:
                assert piece.samples.dtype == np.float32 and piece.samples.ndim == 1
                assert 0 < len(piece.samples) <= 30 * SR
                assert np.isfinite(piece.samples).all()
            if outcome == "ok-resampled":
                assert prep.info["sample_rate"] in (8000, 48000)
                assert abs(prep.pieces[0].duration - 1.5) < 0.01, name
            if name == "g_8k_stereo.wav":
                assert prep.info["channels"] == 2
            if outcome == "ok-clipped":
                assert prep.info["clipped_fraction"] > 0.1
            else:
                assert "clipped_fraction" not in prep.info, name
            if outcome == "ok-split":
                assert len(prep.pieces) == 20 and prep.cut
                assert [p.start for p in prep.pieces] == [30.0 * k for k in range(20)]
                assert len(prep.dropped) == 1 and "tail" in prep.dropped[0][1]
            else:
                assert len(prep.pieces) == 1 and not prep.cut, name
        else:
            with pytest.raises(A.BadAudio) as e:
                A.prepare(path, "split")
            assert str(e.value).startswith(outcome), (name, str(e.value))
            assert str(tmp_path) not in str(e.value) and "0x" not in str(e.value)


def test_long_clip_trim_keeps_first_30_s(tmp_path: Path) -> None:
    p = tmp_path / "long.wav"
    y = tone(75.0)
    sf.write(str(p), y, SR, subtype="PCM_16")
    prep = A.prepare(p, "trim")
    assert len(prep.pieces) == 1 and prep.cut and prep.pieces[0].duration == 30.0
    assert np.allclose(prep.pieces[0].samples, sf.read(str(p), dtype="float32")[0][:30 * SR])


def test_split_drops_silent_piece(tmp_path: Path) -> None:
    y = np.concatenate([tone(30.0), np.zeros(30 * SR), tone(10.0)])
    prep = A.prepare(wav_bytes(y), "split")
    assert [p.start for p in prep.pieces] == [0.0, 60.0]
    assert len(prep.dropped) == 1 and "silent" in prep.dropped[0][1]


def test_wav_writer_is_pcm16_and_deterministic(tmp_path: Path) -> None:
    y = np.concatenate([tone(1.0), [1.5, -1.5]]).astype(np.float32)  # out of range: clipped, no wrap-around
    A.write_wav(tmp_path / "a.wav", y)
    A.write_wav(tmp_path / "b.wav", y.copy())
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    info = sf.info(str(tmp_path / "a.wav"))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (SR, 1, "PCM_16", "WAV")
    back = A.read_wav(tmp_path / "a.wav")
    assert back[-2] > 0.99 and back[-1] < -0.99
    assert np.abs(back[:SR] - y[:SR]).max() < 1e-4


def audio_params(**kw) -> AudioParams:
    return section("audio", **kw)


def test_stage_on_bad_corpus_records_every_outcome(tmp_path: Path) -> None:
    cases = make_corpus(tmp_path / "in" / "de_de")
    p = audio_params(source="local", clips=len(cases), eval_clips=2, max_skipped_fraction=1.0,
                     local={"dir": str(tmp_path / "in")})
    clips = loader.get_clips("de_de", p, 0).clips
    kept, skipped, ids = stage.build("de_de", p, 0, clips)
    stage.write(tmp_path / "out", kept, skipped, ids)

    manifest = read_jsonl(tmp_path / "out" / "manifest.jsonl")
    by_file: dict[str, list[dict]] = {}
    for row in manifest:
        by_file.setdefault(row["source"]["path"].split("/", 1)[1], []).append(row)
    reasons = {s["source_ref"].split("/", 1)[1]: s["reason"] for s in skipped}
    for name, outcome in cases.items():
        if outcome.startswith("ok"):
            assert name in by_file, name
            assert name not in reasons
        else:
            assert name not in by_file, name
            assert reasons[name].startswith(outcome), (name, reasons[name])
    assert len(by_file["j_ten_minutes.flac"]) == 20
    assert any("tail" in r for r in reasons.values())  # the dropped 0.5 s tail of the 10-minute file
    assert by_file["m_clipped.wav"][0]["source"]["audio"]["clipped_fraction"] > 0.1
    # rows: contract fields, files exist and are 16 kHz mono PCM_16
    for row in manifest:
        assert set(row) == {"id", "file", "lang", "split", "duration", "text", "text_en", "source"}
        assert row["file"] == row["id"] + ".wav"
        info = sf.info(str(tmp_path / "out" / row["file"]))
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert abs(info.frames / SR - row["duration"]) < 1e-3
    assert [r["id"] for r in manifest] == sorted(r["id"] for r in manifest)
    assert [r["id"] for r in manifest] == [f"de_de_{i:04d}" for i in range(len(manifest))]
    # the 20 pieces of the long file share one split
    assert len({r["split"] for r in by_file["j_ten_minutes.flac"]}) == 1
    split = read_json(tmp_path / "out" / "split.json")
    assert not set(split["calibration"]) & set(split["evaluation"])
    assert sorted(split["calibration"] + split["evaluation"]) == [r["id"] for r in manifest]


def test_stage_fails_when_too_many_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "in" / "fr_fr"
    folder.mkdir(parents=True)
    for i in range(4):
        (folder / f"{i}.wav").write_bytes(wav_bytes(tone(1.0)) if i < 2 else b"")
    p = audio_params(source="local", clips=4, eval_clips=1, max_skipped_fraction=0.25,
                     local={"dir": str(tmp_path / "in")})
    with pytest.raises(StageError, match=r"2 of 4 clips unusable"):
        stage.build("fr_fr", p, 0, loader.get_clips("fr_fr", p, 0).clips)
    p = audio_params(source="local", clips=4, eval_clips=1, max_skipped_fraction=0.5,
                     local={"dir": str(tmp_path / "in")})
    kept, skipped, ids = stage.build("fr_fr", p, 0, loader.get_clips("fr_fr", p, 0).clips)
    assert len(kept) == 2 and len(skipped) == 2 and len(ids["evaluation"]) == 1


def test_stage_main_failure_leaves_no_output(tmp_path: Path) -> None:
    folder = tmp_path / "in" / "fr_fr"
    folder.mkdir(parents=True)
    for i in range(2):
        (folder / f"{i}.wav").write_bytes(b"junk")
    params = default_params()
    params["audio"].update(source="local", clips=2, eval_clips=1, local={"dir": str(tmp_path / "in")},
                           per_language={})
    params["calibration"]["samples_per_language"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out" / "fr_fr"
    out.mkdir(parents=True)
    (out / "stale.wav").write_bytes(b"old")
    with pytest.raises(StageError):
        stage.main(["--lang", "fr_fr", "--out", str(out), "--params", str(tmp_path / "params.yaml")])
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- split

@pytest.mark.parametrize("seed", range(5))
def test_split_is_disjoint_and_keeps_groups_whole(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups = sorted(int(g) for g in rng.integers(0, 9, size=30))
    eval_clips = int(rng.integers(1, len(set(groups))))
    held = stage.split(groups, eval_clips, seed, "ko_kr")
    assert len(held) == eval_clips and held <= set(groups)
    assert held == stage.split(groups, eval_clips, seed, "ko_kr")  # seeded
    with pytest.raises(StageError, match="none for calibration"):
        stage.split(groups, len(set(groups)), seed, "ko_kr")


def test_split_differs_by_seed() -> None:
    groups = list(range(24))
    assert len({frozenset(stage.split(groups, 4, s, "de_de")) for s in range(6)}) > 1


# ---------------------------------------------------------------------------------------------- synth

def test_corpus_is_parallel_and_complete() -> None:
    corpus = synth.load_corpus()
    from whisper_npu.core.languages import LANGUAGES, TUTORIAL_LANGUAGES
    assert set(corpus) == set(TUTORIAL_LANGUAGES)
    numbers = [r["sentence"] for r in corpus["en_us"]]
    assert len(numbers) >= 24 and numbers == sorted(set(numbers))
    for lang, rows in corpus.items():
        assert [r["sentence"] for r in rows] == numbers, lang
        assert len({r["text"] for r in rows}) == len(rows), f"{lang}: duplicate sentences"
        needs_speech = lang in ("cmn_hans_cn", "ja_jp")
        assert all(("speech" in r) == needs_speech for r in rows), lang
    assert LANGUAGES["cmn_hans_cn"].espeak_voice == "cmn-latn-pinyin"
    # the speech lines are in the script the voice reads: pinyin with tone digits, kana
    assert all(any(ch.isdigit() for ch in r["speech"]) and r["speech"].isascii() for r in corpus["cmn_hans_cn"])
    assert all(not any("\u4e00" <= ch <= "\u9fff" for ch in r["speech"]) for r in corpus["ja_jp"])


def synth_params(**kw) -> AudioParams:
    return section("audio", source="synth", **kw)


def test_synth_is_deterministic_and_seeded(tmp_path: Path) -> None:
    p = synth_params(clips=3, eval_clips=1)
    trees = []
    for k in range(2):
        kept, skipped, ids = stage.build("ja_jp", p, 7, loader.get_clips("ja_jp", p, 7).clips)
        stage.write(tmp_path / f"run{k}", kept, skipped, ids)
        trees.append(sha256_tree(tmp_path / f"run{k}"))
    assert trees[0] == trees[1]
    manifest = read_jsonl(tmp_path / "run0" / "manifest.jsonl")
    assert [r["source"]["sentence"] for r in manifest] == [1, 2, 3]  # selection: first
    corpus = {r["sentence"]: r for r in synth.load_corpus()["ja_jp"]}
    english = {r["sentence"]: r["text"] for r in synth.load_corpus()["en_us"]}
    for r in manifest:
        s = r["source"]
        assert r["text"] == corpus[s["sentence"]]["text"] and r["text_en"] == english[s["sentence"]]
        assert s["spoken_text"] == corpus[s["sentence"]]["speech"]  # kana spoken, kanji kept as reference
        assert s["voice"].split("+")[0] == "ja" and 135 <= s["rate"] <= 170 and 35 <= s["pitch"] <= 65
        assert 0.5 < r["duration"] < 30
    # another seed: other voices and rates, other split
    kept2, _, _ = stage.build("ja_jp", p, 8, loader.get_clips("ja_jp", p, 8).clips)
    assert [c.row["source"] for c in kept2] != [json.loads(json.dumps(r["source"])) for r in manifest]


def test_synth_seeded_selection_and_counts() -> None:
    p = synth_params(clips=5, eval_clips=1, selection="seeded")
    a = [c.source["sentence"] for c in loader.get_clips("de_de", p, 1).clips]
    b = [c.source["sentence"] for c in loader.get_clips("de_de", p, 1).clips]
    c = [c.source["sentence"] for c in loader.get_clips("de_de", p, 2).clips]
    assert a == b and a == sorted(a) and len(set(a)) == 5 and a != c
    with pytest.raises(StageError, match=r"de_de.*24 clips.*asks for 25"):
        loader.get_clips("de_de", synth_params(clips=25, eval_clips=1), 0).clips


def test_synth_variety_within_params() -> None:
    p = synth_params(clips=12, eval_clips=1, synth={"rate": [100, 200], "pitch": [10, 90], "variants": ["", "f2"]})
    clips = loader.get_clips("es_419", p, 0).clips
    assert len({c.source["rate"] for c in clips}) > 3 and len({c.source["voice"] for c in clips}) == 2
    assert all(c.source["voice"] in ("es-419", "es-419+f2") for c in clips)


def test_synth_language_without_corpus_is_named() -> None:
    with pytest.raises(StageError, match="'hi_in' has no synthetic speech"):
        loader.get_clips("hi_in", synth_params(clips=2, eval_clips=1), 0).clips


def test_synth_without_espeak_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    clips = loader.get_clips("de_de", synth_params(clips=2, eval_clips=1), 0).clips
    with pytest.raises(StageError, match="apt-get install espeak-ng"):
        clips[0].read()


def test_synth_text_is_not_an_option(tmp_path: Path) -> None:
    # text that looks like espeak-ng options is spoken, not parsed
    wav = synth.espeak("--help -w /tmp/x.wav", "en-us", 150, 50)
    assert A.prepare(wav).pieces[0].duration > 0.5


# ---------------------------------------------------------------------------------------------- local

def test_local_source_with_transcripts(tmp_path: Path) -> None:
    folder = tmp_path / "mine" / "ko_kr"
    folder.mkdir(parents=True)
    sf.write(str(folder / "b.flac"), tone(1.0), SR)
    sf.write(str(folder / "a.wav"), tone(1.2, rate=22050), 22050)
    sf.write(str(folder / "c.ogg"), tone(1.1), SR)
    (folder / "a.txt").write_text("안녕하세요\n", encoding="utf-8")
    (folder / "a.en.txt").write_text("Hello", encoding="utf-8")
    (folder / "notes.md").write_text("not audio")
    p = audio_params(source="local", clips=3, eval_clips=1, local={"dir": str(tmp_path / "mine")})
    clips = loader.get_clips("ko_kr", p, 0).clips
    assert [c.source["path"] for c in clips] == ["ko_kr/a.wav", "ko_kr/b.flac", "ko_kr/c.ogg"]
    assert (clips[0].text, clips[0].text_en) == ("안녕하세요", "Hello")
    assert (clips[1].text, clips[1].text_en) == (None, None)
    kept, skipped, ids = stage.build("ko_kr", p, 0, clips)
    assert not skipped and abs(kept[0].row["duration"] - 1.2) < 0.01
    assert not any(str(tmp_path) in json.dumps(c.row) for c in kept)
    with pytest.raises(StageError, match=r"ko_kr.*3 clips, audio.clips asks for 4"):
        loader.get_clips("ko_kr", audio_params(source="local", clips=4, eval_clips=1,
                                                local={"dir": str(tmp_path / "mine")}), 0).clips
    with pytest.raises(StageError, match="no folder"):
        loader.get_clips("de_de", p, 0).clips


# ---------------------------------------------------------------------------------------------- fleurs stand-in

FLEURS_ROWS = {
    # lang: [(fleurs sentence id, raw transcription, seconds)]
    "ko_kr": [(11, "오늘은 날씨가 좋아요.", 1.0), (12, "공원에 갑니다.", 1.3), (13, "커피 주세요.", 0.9),
              (14, "고맙습니다.", 1.1), (12, "공원에 갑니다.", 1.2)],
    "en_us": [(12, "We go to the park.", 1.0), (11, "The weather is nice today.", 1.0), (99, "Unrelated.", 1.0)],
}


def make_fleurs(root: Path, split: str = "validation") -> Path:
    """A local stand-in with FLEURS's schema: <root>/<lang>/<split>-00000-of-00001.parquet, Audio feature."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("int32"), "num_samples": datasets.Value("int32"), "path": datasets.Value("string"),
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "transcription": datasets.Value("string"),
        "raw_transcription": datasets.Value("string"), "gender": datasets.Value("int64"),
        "lang_id": datasets.Value("int64"), "language": datasets.Value("string"),
        "lang_group_id": datasets.Value("int64")})
    for lang, rows in FLEURS_ROWS.items():
        data: dict[str, list] = {k: [] for k in features}
        for k, (sid, text, seconds) in enumerate(rows):
            rate = 48000 if k == 1 else SR  # one row at another rate: resampled
            y = tone(seconds, rate=rate, freq=200 + 20 * k)
            name = f"/cache/extracted/abc/{split}/{sid}_{k}.wav"  # FLEURS paths point into a cache
            data["id"].append(sid)
            data["num_samples"].append(len(y))
            data["path"].append(name)
            data["audio"].append({"bytes": wav_bytes(y, rate), "path": Path(name).name})
            data["transcription"].append(text.lower().rstrip("."))
            data["raw_transcription"].append(text)
            data["gender"].append(k % 2)
            data["lang_id"].append(0)
            data["language"].append(lang)
            data["lang_group_id"].append(0)
        out = root / lang
        out.mkdir(parents=True, exist_ok=True)
        # cast, not encode: encoding audio needs torchcodec; the parquet then carries the Audio feature as FLEURS's does
        ds = datasets.Dataset.from_dict(data, features=features).cast_column("audio", datasets.Audio(sampling_rate=SR))
        ds.to_parquet(str(out / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def fleurs_dir(tmp_path_factory) -> Path:
    return make_fleurs(tmp_path_factory.mktemp("fleurs"))


def fleurs_params(root: Path, **kw) -> AudioParams:
    return section("audio", source="fleurs", fleurs={"dataset": str(root), "revision": "main"}, **kw)


def test_fleurs_stand_in_first_n_with_english_join(fleurs_dir: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    p = fleurs_params(fleurs_dir, clips=4, eval_clips=1)
    clips = loader.get_clips("ko_kr", p, 0).clips
    assert [c.source["fleurs_id"] for c in clips] == [11, 12, 13, 14]
    assert [c.text for c in clips] == [r[1] for r in FLEURS_ROWS["ko_kr"][:4]]
    assert [c.text_en for c in clips] == ["The weather is nice today.", "We go to the park.", None, None]
    assert clips[0].source["transcription"] == "오늘은 날씨가 좋아요"
    assert clips[0].source["path"] == "11_0.wav" and clips[0].source["dataset"] == fleurs_dir.name
    kept, skipped, ids = stage.build("ko_kr", p, 0, clips)
    assert not skipped and len(kept) == 4
    assert abs(kept[1].row["duration"] - 1.3) < 0.01 and kept[1].row["source"]["audio"]["sample_rate"] == 48000
    assert kept[0].row["text_en"] == "The weather is nice today."
    # en_us itself: its own sentence is the English reference
    en = loader.get_clips("en_us", fleurs_params(fleurs_dir, clips=2, eval_clips=1), 0).clips
    assert [c.text_en for c in en] == [c.text for c in en] == ["We go to the park.", "The weather is nice today."]


def test_fleurs_seeded_choice_and_counts(fleurs_dir: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    p = fleurs_params(fleurs_dir, clips=3, eval_clips=1, selection="seeded")
    rows = [c.source["row"] for c in loader.get_clips("ko_kr", p, 3).clips]
    assert rows == sorted(rows) and len(set(rows)) == 3
    assert rows == [c.source["row"] for c in loader.get_clips("ko_kr", p, 3).clips]
    assert any([c.source["row"] for c in loader.get_clips("ko_kr", p, s).clips] != rows for s in range(4, 10))
    with pytest.raises(StageError, match=r"ko_kr/validation has 5 clips, audio.clips asks for 6"):
        loader.get_clips("ko_kr", fleurs_params(fleurs_dir, clips=6, eval_clips=1), 0).clips
    with pytest.raises(StageError, match="no 'validation' split for de_de"):
        loader.get_clips("de_de", fleurs_params(fleurs_dir, clips=1, eval_clips=0), 0).clips


def test_fleurs_hub_unreachable_is_one_line(monkeypatch, tmp_path: Path) -> None:
    import datasets
    import huggingface_hub.constants

    # offline mode is read at import time: set the constants too, so the test never touches the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    p = section("audio", source="fleurs", clips=2, eval_clips=1)
    with pytest.raises(StageError) as e:
        loader.get_clips("ko_kr", p, 0).clips
    assert "google/fleurs" in str(e.value) and "\n" not in str(e.value)


def test_params_default_fleurs_revision_is_the_parquet_export() -> None:
    p = parse_params(default_params())
    assert p.audio.fleurs.revision == "refs/convert/parquet"


# ---------------------------------------------------------------------------------------------- dvc, slow

def tiny_profile(languages: list[str]) -> dict:
    params = default_params()
    params["languages"] = languages
    params["audio"].update(clips=3, eval_clips=1)
    params["calibration"]["samples_per_language"] = 2
    return params


def ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage '")}


@pytest.mark.slow
def test_dvc_audio_foreach_adds_only_the_new_language(project) -> None:
    repo = project(tiny_profile(["de_de", "th_th"]))
    out = run(["dvc", "repro", "--glob", "audio@*"], repo).stdout
    assert ran(out) == {"audio@de_de", "audio@th_th"}
    before = {lang: sha256_tree(repo / "data" / "audio" / lang) for lang in ("de_de", "th_th")}

    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_profile(["de_de", "th_th", "vi_vn"]),
                                                     allow_unicode=True, sort_keys=False))
    out = run(["dvc", "repro", "--glob", "audio@*"], repo).stdout
    assert ran(out) == {"audio@vi_vn"}, out
    assert {lang: sha256_tree(repo / "data" / "audio" / lang) for lang in ("de_de", "th_th")} == before
    manifest = read_jsonl(repo / "data" / "audio" / "vi_vn" / "manifest.jsonl")
    assert [r["id"] for r in manifest] == ["vi_vn_0000", "vi_vn_0001", "vi_vn_0002"]
    assert sum(r["split"] == "evaluation" for r in manifest) == 1

    # deterministic: forcing a rerun writes the same bytes
    run(["dvc", "repro", "-f", "audio@de_de"], repo)
    assert sha256_tree(repo / "data" / "audio" / "de_de") == before["de_de"]
    # a change in the audio params reruns every audio stage
    params = tiny_profile(["de_de", "th_th", "vi_vn"])
    params["audio"]["clips"] = 4
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    assert ran(run(["dvc", "repro", "--glob", "audio@*"], repo).stdout) == {"audio@de_de", "audio@th_th", "audio@vi_vn"}
