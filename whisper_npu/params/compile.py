"""``compile``: the compile backend and its options (stages/compile.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from whisper_npu.compilers.mobilint.plan import CONFIG_SECTIONS
from whisper_npu.compilers.onnxruntime.quantize import NODE_GROUPS
from whisper_npu.npu import SCHEMES, TARGETS
from whisper_npu.params.base import Section

Scheme = Literal[("auto",) + SCHEMES]   # type: ignore[valid-type]
Target = Literal[TARGETS]               # type: ignore[valid-type]


class QbcompilerParams(Section):
    # the command line that starts the SDK's Python: empty = this interpreter; a venv's bin/python; or
    # "docker run --rm --gpus all -v $PWD:$PWD -w $PWD mobilint/qbcompiler:<tag> python" (shell words)
    python: str
    device: Literal["auto", "cuda", "gpu", "cpu"]   # auto: cuda (0.12) / gpu (1.x) when the SDK side sees a GPU
    # auto: REGULUS single; ARIES all where the compiler has it (1.0.2+), else encoder global4 / decoder single
    encoder_scheme: Scheme
    decoder_scheme: Scheme
    target_device: Target                  # the NPU; anything but aries-rb needs qbcompiler >= 1.2
    llm_full_seq_calibration: bool
    llm_max_sequence_length: int = Field(ge=0)   # 0: REGULUS 1024, else the compiler's default (not passed)
    llm_max_cache_length: int = Field(ge=0)
    encoder_configs: dict                  # config objects for the encoder's mxq_compile, by section (1.0.1+)
    decoder_configs: dict
    decoder_part_options: dict             # 1.3+: mblt_compile model_part_options for the decoder
    decoder_dynamic_axes: dict             # 1.3+: mblt_compile dynamic_axes for the decoder
    save_config: bool                      # 1.3+: config_save_path
    encoder_mblt_backend: Literal["auto", "hf", "torch"]
    mblt_device: Literal["cpu", "cuda", "gpu"]
    parser_workers: int = Field(ge=0)      # 1.3+: MBLT_HL_PARSER_NUM_WORK (0: the compiler's default, CPUs - 2)

    @model_validator(mode="after")
    def _consistent(self) -> "QbcompilerParams":
        if self.target_device == "regulus-ra":
            raise ValueError("target_device = regulus-ra: Mobilint's STT tutorial lists REGULUS-RA as not "
                             "supported for Whisper; use aries-rb or regulus-rb")
        if self.target_device.startswith("regulus"):
            for comp in ("encoder", "decoder"):
                scheme = getattr(self, f"{comp}_scheme")
                if scheme not in ("auto", "single"):
                    raise ValueError(f"{comp}_scheme = {scheme}: compile.qbcompiler.target_device = "
                                     f"{self.target_device} supports only single (REGULUS has one core); use auto "
                                     "or single")
        seq, cache = self.llm_max_sequence_length, self.llm_max_cache_length
        if seq and cache and cache < seq:
            raise ValueError(f"llm_max_cache_length = {cache}: must be >= compile.qbcompiler.llm_max_sequence_length "
                             f"= {seq}")
        for comp in ("encoder", "decoder"):
            for section, value in getattr(self, f"{comp}_configs").items():
                where = f"{comp}_configs.{section}"
                if section == "llm":
                    raise ValueError(f"{where}: set the LLM config with compile.qbcompiler.llm_* keys")
                if section not in CONFIG_SECTIONS:
                    raise ValueError(f"{where}: unknown section; allowed: {', '.join(CONFIG_SECTIONS)}")
                if not isinstance(value, dict):
                    raise ValueError(f"{where} = {value!r}: must be a mapping of the config object's fields")
        return self


class GroupSetting(Section):
    """One ``compile.onnxruntime.groups`` entry: the group's activation bits and range method (either may be left
    out)."""
    bits: Literal[8, 16] | None = None
    method: Literal["minmax", "percentile", "entropy"] | None = None


class OrtParams(Section):
    mode: Literal["dynamic", "static"]
    per_channel: bool
    calibrate_method: Literal["minmax", "percentile", "entropy"]
    percentile: float = Field(gt=0, le=100)
    op_types: list[str]                    # op types quantized
    nodes_to_exclude: list[str]
    keep_float: list[str]                  # node groups (NODE_GROUPS) or '/...' node-name patterns kept in float
    activation_type: Literal["int8", "uint8"]
    high_precision: list[str]              # static: node groups / patterns whose activations are 16-bit
    smooth_quant: bool
    smooth_quant_alpha: float = Field(ge=0, le=1)
    calibration_samples: int = Field(ge=1)
    proxy: Literal["matmul", "npu"]        # static: which ops get Q/DQ (groups.py)
    groups: dict[str, GroupSetting]        # static: group name or pattern -> {bits, method}

    @model_validator(mode="after")
    def _groups(self) -> "OrtParams":
        if self.mode != "static" and (self.proxy != "matmul" or self.groups):
            key = "proxy" if self.proxy != "matmul" else "groups"
            value = self.proxy if key == "proxy" else \
                {k: v.model_dump(exclude_none=True) for k, v in self.groups.items()}
            raise ValueError(f"{key} = {value!r}: only for mode = static (compile.onnxruntime.mode = "
                             f"{self.mode}); set proxy: matmul and groups: {{}}")
        for name in self.groups:
            if not name.startswith(("encoder.", "decoder.")):
                raise ValueError(f"groups.{name}: a group name starts with encoder. or decoder. (e.g. encoder.3.fc2, "
                                 "decoder.*.self_attn.softmax)")
        for key in ("keep_float", "high_precision"):
            for i, g in enumerate(getattr(self, key)):
                if g not in NODE_GROUPS and not g.startswith("/"):
                    raise ValueError(f"{key}[{i}] = {g!r}: must be one of {', '.join(NODE_GROUPS)} or a node-name "
                                     "pattern starting with '/'")
        return self


class CompileParams(Section):
    KEY = "compile"
    backend: Literal["auto", "qbcompiler", "onnxruntime"]
    opset: int = Field(ge=13)
    qbcompiler: QbcompilerParams
    onnxruntime: OrtParams
    numerics_samples: int = Field(ge=1)    # held-out inputs for the compiled-vs-fp32 check
