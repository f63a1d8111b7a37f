"""The ONNX Runtime artifacts of the compile stage behind the decode protocol (whisper_npu/decoding/protocol.py).

The decoder has no KV cache: the session keeps the token list and runs the whole sequence at every
step, returning the last position's logits. That is O(n^2) but fine for short outputs, and it is exactly
the full-sequence form the decoder was calibrated on. What depends on the clip alone (the cross-attention K/V
projections of the encoder states, over 1500 frames: most of a step's work for short outputs) is computed once
per clip: :func:`split_clip_constant` cuts the compiled graph in two at that boundary, in memory, same nodes and
weights (the file on disk, the one the .mxq compiler and the quantizer saw, is unchanged). The LM head, an integer
matmul of every position against the whole vocabulary, runs on the last position only
(:func:`last_position_logits`, dynamic INT8: the same bits for the row the loop reads). Embeddings are
computed on the CPU as the NPU runtime does (whisper_npu/specs.py ``embed``, positions from 0), from the tables
compile saved beside the model.

Batch 1 by design: the ONNX files are exported in the NPU's I/O layout (whisper_npu/specs.py: batch fixed at 1,
only the sequence length dynamic), the graph the INT8 quantizer and the .mxq compiler see, so the evaluate stage
decodes them one clip at a time (``evaluate.batch_size`` batches the torch reference only).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisper_npu.artifacts import EMBED_POSITIONS, EMBED_TOKENS, artifact, ort_session, read_provenance
from whisper_npu.specs import embed


class OrtEncoder:
    """``[1, 3000, 80]`` float32 log-mel -> ``[1, 1500, d]`` hidden states."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.session = ort_session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(features, dtype=np.float32)})[0]


def subgraph(model: Any, inputs: dict[str, Any], outputs: list[Any]) -> Any:
    """The model computing ``outputs`` (ValueInfoProtos) from ``inputs`` (name -> ValueInfoProto): the nodes
    and initializers they need, nothing else (onnx.utils.Extractor needs shape inference, which does not know
    ORT's contrib Q/DQ ops)."""
    from onnx import helper

    graph = model.graph
    needed = {o.name for o in outputs}
    nodes = []
    for node in reversed(graph.node):
        if set(node.output) & needed:
            nodes.append(node)
            needed.update(i for i in node.input if i and i not in inputs)
    inits = [t for t in graph.initializer if t.name in needed]
    sub = helper.make_graph(nodes[::-1], graph.name, list(inputs.values()), outputs, inits)
    return helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)


def fold_length_invariant_shapes(model: Any, lengths: Sequence[int] = (1, 2, 7)) -> Any:
    """``model`` (changed in place) with its shape arithmetic that gives the same values at every probed length
    of the dynamic axes replaced by those values (initializers). In the NPU layout only the sequence length is
    dynamic; the batch size HF's attention reads from the decoder input to reshape the cross-attention K/V is 1,
    so after this the clip-constant part reaches through those reshapes and transposes. Shape tensors = outputs of
    ``Shape`` nodes and of nodes computing only from them and constants."""
    from onnx import ValueInfoProto, numpy_helper

    graph = model.graph
    consts = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    shape_t: list[str] = []
    for node in graph.node:
        inputs = [i for i in node.input if i]
        derived = inputs and all(i in consts or i in shape_t for i in inputs) and any(i in shape_t for i in inputs)
        if node.op_type == "Shape" or (node.op_type != "Constant" and derived):
            shape_t += list(node.output)
    if not shape_t:
        return model
    n_outputs = len(graph.output)
    graph.output.extend(ValueInfoProto(name=t) for t in shape_t)     # probe them
    session = ort_session(model.SerializeToString(), 1)
    del graph.output[n_outputs:]
    runs = []
    for n in lengths:
        feeds = {i.name: np.zeros([d if isinstance(d, int) and d > 0 else n for d in i.shape],
                                  dtype=np.int64 if i.type == "tensor(int64)" else np.float32)
                 for i in session.get_inputs()}
        runs.append(dict(zip(shape_t, session.run(shape_t, feeds))))
    same = {t for t in shape_t if all(r[t].shape == runs[0][t].shape and np.array_equal(r[t], runs[0][t])
                                      for r in runs)}
    keep = [n for n in graph.node if not (set(n.output) <= same)]
    removed = {o for n in graph.node if set(n.output) <= same for o in n.output}
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(runs[0][t]), t) for t in sorted(removed))
    return model


# element-wise ops a logits row goes through after the LM head's integer matmul (cast, scales, bias)
_ROW_WISE = {"Cast", "Mul", "Add", "QuantizeLinear", "DequantizeLinear"}
_INTEGER_MATMULS = {"MatMulInteger", "QLinearMatMul"}


def last_position_logits(model: Any) -> bool:
    """Change ``model`` in place so its one output holds the last position's logits only (``[1, 1, V]``), and
    say whether it did. The decode loop reads only that row, and the full-sequence graph computes the LM head
    (``d x vocabulary``) for every position at every step: for outputs of tens of tokens, more work than all
    the layers before it. The sequence axis is sliced to its last position at the input of the LM head's
    integer matmul (dynamic INT8: MatMulInteger); everything before it, DynamicQuantizeLinear's per-tensor scale
    included, is computed from the whole sequence as before, and an integer matmul and element-wise scaling
    give that row the same bits (tests/test_compile.py compares them). Done only when the ops from that matmul
    to the output are element-wise (``_ROW_WISE``) with their other operands constants or scalars
    (DynamicQuantizeLinear's scale and zero point). A float LM head (static QDQ, fp32) is left whole: a float
    GEMM of one row can round differently from the same row among L rows (seen: one logit one quantization step
    apart in the static mode)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.output) != 1:
        return False
    producer = {o: n for n in graph.node for o in n.output}
    fixed = {t.name for t in graph.initializer}      # constants and scalars computed from them
    for node in graph.node:
        if node.op_type == "Constant" or all(i in fixed for i in node.input if i):
            fixed.update(node.output)
        elif node.op_type == "DynamicQuantizeLinear":
            fixed.update(node.output[1:])
    name = graph.output[0].name
    while (node := producer.get(name)) is not None and node.op_type in _ROW_WISE:
        chain = [i for i in node.input if i and i not in fixed]
        if len(chain) != 1:
            return False
        name = chain[0]
    if node is None or node.op_type not in _INTEGER_MATMULS or not all(i in fixed for i in node.input[1:] if i):
        return False
    tag = node.name or node.output[0]
    consts = [numpy_helper.from_array(np.array([v], dtype=np.int64), f"{tag}/last_position_{k}")
              for k, v in (("starts", -1), ("ends", np.iinfo(np.int64).max), ("axes", -2))]
    graph.initializer.extend(consts)
    sliced = f"{node.input[0]}/last_position"
    graph.node.insert(list(graph.node).index(node),
                      helper.make_node("Slice", [node.input[0]] + [c.name for c in consts], [sliced], name=sliced))
    node.input[0] = sliced
    out = graph.output[0]
    graph.output[0].CopyFrom(helper.make_tensor_value_info(out.name, out.type.tensor_type.elem_type or
                                                           TensorProto.FLOAT, None))  # no longer [1, L, V]
    return True


def split_clip_constant(model: Any, clip_input: str, threads: int | None = None
                        ) -> tuple[Any, Any, list[str]] | None:
    """``(prefix, rest, boundary)`` ORT sessions: ``prefix`` maps ``clip_input`` alone to the ``boundary``
    tensors the rest of the graph reads from it; ``rest`` is the graph with ``boundary`` as inputs in place of
    ``clip_input``. Running prefix once and rest per step computes what the whole graph computes (the same nodes
    on the same values). None when nothing depends on ``clip_input`` alone or the graph has subgraphs (If/Loop).
    ``model`` is changed (its length-invariant shapes folded)."""
    from onnx import TensorProto, ValueInfoProto, helper

    if any(a.type in (a.GRAPH, a.GRAPHS) for n in model.graph.node for a in n.attribute):
        return None
    model = fold_length_invariant_shapes(model)
    graph = model.graph
    varying = {i.name for i in graph.input} - {clip_input}
    clip_only = {clip_input}
    boundary: list[str] = []
    for node in graph.node:                            # ONNX graphs are topologically sorted
        inputs = [i for i in node.input if i]
        if any(i in varying for i in inputs):
            varying.update(node.output)
            boundary += [i for i in inputs if i in clip_only and i not in boundary]
        elif any(i in clip_only for i in inputs):
            clip_only.update(node.output)
    if clip_input in boundary or not boundary:
        return None
    graph_inputs = {i.name: i for i in graph.input}
    prefix = ort_session(subgraph(model, {clip_input: graph_inputs[clip_input]},
                                   [ValueInfoProto(name=b) for b in boundary]).SerializeToString(), threads)
    # the boundary's types from the prefix session (ORT infers them; ONNX shape inference cannot for contrib ops):
    # ORT's "tensor(float)", "tensor(int8)", ... name TensorProto's FLOAT, INT8, ...
    typed = {o.name: helper.make_tensor_value_info(o.name, getattr(TensorProto, o.type[len("tensor("):-1].upper()),
                                                   None) for o in prefix.get_outputs()}
    rest_inputs = {n: v for n, v in graph_inputs.items() if n != clip_input} | typed
    rest = ort_session(subgraph(model, rest_inputs, list(graph.output)).SerializeToString(), threads)
    return prefix, rest, boundary


class OrtDecoderSession:
    """Full-sequence decoder session: reset(encoder_states), then step(tokens) -> last logits ``[V]``.

    ``hoist`` (default): the clip-constant part of the graph runs once per reset (:func:`split_clip_constant`);
    ``last_position`` (default): the LM head runs on the last position only (:func:`last_position_logits`).
    False for both runs the file's whole graph at every step.
    """

    def __init__(self, decoder_onnx: str | Path, embed_tokens: np.ndarray | str | Path,
                 embed_positions: np.ndarray | str | Path, threads: int | None = None, hoist: bool = True,
                 last_position: bool = True):
        import onnx

        full = onnx.load(str(decoder_onnx))
        self.names = [i.name for i in full.graph.input]   # decoder_hidden_states, encoder_hidden_states
        self.last_position = last_position and last_position_logits(full)
        split = split_clip_constant(full, self.names[1], threads) if hoist else None
        if split is None:
            self.prefix, self.boundary = None, []
            self.session = ort_session(full.SerializeToString() if self.last_position else decoder_onnx, threads)
        else:
            self.prefix, self.session, self.boundary = split
        del full
        self.clip_values: dict[str, np.ndarray] = {}
        self.embed_tokens = np.load(embed_tokens) if not isinstance(embed_tokens, np.ndarray) else embed_tokens
        self.embed_positions = (np.load(embed_positions) if not isinstance(embed_positions, np.ndarray)
                                else embed_positions)
        self.tokens: list[int] = []
        self.encoder_states: np.ndarray | None = None

    @property
    def max_length(self) -> int:
        return int(self.embed_positions.shape[0])

    def reset(self, encoder_states: np.ndarray) -> None:
        self.encoder_states = np.ascontiguousarray(encoder_states, dtype=np.float32)
        self.tokens = []
        if self.prefix is not None:
            values = self.prefix.run(self.boundary, {self.names[1]: self.encoder_states})
            self.clip_values = dict(zip(self.boundary, values))
        else:
            self.clip_values = {self.names[1]: self.encoder_states}

    def embed(self, tokens: Sequence[int]) -> np.ndarray:
        """``[1, L, d]`` token + position embeddings, positions from 0 (as in calibration)."""
        return embed(self.embed_tokens, self.embed_positions, tokens)

    def step(self, tokens: Sequence[int]) -> np.ndarray:
        if self.encoder_states is None:
            raise RuntimeError("OrtDecoderSession.step before reset(encoder_states)")
        if not tokens:
            raise ValueError("step needs at least one token")
        if len(self.tokens) + len(tokens) > self.max_length:
            raise ValueError(f"sequence of {len(self.tokens) + len(tokens)} tokens exceeds the decoder's "
                             f"{self.max_length} positions")
        self.tokens.extend(int(t) for t in tokens)
        logits = self.session.run(None, {self.names[0]: self.embed(self.tokens), **self.clip_values})[0]
        return np.asarray(logits[0, -1], dtype=np.float32)


@dataclass
class OrtBackend:
    name: str
    encoder: OrtEncoder
    decoder: OrtDecoderSession

    @property
    def device(self) -> dict:
        """What runs it: ONNX Runtime's CPU provider."""
        import onnxruntime as ort

        return {"runtime": f"onnxruntime {ort.__version__}", "device": "cpu"}

    def close(self) -> None:
        """Nothing to release (ORT sessions are freed with the object); the Backend protocol's close."""


def load_ort_backend(compiled_dir_encoder: str | Path, compiled_dir_decoder: str | Path,
                     threads: int | None = None, hoist: bool = True, last_position: bool = True) -> OrtBackend:
    """A Backend over ``compiled/encoder`` and ``compiled/decoder`` written by the onnxruntime backend."""
    dec_dir = Path(compiled_dir_decoder)
    prov = read_provenance(dec_dir)
    if prov.get("backend") != "onnxruntime":
        raise ValueError(f"{dec_dir}: compiled with backend {prov.get('backend')!r}; only onnxruntime "
                         "artifacts run on this machine")
    mode = prov.get("quantization", {}).get("mode", "fp32")
    return OrtBackend(name=f"onnxruntime-{mode}",
                      encoder=OrtEncoder(artifact(compiled_dir_encoder), threads),
                      decoder=OrtDecoderSession(artifact(dec_dir), dec_dir / EMBED_TOKENS,
                                                dec_dir / EMBED_POSITIONS, threads, hoist, last_position))


def load(enc_dir: Path, dec_dir: Path, model_config: Any, npu: Any = None) -> OrtBackend:
    """The runtime registry's entry (whisper_npu/runtimes/registry.py): the ONNX Runtime backend, any CPU (``npu``,
    the NPU placement, does not apply)."""
    return load_ort_backend(enc_dir, dec_dir)
