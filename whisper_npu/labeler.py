"""Label clips with a transcription and an English translation through openai-whisper, as the tutorial.

The tutorial (download_data.py) calls ``model.transcribe(path, task=..., language=...)`` of Whisper
large-v3; openai-whisper's ``transcribe`` retries a window at higher temperatures when the output is
repetitive (compression ratio > 2.4), which keeps labels free of repetition loops, and, by default, when
it is unlikely (average log-prob < -1). ``labels.logprob_fallback`` (default false) turns the second
test off: when all temperatures fail it, openai-whisper keeps the last (t = 1.0) sample, which for a
small reference model on synthetic speech is far worse than the greedy text.

``labels.labeler`` picks the model:

* ``reference`` (offline default): the model stage's checkpoint ``<model dir>/openai-whisper.pt``.
* an openai-whisper model name (``large-v3``, as the tutorial; ``small``, ...): loaded from
  ``~/.cache/whisper``, downloaded there when missing (needs network).
* a path to an openai-whisper ``.pt`` checkpoint.

How :func:`label_batch` is fast and still openai-whisper's ``transcribe()``: per batch of clips, the encoder runs
once per clip (batched) for both tasks; each task is decoded greedily for all clips in one batched ``DecodingTask``
(a clip whose text has ended leaves the batch: :func:`_drop_ended_loop`), and only the clips whose result fails
openai-whisper's fallback test (compression ratio, log-prob when enabled, with its no-speech exception) are decoded
again at the next temperature of its schedule, batched among themselves. Then openai-whisper's own ``transcribe()``
runs per clip and task on a view of the model whose ``decode()`` returns those precomputed results, so segments, the
no-speech skip, seeking and the text are its own code. A decode the batched pass did not foresee (a second window:
clips over 30 s, or a timestamped window that ends mid-segment) runs on demand, encoder included. Sampling (t > 0)
draws from one ``torch.Generator`` per clip and task, seeded exactly as the global generator that
``torch.manual_seed(seed)`` would seed before ``transcribe()``, and consumed in the same order, so labels do not
depend on how clips are batched and match ``transcribe()`` up to float rounding of batched matrix products.
"""
from __future__ import annotations

import inspect
import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.core.errors import StageError
from whisper_npu.model.store import MODEL_JSON, OPENAI_CKPT

log = logging.getLogger(__name__)

# openai-whisper's default fallback schedule, written out: the tutorial relies on it.
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class Labeler:
    """A loaded openai-whisper model and the name recorded in the labels. On CUDA it runs in fp16, as
    ``transcribe()`` does by default; on the CPU in fp32."""
    model: Any
    name: str

    @property
    def multilingual(self) -> bool:
        return bool(self.model.is_multilingual)

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def fp16(self) -> bool:
        return self.model.device.type == "cuda"


def _load_path(path: Path, device: str = "cpu") -> Any:
    import whisper
    try:
        return whisper.load_model(str(path), device=device)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise StageError(f"{path}: not a loadable openai-whisper checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _reference_name(model_dir: Path) -> str:
    """``reference:<name>`` with the model stage's name when model.json records one."""
    meta = model_dir / MODEL_JSON
    try:
        import json
        name = json.loads(meta.read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return f"reference:{name}" if name else "reference"


def load_labeler(spec: str, model_dir: Path | None, device: str = "cpu") -> Labeler:
    """Load the model that ``labels.labeler`` names (see the module docstring) onto ``device`` (cpu, cuda:N)."""
    import whisper

    if spec == "reference":
        if model_dir is None:
            raise StageError("labels.labeler = reference: pass --model (the model stage's folder)")
        ckpt = Path(model_dir) / OPENAI_CKPT
        if not ckpt.is_file():
            raise StageError(f"{ckpt}: missing; run the model stage first (`dvc repro model`)")
        return Labeler(_load_path(ckpt, device), _reference_name(Path(model_dir)))
    if spec in whisper.available_models():
        try:
            model = whisper.load_model(spec, device=device)
        except (OSError, ConnectionError) as e:  # urllib's URLError is an OSError
            raise StageError(f"labels.labeler = {spec!r}: openai-whisper could not download it to ~/.cache/whisper "
                             f"({type(e).__name__}); connect to the network once or use labels.labeler: reference"
                             ) from None
        except RuntimeError as e:  # checksum mismatch of a partial download
            raise StageError(f"labels.labeler = {spec!r}: {str(e).splitlines()[0]}; delete the file in "
                             "~/.cache/whisper and retry") from None
        return Labeler(model, f"openai-whisper:{spec}")
    path = Path(spec)
    if path.suffix == ".pt" or path.is_file():
        if not path.is_file():
            raise StageError(f"labels.labeler = {spec!r}: no such checkpoint file")
        return Labeler(_load_path(path, device), path.name)
    raise StageError(f"labels.labeler = {spec!r}: not 'reference', an openai-whisper model name "
                     f"({', '.join(whisper.available_models())}) or a .pt checkpoint path")


def check_language(labeler: Labeler, whisper_lang: str, lang: str) -> None:
    """An English-only model (tiny.en, base.en, ...) can neither transcribe nor translate other languages."""
    if not labeler.multilingual and whisper_lang != "en":
        raise StageError(f"labels.labeler = {labeler.name}: an English-only model cannot transcribe or translate "
                         f"{lang}; use a multilingual model (e.g. large-v3, small, or the reference whisper-base)")


def transcribe_options(whisper_lang: str, task: str, beam_size: int, logprob_fallback: bool = True,
                       fp16: bool = False, **decode_options: Any) -> dict[str, Any]:
    """The keyword arguments of openai-whisper's ``transcribe()`` for one task: the tutorial's settings plus
    ``decode_options`` (``best_of``, ``sample_len``, ``without_timestamps``, ...); fp16 on CUDA."""
    options: dict[str, Any] = {"language": whisper_lang, "task": task, "fp16": fp16, "temperature": TEMPERATURES,
                               "verbose": None}
    if beam_size > 1:
        options["beam_size"] = beam_size  # openai-whisper drops it for the sampled (t > 0) fallbacks
    if not logprob_fallback:
        # Retry only on repetition (compression ratio > 2.4). When every temperature fails the log-prob
        # test, openai-whisper returns the last, t = 1.0, sample: worse than the greedy text.
        options["logprob_threshold"] = None
    options.update(decode_options)
    return options


def transcribe(labeler: Labeler, audio: np.ndarray, whisper_lang: str, task: str, beam_size: int, seed: int,
               logprob_fallback: bool = True, **decode_options: Any) -> str:
    """One task on one 16 kHz clip through openai-whisper's ``transcribe()`` itself, seeded (the reference
    that :func:`label_batch` is tested and benchmarked against)."""
    import torch

    torch.manual_seed(seed)
    options = transcribe_options(whisper_lang, task, beam_size, logprob_fallback, labeler.fp16, **decode_options)
    with torch.inference_mode():
        result = labeler.model.transcribe(np.ascontiguousarray(audio, dtype=np.float32), **options)
    return str(result.get("text", "")).strip()


# ---------------------------------------------------------------------------------------------- batched

@dataclass
class LabelStats:
    """What :func:`label_batch` ran: encoder passes (clips of 30 s window each), batched decode calls, decodes
    per (clip, task) at t > 0 (fallbacks), decodes served on demand (not foreseen by the batched pass)."""
    encoder_passes: int = 0
    decode_calls: int = 0
    fallbacks: int = 0
    on_demand: int = 0
    items: int = 0

    def add(self, other: LabelStats) -> None:
        for f in ("encoder_passes", "decode_calls", "fallbacks", "on_demand", "items"):
            setattr(self, f, getattr(self, f) + getattr(other, f))


def _transcribe_fn() -> Any:
    from whisper.model import Whisper
    return Whisper.transcribe  # the plain function openai-whisper binds as the method


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(transcribe() parameters with its defaults filled in, the rest: DecodingOptions fields), as
    ``transcribe()`` splits its keyword arguments."""
    params = inspect.signature(_transcribe_fn()).parameters
    own = {k: p.default for k, p in params.items() if p.kind == p.KEYWORD_ONLY}
    own.update({k: v for k, v in options.items() if k in own})
    return own, {k: v for k, v in options.items() if k not in own}


def _decoding_options(decode_options: dict[str, Any], temperature: float) -> Any:
    """The DecodingOptions ``transcribe()`` builds for its first window at ``temperature``."""
    from whisper.decoding import DecodingOptions

    kwargs = {**decode_options, "prompt": []}  # the first window's prompt: no previous text
    if temperature > 0:
        kwargs.pop("beam_size", None)
        kwargs.pop("patience", None)
    else:
        kwargs.pop("best_of", None)
    return DecodingOptions(**kwargs, temperature=temperature)


def _needs_fallback(result: Any, own: dict[str, Any]) -> bool:
    """openai-whisper's ``decode_with_fallback`` test, written as it is."""
    cr, lp, ns = own["compression_ratio_threshold"], own["logprob_threshold"], own["no_speech_threshold"]
    needs = (cr is not None and result.compression_ratio > cr) or (lp is not None and result.avg_logprob < lp)
    if ns is not None and result.no_speech_prob > ns and lp is not None and result.avg_logprob < lp:
        needs = False  # silence
    return needs


def _decode(model: Any, features: Any, options: Any, generators: Sequence[Any]) -> list[Any]:
    """openai-whisper's DecodingTask on encoder outputs ``[n, ctx, width]``; sampling (t > 0) draws each clip's
    rows from its own generator."""
    import torch
    from torch.distributions import Categorical
    from whisper.decoding import DecodingTask, GreedyDecoder

    class SeededSampler(GreedyDecoder):
        """GreedyDecoder.update with Categorical(...).sample() done per clip on its own generator. A clip whose
        rows have all ended draws nothing more: alone, transcribe() would have stopped decoding it."""
        def __init__(self, temperature: float, eot: int, clip_generators: Sequence[Any]):
            super().__init__(temperature, eot)
            self.generators = list(clip_generators)

        def keep(self, clips: Sequence[int]) -> None:  # clips leaving the batch (_drop_ended_loop)
            self.generators = [self.generators[c] for c in clips]

        def update(self, tokens, logits, sum_logprobs):
            probs = Categorical(logits=logits / self.temperature).probs
            n = task.n_group
            ended = tokens[:, -1] == self.eot
            next_tokens = torch.full((tokens.shape[0],), self.eot, dtype=torch.long, device=tokens.device)
            for i, g in enumerate(self.generators):
                rows = slice(i * n, (i + 1) * n)
                if not bool(ended[rows].all()):
                    next_tokens[rows] = torch.multinomial(probs[rows], 1, True, generator=g)[:, 0]
            logprobs = torch.nn.functional.log_softmax(logits.float(), dim=-1)
            current_logprobs = logprobs[torch.arange(logprobs.shape[0], device=logprobs.device), next_tokens]
            sum_logprobs += current_logprobs * (tokens[:, -1] != self.eot)
            next_tokens[tokens[:, -1] == self.eot] = self.eot
            tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
            return tokens, (tokens[:, -1] == self.eot).all()

    task = DecodingTask(model, options)
    if task.n_group > 1 and features.shape[0] > 1:
        # openai-whisper 20250625 repeats the tokens by the group size but not the audio features (its batch-1
        # use broadcasts them), so n > 1 clips with best_of or beam_size > 1 fail its own shape check. Repeat
        # the features as earlier releases did; the language is given, so its detection step only counts clips.
        n, language = features.shape[0], options.language
        task._get_audio_features = lambda mel: mel.repeat_interleave(task.n_group, dim=0)
        task._detect_language = lambda _features, _tokens: ([language] * n, None)
    if options.temperature > 0:
        task.decoder = SeededSampler(options.temperature, task.tokenizer.eot, generators)
    if isinstance(task.decoder, GreedyDecoder) and features.shape[0] > 1:
        task._main_loop = lambda audio_features, tokens: _drop_ended_loop(task, audio_features, tokens)
    return task.run(features)


def _drop_ended_loop(task: Any, audio_features: Any, tokens: Any) -> tuple[Any, Any, list]:
    """``DecodingTask._main_loop`` (greedy or sampled, not beam search) where a clip whose rows have all ended
    leaves the batch: its rows are dropped from the key/value cache (self- and cross-attention) and from the
    audio features, and only get the EOT the original loop would append. Each step then reads the cross-attention
    keys and values of the unfinished clips only, instead of the whole batch's until its longest row ends. The
    other rows see the same tokens, logits filters and decoder updates as in ``_main_loop`` (written after
    openai-whisper 20250625's; tests/test_labels.py compares the labels with ``transcribe()``'s)."""
    import torch
    import torch.nn.functional as F

    eot, n_group = task.tokenizer.eot, task.n_group
    n_batch = tokens.shape[0]
    sum_logprobs = torch.zeros(n_batch, device=audio_features.device)
    no_speech_probs = [np.nan] * n_batch
    active = torch.arange(n_batch, device=tokens.device)  # rows of `tokens` still decoding
    try:
        for i in range(task.sample_len):
            rows = tokens[active]
            logits = task.inference.logits(rows, audio_features)
            if i == 0 and task.tokenizer.no_speech is not None:
                probs_at_sot = logits[:, task.sot_index].float().softmax(dim=-1)
                no_speech_probs = probs_at_sot[:, task.tokenizer.no_speech].tolist()
            logits = logits[:, -1]
            for logit_filter in task.logit_filters:
                logit_filter.apply(logits, rows)
            row_logprobs = sum_logprobs[active]
            rows, completed = task.decoder.update(rows, logits, row_logprobs)
            sum_logprobs[active] = row_logprobs
            tokens = F.pad(tokens, (0, 1), value=eot)
            tokens[active] = rows
            if completed or tokens.shape[-1] > task.n_ctx:
                break
            going = ~(rows[:, -1] == eot).view(-1, n_group).all(dim=1)  # per clip of the active rows
            if not bool(going.all()):
                keep = going.repeat_interleave(n_group).nonzero()[:, 0]
                cache = task.inference.kv_cache
                for module in cache:
                    cache[module] = cache[module][keep]
                audio_features, active = audio_features[keep], active[keep]
                if hasattr(task.decoder, "keep"):
                    task.decoder.keep(going.nonzero()[:, 0].tolist())
    finally:
        task.inference.cleanup_caching()
    return tokens, sum_logprobs, no_speech_probs


class _Precomputed:
    """The model as ``transcribe()`` sees it for one clip and task: ``decode()`` of the first window returns the
    batched pass's result for the same options; anything else is decoded on demand."""

    def __init__(self, model: Any, first_mel: Any, features: Any, results: list, generator: Any,
                 stats: LabelStats):
        self._model, self._first_mel, self._features = model, first_mel, features
        self._results, self._generator, self._stats = results, generator, stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def decode(self, mel: Any, options: Any) -> Any:
        import torch

        first = self._first_mel is not None and mel.shape == self._first_mel.shape and torch.equal(mel, self._first_mel)
        if first:
            for opts, result in self._results:
                if opts == options:
                    return result
            features = self._features
        else:
            features = self._model.encoder(mel[None])
            self._stats.encoder_passes += 1
        self._stats.on_demand += 1
        self._stats.decode_calls += 1
        self._stats.fallbacks += options.temperature > 0
        return _decode(self._model, features[None] if features.ndim == 2 else features, options,
                       [self._generator])[0]


def _first_window(model: Any, audio: np.ndarray, fp16: bool = False) -> tuple[Any, int]:
    """(the log-mel segment ``transcribe()`` decodes first, the clip's mel frames), computed as it does (in fp16
    when it decodes in fp16)."""
    import torch
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    mel = log_mel_spectrogram(np.ascontiguousarray(audio, dtype=np.float32), model.dims.n_mels, padding=N_SAMPLES)
    content_frames = mel.shape[-1] - N_FRAMES
    segment = mel[:, :min(N_FRAMES, content_frames)]
    return pad_or_trim(segment, N_FRAMES).to(model.device).to(torch.float16 if fp16 else torch.float32), content_frames


def label_batch(labeler: Labeler, clips: Sequence[tuple[np.ndarray, int]], whisper_lang: str, beam_size: int,
                logprob_fallback: bool = True, stats: LabelStats | None = None,
                **decode_options: Any) -> list[tuple[str, str]]:
    """(transcription, English translation) of each ``(16 kHz audio, seed)`` clip, as :func:`label_clip` per clip
    gives them, with one encoder pass per clip and batched decoding (see the module docstring). The caller
    bounds memory by the number of clips passed at once. The translate task is seeded ``seed + 1``. For English
    with an English-only model the translation is the transcription."""
    import torch

    stats = stats if stats is not None else LabelStats()
    model = labeler.model
    tasks = ("transcribe", "translate") if labeler.multilingual else ("transcribe",)
    out: dict[str, list[str]] = {}
    with torch.inference_mode():
        windows = [_first_window(model, audio, labeler.fp16) for audio, _ in clips]
        live = [i for i, (_, frames) in enumerate(windows) if frames > 0]
        features = model.encoder(torch.stack([windows[i][0] for i in live])) if live else None
        stats.encoder_passes += len(live)
        stats.items += len(clips) * len(tasks)
        for k, task in enumerate(tasks):
            options = transcribe_options(whisper_lang, task, beam_size, logprob_fallback, labeler.fp16,
                                         **decode_options)
            own, dec = _split_options(options)
            temperatures = own["temperature"]
            temperatures = [temperatures] if isinstance(temperatures, (int, float)) else list(temperatures)
            gens = [torch.Generator(device=model.device).manual_seed(seed + k) for _, seed in clips]
            results: list[list] = [[] for _ in clips]
            pending = list(range(len(live)))  # positions in `live` / rows of `features`
            for t in temperatures:
                if not pending:
                    break
                opts = _decoding_options(dec, t)
                decoded = _decode(model, features[pending], opts, [gens[live[j]] for j in pending])
                stats.decode_calls += 1
                stats.fallbacks += len(pending) if t > 0 else 0
                for j, r in zip(pending, decoded):
                    results[live[j]].append((opts, r))
                pending = [j for j, r in zip(pending, decoded) if _needs_fallback(r, own)]
            row = {i: j for j, i in enumerate(live)}
            texts = []
            for i, (audio, _) in enumerate(clips):
                first = windows[i][0] if i in row else None
                view = _Precomputed(model, first, features[row[i]] if i in row else None, results[i], gens[i], stats)
                result = _transcribe_fn()(view, np.ascontiguousarray(audio, dtype=np.float32), **options)
                texts.append(str(result.get("text", "")).strip())
            out[task] = texts
    translations = out.get("translate", out["transcribe"])
    return list(zip(out["transcribe"], translations))


def label_clip(labeler: Labeler, audio: np.ndarray, whisper_lang: str, beam_size: int, seed: int,
               logprob_fallback: bool = True, **decode_options: Any) -> tuple[str, str]:
    """(transcription, English translation) of one clip: openai-whisper's ``transcribe()`` per task, seeded
    ``seed`` and ``seed + 1``. For English with an English-only model the translation is the transcription
    (such a model has no translate task; English to English is identity)."""
    text = transcribe(labeler, audio, whisper_lang, "transcribe", beam_size, seed, logprob_fallback, **decode_options)
    if not labeler.multilingual:
        return text, text
    return text, transcribe(labeler, audio, whisper_lang, "translate", beam_size, seed + 1, logprob_fallback,
                            **decode_options)


__all__ = ["Labeler", "LabelStats", "load_labeler", "check_language", "label_batch", "label_clip", "transcribe",
           "transcribe_options", "TEMPERATURES"]
