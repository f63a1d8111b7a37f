"""Audio stage: decoding/validation of bad files, the sources (synth, local, a FLEURS stand-in; asterisk in
test_asterisk.py), determinism, the calibration and evaluation pools (disjoint, the evaluation pool unchanged when
the calibration count changes), FLEURS reading only the split files it uses, and (slow) the per-language foreach
through the real dvc CLI."""
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
from whisper_npu.core.files import read_jsonl, sha256_tree
from whisper_npu.params.audio import AudioParams
from whisper_npu.params.base import ParamsError
from whisper_npu.params.full import parse_params
from whisper_npu.sources import loader, synth
from whisper_npu.sources.base import ROLES, pick, pools, seeded_order

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


def read_roles(root: Path, lang: str) -> dict[str, list[dict]]:
    """The manifests of both folders the stage wrote below the audio root ``root``."""
    return {role: read_jsonl(root / role / lang / "manifest.jsonl") for role in ROLES}


def eval_tree(root: Path, lang: str) -> str:
    return sha256_tree(root / "evaluation" / lang)


def test_stage_on_bad_corpus_records_every_outcome(tmp_path: Path) -> None:
    cases = make_corpus(tmp_path / "in" / "de_de")
    p = audio_params(source="local", calibration_clips=len(cases) - 2, eval_clips=2, max_skipped_fraction=1.0,
                     local={"dir": str(tmp_path / "in")})
    stage.make("de_de", p, 0, tmp_path / "out")

    manifests = read_roles(tmp_path / "out", "de_de")
    by_file: dict[str, list[dict]] = {}
    for row in manifests["calibration"] + manifests["evaluation"]:
        by_file.setdefault(row["source"]["path"].split("/", 1)[1], []).append(row)
    reasons = {s["source_ref"].split("/", 1)[1]: s["reason"]
               for role in ROLES for s in read_jsonl(tmp_path / "out" / role / "de_de" / "skipped.jsonl")}
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
    # selection first: calibration = the first files by name, evaluation = the last two (m_, n_: one unusable)
    assert [r["source"]["path"] for r in manifests["evaluation"]] == ["de_de/m_clipped.wav"]
    # rows: contract fields, files exist and are 16 kHz mono PCM_16; ids per role, unique in the language
    prefix = {"calibration": "de_de_", "evaluation": "de_de_eval_"}
    for role, manifest in manifests.items():
        for row in manifest:
            assert set(row) == {"id", "file", "lang", "split", "duration", "text", "text_en", "source"}
            assert row["file"] == row["id"] + ".wav" and row["split"] == role
            info = sf.info(str(tmp_path / "out" / role / "de_de" / row["file"]))
            assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert abs(info.frames / SR - row["duration"]) < 1e-3
        assert [r["id"] for r in manifest] == [f"{prefix[role]}{i:04d}" for i in range(len(manifest))]
    # the 20 pieces of the long file stay in its role
    assert {r["split"] for r in by_file["j_ten_minutes.flac"]} == {"calibration"}


def local_folder(root: Path, lang: str, good: list[bool]) -> Path:
    """``<root>/<lang>/<k>.wav``: a tone when good[k], an empty (unusable) file otherwise."""
    folder = root / lang
    folder.mkdir(parents=True)
    for k, ok in enumerate(good):
        (folder / f"{k}.wav").write_bytes(wav_bytes(tone(1.0, freq=200 + 40 * k)) if ok else b"")
    return root


def test_stage_fails_when_too_many_of_a_role_are_skipped(tmp_path: Path) -> None:
    root = local_folder(tmp_path / "in", "fr_fr", [True, True, False, True])   # calibration 0-2, evaluation 3
    p = audio_params(source="local", calibration_clips=3, eval_clips=1, max_skipped_fraction=0.25,
                     local={"dir": str(root)})
    sel = loader.get_clips("fr_fr", p, 0)
    with pytest.raises(StageError, match=r"fr_fr: 1 of 3 calibration clips unusable \(> audio.max_skipped_fraction"):
        stage.build("fr_fr", "calibration", sel.calibration, p)
    p = audio_params(source="local", calibration_clips=3, eval_clips=1, max_skipped_fraction=0.5,
                     local={"dir": str(root)})
    kept, skipped = stage.build("fr_fr", "calibration", sel.calibration, p)
    assert len(kept) == 2 and [s["source_ref"] for s in skipped] == ["local:fr_fr/2.wav"]
    with pytest.raises(StageError, match="no usable calibration clip"):
        stage.build("fr_fr", "calibration", sel.calibration[2:], audio_params(max_skipped_fraction=1.0))


def test_a_bad_evaluation_clip_is_skipped_never_replaced(tmp_path: Path) -> None:
    """An unusable evaluation clip leaves a smaller evaluation folder: no clip of the calibration pool (or any other)
    takes its place, so the evaluation folder is the same whatever audio.calibration_clips is."""
    root = local_folder(tmp_path / "in", "fr_fr", [True, True, True, True, True, False])
    trees, manifests = set(), []
    for n in (2, 4):
        p = audio_params(source="local", calibration_clips=n, eval_clips=2, max_skipped_fraction=0.5,
                         local={"dir": str(root)})
        stage.make("fr_fr", p, 0, tmp_path / f"out{n}")
        trees.add(eval_tree(tmp_path / f"out{n}", "fr_fr"))
        manifests.append(read_roles(tmp_path / f"out{n}", "fr_fr"))
    assert len(trees) == 1
    assert [r["source"]["path"] for r in manifests[0]["evaluation"]] == ["fr_fr/4.wav"]
    assert [s["source_ref"] for s in read_jsonl(tmp_path / "out4" / "evaluation" / "fr_fr" / "skipped.jsonl")] == \
        ["local:fr_fr/5.wav"]
    assert [r["source"]["path"] for r in manifests[1]["calibration"]] == [f"fr_fr/{k}.wav" for k in range(4)]


def test_stage_main_failure_leaves_no_output(tmp_path: Path) -> None:
    folder = tmp_path / "in" / "fr_fr"
    folder.mkdir(parents=True)
    for i in range(2):
        (folder / f"{i}.wav").write_bytes(b"junk")
    params = default_params()
    params["audio"].update(source="local", calibration_clips=1, eval_clips=1, local={"dir": str(tmp_path / "in")},
                           per_language={})
    params["calibration"]["samples_per_language"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "out"
    for role in ROLES:
        (out / role / "fr_fr").mkdir(parents=True)
        (out / role / "fr_fr" / "stale.wav").write_bytes(b"old")
    with pytest.raises(StageError):
        stage.main(["--lang", "fr_fr", "--out", str(out), "--params", str(tmp_path / "params.yaml")])
    assert not (out / "calibration" / "fr_fr").exists() and not (out / "evaluation" / "fr_fr").exists()


def test_old_clips_key_is_refused_naming_what_replaced_it(tmp_path: Path) -> None:
    params = default_params()
    params["audio"]["clips"] = 8
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"params.yaml: audio.clips: no longer a key: calibration_clips replaced it"):
        stage.main(["--lang", "de_de", "--out", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")])
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- pools

REFS = [f"synth:de_de:{k}" for k in range(1, 25)]


@pytest.mark.parametrize("selection", ["first", "seeded"])
def test_pools_are_disjoint_and_evaluation_ignores_the_calibration_count(selection: str) -> None:
    evals = set()
    for n_cal in range(1, 20):
        cal, ev = pools(REFS, n_cal, 4, selection, 3, "de_de", "the corpus")
        assert len(cal) == n_cal and len(ev) == 4 and not set(cal) & set(ev)
        assert cal == sorted(cal) and ev == sorted(ev)
        evals.add(tuple(ev))
    assert len(evals) == 1


def test_pools_first_and_seeded() -> None:
    assert pools(REFS, 3, 2, "first", 0, "de_de", "x") == ([0, 1, 2], [22, 23])   # first N, last N
    with pytest.raises(StageError, match=r"audio@de_de: x has 24 clips, audio.calibration_clips \+ audio.eval_clips "
                                         r"ask for 23 \+ 2; lower them or add clips"):
        pools(REFS, 23, 2, "first", 0, "de_de", "x")
    seeded = {tuple(pools(REFS, 3, 2, "seeded", s, "de_de", "x")[1]) for s in range(6)}
    assert len(seeded) > 1                                                          # the seed decides
    # a hash per clip: another candidate added to the pool leaves the others' order alone
    cal, ev = pools(REFS, 3, 2, "seeded", 0, "de_de", "x")
    order = seeded_order(REFS, 0, "de_de")
    assert ev == sorted(order[:2]) and cal == sorted(order[2:5])
    grown = seeded_order(REFS + ["synth:de_de:new"], 0, "de_de")
    assert [i for i in grown if i < len(REFS)] == order
    assert pick(REFS, 2, "first", 0, "de_de", "audio.eval_clips", "x") == [0, 1]
    with pytest.raises(StageError, match=r"x has 24 clips, audio.eval_clips asks for 30; lower audio.eval_clips"):
        pick(REFS, 30, "seeded", 0, "de_de", "audio.eval_clips", "x")


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
    p = synth_params(calibration_clips=2, eval_clips=1)
    trees = []
    for k in range(2):
        stage.make("ja_jp", p, 7, tmp_path / f"run{k}")
        trees.append(sha256_tree(tmp_path / f"run{k}"))
    assert trees[0] == trees[1]
    manifests = read_roles(tmp_path / "run0", "ja_jp")
    # selection first: calibration = the first sentences, evaluation = the last
    assert [r["source"]["sentence"] for r in manifests["calibration"]] == [1, 2]
    assert [r["source"]["sentence"] for r in manifests["evaluation"]] == [24]
    corpus = {r["sentence"]: r for r in synth.load_corpus()["ja_jp"]}
    english = {r["sentence"]: r["text"] for r in synth.load_corpus()["en_us"]}
    for r in manifests["calibration"] + manifests["evaluation"]:
        s = r["source"]
        assert r["text"] == corpus[s["sentence"]]["text"] and r["text_en"] == english[s["sentence"]]
        assert s["spoken_text"] == corpus[s["sentence"]]["speech"]  # kana spoken, kanji kept as reference
        assert s["voice"].split("+")[0] == "ja" and 135 <= s["rate"] <= 170 and 35 <= s["pitch"] <= 65
        assert 0.5 < r["duration"] < 30
    # another seed: other voices and rates
    other = loader.get_clips("ja_jp", p, 8)
    assert [c.source for c in other.calibration] != [{k: v for k, v in r["source"].items() if k != "audio"}
                                                     for r in manifests["calibration"]]


def test_synth_seeded_selection_and_counts() -> None:
    p = synth_params(calibration_clips=4, eval_clips=1, selection="seeded")

    def sentences(seed: int) -> list[int]:
        sel = loader.get_clips("de_de", p, seed)
        return [c.source["sentence"] for c in sel.calibration + sel.evaluation]

    a, b, c = sentences(1), sentences(1), sentences(2)
    assert a == b and a[:4] == sorted(a[:4]) and len(set(a)) == 5 and a != c
    with pytest.raises(StageError, match=r"de_de.*24 clips.*ask for 24 \+ 1"):
        loader.get_clips("de_de", synth_params(calibration_clips=24, eval_clips=1), 0)


def test_synth_evaluation_pool_does_not_move_with_the_calibration_count(tmp_path: Path) -> None:
    """Ids and audio bytes of the evaluation folder are the same for 1 and 3 calibration clips (seeded)."""
    trees, ids = set(), []
    for n in (1, 3):
        p = synth_params(calibration_clips=n, eval_clips=1, selection="seeded")
        stage.make("de_de", p, 5, tmp_path / f"cal{n}")
        trees.add(eval_tree(tmp_path / f"cal{n}", "de_de"))
        m = read_roles(tmp_path / f"cal{n}", "de_de")
        ids.append({r["source"]["sentence"] for r in m["evaluation"]})
        assert not {r["source"]["sentence"] for r in m["calibration"]} & ids[-1]   # never overlapping
    assert len(trees) == 1 and ids[0] == ids[1]
    # selection first: the last sentences, same voices, whatever the calibration count
    base = loader.get_clips("de_de", synth_params(calibration_clips=1, eval_clips=2), 5).evaluation
    assert [c.ref for c in base] == ["synth:de_de:23", "synth:de_de:24"]
    for n in (6, 22):
        sel = loader.get_clips("de_de", synth_params(calibration_clips=n, eval_clips=2), 5)
        assert [(c.ref, c.source) for c in sel.evaluation] == [(c.ref, c.source) for c in base]


def test_synth_variety_within_params() -> None:
    p = synth_params(calibration_clips=11, eval_clips=1, synth={"rate": [100, 200], "pitch": [10, 90],
                                                                "variants": ["", "f2"]})
    sel = loader.get_clips("es_419", p, 0)
    clips = sel.calibration + sel.evaluation
    assert len({c.source["rate"] for c in clips}) > 3 and len({c.source["voice"] for c in clips}) == 2
    assert all(c.source["voice"] in ("es-419", "es-419+f2") for c in clips)


def test_synth_language_without_corpus_is_named() -> None:
    with pytest.raises(StageError, match="'hi_in' has no synthetic speech"):
        loader.get_clips("hi_in", synth_params(calibration_clips=1, eval_clips=1), 0)


def test_synth_without_espeak_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    clips = loader.get_clips("de_de", synth_params(calibration_clips=1, eval_clips=1), 0).calibration
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
    p = audio_params(source="local", calibration_clips=2, eval_clips=1, local={"dir": str(tmp_path / "mine")})
    sel = loader.get_clips("ko_kr", p, 0)
    assert [c.source["path"] for c in sel.calibration] == ["ko_kr/a.wav", "ko_kr/b.flac"]
    assert [c.source["path"] for c in sel.evaluation] == ["ko_kr/c.ogg"]
    clips = sel.calibration
    assert (clips[0].text, clips[0].text_en) == ("안녕하세요", "Hello")
    assert (clips[1].text, clips[1].text_en) == (None, None)
    kept, skipped = stage.build("ko_kr", "calibration", clips, p)
    assert not skipped and abs(kept[0].row["duration"] - 1.2) < 0.01
    assert not any(str(tmp_path) in json.dumps(c.row) for c in kept)
    with pytest.raises(StageError, match=r"ko_kr.*3 clips, audio.calibration_clips \+ audio.eval_clips ask for 3 \+ 1"):
        loader.get_clips("ko_kr", audio_params(source="local", calibration_clips=3, eval_clips=1,
                                                local={"dir": str(tmp_path / "mine")}), 0)
    with pytest.raises(StageError, match="no folder"):
        loader.get_clips("de_de", p, 0)


@pytest.mark.parametrize("selection", ["first", "seeded"])
def test_local_evaluation_pool_does_not_move_with_the_calibration_count(tmp_path: Path, selection: str) -> None:
    root = local_folder(tmp_path / "in", "ko_kr", [True] * 9)
    trees, cal = set(), {}
    for n in (1, 3, 6):
        p = audio_params(source="local", calibration_clips=n, eval_clips=3, selection=selection,
                         local={"dir": str(root)})
        stage.make("ko_kr", p, 2, tmp_path / f"cal{n}")
        trees.add(eval_tree(tmp_path / f"cal{n}", "ko_kr"))
        m = read_roles(tmp_path / f"cal{n}", "ko_kr")
        cal[n] = {r["source"]["path"] for r in m["calibration"]}
        assert len(cal[n]) == n and not cal[n] & {r["source"]["path"] for r in m["evaluation"]}
    assert len(trees) == 1
    assert cal[1] < cal[3] < cal[6]        # a larger pool keeps the smaller one's clips


# ---------------------------------------------------------------------------------------------- fleurs stand-in

FLEURS_ROWS = {
    # split: lang: [(fleurs sentence id, raw transcription, seconds)]
    "validation": {
        "ko_kr": [(11, "오늘은 날씨가 좋아요.", 1.0), (12, "공원에 갑니다.", 1.3), (13, "커피 주세요.", 0.9),
                  (14, "고맙습니다.", 1.1), (12, "공원에 갑니다.", 1.2)],
        "en_us": [(12, "We go to the park.", 1.0), (11, "The weather is nice today.", 1.0), (99, "Unrelated.", 1.0)],
    },
    "test": {
        "ko_kr": [(21, "버스가 늦어요.", 1.0), (22, "문을 닫아 주세요.", 1.1), (23, "배가 고파요.", 0.8)],
        "en_us": [(22, "Please close the door.", 1.0), (21, "The bus is late.", 1.0)],
    },
}


def make_fleurs(root: Path, layout: str = "local") -> Path:
    """A stand-in with FLEURS's schema and Audio feature for ko_kr and en_us, splits validation and test, and a
    train split of garbage bytes (any attempt to read it fails). ``local``: <lang>/<split>-00000-of-00001.parquet
    (``datasets``' names); ``hub``: <lang>/<split>/0000.parquet (the hub's Parquet export)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("int32"), "num_samples": datasets.Value("int32"), "path": datasets.Value("string"),
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "transcription": datasets.Value("string"),
        "raw_transcription": datasets.Value("string"), "gender": datasets.Value("int64"),
        "lang_id": datasets.Value("int64"), "language": datasets.Value("string"),
        "lang_group_id": datasets.Value("int64")})
    name = {"local": "{split}-00000-of-00001.parquet", "hub": "{split}/0000.parquet"}[layout]
    for split, langs_ in FLEURS_ROWS.items():
        for lang, rows in langs_.items():
            data: dict[str, list] = {k: [] for k in features}
            for k, (sid, text, seconds) in enumerate(rows):
                rate = 48000 if k == 1 else SR  # one row at another rate: resampled
                y = tone(seconds, rate=rate, freq=200 + 20 * k + (7 if split == "test" else 0))
                path = f"/cache/extracted/abc/{split}/{sid}_{k}.wav"  # FLEURS paths point into a cache
                data["id"].append(sid)
                data["num_samples"].append(len(y))
                data["path"].append(path)
                data["audio"].append({"bytes": wav_bytes(y, rate), "path": Path(path).name})
                data["transcription"].append(text.lower().rstrip("."))
                data["raw_transcription"].append(text)
                data["gender"].append(k % 2)
                data["lang_id"].append(0)
                data["language"].append(lang)
                data["lang_group_id"].append(0)
            out = root / lang / name.format(split=split)
            out.parent.mkdir(parents=True, exist_ok=True)
            # cast, not encode: encoding audio needs torchcodec; the parquet then carries the Audio feature as
            # FLEURS's does
            ds = datasets.Dataset.from_dict(data, features=features).cast_column("audio",
                                                                                 datasets.Audio(sampling_rate=SR))
            ds.to_parquet(str(out))
    for lang in ("ko_kr", "en_us"):
        train = root / lang / name.format(split="train")
        train.parent.mkdir(parents=True, exist_ok=True)
        train.write_bytes(b"not parquet: the train split must never be opened\n" * 100)
    return root


@pytest.fixture(scope="module")
def fleurs_dir(tmp_path_factory) -> Path:
    return make_fleurs(tmp_path_factory.mktemp("fleurs"))


@pytest.fixture
def opened(monkeypatch) -> list[tuple[str, tuple | None]]:
    """Every Parquet file pyarrow opens, with the columns read from it (None: all)."""
    import pyarrow.parquet as pq

    seen: list[tuple[str, tuple | None]] = []

    class Recording(pq.ParquetFile):
        def __init__(self, source, *args, **kwargs):
            self._path = Path(source).as_posix()
            seen.append((self._path, "open"))
            super().__init__(source, *args, **kwargs)

        def read(self, columns=None, *args, **kwargs):
            seen.append((self._path, tuple(columns) if columns is not None else None))
            return super().read(columns, *args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", Recording)
    return seen


def fleurs_params(root: Path | str, fleurs: dict | None = None, **kw) -> AudioParams:
    return section("audio", source="fleurs", fleurs={"dataset": str(root), "revision": "main", **(fleurs or {})}, **kw)


def test_fleurs_stand_in_first_n_with_english_join(fleurs_dir: Path) -> None:
    p = fleurs_params(fleurs_dir, calibration_clips=4, eval_clips=2)
    sel = loader.get_clips("ko_kr", p, 0)
    clips = sel.calibration
    assert [c.source["fleurs_id"] for c in clips] == [11, 12, 13, 14]
    assert [c.text for c in clips] == [r[1] for r in FLEURS_ROWS["validation"]["ko_kr"][:4]]
    assert [c.text_en for c in clips] == ["The weather is nice today.", "We go to the park.", None, None]
    assert clips[0].source["transcription"] == "오늘은 날씨가 좋아요"
    assert clips[0].source["path"] == "11_0.wav" and clips[0].source["dataset"] == fleurs_dir.name
    # evaluation clips: the first N of the test split, English from en_us's test split
    assert [(c.source["split"], c.source["fleurs_id"], c.text_en) for c in sel.evaluation] == \
        [("test", 21, "The bus is late."), ("test", 22, "Please close the door.")]
    kept, skipped = stage.build("ko_kr", "calibration", clips, p)
    assert not skipped and len(kept) == 4
    assert abs(kept[1].row["duration"] - 1.3) < 0.01 and kept[1].row["source"]["audio"]["sample_rate"] == 48000
    assert kept[0].row["text_en"] == "The weather is nice today."
    # en_us itself: its own sentence is the English reference
    en = loader.get_clips("en_us", fleurs_params(fleurs_dir, calibration_clips=2, eval_clips=1), 0).calibration
    assert [c.text_en for c in en] == [c.text for c in en] == ["We go to the park.", "The weather is nice today."]


def test_fleurs_seeded_choice_and_counts(fleurs_dir: Path) -> None:
    p = fleurs_params(fleurs_dir, calibration_clips=3, eval_clips=1, selection="seeded")
    rows = [c.source["row"] for c in loader.get_clips("ko_kr", p, 3).calibration]
    assert rows == sorted(rows) and len(set(rows)) == 3
    assert rows == [c.source["row"] for c in loader.get_clips("ko_kr", p, 3).calibration]
    assert any([c.source["row"] for c in loader.get_clips("ko_kr", p, s).calibration] != rows for s in range(4, 10))
    with pytest.raises(StageError, match=r"ko_kr/validation has 5 clips, audio.calibration_clips asks for 6"):
        loader.get_clips("ko_kr", fleurs_params(fleurs_dir, calibration_clips=6, eval_clips=1), 0)
    with pytest.raises(StageError, match=r"ko_kr/test has 3 clips, audio.eval_clips asks for 4"):
        loader.get_clips("ko_kr", fleurs_params(fleurs_dir, calibration_clips=1, eval_clips=4), 0)
    with pytest.raises(StageError, match="no 'test' split for de_de"):
        loader.get_clips("de_de", fleurs_params(fleurs_dir, calibration_clips=1, eval_clips=1), 0)
    with pytest.raises(StageError, match=r"no 'dev' split for ko_kr .*ko_kr has: test, train, validation"):
        loader.get_clips("ko_kr", fleurs_params(fleurs_dir, calibration_clips=1, eval_clips=0,
                                                fleurs={"split": "dev"}), 0)


def test_fleurs_reads_only_the_splits_it_uses_and_never_train(fleurs_dir: Path, opened, caplog) -> None:
    """The train files are garbage: opening one would fail. Only ko_kr's and en_us's validation and test files are
    opened, and of en_us only the id and raw_transcription columns are read; the bytes read are logged."""
    import logging

    with caplog.at_level(logging.INFO, logger="whisper_npu.sources.fleurs"):
        sel = loader.get_clips("ko_kr", fleurs_params(fleurs_dir, calibration_clips=2, eval_clips=1), 0)
    assert len(sel.calibration) == 2 and len(sel.evaluation) == 1
    files = {Path(path).relative_to(fleurs_dir).as_posix() for path, _ in opened}
    assert files == {f"{lang}/{split}-00000-of-00001.parquet" for lang in ("ko_kr", "en_us")
                     for split in ("validation", "test")}
    assert not any("/train" in path for path, _ in opened)
    english_reads = {columns for path, columns in opened if "/en_us/" in path and columns != "open"}
    assert english_reads == {("id", "raw_transcription")}
    assert "fleurs@ko_kr:" in caplog.text and "MB of Parquet read" in caplog.text
    # eval_clips 0: the test split is not read at all
    opened.clear()
    loader.get_clips("ko_kr", fleurs_params(fleurs_dir, calibration_clips=1, eval_clips=0), 0)
    assert {Path(path).name for path, _ in opened} == {"validation-00000-of-00001.parquet"}


def test_fleurs_hub_downloads_only_the_split_files_it_uses(tmp_path: Path, monkeypatch, opened) -> None:
    """The hub path (the Parquet export's layout <lang>/<split>/0000.parquet) with list_repo_files and
    hf_hub_download served from a local folder: only <lang>/<split> and en_us/<split> files are downloaded."""
    import huggingface_hub

    repo = make_fleurs(tmp_path / "export", layout="hub")
    (repo / "README.md").write_text("stand-in")
    listed = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    downloaded: list[str] = []

    def list_repo_files(self, repo_id, *, revision=None, repo_type=None, token=None):
        assert (repo_id, revision, repo_type) == ("google/fleurs", "refs/convert/parquet", "dataset")
        return listed

    def hf_hub_download(repo_id, filename, *, repo_type=None, revision=None, **kw):
        assert (repo_id, revision, repo_type) == ("google/fleurs", "refs/convert/parquet", "dataset")
        downloaded.append(filename)
        return str(repo / filename)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    p = section("audio", source="fleurs", calibration_clips=3, eval_clips=2)   # params.yaml's dataset and revision
    assert (p.fleurs.dataset, p.fleurs.revision, p.fleurs.split, p.fleurs.eval_split) == \
        ("google/fleurs", "refs/convert/parquet", "validation", "test")
    sel = loader.get_clips("ko_kr", p, 0)
    assert sorted(downloaded) == sorted(f"{lang}/{split}/0000.parquet" for lang in ("ko_kr", "en_us")
                                        for split in ("validation", "test"))
    assert [c.text_en for c in sel.evaluation] == ["The bus is late.", "Please close the door."]
    assert sel.calibration[0].source["dataset"] == "google/fleurs"
    assert not any("/train" in path for path, _ in opened)
    # a revision that holds only the loading script (google/fleurs' main branch)
    listed[:] = ["README.md", "fleurs.py"]
    with pytest.raises(StageError, match=r"needs a loading script.*audio.fleurs.revision: refs/convert/parquet"):
        loader.get_clips("ko_kr", p, 0)


@pytest.mark.parametrize("selection", ["first", "seeded"])
def test_fleurs_evaluation_pool_does_not_move_with_the_calibration_count(fleurs_dir: Path, tmp_path: Path,
                                                                        selection: str) -> None:
    trees = set()
    for n in (1, 3, 5):
        p = fleurs_params(fleurs_dir, calibration_clips=n, eval_clips=2, selection=selection)
        stage.make("ko_kr", p, 4, tmp_path / f"cal{n}")
        trees.add(eval_tree(tmp_path / f"cal{n}", "ko_kr"))
        m = read_roles(tmp_path / f"cal{n}", "ko_kr")
        assert {r["source"]["split"] for r in m["calibration"]} == {"validation"}
        assert {r["source"]["split"] for r in m["evaluation"]} == {"test"}     # another split: no overlap possible
    assert len(trees) == 1


def test_fleurs_one_split_for_both_roles_is_one_pool(fleurs_dir: Path) -> None:
    p = fleurs_params(fleurs_dir, calibration_clips=3, eval_clips=2, fleurs={"eval_split": "validation"})
    sel = loader.get_clips("ko_kr", p, 0)
    assert [c.source["row"] for c in sel.calibration] == [0, 1, 2]
    assert [c.source["row"] for c in sel.evaluation] == [3, 4]     # selection first: the last N of the one pool
    with pytest.raises(StageError, match=r"ko_kr/validation has 5 clips, audio.calibration_clips \+ audio.eval_clips"):
        loader.get_clips("ko_kr", fleurs_params(fleurs_dir, calibration_clips=4, eval_clips=2,
                                                fleurs={"eval_split": "validation"}), 0)


def test_fleurs_hub_unreachable_is_one_line(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants

    # offline mode is read at import time: set the constants too, so the test never touches the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    p = section("audio", source="fleurs", calibration_clips=1, eval_clips=1)
    with pytest.raises(StageError) as e:
        loader.get_clips("ko_kr", p, 0)
    assert "google/fleurs" in str(e.value) and "check the network" in str(e.value) and "\n" not in str(e.value)


def test_params_default_fleurs_revision_is_the_parquet_export() -> None:
    p = parse_params(default_params())
    assert p.audio.fleurs.revision == "refs/convert/parquet"
    assert (p.audio.fleurs.split, p.audio.fleurs.eval_split) == ("validation", "test")


# ---------------------------------------------------------------------------------------------- dvc, slow

def tiny_profile(languages: list[str]) -> dict:
    params = default_params()
    params["languages"] = languages
    params["audio"].update(calibration_clips=2, eval_clips=1)
    params["calibration"]["samples_per_language"] = 2
    return params


def ran(stdout: str) -> set[str]:
    return {line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage '")}


def audio_outs(repo: Path, lang: str) -> dict[str, str]:
    return {role: sha256_tree(repo / "data" / "audio" / role / lang) for role in ROLES}


@pytest.mark.slow
def test_dvc_audio_foreach_adds_only_the_new_language(project) -> None:
    repo = project(tiny_profile(["de_de", "th_th"]))
    out = run(["dvc", "repro", "--glob", "audio@*"], repo).stdout
    assert ran(out) == {"audio@de_de", "audio@th_th"}
    before = {lang: audio_outs(repo, lang) for lang in ("de_de", "th_th")}

    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_profile(["de_de", "th_th", "vi_vn"]),
                                                     allow_unicode=True, sort_keys=False))
    out = run(["dvc", "repro", "--glob", "audio@*"], repo).stdout
    assert ran(out) == {"audio@vi_vn"}, out
    assert {lang: audio_outs(repo, lang) for lang in ("de_de", "th_th")} == before
    manifests = read_roles(repo / "data" / "audio", "vi_vn")
    assert [r["id"] for r in manifests["calibration"]] == ["vi_vn_0000", "vi_vn_0001"]
    assert [r["id"] for r in manifests["evaluation"]] == ["vi_vn_eval_0000"]

    # deterministic: forcing a rerun writes the same bytes
    run(["dvc", "repro", "-f", "audio@de_de"], repo)
    assert audio_outs(repo, "de_de") == before["de_de"]
    # a change in the audio params reruns every audio stage; a larger calibration pool leaves every evaluation
    # folder byte-identical, so what reads only those (transcribe_fp32@*) keeps its dependency hash
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    params = tiny_profile(["de_de", "th_th", "vi_vn"])
    params["audio"]["calibration_clips"] = 3
    params["calibration"]["samples_per_language"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    assert ran(run(["dvc", "repro", "--glob", "audio@*"], repo).stdout) == {"audio@de_de", "audio@th_th", "audio@vi_vn"}
    after = yaml.safe_load((repo / "dvc.lock").read_text())
    for lang in ("de_de", "th_th", "vi_vn"):
        outs = {o["path"]: o["md5"] for o in lock["stages"][f"audio@{lang}"]["outs"]}
        again = {o["path"]: o["md5"] for o in after["stages"][f"audio@{lang}"]["outs"]}
        assert again[f"data/audio/evaluation/{lang}"] == outs[f"data/audio/evaluation/{lang}"], lang
        assert again[f"data/audio/calibration/{lang}"] != outs[f"data/audio/calibration/{lang}"], lang


@pytest.mark.slow
def test_dvc_a_larger_calibration_pool_reuses_the_fp32_transcripts(tiny_pipeline: Path, tmp_path: Path) -> None:
    """The tiny profile after a full run, then a calibration-size experiment (one more calibration clip per
    language): the audio stages and the encoder calibration set rerun, the fp32 transcripts are not recomputed
    (their only audio dependency, the evaluation folder, comes out byte-identical). Only those stages and their
    upstream are reproduced."""
    from conftest import copy_project

    repo = copy_project(tiny_pipeline, tmp_path / "proj")
    languages = yaml.safe_load((repo / "params.yaml").read_text())["languages"]
    before = {lang: eval_tree(repo / "data" / "audio", lang) for lang in languages}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["audio"]["calibration_clips"] += 1
    for own in params["audio"]["per_language"].values():   # en_us's real speech has its own clip counts
        own["calibration_clips"] += 1
    params["calibration"]["samples_per_language"] += 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    fp32 = {f"transcribe_fp32@{lang}" for lang in languages}
    stages = ran(run(["dvc", "repro", "calibrate_encoder", *sorted(fp32)], repo).stdout)
    assert {f"audio@{lang}" for lang in languages} | {"calibrate_encoder"} <= stages, stages
    assert not stages & fp32, stages
    assert not set(json.loads(run(["dvc", "status", "--json", *sorted(fp32)], repo).stdout or "{}")) & fp32
    assert {lang: eval_tree(repo / "data" / "audio", lang) for lang in languages} == before
