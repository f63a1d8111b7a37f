"""The languages the pipeline knows: FLEURS config code -> Whisper code, espeak-ng voice, scoring unit.

Language keys everywhere in the project (params.yaml, file names, metrics) are FLEURS config codes,
as in the tutorial (``ko_kr_0003.wav``). Whisper language tokens use the short Whisper code.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    fleurs: str          # FLEURS config name, the key used everywhere in this project
    whisper: str         # Whisper language code (the <|xx|> token)
    name: str
    espeak_voice: str    # espeak-ng voice for the offline synthetic source
    cer: bool = False    # score with CER instead of WER (no spaces between words)


# The tutorial's 17 languages first (download_data.py FLEURS_LANGUAGES), then a few more FLEURS configs
# whisper supports. The tutorial's create_calibration.py map lacks ta_in; this table is the single map.
_TABLE = [
    Language("ar_eg", "ar", "Arabic", "ar"),
    # cmn reads Han characters as English-spelled pinyin; the synthetic corpus keeps a pinyin line for
    # this voice (docs/offline-data.md).
    Language("cmn_hans_cn", "zh", "Chinese (Mandarin)", "cmn-latn-pinyin", cer=True),
    Language("de_de", "de", "German", "de"),
    Language("el_gr", "el", "Greek", "el"),
    Language("en_us", "en", "English", "en-us"),
    Language("es_419", "es", "Spanish", "es-419"),
    Language("fr_fr", "fr", "French", "fr-fr"),
    Language("id_id", "id", "Indonesian", "id"),
    Language("it_it", "it", "Italian", "it"),
    # espeak-ng's ja voice reads kanji as "Chinese letter": the corpus keeps a kana line for it.
    Language("ja_jp", "ja", "Japanese", "ja", cer=True),
    Language("ko_kr", "ko", "Korean", "ko"),
    Language("pt_br", "pt", "Portuguese", "pt-br"),
    Language("ru_ru", "ru", "Russian", "ru"),
    Language("ta_in", "ta", "Tamil", "ta"),
    Language("th_th", "th", "Thai", "th", cer=True),
    Language("ur_pk", "ur", "Urdu", "ur"),
    Language("vi_vn", "vi", "Vietnamese", "vi"),
    Language("hi_in", "hi", "Hindi", "hi"),
    Language("nl_nl", "nl", "Dutch", "nl"),
    Language("ms_my", "ms", "Malay", "ms"),
    Language("tr_tr", "tr", "Turkish", "tr"),
    Language("pl_pl", "pl", "Polish", "pl"),
    Language("uk_ua", "uk", "Ukrainian", "uk"),
    Language("sv_se", "sv", "Swedish", "sv"),
]

LANGUAGES: dict[str, Language] = {lang.fleurs: lang for lang in _TABLE}

# The tutorial's download list, in its order.
TUTORIAL_LANGUAGES: tuple[str, ...] = tuple(lang.fleurs for lang in _TABLE[:17])


def get(code: str) -> Language:
    """Return the language for a FLEURS code, or raise KeyError naming the known codes."""
    try:
        return LANGUAGES[code]
    except KeyError:
        raise KeyError(f"unknown language {code!r}; known: {', '.join(sorted(LANGUAGES))}") from None


TRANSCRIBE, TRANSLATE = "transcribe", "translate"   # Whisper's two tasks
