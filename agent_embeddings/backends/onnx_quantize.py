"""Dynamic int8 quantization of an exported ONNX graph, its MatMul inputs smoothed first.

``backend: "onnx-int8"`` runs the graph :func:`quantize` writes next to the fp32 one of
:mod:`.onnx_export`: several times faster than torch on CPUs with AVX512-VNNI or AVX2."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from .onnx_encode import MODEL, OnnxEncoder
from .onnx_export import publish

__all__ = ["CALIBRATION_TEXTS", "SMOOTH_ALPHA", "quantize"]

log = logging.getLogger(__name__)

#: How much of an input channel's range the int8 recipe moves into the weights (SmoothQuant's alpha).
SMOOTH_ALPHA = 0.8
#: Texts the int8 recipe measures activation ranges on: few, but varied on purpose.
CALIBRATION_TEXTS = (
    "A man is eating food.",
    "ok",
    "What is the capital of France?",
    "How do I reset my password if I no longer have access to the email address on my account?",
    "The cheetah chased its prey across the dry savanna at dawn while the rest of the herd scattered.",
    "Quarterly revenue rose 12% year over year to $4.3 billion, driven by cloud subscriptions in EMEA and APAC.",
    "def embed(texts: list[str]) -> np.ndarray:\n    return model.encode(texts, batch_size=64)",
    "Error 404: the requested URL /api/v2/items?id=17 was not found on this server.",
    "Les agents ont besoin de vecteurs pour retrouver les bons documents.",
    "I loved it!!! Best purchase ever :)",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "She played the violin beautifully at the concert last night, and the audience stood to applaud.",
    "BREAKING: Markets fall as central bank raises interest rates by 0.5 percentage points.",
    "Patient presents with mild fever, dry cough and fatigue for three days; no known allergies.",
    "- install the package\n- run `make test`\n- open http://localhost:8080 in a browser",
    "After months of debate the committee found that the zoning amendments ignored residents' worries about noise.",
)


def _quiet_hint(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Please consider to run pre-processing")


def quantize(source: Path, dest: Path, *, who: str) -> None:
    """Dynamic int8 quantization of every MatMul with a constant weight, after smoothing its input.

    Activations get one uint8 scale per batch, and in BERT-like models a few input channels of some
    MatMuls are outliers (all-MiniLM-L6-v2: up to 30, most under 2), which leaves the others a few
    levels (min cosine to fp32 0.974 on 2,000 sentences; int8 weights alone: 0.999). So first, as
    SmoothQuant (Xiao et al. 2022), input channel j of each MatMul is divided by ``s_j = a_j **
    SMOOTH_ALPHA / w_j ** (1 - SMOOTH_ALPHA)`` (an inserted Mul) and row j of its weights multiplied by
    it, exact in fp32: ``a_j`` is the channel's largest magnitude on ``CALIBRATION_TEXTS``, raised to
    the median over channels (one quiet there is never amplified), ``w_j`` the row's largest weight.
    Found by graph structure, not node names. Embedding tables stay fp32 (int8 saves disk, not time).
    Each exact GELU becomes ONNX Runtime's tanh-approximated FastGelu (:func:`_fast_gelu`).
    """
    onnx = require("onnx", "onnx", who=who)
    quantization = require("onnxruntime.quantization", "onnx", who=who)
    large = source.stat().st_size > 1_800_000_000
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        model = onnx.load(str(source))
        try:
            smoothed = _smooth(onnx, model, lambda tensors: _calibrate(onnx, source, tmp, tensors, large))
        except Exception as exc:  # a graph this rewrite does not handle: quantize it unsmoothed, as before
            log.warning("%s: int8 without smoothing (less accurate): %s: %s", who, type(exc).__name__, exc)
            model, smoothed = onnx.load(str(source)), 0
        try:
            approximated = _fast_gelu(onnx, model)  # rewrites the graph only once it has found every GELU
        except Exception as exc:  # a pattern this rewrite trips on: keep the exact GELU
            log.warning("%s: int8 keeps the exact GELU: %s: %s", who, type(exc).__name__, exc)
            approximated = 0
        onnx.save(model, str(tmp / "smoothed.onnx"), save_as_external_data=large, location="smoothed.onnx.data")
        del model
        root = logging.getLogger()
        root.addFilter(_quiet_hint)  # it logs a pre-processing hint on the root logger
        try:
            quantization.quantize_dynamic(
                str(tmp / "smoothed.onnx"),
                str(tmp / MODEL),
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                weight_type=quantization.QuantType.QInt8,
                use_external_data_format=large,
                # shape inference knows no FastGelu (com.microsoft): what it leaves untyped is float
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            root.removeFilter(_quiet_hint)
        for leftover in [*tmp.glob("calibrate.onnx*"), *tmp.glob("smoothed.onnx*")]:
            leftover.unlink()
        publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "%s: quantized %s to %s (%d MatMul inputs smoothed, %d GELUs as FastGelu)", who, source, dest, smoothed,
        approximated,
    )


def _calibrate(onnx: Any, source: Path, tmp: Path, tensors: list[str], large: bool) -> dict[str, np.ndarray]:
    """Largest magnitude per last-axis channel of ``tensors`` on ``CALIBRATION_TEXTS`` (one padded batch)."""
    model = onnx.load(str(source))
    new = set(tensors) - {o.name for o in model.graph.output}  # 1: FLOAT
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, 1, None) for t in sorted(new))
    onnx.save(model, str(tmp / "calibrate.onnx"), save_as_external_data=large, location="calibrate.onnx.data")
    del model
    encoder = OnnxEncoder(source.parent, tmp / "calibrate.onnx")
    feed = encoder.feed(list(CALIBRATION_TEXTS))
    values = encoder.session.run(tensors, {n: feed[n] for n in encoder.input_names})
    return {t: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0).astype(np.float64) for t, v in zip(tensors, values)}


def _smooth(onnx: Any, model: Any, measure: Callable[[list[str]], dict[str, np.ndarray]]) -> int:
    """Rewrite ``model`` in place, ``x @ W`` as ``(x / s) @ (s[:, None] * W)`` for each MatMul input ``x``
    with constant 2-D float weights, ``measure`` giving each such ``x``'s largest magnitude per channel."""
    weights = {t.name: t for t in model.graph.initializer}
    groups: dict[str, list[Any]] = {}  # the MatMuls that read each input
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and weight.data_type == 1 and node.input[0] not in weights:
            groups.setdefault(node.input[0], []).append(node)
    amax = measure(list(groups)) if groups else {}
    muls: list[Any] = []
    for i, (tensor, nodes) in enumerate(groups.items()):
        mats = [onnx.numpy_helper.to_array(weights[n.input[1]]).astype(np.float64) for n in nodes]
        if (a := amax[tensor]).shape[0] != mats[0].shape[0] or not np.isfinite(a).all() or a.max() <= 0:
            continue
        w = np.maximum(np.max([np.abs(m).max(axis=1) for m in mats], axis=0), 1e-8)
        s = np.maximum(a, np.median(a)) ** SMOOTH_ALPHA / w ** (1 - SMOOTH_ALPHA)
        s /= np.exp(np.log(s).mean())  # geometric mean 1: magnitudes stay near the original ones
        name = f"agent_embeddings.smooth.{i}"
        model.graph.initializer.append(onnx.numpy_helper.from_array((1 / s).astype(np.float32), f"{name}.scale"))
        muls.append(onnx.helper.make_node("Mul", [tensor, f"{name}.scale"], [f"{name}.x"], name=name))
        for j, (node, m) in enumerate(zip(nodes, mats)):
            node.input[0], node.input[1] = f"{name}.x", f"{name}.w{j}"
            scaled = onnx.numpy_helper.from_array((m * s[:, None]).astype(np.float32), node.input[1])
            model.graph.initializer.append(scaled)
    order = list(model.graph.node)
    for mul in muls:  # right before the first node that reads it: the order stays topological
        order.insert(next(k for k, n in enumerate(order) if mul.output[0] in n.input), mul)
    del model.graph.node[:]
    model.graph.node.extend(order)  # the replaced weights, now unused, are dropped by quantize_dynamic
    return len(muls)


def _constant(onnx: Any, model: Any, name: str) -> float | None:
    """The value of a one-element constant tensor (an initializer or a Constant node's output), else None."""
    for t in model.graph.initializer:
        if t.name == name:
            value = onnx.numpy_helper.to_array(t)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name and node.attribute and node.attribute[0].name == "value":
            value = onnx.numpy_helper.to_array(node.attribute[0].t)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    return None


def _fast_gelu(onnx: Any, model: Any) -> int:
    """Rewrite ``model`` in place: each exact GELU, ``x * 0.5 * (1 + erf(x / sqrt(2)))`` as torch exports
    it, becomes ONNX Runtime's FastGelu (its tanh approximation, within 5e-4 of it for any x).

    Why: Erf is evaluated element by element where FastGelu is one vectorized kernel; on an AVX2 CPU
    (Zen 3) the int8 graph runs about 10% faster, and the difference is far below int8's own."""
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers: dict[str, list[Any]] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}

    def only_reader(tensor: str, op: str) -> Any:
        found = readers.get(tensor, [])
        return found[0] if len(found) == 1 and found[0].op_type == op and tensor not in outputs else None

    def other(node: Any, tensor: str) -> str | None:
        rest = [i for i in node.input if i != tensor]
        return rest[0] if len(node.input) == 2 and len(rest) == 1 else None

    def near(tensor: str | None, value: float) -> bool:
        c = None if tensor is None else _constant(onnx, model, tensor)
        return c is not None and abs(c - value) <= 1e-3 * value

    replaced: dict[int, Any] = {}  # id of the chain's last node -> its FastGelu
    gone: set[int] = set()
    for erf in (n for n in nodes if n.op_type == "Erf"):
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not near(div.input[1], 2**0.5) or len(readers[erf.input[0]]) != 1:
            continue
        x = div.input[0]
        add = only_reader(erf.output[0], "Add")
        if add is None or not near(other(add, erf.output[0]), 1.0):
            continue
        mul = only_reader(add.output[0], "Mul")
        if mul is None:
            continue
        factor = other(mul, add.output[0])
        if factor == x:  # (x * (1 + erf)) * 0.5
            last = only_reader(mul.output[0], "Mul")
            if last is None or not near(other(last, mul.output[0]), 0.5):
                continue
            chain = [div, erf, add, mul, last]
        else:  # (x * 0.5) * (1 + erf)
            half = None if factor is None else producer.get(factor)
            if half is None or half.op_type != "Mul" or x not in half.input or not near(other(half, x), 0.5):
                continue
            if len(readers[half.output[0]]) != 1:
                continue
            chain, last = [half, div, erf, add, mul], mul
        replaced[id(last)] = onnx.helper.make_node(
            "FastGelu", [x], [last.output[0]], name=f"{last.name or 'gelu'}.fast", domain="com.microsoft"
        )
        gone.update(id(n) for n in chain)
        for n in chain:  # the constants only the chain read (else ONNX Runtime warns about each at load)
            for c in n.input:
                source = producer.get(c)
                if source is not None and source.op_type == "Constant" and all(id(r) in gone for r in readers[c]):
                    gone.add(id(source))
    if not replaced:
        return 0
    order = [replaced.get(id(n), n) for n in nodes if id(n) not in gone or id(n) in replaced]
    del model.graph.node[:]
    model.graph.node.extend(order)  # each FastGelu where its chain ended: the order stays topological
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return len(replaced)
