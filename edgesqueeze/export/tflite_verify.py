"""Checking written TFLite bytes before they ship: structurally (`check_flatbuffer`), then
run in LiteRT against the integer reference `run_int8`.

Verification (`to_tflite`): the bytes are written to a temporary file beside the target; they
are first checked structurally (`check_flatbuffer`: parsed with the schema's reader, every
index, buffer size and quantization vector checked, operators topologically ordered — the
interpreter can abort the process on a malformed buffer, Python cannot catch that — and the
standard metadata read back with its zip archive, which must start where the flatbuffer ends),
then loaded
in LiteRT's Interpreter and run image by image against the integer reference `run_int8`:
conv10's int8 output (read from a verification variant of the same flatbuffer that also lists
that tensor and the logits as subgraph outputs) must be within 1 LSB on >= 99.9 % of values
(>= 99 %, and top-1 on >= 99 % of images, for a model with float-kept convs: ops.FLOAT_CONV),
the shipped file's top-1 (argmax of its probabilities) must agree on >= 99.5 % of images, and
its probabilities must be within `max_score_diff` of the softmax of the reference's logits
(half of one head unit s / (H*W): 0.0052 for v1.0; measured 1e-6). Only then is the file moved into place; on
failure an ExportError carries the numbers and nothing is left at the target path.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, missing_extra
from ..graph import OUTPUT
from ..formats.flatbuffer import FILE_IDENTIFIER, SCHEMA_VERSION
from ..formats.standard_metadata import STANDARD_KEY, read_associated_files, standard_metadata_problems
from ..formats.tflite import _schema
from .files import ExportError
from .ops import (FLOAT_CONV_MIN_LSB_MATCH, FLOAT_CONV_MIN_TOP1, PROBABILITY, float_conv_score_diff,
                  max_score_diff)

# acceptance of the written file against the integer reference
MIN_HEAD_WITHIN_1_LSB = 0.999  # fraction of conv10's int8 output values within 1 LSB
MIN_TOP1_AGREEMENT = 0.995  # fraction of images with the same top-1
SYNTHETIC_IMAGES = 16
SYNTHETIC_SEED = 0

_ITEMSIZE = {"FLOAT32": 4, "INT32": 4, "UINT8": 1, "INT64": 8, "INT8": 1, "INT16": 2, "FLOAT16": 2,
             "BOOL": 1}


def _interpreter_cls():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise missing_extra("ai_edge_litert", "tflite") from e
    return Interpreter


def runtime_version() -> str:
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - import succeeded
        return "unknown"


# ---------------------------------------------------------------- structural check


def check_flatbuffer(buf: bytes) -> None:
    """Raise ExportError unless `buf` parses as a TFLite model whose every reference is in range.

    Python's flatbuffers package has no Verifier, so this parses the whole file with the
    schema's object API (out-of-range offsets raise in Python instead of crashing native code)
    and then checks what the interpreter trusts: buffer 0 empty; tensor, buffer, opcode indices
    in range; constant data sizes equal to shape x element size; quantization vectors of equal
    length and per-channel ones along an existing axis of matching size; every operator input
    produced earlier, constant, or a subgraph input.

    A zip archive after the flatbuffer (the associated files) is cut off first, and the model
    must parse from the bytes before it alone. A "TFLITE_METADATA" entry must read back
    (`formats.standard_metadata.standard_metadata_problems`): one subgraph with as many inputs and
    outputs as the model, every associated file in the archive, stored uncompressed, a label
    file with one line per class."""
    s = _schema()
    problems: list[str] = []
    if len(buf) < 8 or bytes(buf[4:8]) != FILE_IDENTIFIER:
        raise ExportError("the flatbuffer has no 'TFL3' file identifier")
    try:
        end, _ = read_associated_files(buf)
    except ValueError as e:  # MetadataError
        raise ExportError(f"the bytes after the flatbuffer: {e}") from None
    try:
        m = s.ModelT.InitFromPackedBuf(bytearray(buf[:end]), 0)
    except Exception as e:  # noqa: BLE001 - any parse failure means a malformed file
        raise ExportError(f"the flatbuffer does not parse: {type(e).__name__}: {e}") from None
    if m.version != SCHEMA_VERSION:
        problems.append(f"schema version {m.version} is not {SCHEMA_VERSION}")
    buffers = m.buffers or []
    if not buffers or (buffers[0].data is not None and len(buffers[0].data)):
        problems.append("buffer 0 must exist and be empty")
    codes = m.operatorCodes or []
    known = {v for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(s.TensorType).items() if not k.startswith("_")}
    for i, oc in enumerate(codes):
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        if code not in known or oc.version < 1:
            problems.append(f"operator code {i}: builtin {code} version {oc.version} is not valid")
    if len(m.subgraphs or []) != 1:
        problems.append(f"{len(m.subgraphs or [])} subgraphs (one expected)")
    for sg in m.subgraphs or []:
        tensors = sg.tensors or []
        nt = len(tensors)
        const = set()
        for ti, t in enumerate(tensors):
            name = t.name.decode() if isinstance(t.name, bytes) else t.name
            shape = [int(v) for v in (t.shape if t.shape is not None else [])]
            if any(v < 1 for v in shape):
                problems.append(f"tensor {name}: shape {shape}")
            if not 0 <= t.buffer < len(buffers):
                problems.append(f"tensor {name}: buffer {t.buffer} out of range")
                continue
            data = buffers[t.buffer].data
            if t.buffer and data is not None and len(data):
                const.add(ti)
                want = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.get(types.get(t.type, ""), 0)
                if len(data) != want:
                    problems.append(f"tensor {name}: {len(data)} data bytes, shape {shape} needs {want}")
            q = t.quantization
            if q is not None and q.scale is not None:
                ns, nz = len(q.scale), len(q.zeroPoint) if q.zeroPoint is not None else 0
                if ns != nz:
                    problems.append(f"tensor {name}: {ns} scales but {nz} zero points")
                if not np.all(np.isfinite(q.scale)) or not np.all(np.asarray(q.scale) > 0):
                    problems.append(f"tensor {name}: scales must be positive and finite")
                if ns > 1 and not (0 <= q.quantizedDimension < len(shape) and shape[q.quantizedDimension] == ns):
                    problems.append(f"tensor {name}: {ns} per-channel scales along axis {q.quantizedDimension} of {shape}")
        ins = [int(i) for i in (sg.inputs if sg.inputs is not None else [])]
        outs = [int(i) for i in (sg.outputs if sg.outputs is not None else [])]
        if any(not 0 <= i < nt for i in ins + outs):
            problems.append("subgraph inputs/outputs out of range")
        ready = set(ins) | const
        for k, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < len(codes):
                problems.append(f"operator {k}: opcode index {op.opcodeIndex} out of range")
            oi = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            oo = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if any(not -1 <= i < nt for i in oi) or any(not 0 <= i < nt for i in oo):
                problems.append(f"operator {k}: tensor index out of range")
                continue
            late = [i for i in oi if i >= 0 and i not in ready]
            if late:
                problems.append(f"operator {k}: reads tensors {late} before they are written")
            ready.update(oo)
        if any(o not in ready for o in outs):
            problems.append("a subgraph output is never written")
    for md in m.metadata or []:
        if not 0 <= md.buffer < len(buffers):
            problems.append(f"metadata buffer {md.buffer} out of range")
        elif md.name in (STANDARD_KEY, STANDARD_KEY.encode()) and len(m.subgraphs or []) == 1:
            sg = m.subgraphs[0]
            shapes = [[int(v) for v in sg.tensors[i].shape] for i in sg.inputs], \
                     [[int(v) for v in sg.tensors[i].shape] for i in sg.outputs]
            entry = bytes(buffers[md.buffer].data if buffers[md.buffer].data is not None else b"")
            problems += standard_metadata_problems(buf, entry, *shapes)
    if problems:
        raise ExportError("malformed TFLite flatbuffer: " + "; ".join(problems))


# ---------------------------------------------------------------- verification


def synthetic_images(size: int, n: int = SYNTHETIC_IMAGES, seed: int = SYNTHETIC_SEED) -> np.ndarray:
    """`n` deterministic uint8 (size, size, 3) images from numpy.random.default_rng(seed): even
    indices are smooth (a random 8x8x3 grid upsampled nearest-neighbour, plus noise of std 8),
    odd ones uniform noise over 0..255. Used to verify an export when no images are given."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        if k % 2 == 0:
            grid = rng.uniform(0, 255, (8, 8, 3))
            idx = (np.arange(size) * 8) // size
            img = grid[idx][:, idx] + rng.normal(0, 8, (size, size, 3))
        else:
            img = rng.uniform(0, 256, (size, size, 3))
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _check_images(images: np.ndarray | None, size: int) -> tuple[np.ndarray, str]:
    if images is None:
        return synthetic_images(size), f"synthetic (seed {SYNTHETIC_SEED})"
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or len(images) == 0:
        raise DataError(f"verify_images must be uint8 (N, {size}, {size}, 3) pixels, got "
                        f"{images.dtype}{images.shape}; make them with data.to_uint8_input")
    return images, "given"


def _threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _run(interp, images: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}
    missing = [n for n in names if n not in outs]
    if missing:
        raise ExportError(f"internal: outputs {missing} not in {sorted(outs)}")  # pragma: no cover
    res: dict[str, list] = {n: [] for n in names}
    for img in images:
        interp.set_tensor(inp, img[None])
        interp.invoke()
        for n in names:
            res[n].append(interp.get_tensor(outs[n])[0].copy())
    return {n: np.stack(v) for n, v in res.items()}


def _reference(qm, images: np.ndarray, head: str, batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    from ..quant.reference import run_int8

    heads, logits = [], []
    for i in range(0, len(images), batch):
        r = run_int8(qm, images[i:i + batch], keep=True)
        heads.append(r.tensors[head])
        logits.append(r.logits)
    return np.concatenate(heads), np.concatenate(logits)


def _verify_int8(qm, file_path: Path, variant: bytes, images: np.ndarray, head: str) -> dict:
    from ..quant.reference import softmax

    Interpreter = _interpreter_cls()
    shipped = _run(Interpreter(model_path=str(file_path), num_threads=_threads()), images, [PROBABILITY])
    probe = _run(Interpreter(model_content=variant, num_threads=_threads()), images, [head, OUTPUT])
    ref_head, ref_logits = _reference(qm, images, head)
    diff = np.abs(probe[head].astype(np.int32) - ref_head.astype(np.int32))
    probs = shipped[PROBABILITY]
    # strict: the first index of the maximum on both sides (the head keeps exact ties as ties,
    # and equal logits give equal probabilities)
    agree = probs.argmax(axis=1) == ref_logits.argmax(axis=1)
    return {
        "lsb_match": float((diff <= 1).mean()),
        "max_lsb_diff": int(diff.max()),
        "exact_match": float((diff == 0).mean()),
        "top1_agreement": float(agree.mean()),
        "max_logit_diff_lsb": float(np.abs(probe[OUTPUT].astype(np.float64) - ref_logits).max()
                                    / qm.tensors[head].scale),
        "max_score_diff": float(np.abs(probs.astype(np.float64) - softmax(ref_logits)).max()),
        "finite": bool(np.isfinite(probs).all() and np.isfinite(probe[OUTPUT]).all()),
    }


@dataclass(frozen=True)
class Delegation:
    """How LiteRT's default delegate (XNNPACK) took a model: `partitions` delegate nodes, and
    `whole` when there is one and it reads every graph input and writes every graph output
    (then no operator runs outside it)."""

    partitions: int
    whole: bool
    ops: int  # the model's operators


def xnnpack_delegation(model: bytes | str | os.PathLike, threads: int = 1) -> Delegation:
    """Load `model` in LiteRT (default delegate: XNNPACK) and read which nodes the delegate
    replaced: LiteRT lists each delegate partition as one extra node named DELEGATE after the
    model's own operators."""
    Interpreter = _interpreter_cls()
    kw = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else {"model_path": str(model)}
    it = Interpreter(**kw, num_threads=threads)
    it.allocate_tensors()
    nodes = it._get_ops_details()  # the only Python view of the execution plan's delegate nodes
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    ins = {int(d["index"]) for d in it.get_input_details()}
    outs = {int(d["index"]) for d in it.get_output_details()}
    whole = len(delegates) == 1 and ins <= {int(i) for i in delegates[0]["inputs"]} \
        and outs <= {int(i) for i in delegates[0]["outputs"]}
    return Delegation(len(delegates), whole, len(nodes) - len(delegates))


# ---------------------------------------------------------------- acceptance


def check_int8_file(qm, path, file_path: Path, variant: bytes, images: np.ndarray, source: str, head: str,
                    head_hw: int) -> dict:
    """Run the written INT8 file (and its verification `variant`) against the integer reference
    and raise ExportError naming `path` unless it passes the gates (module doc); the numbers
    otherwise. `head_hw`: H*W of the head tensor."""
    v = _verify_int8(qm, file_path, variant, images, head)
    # float-kept convs sum in the runtime's order: within 1 LSB, not bit for bit (ops.FLOAT_CONV)
    n_fc = len(qm.float_convs)
    min_lsb = FLOAT_CONV_MIN_LSB_MATCH if n_fc else MIN_HEAD_WITHIN_1_LSB
    min_top1 = FLOAT_CONV_MIN_TOP1 if n_fc else MIN_TOP1_AGREEMENT
    score_tol = (float_conv_score_diff(qm.tensors[head].scale) if n_fc else
                 max_score_diff(qm.tensors[head].scale, head_hw))
    ok = (v["finite"] and v["lsb_match"] >= min_lsb
          and v["top1_agreement"] >= min_top1 and v["max_score_diff"] <= score_tol)
    if not ok:
        raise ExportError(
            f"{path}: the written TFLite model does not match the integer reference on "
            f"{len(images)} {source} images: conv10 within 1 LSB {100 * v['lsb_match']:.3f} % "
            f"(need >= {100 * min_lsb:.1f} %), max {v['max_lsb_diff']} LSB; top-1 "
            f"agreement {100 * v['top1_agreement']:.2f} % (need >= {100 * min_top1:.1f} %); "
            + (f"the model keeps {n_fc} conv(s) in float, checked within 1 LSB for float summation "
               "order; " if n_fc else "") +
            f"max |logit diff| {v['max_logit_diff_lsb']:.4g} x conv10 scale; max |probability diff| "
            f"{v['max_score_diff']:.3g} (need <= {score_tol:.3g}); outputs finite: {v['finite']}. "
            "Nothing was written."
        )
    return v


def check_fp32_file(path, file_path: Path, images: np.ndarray, classes: int) -> None:
    """Run the written FP32 file on `images` in LiteRT; ExportError naming `path` unless it gives
    finite probabilities of shape (images, classes) that sum to 1."""
    Interpreter = _interpreter_cls()
    probs = _run(Interpreter(model_path=str(file_path), num_threads=_threads()), images, [PROBABILITY])[PROBABILITY]
    sums = probs.astype(np.float64).sum(axis=1)
    if probs.shape != (len(images), classes) or not np.isfinite(probs).all() \
            or not np.allclose(sums, 1.0, atol=1e-4):
        raise ExportError(f"{path}: the written FP32 model gives probabilities of shape {probs.shape} "
                          f"(finite: {bool(np.isfinite(probs).all())}, sums {np.round(sums, 5).tolist()}); "
                          "nothing was written")
