"""Checking a written INT8 ONNX file before it ships: run in onnxruntime against the integer
reference `run_int8`, and its optimized graph read for integer convs.

`to_onnx` verifies the file before it is moved into place (`files.atomic_output`): the ONNX
checker, then onnxruntime (CPUExecutionProvider) against `reference.run_int8` on the head tensor
(conv10's 8-bit output, through an in-memory copy that also outputs it), on the logits and
the probabilities (within `ops.max_score_diff` of the softmax of the reference's logits), and
onnxruntime's optimized graph must run every conv as an integer op. Any failure raises an
ExportError with the numbers and leaves nothing at the path (a previous file stays as it was).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import weakref
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError, missing_extra
from ..graph import OUTPUT, OpKind
from ..quant.params import QuantizedModel
from .files import ExportError
from .ops import FLOAT_CONV_MIN_LSB_MATCH, FLOAT_CONV_MIN_TOP1, PROBABILITY, float_conv_score_diff, max_score_diff
from .onnx_graph import PIXELS, Target, _onnx, as_target, head_tensor

# verification gates (module doc; the numbers are reported either way)
MIN_LSB_MATCH = 0.999  # fraction of head values within 1 LSB of the reference
MAX_LSB_DIFF = 2  # no head value further than this from the reference
MIN_TOP1_AGREEMENT = 0.995  # images whose top-1 is the reference's (exact reference ties count as agreeing)
MAX_LOGIT_DIFF_LSB = 2.0  # max |logit - reference logit| in units of conv10's scale
SYNTHETIC_IMAGES = 16
FILE_CHECK_IMAGES = 8  # the file itself runs these; its verification copy runs all of them
SYNTHETIC_SEED = 20240605
VERIFY_BATCH = 8  # images per onnxruntime run and per reference run during verification

INTEGER_CONV_OPS = frozenset({"QLinearConv", "ConvInteger"})  # any domain (com.microsoft NHWC QLinearConv too)
FLOAT_CONV_OPS = frozenset({"Conv", "FusedConv", "NchwcConv", "ConvTranspose"})


def synthetic_images(size: int, n: int = SYNTHETIC_IMAGES, *, seed: int = SYNTHETIC_SEED) -> np.ndarray:
    """n deterministic uint8 NHWC test images (n, size, size, 3): smoothed random noise.

    Image i is uniform noise on a coarse (g x g x 3) grid, g cycling through 2, 4, 8, 16, 32,
    bilinearly upsampled to size x size, stretched to a random contrast (96..255) and
    brightness, plus +-8 of pixel noise — blobs and edges at several scales, so every layer sees
    varied values. Numpy's PCG64 with a fixed seed: the same images on every machine."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        g = (2, 4, 8, 16, 32)[i % 5]
        coarse = rng.random((g, g, 3))
        pos = np.linspace(0.0, g - 1, size)
        i0 = np.clip(np.floor(pos).astype(int), 0, max(g - 2, 0))
        i1 = np.minimum(i0 + 1, g - 1)
        f = (pos - i0)[:, None]
        rows = coarse[i0] * (1 - f)[:, :, None] + coarse[i1] * f[:, :, None]  # (size, g, 3)
        img = rows[:, i0] * (1 - f.T)[:, :, None] + rows[:, i1] * f.T[:, :, None]  # (size, size, 3)
        span = rng.uniform(96, 255)  # contrast
        img = rng.uniform(0, 255 - span) + span * img + rng.uniform(-8, 8, img.shape)
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _check_images(images, size: int) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (size, size, 3) or len(x) == 0:
        raise DataError(f"verify_images must be uint8 NHWC (N, {size}, {size}, 3) pixels, got "
                        f"{x.dtype}{tuple(x.shape)}; make them with data.to_uint8_input")
    return np.ascontiguousarray(x)


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise missing_extra("onnxruntime", "onnx") from e
    return onnxruntime


def session_config(target: Target | str) -> dict[str, str]:
    """onnxruntime session config entries to run a file of this target as integer ops anywhere.

    onnxruntime fuses int8-activation (s8s8) QDQ convs into QLinearConv by default only on ARM;
    on x86 it converts int8 Q/DQ pairs to uint8 where a Q has a single consumer and leaves the
    rest as float Conv (a Fire module's squeeze output has two). "session.qdqisint8allowed" = 1
    makes an x86 host run what an ARM host runs by default: every conv as an s8s8 QLinearConv.
    The X86 target (uint8 activations) needs nothing."""
    return {"session.qdqisint8allowed": "1"} if as_target(target) is Target.ARM else {}


def _session(ort, model, *, target: Target, optimized_path: str | None = None, threads: int = 0):
    so = ort.SessionOptions()
    for k, v in session_config(target).items():
        so.add_session_config_entry(k, v)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # the NCHWc warning when saving an ALL-level graph is expected
    if threads:
        so.intra_op_num_threads = threads
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    src = str(model) if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def optimized_conv_ops(optimized) -> tuple[int, int, Counter]:
    """(integer convs, float convs, op histogram) of an onnxruntime-optimized ModelProto."""
    ops = Counter(n.op_type for n in optimized.graph.node)
    for f in optimized.functions:  # none expected; counted so nothing hides in a function
        ops.update(n.op_type for n in f.node)
    ints = sum(v for k, v in ops.items() if k in INTEGER_CONV_OPS)
    floats = sum(v for k, v in ops.items() if k in FLOAT_CONV_OPS)
    return ints, floats, ops


def _with_head_output(model, qm: QuantizedModel, target: Target):
    """An in-memory copy of `model` that also outputs the 8-bit head tensor."""
    import onnx
    from onnx import helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    head = head_tensor(qm)
    elem = onnx.TensorProto.UINT8 if target is Target.X86 else onnx.TensorProto.INT8
    copy.graph.output.append(helper.make_tensor_value_info(head, elem, None))
    return copy, head


_REFERENCE_CACHE: list = []  # one entry: (weakref to the QuantizedModel, images digest, outputs)


def reference_outputs(qm: QuantizedModel, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, int8 NHWC head tensor) of `reference.run_int8` on `images`.

    The integer reference is numpy and slow (~0.4 s per 227x227 image on 2 cores), so the last
    result is kept for the same QuantizedModel object and the same pixels: exporting both
    targets from one model verifies against one reference run."""
    from ..quant.reference import run_int8

    digest = hashlib.sha256(images.tobytes()).hexdigest() + repr(images.shape)
    for ref, d, out in _REFERENCE_CACHE:
        if ref() is qm and d == digest:
            return out
    head = head_tensor(qm)
    logits, heads = [], []
    for i in range(0, len(images), VERIFY_BATCH):  # keep=True holds every tensor: a few images at a time
        r = run_int8(qm, images[i:i + VERIFY_BATCH], keep=True)
        logits.append(r.logits)
        heads.append(r.tensors[head])
    out = (np.concatenate(logits), np.concatenate(heads))
    _REFERENCE_CACHE[:] = [(weakref.ref(qm), digest, out)]
    return out


def verify_int8(qm: QuantizedModel, model, file: str | os.PathLike, target: Target,
                images: np.ndarray, *, synthetic: bool) -> dict:
    """Run `file` (the serialized `model`) in onnxruntime against reference.run_int8; the numbers
    as a dict, plus "failures": the gates (module constants) that were missed."""
    from ..quant.reference import softmax

    ort = _ort()
    onnx = _onnx()
    head = head_tensor(qm)
    hp = qm.tensors[head]
    offset = 128 if target is Target.X86 else 0
    with tempfile.TemporaryDirectory(prefix="edgesqueeze-ort-") as td:
        opt_path = os.path.join(td, "optimized.onnx")
        sess = _session(ort, Path(file), target=target, optimized_path=opt_path)
        optimized = onnx.load(opt_path)
    n_int, n_float, ops = optimized_conv_ops(optimized)
    vcopy, head_name = _with_head_output(model, qm, target)
    vsess = _session(ort, vcopy, target=target)
    # a few images per run: onnxruntime's buffers grow with the batch (32 at once took ~0.5 GiB
    # more than 8 for v1.0), and the answers do not depend on it
    runs = [vsess.run([OUTPUT, head_name, PROBABILITY], {PIXELS: images[i:i + VERIFY_BATCH]})
            for i in range(0, len(images), VERIFY_BATCH)]
    logits = np.concatenate([r[0] for r in runs])
    v_head = np.concatenate([r[1] for r in runs])
    probs = np.concatenate([r[2] for r in runs])
    # the file itself (whose optimized graph was checked above) must give the copy's outputs
    few = images[:FILE_CHECK_IMAGES]
    file_probs, file_logits = sess.run([PROBABILITY, OUTPUT], {PIXELS: few})

    ref_l, ref_h = reference_outputs(qm, images)
    ref_h = ref_h.astype(np.int32) + offset  # NHWC, in the target's type
    got_h = v_head.astype(np.int32).transpose(0, 2, 3, 1)
    if got_h.shape != ref_h.shape:
        raise ExportError(f"head tensor {head}: onnxruntime gives shape {got_h.shape}, the reference {ref_h.shape}")
    diff = np.abs(got_h - ref_h)
    top_ort = probs.argmax(1)  # the scores a user sees
    top_ref = ref_l.argmax(1)
    disagree = top_ort != top_ref
    rows = np.arange(len(ref_l))
    ties = int((disagree & (ref_l[rows, top_ort] == ref_l[rows, top_ref])).sum())
    n_convs = sum(1 for n in qm.nodes if n.kind is OpKind.CONV)
    res = {
        "images": len(images), "synthetic_images": synthetic, "head_values": int(diff.size),
        "lsb_match": float((diff <= 1).mean()), "exact_match": float((diff == 0).mean()),
        "max_lsb_diff": int(diff.max()),
        "top1_agreement": float((~disagree).mean()), "top1_reference_ties": ties,
        "max_logit_diff_lsb": float(np.abs(logits.astype(np.float64) - ref_l).max() / hp.scale),
        "max_score_diff": float(np.abs(probs.astype(np.float64) - softmax(ref_l)).max()),
        "integer_convs": int(n_int), "float_convs": int(n_float),
        "optimized_ops": tuple(sorted(ops.items())), "ort_version": ort.__version__,
        "session_config": tuple(sorted(session_config(target).items())),
    }
    failures = []
    # float-kept convs sum in the runtime's order: within 1 LSB, not bit for bit (ops.FLOAT_CONV)
    n_fc = len(qm.float_convs)
    min_lsb = FLOAT_CONV_MIN_LSB_MATCH if n_fc else MIN_LSB_MATCH
    min_top1 = FLOAT_CONV_MIN_TOP1 if n_fc else MIN_TOP1_AGREEMENT
    what = f" ({n_fc} float conv{'s' if n_fc != 1 else ''}: float summation order)" if n_fc else ""
    if res["lsb_match"] < min_lsb:
        failures.append(f"head tensor {head}: {100 * res['lsb_match']:.3f} % of values within 1 LSB "
                        f"of the reference (need >= {100 * min_lsb:.1f} %{what})")
    if res["max_lsb_diff"] > MAX_LSB_DIFF and not n_fc:
        failures.append(f"head tensor {head}: max difference {res['max_lsb_diff']} LSB (allowed {MAX_LSB_DIFF})")
    agree = 1.0 - (int(disagree.sum()) - ties) / len(images)  # exact reference ties have no one top-1
    if agree < min_top1:
        failures.append(f"top-1 differs from the reference on {int(disagree.sum())} of {len(images)} images "
                        f"({ties} of them exact ties in the reference; need >= {100 * min_top1:.1f} % agreement{what})")
    if res["max_logit_diff_lsb"] > MAX_LOGIT_DIFF_LSB:
        failures.append(f"logits differ from the reference by up to {res['max_logit_diff_lsb']:.3f} x conv10's "
                        f"scale (allowed {MAX_LOGIT_DIFF_LSB})")
    hw = int(ref_h.shape[1] * ref_h.shape[2])
    score_tol = float_conv_score_diff(hp.scale) if n_fc else max_score_diff(hp.scale, hw)
    if not res["max_score_diff"] <= score_tol:
        failures.append(f"probabilities differ from the softmax of the reference's logits by up to "
                        f"{res['max_score_diff']:.3g} (allowed {score_tol:.3g})")
    # equal up to float summation order (one head LSB moves a logit by scale / (H*W), far more)
    copy_diff = float(np.abs(file_logits.astype(np.float64) - logits[:len(few)]).max()) / hp.scale
    copy_pdiff = float(np.abs(file_probs.astype(np.float64) - probs[:len(few)]).max())
    if copy_diff > 1e-3 or copy_pdiff > 1e-5:
        failures.append("the file gives other outputs than its verification copy (with the head output): "
                        f"max |logit diff| {copy_diff:.3g} x conv10's scale, max |probability diff| {copy_pdiff:.3g}")
    if n_float != n_fc or n_int != n_convs - n_fc:
        failures.append(f"onnxruntime's optimized graph runs {n_int} of {n_convs} convs as integer ops and "
                        f"{n_float} as float convs, the model keeps {n_fc} in float (ops: {dict(ops)})")
    res["failures"] = failures
    return res
