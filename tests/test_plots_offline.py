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


def test_sensitivity_plots_draw_components_languages_and_intervals_offline(project, tmp_path: Path) -> None:
    """The sensitivity stage's two plots (rows in its sqnr.json / promotion.json format) in `dvc plots show`: SQNR
    points coloured by component, the promotion curve's points coloured by language with their 95 % interval as a
    vertical bar; only these two plots have data here, so vega's first two colours are theirs."""
    repo = project()
    (repo / "sensitivity").mkdir()
    sqnr = [{"component": c, "depth": d, "group": f"{c}.{d}.fc2",
             "sqnr_db": 10.0 + 3 * d + (5 if c == "decoder" else 0)}
            for c in ("encoder", "decoder") for d in range(-1, 6)]
    curve = [{"step": s, "groups": 30 * s, "lang": lang, "delta_wer": 0.1 / s + k * 0.01,
              "ci_low": 0.1 / s - 0.05, "ci_high": 0.1 / s + 0.08}
             for s in (1, 2, 3) for k, lang in enumerate(("en_us", "it_it"))]
    (repo / "sensitivity" / "sqnr.json").write_text(json.dumps(sqnr))
    (repo / "sensitivity" / "promotion.json").write_text(json.dumps(curve))
    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], repo)
    html = (tmp_path / "show" / "index.html").read_text(encoding="utf-8")
    assert "<script src" not in html and '"ci_high"' in html and '"component"' in html
    png = tmp_path / "show.png"
    screenshot(tmp_path / "show" / "index.html", png, tmp_path / "chromium")
    counts = colour_counts(png)
    # encoder/en_us (first colour) and decoder/it_it (second): 14 points + 6 points with bars, and legend swatches
    assert counts[0] >= 150 and counts[1] >= 150 and counts[2] < 50, counts
