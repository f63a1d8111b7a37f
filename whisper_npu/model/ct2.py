"""CTranslate2 Whisper files (model.bin + config.json + tokenizer.json) to a Hugging Face Whisper folder.

The binary layout (CTranslate2 binary version 6, ``WhisperSpec``; docs/offline-data.md)::

    u32 version; str spec; u32 revision; u32 nvars
    nvars x {str name; u8 rank; u32 dims[rank]; u8 dtype; u32 nbytes; bytes data}
    u32 naliases; naliases x {str alias; str target}

``str`` is a u16 length (including the trailing NUL), the bytes and the NUL; integers are little-endian.
No ctranslate2 import is needed: the reader is plain numpy.
"""
from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# CTranslate2 DataType ids (include/ctranslate2/types.h). bfloat16 has no numpy type: kept as raw uint16.
DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
    4: np.dtype("<f2"), 5: np.dtype("<u2"),
}
BFLOAT16 = 5
SUPPORTED_BINARY_VERSIONS = (5, 6)


class CT2FormatError(ValueError):
    """model.bin is not a CTranslate2 Whisper file, or is truncated/corrupt."""


@dataclass
class CT2Model:
    """The parsed content of a model.bin: variables by name (aliases resolved) and the header."""
    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)   # CT2 dtype id per stored variable

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.variables:
            return self.variables[name]
        if name in self.aliases:
            return self.variables[self.aliases[name]]
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return name in self.variables or name in self.aliases


# ------------------------------------------------------------------------------------------ reading

class _Cursor:
    """Reads little-endian fields from a bytes buffer; errors name what was being read."""

    def __init__(self, buf: memoryview, source: str):
        self.buf, self.pos, self.source = buf, 0, source

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.buf):
            missing = self.pos + n - len(self.buf)
            raise CT2FormatError(f"{self.source}: truncated: the file ends inside {what} "
                                 f"({missing:,} bytes short at offset {self.pos:,}); "
                                 f"the download or the joined parts are incomplete")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        n = self.u16(what)
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise CT2FormatError(f"{self.source}: corrupt string in {what} at offset {self.pos - n:,}")
        return raw[:-1].decode("utf-8")


def parse_model_bin(data: bytes | memoryview, source: str = "model.bin") -> CT2Model:
    """Parse the bytes of a CTranslate2 model.bin; raise CT2FormatError naming where it breaks."""
    cur = _Cursor(memoryview(data), source)
    version = cur.u32("the header")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CT2FormatError(f"{source}: CTranslate2 binary version {version} is not supported "
                             f"(supported: {SUPPORTED_BINARY_VERSIONS}); is this a CTranslate2 model.bin?")
    spec = cur.string("the header (spec name)")
    revision = cur.u32("the header (spec revision)")
    nvars = cur.u32("the header (variable count)")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, int] = {}
    for i in range(nvars):
        name = cur.string(f"the name of variable {i + 1} of {nvars}")
        what = f"variable {name!r} ({i + 1} of {nvars})"
        rank = cur.u8(what)
        shape = tuple(cur.u32(what) for _ in range(rank))
        dtype_id = cur.u8(what)
        if dtype_id not in DTYPES:
            raise CT2FormatError(f"{source}: {what}: unknown dtype id {dtype_id}")
        nbytes = cur.u32(what)
        dtype = DTYPES[dtype_id]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise CT2FormatError(f"{source}: {what}: {nbytes} bytes stored, shape {list(shape)} x "
                                 f"{dtype.itemsize} bytes needs {expected}")
        raw = cur.take(nbytes, what)
        variables[name] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        dtypes[name] = dtype_id
    aliases: dict[str, str] = {}
    if cur.pos < len(cur.buf):   # binary version 5 files may end without an alias table
        for i in range(cur.u32("the alias count")):
            alias = cur.string(f"alias {i + 1}")
            aliases[alias] = cur.string(f"alias {alias!r}")
    if cur.pos != len(cur.buf):
        raise CT2FormatError(f"{source}: {len(cur.buf) - cur.pos:,} unexpected bytes after the alias table")
    for alias, target in aliases.items():
        if target not in variables:
            raise CT2FormatError(f"{source}: alias {alias!r} points to missing variable {target!r}")
    return CT2Model(spec=spec, revision=revision, binary_version=version, variables=variables,
                    aliases=aliases, dtypes=dtypes)


def read_model_bin(path: str | Path) -> CT2Model:
    """Read and parse a model.bin file."""
    path = Path(path)
    return parse_model_bin(path.read_bytes(), source=str(path))


# ------------------------------------------------------------------------------------------ weights

def float_weight(model: CT2Model, name: str) -> np.ndarray:
    """A variable as float32; integer weights with a ``<name>_scale`` companion are dequantized.

    CTranslate2 quantizes as ``q = round(w * scale)`` (int8: one scale per output row; int16: one scale
    for the tensor), so ``w = q / scale``.
    """
    arr = model[name]
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    target = model.aliases.get(name, name)
    if model.dtypes.get(target) == BFLOAT16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    scale_name = f"{name}_scale"
    if scale_name not in model:
        raise CT2FormatError(f"{name}: integer weights ({arr.dtype}) without {scale_name}")
    scale = model[scale_name].astype(np.float32)
    if scale.ndim == 1 and arr.ndim >= 1 and scale.shape[0] == arr.shape[0]:
        scale = scale.reshape((-1,) + (1,) * (arr.ndim - 1))
    elif scale.size != 1:
        raise CT2FormatError(f"{scale_name}: shape {list(scale.shape)} does not fit {name} {list(arr.shape)}")
    return arr.astype(np.float32) / scale


def _layer_count(model: CT2Model, prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in model:
        n += 1
    return n


def _heads(model: CT2Model, prefix: str, d_model: int) -> int:
    name = f"{prefix}/num_heads"
    if name in model:
        return int(model[name].reshape(-1)[0])
    # Older converters did not store the head count: Whisper uses 64-dimensional heads in every size.
    return d_model // 64


def whisper_dims(model: CT2Model) -> dict[str, int]:
    """Model dimensions read from the tensors (HF WhisperConfig names)."""
    if model.spec != "WhisperSpec":
        raise CT2FormatError(f"model.bin: spec {model.spec!r}, expected 'WhisperSpec'")
    for required in ("encoder/conv1/weight", "decoder/embeddings/weight", "encoder/position_encodings/encodings",
                     "decoder/position_encodings/encodings"):
        if required not in model:
            raise CT2FormatError(f"model.bin: missing variable {required!r}; not a complete Whisper model")
    d_model, n_mels, _ = model["encoder/conv1/weight"].shape
    vocab, _ = model["decoder/embeddings/weight"].shape
    return {
        "d_model": int(d_model), "num_mel_bins": int(n_mels), "vocab_size": int(vocab),
        "encoder_layers": _layer_count(model, "encoder"), "decoder_layers": _layer_count(model, "decoder"),
        "encoder_attention_heads": _heads(model, "encoder", d_model),
        "decoder_attention_heads": _heads(model, "decoder", d_model),
        "encoder_ffn_dim": int(model["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(model["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(model["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(model["decoder/position_encodings/encodings"].shape[0]),
    }


def to_hf_state_dict(model: CT2Model) -> dict[str, np.ndarray]:
    """Hugging Face WhisperForConditionalGeneration tensors (float32) from a CT2 Whisper model.

    The LM head (``proj_out.weight``) is tied to ``model.decoder.embed_tokens.weight`` and not listed.
    """
    dims = whisper_dims(model)
    d = dims["d_model"]
    sd: dict[str, np.ndarray] = {}

    def w(name: str) -> np.ndarray:
        if name not in model:
            raise CT2FormatError(f"model.bin: missing variable {name!r}")
        return float_weight(model, name)

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = w(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = w(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = w(f"{src}/gamma")
        sd[f"{dst}.bias"] = w(f"{src}/beta")

    def fused_qkv(dst: str, src: str) -> None:
        # CT2 fuses q|k|v into one [3d, d] projection; Whisper's k_proj has no bias, so CT2's k-bias
        # slice must be zero (a non-zero value would mean a different model, not a rounding issue).
        weight, bias = w(f"{src}/weight"), w(f"{src}/bias")
        if weight.shape != (3 * d, d):
            raise CT2FormatError(f"{src}/weight: shape {list(weight.shape)}, expected {[3 * d, d]}")
        if np.any(bias[d:2 * d] != 0):
            raise CT2FormatError(f"{src}/bias: the key slice is not zero; cannot map to Whisper's bias-free k_proj")
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
            sd[f"{dst}.{proj}.weight"] = weight[j * d:(j + 1) * d]
            if proj != "k_proj":
                sd[f"{dst}.{proj}.bias"] = bias[j * d:(j + 1) * d]

    def fused_kv(dst: str, src: str) -> None:
        weight, bias = w(f"{src}/weight"), w(f"{src}/bias")
        if weight.shape != (2 * d, d):
            raise CT2FormatError(f"{src}/weight: shape {list(weight.shape)}, expected {[2 * d, d]}")
        if np.any(bias[:d] != 0):
            raise CT2FormatError(f"{src}/bias: the key slice is not zero; cannot map to Whisper's bias-free k_proj")
        sd[f"{dst}.k_proj.weight"] = weight[:d]
        sd[f"{dst}.v_proj.weight"] = weight[d:]
        sd[f"{dst}.v_proj.bias"] = bias[d:]

    enc, dec = "model.encoder", "model.decoder"
    linear(f"{enc}.conv1", "encoder/conv1")
    linear(f"{enc}.conv2", "encoder/conv2")
    sd[f"{enc}.embed_positions.weight"] = w("encoder/position_encodings/encodings")
    for i in range(dims["encoder_layers"]):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused_qkv(f"{dst}.self_attn", f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = w("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = w("decoder/position_encodings/encodings")
    for i in range(dims["decoder_layers"]):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused_qkv(f"{dst}.self_attn", f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        fused_kv(f"{dst}.encoder_attn", f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    if "decoder/projection/weight" in model:
        head = w("decoder/projection/weight")
        if not np.array_equal(head, sd[f"{dec}.embed_tokens.weight"]):
            raise CT2FormatError("decoder/projection/weight differs from the token embeddings; "
                                 "Whisper ties them, so this is not a Whisper checkpoint")
    return {k: np.ascontiguousarray(v) for k, v in sd.items()}


# ------------------------------------------------------------------------------------------ config

def _special_ids(tokenizer_json: Mapping[str, Any]) -> dict[str, int]:
    return {t["content"]: int(t["id"]) for t in tokenizer_json.get("added_tokens", [])}


def token_id(tokenizer_json: Mapping[str, Any], token: str) -> int:
    ids = _special_ids(tokenizer_json)
    if token not in ids:
        raise CT2FormatError(f"tokenizer.json: no added token {token!r}")
    return ids[token]


def hf_config_dict(dims: Mapping[str, int], tokenizer_json: Mapping[str, Any]) -> dict[str, Any]:
    """A WhisperConfig as a plain dict with only long-standing keys (loads on transformers 4.50 and 5.x)."""
    eot = token_id(tokenizer_json, "<|endoftext|>")
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        **{k: int(v) for k, v in dims.items()},
        "activation_function": "gelu",
        "activation_dropout": 0.0, "attention_dropout": 0.0, "dropout": 0.0,
        "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0,
        "init_std": 0.02, "scale_embedding": False, "use_cache": True,
        "is_encoder_decoder": True, "tie_word_embeddings": True,
        "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
        "decoder_start_token_id": token_id(tokenizer_json, "<|startoftranscript|>"),
        # The suppress lists live in generation_config.json only: transformers 5 warns when the model
        # config holds generation values too, and WhisperConfig's default begin list is English-only's.
        "begin_suppress_tokens": None, "suppress_tokens": None,
        "num_hidden_layers": int(dims["encoder_layers"]),
        "torch_dtype": "float32",
    }


def is_multilingual(vocab_size: int) -> bool:
    # openai-whisper's own rule (whisper/model.py: `n_vocab >= 51865`); English-only models have 51864.
    return vocab_size >= 51865


def generation_config_dict(dims: Mapping[str, int], tokenizer_json: Mapping[str, Any],
                           ct2_config: Mapping[str, Any]) -> dict[str, Any]:
    """generation_config.json as the hub's Whisper repos have it, built from CT2 config + tokenizer."""
    ids = _special_ids(tokenizer_json)
    by_id = {v: k for k, v in ids.items()}
    eot = ids["<|endoftext|>"]
    multilingual = is_multilingual(int(dims["vocab_size"]))
    gen: dict[str, Any] = {
        "alignment_heads": [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads", [])],
        "begin_suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids_begin", [])],
        "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
        "decoder_start_token_id": ids["<|startoftranscript|>"],
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": 50,
        "max_length": int(dims["max_target_positions"]),
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "prev_sot_token_id": ids["<|startofprev|>"],
        "return_timestamps": False,
        "suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids", [])],
    }
    if multilingual:
        lang_ids = [int(t) for t in ct2_config.get("lang_ids", [])]
        missing = [t for t in lang_ids if t not in by_id]
        if missing:
            raise CT2FormatError(f"config.json: lang_ids {missing[:5]} are not tokens of tokenizer.json")
        gen["lang_to_id"] = {by_id[t]: t for t in lang_ids}
        gen["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        # The hub's repos get this default from forced_decoder_ids (deprecated): without it, generate()
        # with no task argument omits the task token and the base model loops.
        gen["task"] = "transcribe"
    return gen


# ------------------------------------------------------------------------------------------ tokenizer

def slow_tokenizer_files(tokenizer_json: Mapping[str, Any]) -> dict[str, str]:
    """vocab.json, merges.txt and the config files of the Python (slow) WhisperTokenizer, as text.

    Derived from a fast tokenizer.json so both tokenizer classes load from one folder on transformers
    4.50 (separate slow and fast classes) and 5.x (one class).
    """
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise CT2FormatError(f"tokenizer.json: model type {model.get('type')!r}, expected BPE")
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    added = sorted(tokenizer_json.get("added_tokens", []), key=lambda t: t["id"])
    eot = "<|endoftext|>"
    specials = [t["content"] for t in added if t.get("special") and t["content"] != eot]
    decoder = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
               for t in added}
    tok_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": specials,
        "bos_token": eot, "eos_token": eot, "pad_token": eot, "unk_token": eot,
        # openai-whisper does not "clean up" spaces before punctuation; neither should HF decoding.
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": 1024,
        "processor_class": "WhisperProcessor",
        "tokenizer_class": "WhisperTokenizer",
    }
    special_map = {"additional_special_tokens": specials,
                   "bos_token": eot, "eos_token": eot, "pad_token": eot, "unk_token": eot}
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False) + "\n",
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(tok_config, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
        "special_tokens_map.json": json.dumps(special_map, ensure_ascii=False, indent=2, sort_keys=True) + "\n",
    }


# ------------------------------------------------------------------------------------------ conversion

@dataclass
class HFWhisper:
    """Everything a Hugging Face Whisper folder holds, in memory (input of stages/model.py's write_store)."""
    state_dict: dict[str, np.ndarray]
    config: dict[str, Any]
    generation_config: dict[str, Any]
    tokenizer_files: dict[str, str]


def convert(model: CT2Model, ct2_config: Mapping[str, Any], tokenizer_json: Mapping[str, Any],
            tokenizer_text: str | None = None) -> HFWhisper:
    """A parsed CT2 Whisper model + its config.json + tokenizer.json, as Hugging Face Whisper parts.

    ``tokenizer_text`` is the original tokenizer.json text, copied as is when given.
    """
    dims = whisper_dims(model)
    state_dict = to_hf_state_dict(model)
    vocab_in_tokenizer = max([*tokenizer_json["model"]["vocab"].values(),
                              *(t["id"] for t in tokenizer_json.get("added_tokens", []))]) + 1
    if vocab_in_tokenizer > dims["vocab_size"]:
        raise CT2FormatError(f"tokenizer.json has {vocab_in_tokenizer} tokens, the model only "
                             f"{dims['vocab_size']}: they do not belong together")
    files = slow_tokenizer_files(tokenizer_json)
    files["tokenizer.json"] = tokenizer_text or json.dumps(tokenizer_json, ensure_ascii=False, indent=2) + "\n"
    return HFWhisper(state_dict=state_dict, config=hf_config_dict(dims, tokenizer_json),
                     generation_config=generation_config_dict(dims, tokenizer_json, ct2_config),
                     tokenizer_files=files)


def convert_files(model_bin: str | Path, config_json: str | Path, tokenizer_json: str | Path) -> HFWhisper:
    """Read the three CT2 files and convert them (see :func:`convert`)."""
    model = read_model_bin(model_bin)
    log.info("%s: %d variables, spec %s revision %d", model_bin, len(model.variables), model.spec, model.revision)
    ct2_config = json.loads(Path(config_json).read_text(encoding="utf-8"))
    tok_text = Path(tokenizer_json).read_text(encoding="utf-8")
    return convert(model, ct2_config, json.loads(tok_text), tok_text)
