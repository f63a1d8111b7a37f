"""The part of the qbcompiler adapter that runs in the interpreter where Mobilint's compiler is installed: its own
virtual environment or its Docker image (``compile.qbcompiler.python``), or this one. It imports only the standard
library at module level, so it runs there without this package's dependencies (the SDK's environment has qbcompiler,
torch and the transformers version its Whisper parser wants). JSON in, JSON out:

    <sdk python> sdk_side.py probe              # one JSON line: versions, CUDA, what the compiler offers
    <sdk python> sdk_side.py compile JOB.json   # one component: load the model, mblt_compile, mxq_compile

``compile`` loads the reference model with the SDK environment's own transformers (``load_for_part`` where the
compiler has it, as Mobilint's newest tutorial does; else ``AutoModelForSpeechSeq2Seq.from_pretrained`` with sdpa
attention, as the older ones), builds the config objects the plan names (whisper_npu/compilers/mobilint/plan.py
makes the plan, as data, on the pipeline's side), runs both calls in a private working directory (what the compiler
writes there, e.g. ``spinWeight/``, is reported) and logs every call with its argument values on stderr. A failure
is one ``error:`` line on stderr and exit code 1.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import importlib.util
import inspect
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

MODULE_NAMES = ("qbcompiler", "qubee")   # the package was renamed qubee -> qbcompiler in 2026-01
PARSER_PATCH_LINE = 538                   # qubee 0.11.0.1 model_dict/parser/parser.py (tutorial v0.11.0.1)
LOAD_FOR_PART = "model_dict.parser.patcher.parts"   # load_for_part(model_id, part, *, dtype, device, ...)


class SdkError(RuntimeError):
    """One line for the pipeline: what failed and the compiler's message."""


def _version(name: str, module: Any = None) -> str | None:
    v = getattr(module, "__version__", None) if module is not None else None
    if v:
        return str(v)
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _params(fn: Any) -> list[str] | None:
    """A function's parameter names, ``**`` for a ``**kwargs`` catch-all; None when its signature is unknown."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    return [("**" if p.kind is p.VAR_KEYWORD else p.name) for p in params]


def _compiler() -> tuple[str, Any] | None:
    for name in MODULE_NAMES:
        if importlib.util.find_spec(name) is not None:
            return name, importlib.import_module(name)
    return None


def probe() -> dict[str, Any]:
    """What this interpreter has: python, torch (and CUDA), transformers, and the compiler's surface."""
    out: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                           "torch": _version("torch"), "transformers": _version("transformers"), "cuda": False,
                           "compiler": None}
    try:
        import torch
        out["cuda"] = bool(torch.cuda.is_available())
    except ImportError:
        pass
    found = _compiler()
    if found is None:
        return out
    name, module = found
    configs = None
    try:
        configs = importlib.import_module(f"{name}.configs")
    except ImportError:
        pass
    functions = {fn: getattr(module, fn, None) for fn in ("mblt_compile", "mxq_compile", "get_llm_config")}
    out["compiler"] = {
        "module": name, "version": _version(name, module) or "unknown",
        # parameter names ("**" for a catch-all), or None when the function is missing or its signature unknown
        **{fn: _params(f) if callable(f) else None for fn, f in functions.items() if fn != "get_llm_config"},
        "has": sorted(fn for fn, f in functions.items() if callable(f)),
        "config_classes": sorted(n for n in dir(configs) if n.endswith("Config")) if configs is not None else [],
        "has_load_for_part": _has_load_for_part(name),
        "parser_patch": parser_patch_state(name),
    }
    return out


def _has_load_for_part(name: str) -> bool:
    if not _has(f"{name}.{LOAD_FOR_PART}"):
        return False
    try:
        return callable(getattr(importlib.import_module(f"{name}.{LOAD_FOR_PART}"), "load_for_part", None))
    except ImportError:
        return False


def _has(module_path: str) -> bool:
    try:
        return importlib.util.find_spec(module_path) is not None
    except (ImportError, ValueError):   # a parent package is missing
        return False


def parser_patch_state(module: str) -> str:
    """``patched``, ``unpatched`` or ``unknown`` for parser.py line 538 (only 0.11 needs the patch)."""
    parser = f"{module}.model_dict.parser.parser"
    spec = importlib.util.find_spec(parser) if _has(parser) else None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return "unknown"
    lines = Path(spec.origin).read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < PARSER_PATCH_LINE:
        return "unknown"
    line = lines[PARSER_PATCH_LINE - 1].strip()
    if line == 'if self.backend == "hf":':
        return "unpatched"
    return "patched" if line == "if False:" else "unknown"


# ---------------------------------------------------------------------------------------------- compile

def _pascal(key: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


def config_object(cls: Any, data: dict) -> Any:
    """``cls(**data)`` where a mapping value whose PascalCase key names a nested class of ``cls`` becomes that class,
    recursively: ``{"norm_conv": {"apply": True}}`` on EquivalentTransformationConfig ->
    ``EquivalentTransformationConfig(norm_conv=EquivalentTransformationConfig.NormConv(apply=True))``, the nesting
    Mobilint's tutorial uses (``BitConfig.Transformer.MixedPrecision.Activation``, ...)."""
    kwargs = {}
    for key, value in data.items():
        nested = getattr(cls, _pascal(key), None) if isinstance(value, dict) else None
        kwargs[key] = config_object(nested, value) if inspect.isclass(nested) else value
    return cls(**kwargs)


def _llm_config(module_name: str, desc: dict) -> Any:
    module = importlib.import_module(module_name)
    if desc["factory"] == "get_llm_config":
        return module.get_llm_config(**desc["kwargs"])
    attributes = {k: desc[k] for k in ("max_sequence_length", "max_cache_length") if k in desc}
    attributes["calibration"] = {"use_full_seq_length": desc["use_full_seq_length"]}
    return config_object(importlib.import_module(f"{module_name}.configs").LlmConfig,
                         {"apply": True, "attributes": attributes})


def _config_objects(module_name: str, classes: dict[str, str], sections: dict, key: str) -> dict:
    out = {}
    configs = importlib.import_module(f"{module_name}.configs") if sections else None
    for section, data in sections.items():
        cls = getattr(configs, classes[section], None)
        if cls is None:
            raise SdkError(f"{key}.{section}: {module_name} has no {module_name}.configs.{classes[section]}")
        try:
            out[f"{section}_config"] = config_object(cls, data)
        except (TypeError, ValueError) as e:   # pydantic's ValidationError is a ValueError
            raise SdkError(f"{key}.{section}: {classes[section]} refused it: {' '.join(str(e).split())}") from None
    return out


def _feed_dict(shapes: dict) -> dict:
    """Example tensors for tracing (the tutorial's torch.randn), seeded so reruns trace the same input."""
    import torch
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(*shape, generator=g) for name, shape in shapes.items()}


def _shown(value: Any) -> str:
    if hasattr(value, "state_dict") and hasattr(value, "config"):
        return f"<{type(value).__name__}>"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<tensor {list(value.shape)} {value.dtype}>"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_shown(v)}" for k, v in value.items()) + "}"
    if type(value).__module__.split(".")[0] in {"qbcompiler", "qubee"} and hasattr(value, "__dict__"):
        return f"{type(value).__name__}({', '.join(f'{k}={_shown(v)}' for k, v in vars(value).items())})"
    text = repr(value)
    return text if len(text) <= 300 else text[:297] + "..."


def _call(name: str, fn: Any, **kwargs: Any) -> None:
    shown = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(kwargs.items()))
    print(f"qbcompiler {name}({shown})", file=sys.stderr, flush=True)
    try:
        fn(**kwargs)
    except Exception as e:  # the compiler's own exception types are unknown: report any with its message
        raise SdkError(f"qbcompiler {name} failed: {type(e).__name__}: {' '.join(str(e).split())}") from None


def _check_output(path: Path, name: str) -> None:
    if not path.is_file():
        raise SdkError(f"qbcompiler {name} reported success but wrote no {path.name}")
    if path.stat().st_size == 0:
        raise SdkError(f"qbcompiler {name} wrote an empty {path.name}")


def load_model(module_name: str, hf_dir: str, part: str, use_load_for_part: bool) -> Any:
    """The reference model, loaded by this environment's transformers the way the compiler's tutorial does."""
    import torch

    if use_load_for_part:
        parts = importlib.import_module(f"{module_name}.{LOAD_FOR_PART}")
        return parts.load_for_part(hf_dir, part, dtype=torch.float32, device=torch.device("cpu"))
    from transformers import AutoModelForSpeechSeq2Seq

    return AutoModelForSpeechSeq2Seq.from_pretrained(hf_dir, attn_implementation="sdpa").eval().cpu()


def compile_job(job: dict) -> dict:
    """Run one component's two compiler calls as ``job`` (written by the pipeline's build.py) describes them."""
    module_name, plan, component = job["module"], job["plan"], job["component"]
    module = importlib.import_module(module_name)
    if plan["api"] == "0.11" and component == "decoder":
        state = parser_patch_state(module_name)
        if state == "unpatched":
            raise SdkError(f"{module_name} {job['version']}: decoder compilation needs the tutorial's parser.py fix: "
                           f"in <{module_name}>/model_dict/parser/parser.py line {PARSER_PATCH_LINE} change "
                           '`if self.backend == "hf":` to `if False:` (mblt-sdk-tutorial v0.11.0.1), or install 0.12+')
    out_dir, stem = Path(job["out_dir"]), job["stem"]
    mblt_path, mxq_path = out_dir / f"{stem}.mblt", out_dir / f"{stem}.mxq"
    # objects first: a config the compiler refuses fails before the (long) parse
    mxq_kwargs = dict(plan["mxq_compile"])
    mxq_kwargs.update(_config_objects(module_name, job["config_classes"], plan.get("configs", {}), job["configs_key"]))
    if plan["llm_config"] is not None:
        try:
            mxq_kwargs["llm_config"] = _llm_config(module_name, plan["llm_config"])
        except Exception as e:  # as above: unknown exception types from the compiler package
            raise SdkError(f"qbcompiler LLM config ({plan['llm_config']['factory']}) failed: "
                           f"{type(e).__name__}: {e}") from None
    artifacts = {"mblt": mblt_path.name, "model": mxq_path.name}
    if job.get("config_save_path"):
        mxq_kwargs["config_save_path"] = str(out_dir / f"{stem}.config.yaml")
        artifacts["compile_config"] = f"{stem}.config.yaml"
    mblt_kwargs = dict(plan["mblt_compile"])
    if "feed_dict" in mblt_kwargs:
        mblt_kwargs["feed_dict"] = _feed_dict(mblt_kwargs["feed_dict"])
    model = load_model(module_name, job["hf_dir"], component, plan.get("load_for_part", False))
    workdir = Path(job["workdir"])
    before = set(workdir.rglob("*"))
    cwd = os.getcwd()
    os.chdir(workdir)      # the compiler writes some files into the working directory (spinWeight/)
    try:
        _call("mblt_compile", module.mblt_compile, model=model, mblt_save_path=str(mblt_path), **mblt_kwargs)
        _check_output(mblt_path, "mblt_compile")
        _call("mxq_compile", module.mxq_compile, model=str(mblt_path), calib_data_path=job["calib_file"],
              save_path=str(mxq_path), **mxq_kwargs)
        _check_output(mxq_path, "mxq_compile")
    finally:
        os.chdir(cwd)
    if "compile_config" in artifacts and not (out_dir / artifacts["compile_config"]).is_file():
        print(f"qbcompiler wrote no {artifacts['compile_config']} although config_save_path was given",
              file=sys.stderr)
        del artifacts["compile_config"]
    written = sorted(p.relative_to(workdir).as_posix() for p in set(workdir.rglob("*")) - before if p.is_file())
    return {"artifacts": artifacts, "workdir_files": written}


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["probe"]:
            print(json.dumps(probe()))
        elif argv[:1] == ["compile"] and len(argv) == 2:
            job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
            print(json.dumps(compile_job(job)))
        else:
            print("usage: sdk_side.py probe | compile JOB.json", file=sys.stderr)
            return 2
    except SdkError as e:
        print(f"error: {e}", file=sys.stderr)
        print(json.dumps({"error": str(e)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
