"""The INT8 .tflite in LiteRT's XNNPACK delegate: partitions, the head's cost, INT8 vs FP32.

    python benchmarks/xnnpack_head.py [--qparams calib/squeezenet1_0-affine.json]
                                      [--rounds 15] [--per-round 8] [--warmup 10]
                                      [--tf-python /tmp/tfvenv/bin/python] [--json PATH]

The real Deep-Compression SqueezeNet v1.0 (shared weights), in the files' default channel order
(RGB, export/channels.py). The INT8 model: `--qparams` (a QuantizedModel saved by `edgesqueeze
quantize`, e.g. calib/squeezenet1_0-affine.json), else calibrated here (min/max, bias
correction, the first 32 images of the calibration split; needs torch). Files, in a temporary
folder:

- INT8          `to_tflite` as shipped: DEQUANTIZE -> MEAN -> MUL -> SOFTMAX head
- INT8 CAST     the same graph with the head as CAST int8->float32 -> MEAN -> SUB zp -> MUL ->
                SOFTMAX (XNNPACK does not take CAST: it splits the graph)
- INT8 no head  the same graph ending at conv10's int8 output
- head alone    only the head, from conv10's int8 output (and the CAST head alone): its median
                over the INT8 file's is the head's share of inference (INT8 minus INT8 no head,
                a difference of two noisy medians, is printed beside it)
- FP32          `to_tflite_fp32`
- TF full-int8  with --tf-python (a Python with TensorFlow, e.g. a throwaway venv): the same
                weights as a Keras model, converted by TensorFlow's TFLiteConverter with full
                integer quantization (uint8 in/out, TFLITE_BUILTINS_INT8, 16 calibration
                images), ending in the global average pool (no softmax)

For each file: LiteRT's delegate partitions (`export.tflite_verify.xnnpack_delegation`: the DELEGATE
nodes of the execution plan, and whether one of them runs the whole graph) and the operators.
Latency: one Interpreter per file and thread count (1 and 2), warmed up, then `--rounds`
rounds of `--per-round` single-image invocations each, the order rotating every round
(benchmarks/timing.py), so background load hits all alike; medians in ms. The CPU is named:
ratios measured in one run are what count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHARED = Path(os.environ.get("EDGESQUEEZE_SHARED", ROOT.parent / "shared"))
DC = SHARED / "weights" / "squeezenet_v1.0_deep_compression" / "compressed_SqueezeNet.net"
THREADS = (1, 2)

from edgesqueeze.sysinfo import cpu_flags, cpu_model, usable_cores  # noqa: E402
from timing import interleaved_ms  # noqa: E402  (benchmarks/timing.py)

# Runs in the TensorFlow Python. argv: spec.json weights.npz calib.npy out.tflite
TF_SCRIPT = r'''
import json, sys
import numpy as np
import tensorflow as tf
spec, W, calib, out = json.load(open(sys.argv[1])), np.load(sys.argv[2]), np.load(sys.argv[3]), sys.argv[4]
S = spec["size"]
inp = tf.keras.Input((S, S, 3), batch_size=1, dtype=tf.float32)
env = {"input": inp - tf.constant(spec["mean"], tf.float32)}
L = tf.keras.layers
for n in spec["nodes"]:
    xs = [env[i] for i in n["inputs"]]
    if n["kind"] == "conv":
        x, k, s, p = xs[0], n["kernel"], n["stride"], n["pad"]
        if p and not (k == 3 and s == 1 and p == 1):
            x = L.ZeroPadding2D(p)(x)
        pad = "same" if (p and k == 3 and s == 1 and p == 1) else "valid"
        conv = L.Conv2D(n["out"], k, strides=s, padding=pad, activation="relu" if n["relu"] else None)
        y = conv(x)
        conv.set_weights([W[n["name"] + ".w"], W[n["name"] + ".b"]])
        env[n["name"]] = y
    elif n["kind"] == "maxpool":
        env[n["name"]] = L.MaxPool2D(n["kernel"], n["stride"], padding=n["padding"])(xs[0])
    elif n["kind"] == "concat":
        env[n["name"]] = L.Concatenate(axis=-1)(xs)
    elif n["kind"] == "add":
        env[n["name"]] = L.Add()(xs)
    elif n["kind"] == "mean":
        env[n["name"]] = L.GlobalAveragePooling2D()(xs[0])
model = tf.keras.Model(inp, env["logits"])
def rep():
    for img in calib:
        yield [img[None].astype(np.float32)]
c = tf.lite.TFLiteConverter.from_keras_model(model)
c.optimizations = [tf.lite.Optimize.DEFAULT]
c.representative_dataset = rep
c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
c.inference_input_type = tf.uint8
c.inference_output_type = tf.uint8
open(out, "wb").write(c.convert())
print(tf.__version__)
'''


def load_models(qparams: Path | None):
    """(QuantizedModel, FP32 arch, FP32 params, calibration pixels) in the files' channel order."""
    from edgesqueeze.arch import DEFAULT_FILE_CHANNEL_ORDER, squeezenet1_0_arch, with_channel_order
    from edgesqueeze.data import load_pixels, read_class_names, read_labels_csv, split_calibration
    from edgesqueeze.export.channels import quantized_with_channel_order
    from edgesqueeze.quant.params import QuantizedModel
    from edgesqueeze.weights.deep_compression import decode_deep_compression

    arch = squeezenet1_0_arch(caffe=True)
    params = decode_deep_compression(DC, arch)
    calib, evals = split_calibration(read_labels_csv(SHARED / "imagenet" / "sample_labels.csv"))
    if qparams is not None:
        qm = QuantizedModel.load(qparams)
    else:
        from edgesqueeze.model import SqueezeNet
        from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

        labels = read_class_names(SHARED / "imagenet" / "synset_words.txt")
        qm, _, _ = calibrate_and_quantize(SqueezeNet.from_params(arch, params), calib[:32], QuantizeOptions.make(),
                                          labels=labels)
    order = DEFAULT_FILE_CHANNEL_ORDER
    qm = quantized_with_channel_order(qm, order)
    arch, params = with_channel_order(arch, params, order)
    return qm, arch, params, load_pixels(calib[:16], arch.preprocess), load_pixels(evals[:8], arch.preprocess)


def head_variants(qm) -> dict[str, bytes]:
    """The INT8 graph with a CAST head, and without a head (module doc)."""
    from edgesqueeze.export import tflite_graph as G
    from edgesqueeze.formats.standard_metadata import STANDARD_KEY  # noqa: F401 - the shipped file has it; these do not

    out = {}
    for kind in ("cast", "none"):
        g, head = G._build_int8(qm)
        cut = next(i for i, op in enumerate(g.operators) if list(op.inputs) == [g.index[head]])
        g.operators = g.operators[:cut]
        s = g.s
        if kind == "none":
            out[kind] = g.pack(inputs=[G.PIXELS], outputs=[head], metadata={}, description="no head")
            continue
        n, h, w, c = g.shapes[head]
        g.tensor("cast.values", (n, h, w, c), "FLOAT32")
        o = s.CastOptionsT()
        o.inDataType, o.outDataType = s.TensorType.INT8, s.TensorType.FLOAT32
        g.op("CAST", [head], ["cast.values"], o, "CastOptions")
        G._mean_op(g, "cast.values", "cast.mean")
        zp, scale = qm.tensors[head].zero_point, qm.tensors[head].scale
        g.tensor("cast.zp", (1,), "FLOAT32", data=np.array([zp], np.float32))
        g.tensor("cast.centred", (n, c), "FLOAT32")
        g.op("SUB", ["cast.mean", "cast.zp"], ["cast.centred"], s.SubOptionsT(), "SubOptions")
        g.tensor("cast.scale", (1,), "FLOAT32", data=np.array([scale], np.float32))
        g.tensor("cast.logits", (n, c), "FLOAT32")
        g.op("MUL", ["cast.centred", "cast.scale"], ["cast.logits"], s.MulOptionsT(), "MulOptions")
        G._softmax_op(g, "cast.logits", "cast.probability")
        out[kind] = g.pack(inputs=[G.PIXELS], outputs=["cast.probability"], metadata={}, description="CAST head")
    return out


def head_alone(qm, cast: bool) -> bytes:
    """Only the head, from conv10's int8 output [1, H, W, classes]: DEQUANTIZE -> MEAN -> MUL
    -> SOFTMAX as shipped, or with `cast` CAST -> MEAN -> SUB -> MUL -> SOFTMAX."""
    from edgesqueeze.export import tflite_graph as G
    from edgesqueeze.export.tflite_flatbuffer import _Graph
    from edgesqueeze.formats.tflite import _schema

    g0, head = G._build_int8(qm)
    shape, q = g0.shapes[head], qm.tensors[head]
    g = _Graph(_schema())
    g.tensor(head, shape, "INT8", scale=[1.0], zero_point=[q.zero_point])
    if not cast:
        G._int8_head(g, head, q)
        return g.pack(inputs=[head], outputs=[G.PROBABILITY], metadata={}, description="head")
    s = g.s
    n, h, w, c = shape
    g.tensor("cast.values", shape, "FLOAT32")
    o = s.CastOptionsT()
    o.inDataType, o.outDataType = s.TensorType.INT8, s.TensorType.FLOAT32
    g.op("CAST", [head], ["cast.values"], o, "CastOptions")
    G._mean_op(g, "cast.values", "cast.mean")
    g.tensor("cast.zp", (1,), "FLOAT32", data=np.array([q.zero_point], np.float32))
    g.tensor("cast.centred", (n, c), "FLOAT32")
    g.op("SUB", ["cast.mean", "cast.zp"], ["cast.centred"], s.SubOptionsT(), "SubOptions")
    g.tensor("cast.scale", (1,), "FLOAT32", data=np.array([q.scale], np.float32))
    g.tensor("cast.logits", (n, c), "FLOAT32")
    g.op("MUL", ["cast.centred", "cast.scale"], ["cast.logits"], s.MulOptionsT(), "MulOptions")
    G._softmax_op(g, "cast.logits", "cast.probability")
    return g.pack(inputs=[head], outputs=["cast.probability"], metadata={}, description="CAST head")


def tf_converter_file(tf_python: str, arch, params, calib: np.ndarray, work: Path) -> tuple[Path | None, str]:
    """The TensorFlow converter's full-int8 file, or (None, why not)."""
    from edgesqueeze.export.tflite import pool_padding
    from edgesqueeze.graph import OpKind, lower

    nodes, size = [], arch.input_size
    sizes = {"input": size}
    for n in lower(arch):
        d = {"kind": n.kind.value, "name": n.name, "inputs": list(n.inputs)}
        src = sizes[n.inputs[0]]
        if n.kind is OpKind.CONV:
            c = n.conv
            d.update(out=c.out_channels, kernel=c.kernel, stride=c.stride, pad=c.pad, relu=c.relu)
            sizes[n.name] = (src + 2 * c.pad - c.kernel) // c.stride + 1
        elif n.kind is OpKind.MAXPOOL:
            p = pool_padding(src, n.kernel, n.stride, n.ceil_mode)
            if p.explicit is not None:
                return None, f"{n.name}: a ceil-mode pool Keras cannot express"
            d.update(kernel=n.kernel, stride=n.stride, padding=p.padding.lower())
            sizes[n.name] = p.out
        else:
            sizes[n.name] = src
        nodes.append(d)
    spec = {"size": size, "mean": list(arch.preprocess.mean), "nodes": nodes}
    (work / "spec.json").write_text(json.dumps(spec))
    np.savez(work / "w.npz", **{f"{k}.w": np.asarray(w, np.float32).transpose(2, 3, 1, 0) for k, (w, _) in params.items()},
             **{f"{k}.b": np.asarray(b, np.float32) for k, (_, b) in params.items()})
    np.save(work / "calib.npy", calib)
    (work / "tfconv.py").write_text(TF_SCRIPT)
    out = work / "tf-full-int8.tflite"
    r = subprocess.run([tf_python, str(work / "tfconv.py"), str(work / "spec.json"), str(work / "w.npz"),
                        str(work / "calib.npy"), str(out)], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""), timeout=1800)
    if r.returncode or not out.is_file():
        return None, f"the converter failed: {r.stderr.strip()[-400:]}"
    return out, f"TensorFlow {r.stdout.strip().splitlines()[-1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qparams", type=Path, help="a QuantizedModel saved by edgesqueeze quantize (.json)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--per-round", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--tf-python", help="a Python with TensorFlow, for the converter's full-int8 file")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)

    from ai_edge_litert.interpreter import Interpreter

    from edgesqueeze.export import tflite as T
    from edgesqueeze.formats.metadata import ModelMetadata

    qm, arch, params, calib, verify = load_models(args.qparams)
    with tempfile.TemporaryDirectory(prefix="xnnpack-head-") as tmp:
        work = Path(tmp)
        files: dict[str, Path] = {}
        T.to_tflite(qm, work / "int8.tflite", verify_images=verify)
        files["INT8"] = work / "int8.tflite"
        for kind, data in head_variants(qm).items():
            files["INT8 CAST head" if kind == "cast" else "INT8 no head"] = work / f"int8-{kind}.tflite"
            files["INT8 CAST head" if kind == "cast" else "INT8 no head"].write_bytes(data)
        for name, cast in (("head alone", False), ("CAST head alone", True)):
            files[name] = work / f"{name.replace(' ', '-')}.tflite"
            files[name].write_bytes(head_alone(qm, cast))
        meta = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=qm.labels, scheme="fp32")
        T.to_tflite_fp32(arch, params, work / "fp32.tflite", metadata=meta, verify_images=verify)
        files["FP32"] = work / "fp32.tflite"
        tf_note = "not asked for (--tf-python)"
        if args.tf_python:
            path, tf_note = tf_converter_file(args.tf_python, arch, params, calib, work)
            if path is not None:
                files["TF full-int8"] = path

        rows, delegation = [], {}
        for name, path in files.items():
            d = T.xnnpack_delegation(path)
            delegation[name] = d
        runners, interps = {}, {}
        for name, path in files.items():
            for t in THREADS:
                it = Interpreter(model_path=str(path), num_threads=t)
                it.allocate_tensors()
                d = it.get_input_details()[0]
                if "head" in name and "INT8" not in name:  # conv10's int8 output: any values
                    x = np.random.default_rng(0).integers(-128, 128, d["shape"]).astype(np.int8)
                else:
                    x = verify[0:1].astype(d["dtype"])
                it.set_tensor(d["index"], x)
                interps[(name, t)] = it
                runners[(name, t)] = it.invoke
        times = interleaved_ms(runners, warmup=args.warmup, rounds=args.rounds, per_round=args.per_round)
        med = {k: float(np.median(v)) for k, v in times.items()}

    from importlib.metadata import version

    print(f"CPU {cpu_model()} ({usable_cores()} usable cores; "
          f"{' '.join(f for f in ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'asimddp', 'i8mm') if f in cpu_flags())}); "
          f"LiteRT {version('ai-edge-litert')}; Python {sys.version.split()[0]}")
    print(f"model {arch.name} {arch.preprocess.channel_order}, {arch.input_size}x{arch.input_size}; "
          f"{args.rounds} rounds x {args.per_round} invocations per file and thread count, interleaved; "
          f"TF converter: {tf_note}")
    head = ("file", "ops", "XNNPACK partitions", "whole graph", *(f"median ms {t}T" for t in THREADS),
            *(f"/ INT8 {t}T" for t in THREADS))
    for name in files:
        d = delegation[name]
        rows.append((name, str(d.ops), str(d.partitions), "yes" if d.whole else "no",
                     *(f"{med[(name, t)]:.2f}" for t in THREADS),
                     *(f"{med[(name, t)] / med[('INT8', t)]:.3f}" for t in THREADS)))
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |")
    share = {t: med[("head alone", t)] / med[("INT8", t)] for t in THREADS}
    cast_share = {t: med[("CAST head alone", t)] / med[("INT8", t)] for t in THREADS}
    diff = {t: (med[("INT8", t)] - med[("INT8 no head", t)]) / med[("INT8", t)] for t in THREADS}
    print("head (DEQUANTIZE, MEAN, MUL, SOFTMAX) alone / INT8 file: "
          + ", ".join(f"{100 * share[t]:.2f} % at {t} thread{'s' if t > 1 else ''}" for t in THREADS)
          + "; the CAST head alone: " + ", ".join(f"{100 * cast_share[t]:.2f} %" for t in THREADS)
          + "; (INT8 - INT8 no head) / INT8: " + ", ".join(f"{100 * diff[t]:.1f} %" for t in THREADS)
          + " (a difference of two noisy medians)")
    print("2 threads vs 1: " + ", ".join(f"{n} {med[(n, 1)] / med[(n, 2)]:.2f}x" for n in files))
    if args.json:
        args.json.write_text(json.dumps({
            "cpu": cpu_model(), "litert": version("ai-edge-litert"), "tf_converter": tf_note,
            "files": {n: {"ops": delegation[n].ops, "partitions": delegation[n].partitions,
                          "whole": delegation[n].whole,
                          **{f"median_ms_{t}t": med[(n, t)] for t in THREADS}} for n in files},
            "head_share": {str(t): share[t] for t in THREADS},
            "cast_head_share": {str(t): cast_share[t] for t in THREADS}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
