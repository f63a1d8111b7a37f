"""STAND-IN for ``qbcompiler.configs`` (1.0.1+): the config classes with the fields and nesting that
Mobilint's compiler docs (v1.3 REF/MQ/TR) and the tutorial's guide and newest STT compile show. NOT the
real compiler; like the real Pydantic models (``extra="forbid"``) an unknown field is refused."""
from __future__ import annotations

from typing import Any

from qbcompiler import HAS_CONFIGS, V, __version__

if not HAS_CONFIGS:
    raise ImportError(f"stand-in qbcompiler {__version__}: qbcompiler.configs exists from 1.0.1 on")


class _Config:
    FIELDS: frozenset = frozenset()

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - self.FIELDS
        if unknown:
            raise TypeError(f"stand-in {type(self).__qualname__}: unknown fields {sorted(unknown)} "
                            f"(allowed {sorted(self.FIELDS)})")
        self.values = kwargs

    def as_dict(self, top: bool = True) -> dict:
        out = {k: v.as_dict(False) if isinstance(v, _Config) else v for k, v in self.values.items()}
        return {"factory": type(self).__qualname__, **out} if top else out


def _cfg(name: str, fields: str, **nested: type) -> type:
    return type(name, (_Config,), {"FIELDS": frozenset(fields.split()) | frozenset(nested), **{
        "".join(p.capitalize() for p in k.split("_")): v for k, v in nested.items()}})


_Apply = "apply learn smoothing_factor ch_per_ffn"
_Layers = "query key value output head ffn router"

LlmConfig = _cfg("LlmConfig", "apply", attributes=_cfg(
    "Attributes", "max_data_length max_sequence_length max_cache_length max_core_data_length",
    calibration=_cfg("Calibration", "use_full_seq_length"),
    runtime=_cfg("Runtime", "batch_size npu_core_ids dynamic_rope dynamic_mask")))
# 1.3 (docs release note / REF "calibration"): layerOverrides.method, groupLut, optimizeLut,
# maxSampleSizeForQuantScheme, spelled in Python by the Pydantic alias rule (camelCase alias -> snake_case field)
_calibration_13 = dict(layer_overrides=_cfg("LayerOverrides", "method"),
                       group_lut=_cfg("GroupLut", "irls_iter dro_eps cover_floor"),
                       optimize_lut=_cfg("OptimizeLut", "optimization_level")) if V >= (1, 3) else {}
CalibrationConfig = _cfg("CalibrationConfig", "method output mode" + (" max_sample_size_for_quant_scheme"
                         if V >= (1, 3) else ""), max_percentile=_cfg("MaxPercentile", "percentile topk_ratio"),
                         **_calibration_13)
BitConfig = _cfg("BitConfig", "weight16_bits weight8_bits", transformer=_cfg(
    "Transformer", "", weight=_cfg("Weight", _Layers), activation=_cfg("Activation", _Layers),
    mixed_precision=_cfg("MixedPrecision", "", activation=_cfg("Activation", "apply"))),
    layer_overrides=_cfg("LayerOverrides",
                         "activation_16bits weight_16bits" + (" weight_8bits" if V >= (1, 3) else "")))
EquivalentTransformationConfig = _cfg("EquivalentTransformationConfig", "", **{
    k: _cfg(k, _Apply) for k in ("norm_conv", "qk", "ud", "vo", "spin_r1", "spin_r2", "qk_rotation",
                                 "feed_forward_multi_lut", "optimize_ffn", "flatten_quant")})
# the tutorial spells the attributes both ways (actOrder / act_order); Pydantic aliases accept both
HessianQuantConfig = _cfg("HessianQuantConfig", "apply" + (" hessian_dtype accumulation_device" if V >= (1, 3) else "")
                          + (" solver rescomp" if V >= (1, 4) else ""), attributes=_cfg(
    "Attributes", "act_order block_size perc_damp alpha actOrder blockSize percDamp"))
SearchWeightScaleConfig = _cfg("SearchWeightScaleConfig", "apply",
                               transformer=_cfg("Transformer", "query key value out ffn"))
ResourceManagementConfig = _cfg("ResourceManagementConfig", "weight_dtype use_gpu_only_for_calibration",
                                weight_memory=_cfg("WeightMemory", "method"))
if V[:2] == (1, 3):
    LayerBiasCorrectionConfig = _cfg("LayerBiasCorrectionConfig", "apply num_samples iterations correction_rate")
if V >= (1, 4):
    BiasCorrectionConfig = _cfg("BiasCorrectionConfig", "apply",
                                attributes=_cfg("Attributes", "apply_layers exclude_layers"))
