"""Synthetic audio is byte-identical under load: all 17 languages built twice while both cores are busy.

`make test` once failed test_audio's ja_jp determinism check on a loaded machine; this is the wide version of
that check. The busy processes are bounded in time (they exit by themselves even if this test is killed).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import default_params, section

from stages import audio as stage
from whisper_npu.core.files import sha256_tree

BUSY_SECONDS = 900  # an upper bound; the processes are stopped as soon as the builds are done
BUSY_LOOP = f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end: pass\n"


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(n)]


@pytest.mark.slow
def test_all_languages_synth_twice_under_load_is_byte_identical(tmp_path: Path) -> None:
    languages = default_params()["languages"]
    assert len(languages) == 17
    params = section("audio", source="synth", calibration_clips=6, eval_clips=2)
    busy = busy_processes(2 * (os.cpu_count() or 2))  # more runnable processes than cores: espeak-ng waits
    try:
        trees = []
        for run in range(2):
            for lang in languages:
                kept = stage.make(lang, params, 3, tmp_path / f"run{run}")
                assert sum(map(len, kept.values())) == 8, lang     # nothing skipped
            trees.append({lang: tuple(sha256_tree(tmp_path / f"run{run}" / role / lang)
                                      for role in ("calibration", "evaluation")) for lang in languages})
        assert all(p.poll() is None for p in busy), "the load ended before the builds did"
    finally:
        for p in busy:
            p.kill()
            p.wait()
    differ = sorted(lang for lang in languages if trees[0][lang] != trees[1][lang])
    assert not differ, f"synth audio differs between two builds under load: {differ}"
    assert len(set(trees[0].values())) == 17  # 17 distinct trees: each language really was built
