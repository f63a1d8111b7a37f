"""`dvc plots show` and `dvc plots diff` draw their bars with no network, in a real browser (headless Chromium).

The plot tables are written by hand in the evaluate stage's format (the pipeline's own run is covered by
test_experiments.py, which diffs two real experiments the same way).
"""
from __future__ import annotations

import json
from pathlib import Path

from conftest import PLOTS_PAGE, colour_counts, run, screenshot

MIN_PIXELS = 500  # a 3-language bar is thousands of pixels at this window size; the legend swatch ~100


def write_tables(repo: Path, wer: list[float], bleu: list[float]) -> None:
    langs = ["de_de", "ja_jp", "ko_kr"]
    (repo / "plots").mkdir(exist_ok=True)
    for name, values, unit in (("wer", wer, "wer"), ("bleu", bleu, "bleu")):
        rows = [{"language": lang, "fp32": v, "compiled": v * 1.3, "unit": unit} for lang, v in zip(langs, values)]
        (repo / "plots" / f"{name}.json").write_text(json.dumps(rows, indent=2))


def test_offline_page_is_configured() -> None:
    assert PLOTS_PAGE.is_file(), f"{PLOTS_PAGE}: missing; `make setup` builds it (python -m whisper_npu.vega_page)"
    page = PLOTS_PAGE.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "{scripts}" not in page  # no {scripts}: DVC adds no CDN <script> tags
    assert "<script src" not in page and "vegaEmbed" in page


def test_plots_show_and_diff_draw_bars_offline(project, tmp_path: Path) -> None:
    repo = project()
    write_tables(repo, wer=[0.2, 0.5, 0.35], bleu=[20.0, 8.0, 12.0])
    run(["git", "add", "-f", "plots"], repo)
    run(["git", "commit", "-qm", "first result"], repo)
    write_tables(repo, wer=[0.3, 0.4, 0.6], bleu=[18.0, 9.0, 14.0])
    run(["git", "add", "-f", "plots"], repo)
    run(["git", "commit", "-qm", "second result"], repo)

    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], repo)
    run(["dvc", "plots", "diff", "HEAD~1", "HEAD", "-o", str(tmp_path / "diff")], repo)
    for name, series in (("show", 2), ("diff", 4)):
        html = (tmp_path / name / "index.html").read_text(encoding="utf-8")
        assert "cdn.jsdelivr" not in html and "<script src" not in html  # nothing to fetch
        png = tmp_path / f"{name}.png"
        screenshot(tmp_path / name / "index.html", png, tmp_path / f"chromium-{name}")
        counts = colour_counts(png)
        # fp32 and compiled (show); fp32 and compiled at each of two revisions (diff)
        assert all(n >= MIN_PIXELS for n in counts[:series]), (name, counts)
