"""Quantization GROUPS of an exported encoder/decoder graph, named by block and role.

A group is what a mixed-precision recipe talks about (``encoder.3.fc2``, ``decoder.1.self_attn.softmax``,
``decoder.lm_head``): the ONNX nodes of one role in one block, the activation tensors ORT's QDQ quantizer puts
Q/DQ on for them, and the tensor the group writes (``output``, where its quantization error is measured).
Names come from the node names the torch exporter writes (``/encoder/layers.N/fc2/MatMul``,
``/decoder/layers.N/encoder_attn/Softmax``, ``/proj_out/MatMul``) and from op types; read them from the
graph after ``quantize.preprocess`` (which keeps node names).

Two proxies decide which nodes are quantized:

* ``matmul`` (today's static mode): MatMul and Conv only: linear layers and the attention matmuls (QK^T, AV).
* ``npu``: also the residual Adds, the encoder's position-embedding Add, LayerNormalization (input and output)
  and Softmax, as an NPU that runs the whole graph in integers must. The decoder's causal-mask Add stays float
  (its -3.4e38 entries would set the scale of the scores it is added to; Axera's shipped Whisper recipe keeps
  the mask Adds float too), and so does the Softmax over those masked scores (-inf: a NaN scale); the GELU's
  arithmetic stays float (ORT has no QDQ rule for Erf/Div, and Mul is not asked for).

Group roles per block: ``self_attn.{q_proj,k_proj,v_proj,out_proj,qk,softmax,av}``, the same under
``encoder_attn`` (decoder), ``fc1``, ``fc2``, ``self_attn_layer_norm``, ``encoder_attn_layer_norm``,
``final_layer_norm``, ``residual.{self_attn,encoder_attn,ffn}``; per component: ``encoder.conv1``,
``encoder.conv2``, ``encoder.embed_positions``, ``{encoder,decoder}.layer_norm``, ``decoder.lm_head``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

PROXIES = ("matmul", "npu")
NPU_OPS = ("Add", "LayerNormalization", "Softmax")   # what the npu proxy adds to the quantized op types
LINEAR = ("q_proj", "k_proj", "v_proj", "out_proj")
# Role FAMILIES: one role over every block of a component (fnmatch patterns after "<component>."), what the
# sensitivity stage restores to 16 bits together and promotes one at a time (whisper_npu/promotion.py). Why
# families: on whisper-base no single group gains much at 16 bits alone (the damage is spread over every block).
FAMILIES = {
    "residual": ["*.residual.*"],
    "layer_norm": ["*layer_norm"],
    "fc2": ["*.fc2"],
    "attention": ["*.qk", "*.softmax", "*.av"],
    "fc1": ["*.fc1"],
    "projections": ["*.q_proj", "*.k_proj", "*.v_proj", "*.out_proj"],
    "ends": ["conv1", "conv2", "embed_positions", "lm_head"],   # the per-component groups (encoder.conv1, ...)
}


def family_chains(component: str) -> dict[str, list[str]]:
    """``family:<name>`` -> the component's patterns of that family (the study's ``chains``)."""
    return {f"family:{name}": [f"{component}.{pat}" for pat in pats] for name, pats in FAMILIES.items()}
_LAYER = re.compile(r"^/(encoder|decoder)/layers\.(\d+)/(.*)$")


@dataclass
class Group:
    name: str
    nodes: list[str] = field(default_factory=list)       # every node of the role (a linear's bias Add too)
    quantized: list[str] = field(default_factory=list)   # the nodes the proxy quantizes (not a linear's bias Add)
    tensors: list[str] = field(default_factory=list)     # activations Q/DQ goes on: their non-weight ins and outs
    produced: list[str] = field(default_factory=list)    # those of ``tensors`` the group's nodes write
    output: str = ""                                     # the tensor the group writes (its last node's output)


def _role(node, producers: dict[str, str]) -> str | None:
    """The group name of one node (without the component/block prefix handled by the caller), or None."""
    name, op = node.name, node.op_type
    m = _LAYER.match(name)
    if m is None:
        return None
    rest = m.group(3)
    parts = rest.split("/")
    if parts[0] in ("self_attn", "encoder_attn"):
        attn = parts[0]
        if len(parts) > 2 and parts[1] in LINEAR:
            return f"{attn}.{parts[1]}"
        if len(parts) == 2 and op == "MatMul":
            return f"{attn}.qk" if parts[1] == "MatMul" else f"{attn}.av"
        if len(parts) == 2 and op == "Softmax":
            return f"{attn}.softmax"
        return None
    if parts[0] in ("fc1", "fc2"):
        return parts[0]
    if parts[0].endswith("layer_norm") and op == "LayerNormalization":
        return parts[0]
    if len(parts) == 1 and op == "Add":   # a residual Add: named by what its non-residual input comes from
        srcs = [producers.get(i, "") for i in node.input]
        for src in srcs:
            sm = _LAYER.match(src)
            if sm and sm.group(2) == m.group(2):
                head = sm.group(3).split("/")[0]
                if head in ("self_attn", "encoder_attn"):
                    return f"residual.{head}"
                if head == "fc2":
                    return "residual.ffn"
    return None


def _top_role(node, component: str) -> str | None:
    name, op = node.name, node.op_type
    if name.startswith(f"/{component}/conv") and op == "Conv":
        return name.split("/")[2]                       # conv1, conv2
    if name == f"/{component}/layer_norm/LayerNormalization":
        return "layer_norm"
    if name.startswith("/proj_out/"):
        return "lm_head"
    return None


def quantized_op_types(op_types, proxy: str) -> list[str]:
    """The op types the quantizer is given for ``proxy`` (``op_types`` as configured, plus NPU_OPS for npu)."""
    if proxy not in PROXIES:
        raise ValueError(f"compile.onnxruntime.proxy = {proxy!r}: must be one of {', '.join(PROXIES)}")
    return list(op_types) + [o for o in NPU_OPS if proxy == "npu" and o not in op_types]


def find(model_path: str | Path, component: str, proxy: str = "npu", op_types=("MatMul", "Conv")) -> dict[str, Group]:
    """The groups of the (pre-processed) graph at ``model_path`` that ``proxy`` quantizes, by name, in graph order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    ops = set(quantized_op_types(op_types, proxy))
    inits = {i.name for i in graph.initializer}
    # weights: initializers, Constant outputs, and the Identity copies the exporter makes of shared initializers
    consts = inits | {o for n in graph.node
                      if n.op_type == "Constant" or (n.op_type == "Identity" and n.input[0] in inits)
                      for o in n.output}
    producers = {o: n.name for n in graph.node for o in n.output}
    ops_of = {o: n.op_type for n in graph.node for o in n.output}
    float_types = {1, 10}   # FLOAT, FLOAT16: what ORT's quantizer considers
    typed = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    found: dict[str, Group] = {}
    for node in graph.node:
        m = _LAYER.match(node.name)
        if m and m.group(1) == component:
            role = _role(node, producers)
            name = f"{component}.{m.group(2)}.{role}" if role else None
        else:
            role = _top_role(node, component)
            name = f"{component}.{role}" if role else None
        if name is None and component == "encoder" and node.op_type == "Add" and any(i in inits for i in node.input) \
                and node.name.count("/") == 2 and node.name.startswith("/encoder/Add"):
            name = "encoder.embed_positions"   # conv output + the position table (an initializer)
        if name is None:
            continue
        g = found.setdefault(name, Group(name))
        g.nodes.append(node.name)
        g.output = node.output[0]
        if node.op_type in ops and _quantizable(node, name, ops_of):
            g.quantized.append(node.name)
            for t in (*node.input, *node.output):
                if t and t not in consts and typed.get(t) in float_types and t not in g.tensors:
                    g.tensors.append(t)
            g.produced += [t for t in node.output if t in g.tensors]
    quantized = {t for g in found.values() for t in g.tensors}
    for g in found.values():   # what a linear writes is its bias Add's output (the next group's input in npu)
        if g.quantized and g.output in quantized and g.output not in g.tensors:
            g.tensors.append(g.output)
            g.produced.append(g.output)
    return {k: g for k, g in found.items() if g.quantized}


def _quantizable(node, name: str, ops_of: dict[str, str]) -> bool:
    """Whether the proxy quantizes this node of group ``name``: Adds only as residual / position Adds (a
    linear's bias Add is fused on an NPU), and no Softmax over MASKED scores (the decoder's self-attention: the
    -inf entries would give a NaN scale; its scores are quantized at QK^T's output, its probabilities at AV's
    input)."""
    if node.op_type == "Add":
        return ".residual." in name or name.endswith("embed_positions")
    if node.op_type == "Softmax":
        return ops_of.get(node.input[0]) != "Add"
    return True


def component_of(model_path: str | Path) -> str:
    """``decoder`` when the graph has the decoder's nodes, else ``encoder``."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return "decoder" if any(n.name.startswith("/decoder/") for n in graph.node) else "encoder"


def select(groups: dict[str, Group], pattern: str) -> list[str]:
    """Group names matching ``pattern`` (an exact name or an fnmatch pattern such as ``encoder.*.fc2``)."""
    import fnmatch
    return [n for n in groups if fnmatch.fnmatchcase(n, pattern)]
