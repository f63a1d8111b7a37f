"""Transcript files: what the transcription stages write (one row per clip and task, with the clip's references
and facts, so that scoring needs nothing else) and the score stage reads; timings kept apart (wall-clock figures,
not reproducible, so never inside a cached output)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisper_npu.audio.clips import Clip
from whisper_npu.core.files import read_json, read_jsonl, write_json, write_jsonl
from whisper_npu.core.languages import TRANSCRIBE, TRANSLATE
from whisper_npu.core.machine import cpu

# the transcript row of metrics/transcripts.jsonl (the score stage's merged copy)
TRANSCRIPT_KEYS = ("id", "lang", "task", "system", "text", "tokens", "stop", "reference")


def rows(records: Sequence[dict], clips: Sequence[Clip]) -> list[dict]:
    """Every hypothesis with its reference and the facts scoring needs about its clip, sorted, without timings."""
    by_id = {c.id: c for c in clips}
    out = []
    for r in sorted(records, key=lambda r: (r["lang"], r["id"], r["task"], r["system"])):
        c = by_id[r["id"]]
        out.append({"id": r["id"], "lang": r["lang"], "task": r["task"], "system": r["system"], "text": r["text"],
                    "tokens": r["tokens"], "stop": r["stop"],
                    "reference": c.text if r["task"] == TRANSCRIBE else c.text_en,
                    "duration": c.duration, "source": c.kind, "diacritics": c.diacritics})
    return out


def timings(records: Sequence[dict], device: str = "cpu") -> dict[str, Any]:
    """Seconds per (clip, task), for real-time factors, and where they were measured:
    ``{"device": ..., "cpu": {"model", "isa"}, "seconds": {clip id: {task: s}}}``."""
    seconds: dict[str, dict[str, float]] = {}
    for r in records:
        seconds.setdefault(r["id"], {})[r["task"]] = round(float(r["seconds"]), 6)
    return {"device": device, "cpu": cpu(), "seconds": {k: seconds[k] for k in sorted(seconds)}}


def write(path: Path, records: Sequence[dict], clips: Sequence[Clip]) -> None:
    write_jsonl(path, rows(records, clips))


def write_timings(path: Path, records: Sequence[dict], device: str = "cpu") -> None:
    write_json(path, timings(records, device))


def read(path: Path, timing: Path | None = None) -> tuple[list[dict], list[Clip]]:
    """(records with ``seconds`` when ``timing`` is given, else 0.0; the clips they belong to) from a transcript
    file."""
    rows_ = read_jsonl(path)
    seconds = read_json(timing)["seconds"] if timing is not None else {}
    records, refs = [], {}
    for r in rows_:
        records.append({**{k: r[k] for k in TRANSCRIPT_KEYS if k != "reference"},
                        "seconds": seconds.get(r["id"], {}).get(r["task"], 0.0)})
        refs.setdefault(r["id"], {"lang": r["lang"], "duration": r["duration"], "source": r["source"],
                                  "diacritics": r["diacritics"]})[r["task"]] = r["reference"]
    clips = [Clip(cid, f["lang"], Path(""), float(f["duration"]), f.get(TRANSCRIBE) or None,
                  f.get(TRANSLATE) or None, str(f["source"]), bool(f["diacritics"])) for cid, f in refs.items()]
    return records, sorted(clips, key=lambda c: (c.lang, c.id))


def merged(records: Sequence[dict], clips: Sequence[Clip]) -> list[dict]:
    """metrics/transcripts.jsonl: every system's rows in one file, sorted, the transcript keys only."""
    return [{k: r[k] for k in TRANSCRIPT_KEYS} for r in rows(records, clips)]
