"""The ``qbcompiler`` compiler: Mobilint's ``mblt_compile`` (.mblt) then ``mxq_compile`` (.mxq), one adapter for every
known call style (plan.py: which style the installed compiler offers and the calls it gets, as data; this module:
making the calls). whisper_npu/runtimes/mobilint/ runs the .mxq files.

The compiler is not on PyPI and cannot be installed here. The calls are rebuilt from Mobilint's compiler
documentation (v1.3) and the tutorial's call sites per version (docs/mobilint.md lists them with their sources). The call style is chosen by what the
installed compiler offers, not by version cut-offs: does ``mxq_compile`` take ``target_device``, does
``mblt_compile`` take ``model_part``, does ``qbcompiler.configs.LlmConfig`` import. Versions only pick
the ``get_llm_config`` keyword names (0.11 vs 0.12/1.0.0) and a few documented firsts (below).

=======  ==========================================================================================
style    what it sends (``qubee`` is the package's name before 2026-01; both names are tried)
=======  ==========================================================================================
0.11     ``get_llm_config(use_full_seq_len_calib=...)``; decoder mxq_compile without a scheme; the
         decoder compile needs the parser.py line-538 patch (checked: refused when unpatched)
0.12     ``get_llm_config(llm_config_apply=True, use_full_seq_length=...)``; device ``cuda``; schemes
         encoder ``global4`` / decoder ``single``; ``mblt_compile(backend="hf", target=...)`` (the seed)
1.0      as 0.12 (qbcompiler 1.0.0: no ``qbcompiler.configs``), the encoder's ``backend="torch"``
1.x      ``qbcompiler.configs`` imports (1.0.1+; tutorial ``3fee81f``): ``LlmConfig(...)`` objects, device
         ``gpu``/``cpu``, config objects (``calibration_config`` ...), encoder ``feed_dict``; scheme
         ``all`` from 1.0.2 (docs CHANGELOG; the issue's notes say 1.0.1: the docs win)
1.2      ``mxq_compile`` takes ``target_device`` (one compiler for ARIES and REGULUS): as 1.x plus
         ``target_device`` on both calls, mblt still ``backend="hf"`` (tutorial ``d923fa3c``)
1.3      ``mblt_compile`` takes ``model_part`` (docs 1.3: ``hf`` removed, ``target_device`` required):
         the live model with ``backend="torch", model_part=<component>``; ``config_save_path`` records
         the configuration the compiler resolved (beside the artifact and in provenance)
other    refused, naming the version found and the styles supported
=======  ==========================================================================================

What was and was NOT verified against the real compiler
--------------------------------------------------------
NOT verified: nothing here has run against a real qbcompiler/qubee. The 1.3 signatures, argument names and
config classes come from Mobilint's v1.3 docs; 0.11-1.2 from tutorial call sites only (no docs for them).
Unknown: whether a given compiler accepts the ``transformers`` 5.x model (Mobilint documents 4.50.0 for
the Whisper parser), the parts ``available_parts`` reports for Whisper, how 1.3 matches our calibration
JSON's input names to the ``model_part`` graph (docs: by shape, then name).

Verified here, against a stand-in (tests/standin_qbcompiler/, a fake module built from the documented
signatures that records calls): the exact keyword names and values per style and target, the
absolute calibration paths, refusals naming the params keys, and that a raising compiler or a
missing/empty output fails the stage with the compiler's message and no output left behind.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisper_npu.artifacts import Built
from whisper_npu.calibration import sets as calib_sets
from whisper_npu.compilers.mobilint.plan import (
    CONFIG_SECTIONS,
    INSTALL_HINT,
    KEY,
    PARSER_PATCH_LINE,
    Installed,
    _takes,
    is_importable,
    plan_calls,
    require,
)
from whisper_npu.core.errors import StageError

if TYPE_CHECKING:
    from whisper_npu.calibration.sets import CalibSet
    from whisper_npu.params.compile import CompileParams

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- running

def parser_patch_state(module: str) -> str:
    """0.11 only: ``patched``, ``unpatched`` or ``unknown`` for parser.py line 538 (tutorial v0.11.0.1)."""
    spec = importlib.util.find_spec(f"{module}.model_dict.parser.parser")
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return "unknown"
    lines = Path(spec.origin).read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < PARSER_PATCH_LINE:
        return "unknown"
    line = lines[PARSER_PATCH_LINE - 1].strip()
    if line == 'if self.backend == "hf":':
        return "unpatched"
    return "patched" if line == "if False:" else "unknown"


def check_0_11_decoder(inst: Installed) -> None:
    """Refuse an unpatched qubee 0.11 decoder compile with the tutorial's instructions."""
    state = parser_patch_state(inst.module)
    if state == "unpatched":
        raise StageError(
            f"{inst.module} {inst.version}: decoder compilation needs the tutorial's parser.py fix: in "
            f"<{inst.module}>/model_dict/parser/parser.py line {PARSER_PATCH_LINE} change "
            '`if self.backend == "hf":` to `if False:` (mblt-sdk-tutorial v0.11.0.1), or install 0.12+')
    if state == "unknown":
        log.warning("%s %s: could not confirm the parser.py line-%d patch the 0.11 decoder needs; "
                    "compiling anyway", inst.module, inst.version, PARSER_PATCH_LINE)


def _pascal(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def config_object(cls: Any, data: dict) -> Any:
    """``cls(**data)`` where a mapping value whose PascalCase key names a nested class of ``cls`` becomes
    that class, recursively: ``{"norm_conv": {"apply": True}}`` on EquivalentTransformationConfig ->
    ``EquivalentTransformationConfig(norm_conv=EquivalentTransformationConfig.NormConv(apply=True))``, the
    nesting Mobilint's tutorial uses (``BitConfig.Transformer.MixedPrecision.Activation``, ...)."""
    kwargs = {}
    for key, value in data.items():
        nested = getattr(cls, _pascal(key), None) if isinstance(value, dict) else None
        kwargs[key] = config_object(nested, value) if inspect.isclass(nested) else value
    return cls(**kwargs)


def _configs_module(inst: Installed) -> Any:
    return importlib.import_module(f"{inst.module}.configs")


def _llm_config(inst: Installed, desc: dict) -> Any:
    if desc["factory"] == "get_llm_config":
        return getattr(importlib.import_module(inst.module), "get_llm_config")(**desc["kwargs"])
    attributes = {k: desc[k] for k in ("max_sequence_length", "max_cache_length") if k in desc}
    attributes["calibration"] = {"use_full_seq_length": desc["use_full_seq_length"]}
    return config_object(_configs_module(inst).LlmConfig, {"apply": True, "attributes": attributes})


def _config_objects(inst: Installed, component: str, sections: dict, mxq_compile: Any) -> dict:
    configs = _configs_module(inst) if sections else None
    out = {}
    for section, data in sections.items():
        key = f"{KEY}.{component}_configs.{section}"
        cls = getattr(configs, CONFIG_SECTIONS[section], None)
        if cls is None:
            raise StageError(f"{key}: {inst.module} {inst.version} has no {inst.module}.configs."
                             f"{CONFIG_SECTIONS[section]}")
        if not _takes(mxq_compile, f"{section}_config", True):
            raise StageError(f"{key}: {inst.module} {inst.version}'s mxq_compile takes no {section}_config")
        try:
            out[f"{section}_config"] = config_object(cls, data)
        except (TypeError, ValueError) as e:   # pydantic's ValidationError is a ValueError
            raise StageError(f"{key}: {CONFIG_SECTIONS[section]} refused it: {' '.join(str(e).split())}") from None
    return out


def _feed_dict(shapes: dict) -> dict:
    """Example tensors for tracing (tutorial: torch.randn); seeded so reruns trace the same input."""
    import torch
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}


def _call(name: str, fn: Any, **kwargs: Any) -> None:
    log.info("qbcompiler %s(%s)", name, ", ".join(sorted(kwargs)))
    try:
        fn(**kwargs)
    except Exception as e:  # the compiler's own exception types are unknown: report any with its message
        log.debug("qbcompiler %s failed", name, exc_info=True)
        raise StageError(f"qbcompiler {name} failed: {type(e).__name__}: {e}") from None


def _check_output(path: Path, name: str) -> None:
    if not path.is_file():
        raise StageError(f"qbcompiler {name} reported success but wrote no {path.name}")
    if path.stat().st_size == 0:
        raise StageError(f"qbcompiler {name} wrote an empty {path.name}")


def compile_component(inst: Installed, plan: dict, model: Any, calib_file: Path, out_dir: Path,
                      stem: str) -> dict[str, str]:
    """Run both compiler calls; ``calib_file`` must hold absolute paths. Returns artifact names by kind."""
    if not calib_file.is_absolute():
        raise ValueError(f"{calib_file}: the compiler needs an absolute calibration path")
    component = plan["mblt_compile"].get("target") or plan["mblt_compile"].get("model_part")
    if inst.api == "0.11" and component == "decoder":
        check_0_11_decoder(inst)
    module = importlib.import_module(inst.module)
    mblt_path, mxq_path = (out_dir / f"{stem}.mblt").resolve(), (out_dir / f"{stem}.mxq").resolve()
    # objects first: a config the compiler refuses fails before the (long) parse
    mxq_kwargs = dict(plan["mxq_compile"])
    mxq_kwargs.update(_config_objects(inst, component, plan.get("configs", {}), module.mxq_compile))
    if plan["llm_config"] is not None:
        try:
            mxq_kwargs["llm_config"] = _llm_config(inst, plan["llm_config"])
        except Exception as e:  # as above: unknown exception types from the compiler package
            raise StageError(f"qbcompiler LLM config ({plan['llm_config']['factory']}) failed: "
                             f"{type(e).__name__}: {e}") from None
    artifacts = {"mblt": mblt_path.name, "model": mxq_path.name}
    if plan.get("save_config") and _takes(module.mxq_compile, "config_save_path", True):
        saved = (out_dir / f"{stem}.config.yaml").resolve()
        mxq_kwargs["config_save_path"] = str(saved)
        artifacts["compile_config"] = saved.name
    mblt_kwargs = dict(plan["mblt_compile"])
    if "feed_dict" in mblt_kwargs:
        mblt_kwargs["feed_dict"] = _feed_dict(mblt_kwargs["feed_dict"])
    _call("mblt_compile", module.mblt_compile, model=model, mblt_save_path=str(mblt_path), **mblt_kwargs)
    _check_output(mblt_path, "mblt_compile")
    _call("mxq_compile", module.mxq_compile, model=str(mblt_path), calib_data_path=str(calib_file),
          save_path=str(mxq_path), **mxq_kwargs)
    _check_output(mxq_path, "mxq_compile")
    if "compile_config" in artifacts and not (out_dir / artifacts["compile_config"]).is_file():
        log.warning("qbcompiler wrote no %s although config_save_path was given", artifacts["compile_config"])
        del artifacts["compile_config"]
    return artifacts


# ------------------------------------------------------------------------------------------- the interface

def build(model: Any, component: str, spec: Any, cs: CalibSet, cp: CompileParams, out_dir: Path,
          stem: str) -> Built:
    """.mblt and .mxq of one component into ``out_dir``. Nothing can be checked on a compile host (an .mxq
    runs only on the NPU), so it calibrates on every entry and holds none out."""
    import torch

    calib_idx = list(range(len(cs)))
    inst = require()
    plan = plan_calls(inst.api, component, cp.qbcompiler, gpu=torch.cuda.is_available(),
                      input_features_shape=(1, int(model.config.num_mel_bins),
                                            spec.inputs[0].shape[1] if component == "encoder" else 0),
                      version=inst.version)
    with tempfile.TemporaryDirectory(prefix="whisper-npu-calib-") as tmp:
        # Absolute paths for the compiler, in a temp dir: never inside a DVC output.
        calib_file = calib_sets.write_absolute(cs, calib_idx, Path(tmp).resolve())
        artifacts = compile_component(inst, plan, model, calib_file, out_dir, stem)
    resolved = {"compiler": {"module": inst.module, "version": inst.version, "api": inst.api}, "calls": plan,
                "calibrated_on": calib_idx}
    if "compile_config" in artifacts:   # what the compiler says it resolved (config_save_path, 1.3+)
        import yaml

        saved = out_dir / artifacts["compile_config"]
        try:
            resolved["compiler_config"] = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise StageError(f"{saved.name}: the compiler's saved configuration is unreadable ({e})") from None
    numerics = {"checked": False,
                "reason": "an .mxq runs only on a Mobilint NPU (qbruntime); compare on the device with the "
                          "evaluate stage"}
    return Built(artifacts, resolved, numerics)


def available() -> bool:
    """Whether a qbcompiler (or its pre-rename qubee) imports in this interpreter."""
    return is_importable()


__all__ = ["INSTALL_HINT", "available", "build", "compile_component", "config_object"]
