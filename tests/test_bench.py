"""Benchmark scripts (bench/): they import, their tables format, their parsers read real DVC output.

No timings are asserted here: benchmarks print figures, tests check the code that produces them.
"""
from __future__ import annotations

import copy
import importlib
import sys

import pytest

from bench import common, incremental, memory
from bench.calibration_throughput import text_tokens
from bench.run_all import BENCHES

# What `dvc repro` printed in a tiny-profile run after adding a language (dvc 3.67), abridged.
REPRO_OUTPUT = """\
Running stage 'toolchain':
> python -m stages.toolchain --out build/toolchain.json
Stage 'model' didn't change, skipping
'data/raw.dvc' didn't change, skipping
Running stage 'audio@de_de':
> python -m stages.audio --params params.yaml --lang de_de --out data/audio
Stage 'audio@en_us' didn't change, skipping
Running stage 'label@de_de':
> python -m stages.label --params params.yaml --lang de_de ...
Stage 'compile@encoder' is cached - skipping run, checking out outputs
Running stage 'calibrate_decoder':
> python -m stages.calibrate_decoder ...
Updating lock file 'dvc.lock'
Running stage 'calibrate_decoder':
"""


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_module_imports_and_has_run(name):
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.run) and callable(module.main)


def test_parse_repro_sorts_stages_by_outcome_in_order():
    out = incremental.parse_repro(REPRO_OUTPUT)
    assert out.ran == ["toolchain", "audio@de_de", "label@de_de", "calibrate_decoder"]   # no duplicates
    assert out.reran() == ["audio@de_de", "label@de_de", "calibrate_decoder"]           # toolchain always runs
    assert out.run_cache == ["compile@encoder"]
    assert out.unchanged == ["model", "data/raw.dvc", "audio@en_us"]
    assert incremental.parse_repro("Data and pipelines are up to date.\n").ran == []


def test_stage_list_collapses_foreach_instances():
    assert incremental.stage_list([]) == "none"
    assert incremental.stage_list(["audio@de_de", "compile@encoder", "compile@decoder", "transcribe_fp32@en_us",
                                   "transcribe_fp32@es_419", "transcribe_compiled", "score"]) == \
        "audio@de_de, compile@{encoder,decoder}, transcribe_fp32@{en_us,es_419}, transcribe_compiled, score"
    # adding a language reruns ten kinds of stage: all of them are listed
    everything = ["audio@de_de", "label@de_de", "labels", "calibrate_encoder", "calibrate_decoder", "compile@encoder",
                  "compile@decoder", "mobilint_model", "transcribe_fp32@de_de", "transcribe_compiled", "score"]
    assert not incremental.stage_list(everything).endswith("...")


def test_changes_each_modify_what_they_name():
    from whisper_npu.calibration.sequences import n_translate

    params = common.default_params()
    params["languages"] = ["en_us", "es_419"]
    params["calibration"].update(samples_per_language=2, translate_ratio=0.2)
    original = copy.deepcopy(params)
    changed = []
    for ch in incremental.changes(params, "de_de"):
        p = copy.deepcopy(params)
        ch.apply(p)
        changed.append((ch.name, p))
    assert [ch.key for ch in incremental.changes(params, "de_de")] == list(incremental.CHANGES)
    (n0, p0), (n1, p1), (n2, p2), (n3, p3), (n4, p4) = changed
    assert n0.startswith("compile.onnxruntime.per_channel")
    assert p0["compile"]["onnxruntime"]["per_channel"] is (not params["compile"]["onnxruntime"]["per_channel"])
    assert n1.startswith("calibration.translate_ratio")
    # the new ratio moves at least one clip's task, so the decoder set really changes
    assert n_translate(2, p1["calibration"]["translate_ratio"]) != n_translate(2, 0.2)
    assert p2["languages"] == ["en_us", "es_419", "de_de"] and p3["languages"] == ["en_us"]
    assert n4.startswith("score.max_wer_increase")
    assert p4["score"]["max_wer_increase"] > params["score"]["max_wer_increase"]
    assert {k: v for k, v in p4.items() if k != "score"} == {k: v for k, v in params.items() if k != "score"}
    assert params == original


def test_table_markdown_and_row_width():
    t = common.Table("T", ["a", "b", "c"], command="python -m bench.x --y", notes=["note"])
    t.add("x|y", 1.23456, None)
    md = t.markdown()
    assert "### T" in md and "Command: `python -m bench.x --y`" in md
    assert "| x\\|y | 1.23 | — |" in md
    assert md.count("\n|") == 3 and "* note" in md
    with pytest.raises(ValueError, match="2 cells"):
        t.add(1, 2)


def test_machine_line_marks_a_busy_machine():
    m = common.machine()
    assert m["cores"] >= 1 and m["cpu"]
    quiet = common.machine_line({**m, "load": 0.0})
    loaded = common.machine_line({**m, "load": 4.0 * (m["cores"] or 1)})
    assert "under load" not in quiet and "under load" in loaded
    assert f"{m['cores']} cores" in quiet


def test_cpu_model_from_cpuinfo_text():
    assert common.cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert common.cpu_model("") != ""


def test_text_tokens_ignores_special_ids():
    eot = 50257
    assert text_tokens([50258, 50259, 50359, 50363, 11, 22, 33, eot], eot) == 3


def test_peak_rss_tells_a_big_allocation_from_a_small_one(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    small, _, code = memory.peak_rss([sys.executable, "-c", "pass"], tmp_path, env, tmp_path / "a.log")
    big, _, code2 = memory.peak_rss([sys.executable, "-c",
                                     "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"],
                                    tmp_path, env, tmp_path / "b.log")
    assert code == code2 == 0
    assert big > small + 250
    _, _, failed = memory.peak_rss([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, env, tmp_path / "c.log")
    assert failed == 3


def test_peak_rss_is_the_childs_own_not_the_parents(tmp_path):
    # Linux carries a forked child's parent peak into its ru_maxrss across exec; a 400 MB parent must not
    # show up in a child that allocates nothing.
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    small, _, code = memory.peak_rss([sys.executable, "-c", "pass"], tmp_path, {"PATH": "/usr/bin:/bin"},
                                     tmp_path / "a.log")
    assert code == 0 and small < 200
    del ballast


def test_memory_table_groups_foreach_instances_and_shows_growth():
    runs = {4: [memory.StageRun("audio@de_de", 100, 1.0), memory.StageRun("audio@en_us", 120, 2.0),
                memory.StageRun("calibrate_decoder", 800, 10.0), memory.StageRun("transcribe_fp32@de_de", 500, 3.0),
                memory.StageRun("transcribe_fp32@en_us", 400, 3.0), memory.StageRun("transcribe_compiled", 600, 4.0)],
            8: [memory.StageRun("audio@de_de", 110, 1.0), memory.StageRun("calibrate_decoder", 1600, 20.0),
                memory.StageRun("transcribe_fp32@de_de", 500, 2.0), memory.StageRun("transcribe_compiled", 600, 5.0)]}
    md = memory.table(runs, 4, "python -m bench.memory", "m").markdown()
    assert "| audio@* | 120 (3.0 s) x2 | 110 (1.0 s) | 0.92x |" in md
    assert "| calibrate_decoder | 800 (10.0 s) | 1600 (20.0 s) | 2.00x |" in md
    assert "| transcribe_fp32@* | 500 (6.0 s) x2 | 500 (2.0 s) | 1.00x |" in md
    assert "| transcribe_compiled | 600 (4.0 s) | 600 (5.0 s) | 1.00x |" in md


def test_memory_sizes_pick_enough_languages(tmp_path):
    from whisper_npu.params.full import parse_params

    p = memory.size_params(tmp_path, 24, 4)
    assert len(p["languages"]) == 6 and p["calibration"]["samples_per_language"] == 4
    assert p["audio"]["calibration_clips"] >= 4
    # synthetic speech in every language: params.yaml's real-speech overrides (en_us, es_419: 6 + 30 clips) are gone
    assert {"en_us", "es_419"} <= set(p["languages"]) and p["audio"]["per_language"] == {}
    assert p["audio"]["source"] == "synth"
    parse_params(p)
    with pytest.raises(SystemExit, match="languages"):
        memory.size_params(tmp_path, 10_000, 4)


def test_memory_one_language_grows_the_label_and_transcribe_clips(tmp_path):
    from pathlib import Path

    from whisper_npu.params.full import parse_params

    small, big = (memory.size_params(tmp_path, n, 4, one_language=True) for n in (4, 16))
    for p, n in ((small, 4), (big, 16)):
        assert p["languages"] == ["en_us"] and p["calibration"]["samples_per_language"] == n
        lang = p["audio"]["per_language"]["en_us"]
        assert (lang["calibration_clips"], lang["eval_clips"], lang["source"]) == (n, n, "asterisk")
        assert Path(p["audio"]["asterisk"]["cache"]).is_absolute()
        parse_params(p)    # a valid params file


def test_static_int8_reads_unpacked_asterisk_prompts(tmp_path):
    """The real-speech path that bench.static_int8 --quick skips (it speaks synthetic clips instead): transcripts
    and wavs from an unpacked Asterisk folder, split into disjoint evaluation and calibration clips at 16 kHz."""
    import gzip

    import numpy as np
    import soundfile as sf

    from bench import static_int8
    from whisper_npu.core.files import read_jsonl

    root = tmp_path / "debs"
    voice = root / "usr/share/asterisk/sounds" / static_int8.ASTERISK["en"][1]
    (voice / "digits").mkdir(parents=True)
    doc = root / "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
    doc.parent.mkdir(parents=True)
    names = ["agent-pass", "beep", "conf-full", "digits/1", "vm-goodbye"]
    with gzip.open(doc, "wt", encoding="utf-8") as f:
        f.write("; comment\n" + "".join(f"{n}: text of {n}\n" for n in names))
    rng = np.random.default_rng(0)
    for n in names:
        seconds = 1.0 if n == "beep" else 2.5   # too short: left out
        sf.write(str(voice / f"{n}.wav"), 0.1 * rng.standard_normal(int(8000 * seconds)), 8000, subtype="PCM_16")
    assert [c[0] for c in static_int8.asterisk_clips(root, "en")] == names
    audio = static_int8.prepare_audio(root, ["en"], 1, 2, tmp_path / "audio")
    rows = [{**r, "folder": audio / split / "en_us"} for split in ("calibration", "evaluation")
            for r in read_jsonl(audio / split / "en_us" / "manifest.jsonl")]
    assert [(r["split"], r["folder"].parent.name) for r in rows] == \
        [("calibration", "calibration"), ("calibration", "calibration"), ("evaluation", "evaluation")]
    assert len({r["id"] for r in rows}) == 3 and all(r["text"].startswith("text of ") for r in rows)
    assert all("beep" not in r["id"] for r in rows)
    assert {sf.info(str(r["folder"] / r["file"])).samplerate for r in rows} == {16000}
