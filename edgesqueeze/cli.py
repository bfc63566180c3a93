"""The `edgesqueeze` command: thin over the library.

    edgesqueeze info                  the SqueezeNet family's layer table and parameter counts
    edgesqueeze eval                  FP32 top-1/top-5 on the shared sample (defaults)
    edgesqueeze eval --images DIR_OR_CSV --weights NAME_OR_PATH --report out.json
    edgesqueeze eval --split eval --models A.tflite B.onnx   FP32 vs exported files (deployed path)
    edgesqueeze classify MODEL IMG... [--top-k 5] [--json]  top-k classes with an exported file
    edgesqueeze bench MODEL... [--threads 1 4] [--runs 100]  inference time, side by side
    edgesqueeze pack MODEL [-o OUT]   a checked, compressed update bundle (MODEL.esq) that classify loads
    edgesqueeze camera --model M.tflite --source 0 [--headless] [--fp32 F.onnx]  the live demo

Every user error is one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import EdgeSqueezeError, run_command
from .sysinfo import cpu_model, usable_cores

EXAMPLES = """examples:
  edgesqueeze info
  edgesqueeze eval                                   # Deep-Compression v1.0 on ../shared sample
  edgesqueeze eval --split eval --report export/eval.json
  edgesqueeze eval --weights squeezenet1_0-torchvision --download --images my_labels.csv
"""


def _progress(total: int, desc: str, quiet: bool):
    if quiet:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
    return bar.update, bar.close


def _load_items(args, limit: int | None = None):
    from . import data, paths

    src = Path(args.images) if args.images else paths.default_labels_csv()
    synsets = args.synset_words
    if synsets is None and src.is_dir() and data.looks_synset_named(src):
        synsets = paths.default_synset_words()
    items = data.load_dataset(src, synset_words=synsets)
    if args.split != "all":
        calib, evals = data.split_calibration(items, calibration_fraction=args.calibration_fraction)
        items = calib if args.split == "calibration" else evals
    limit = args.limit if limit is None else limit
    if limit:
        items = items[:limit]
    if not items:
        raise EdgeSqueezeError(f"no images selected from {src} (split={args.split})")
    return src, items


def _load_model(args):
    from . import paths
    from .model import load_pretrained

    paths.ensure_weights_env()
    return load_pretrained(args.weights, download=args.download)


def cmd_info(args) -> int:
    from .arch import metaparameter_arch, squeezenet1_0_arch, squeezenet1_1_arch
    from .metrics import format_table

    archs = [squeezenet1_0_arch(), squeezenet1_1_arch(), squeezenet1_0_arch(caffe=True),
             squeezenet1_0_arch(bypass="simple"), squeezenet1_0_arch(bypass="complex"),
             metaparameter_arch(base_e=args.base_e, incr_e=args.incr_e, pct3x3=args.pct3x3,
                                freq=args.freq, sr=args.sr)]
    rows = [[a.name, a.input_size, a.final_pad, a.num_parameters()] for a in archs]
    print(format_table(["arch", "input", "conv10 pad", "parameters"], rows))
    a = archs[-1]
    print(f"\nlayers of {a.name}:")
    rows = [[c.name, c.in_channels, c.out_channels, f"{c.kernel}x{c.kernel}/{c.stride}", c.pad,
             c.out_channels * (c.in_channels * c.kernel**2 + 1)] for c in a.convs()]
    print(format_table(["conv", "in", "out", "kernel", "pad", "params"], rows))
    return 0


CLASSIFY_EXAMPLES = """examples:
  edgesqueeze classify export/squeezenet1_0-affine-int8.tflite kitten.jpg --top-k 3
  edgesqueeze classify export/squeezenet1_0-affine-int8.onnx *.jpg --json
  edgesqueeze bench export/*.tflite export/*.onnx --threads 1 4 --runs 100
  edgesqueeze eval --split eval --models export/squeezenet1_0-affine-int8.tflite export/squeezenet1_0-affine-int8.onnx
"""

QUANTIZE_EXAMPLES = """examples:
  edgesqueeze quantize                               # DC v1.0, shared sample, ./export and ./calib
  edgesqueeze quantize --scheme ristretto --formats tflite
  edgesqueeze quantize --method kl --equalize 0 --onnx-target arm
"""


def _write_json(path: str, doc: dict) -> None:
    out = Path(path)
    if not out.parent.is_dir():
        raise EdgeSqueezeError(f"{out}: folder {out.parent} does not exist; create it or choose another path")
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _quantize_options(args, scheme: str):
    from .pipeline import QuantizeOptions

    return QuantizeOptions.make(scheme=scheme, method=args.method,
                                bias_correction=False if args.no_bias_correction else None,
                                equalize=args.equalize,
                                empirical_bias_correction=False if args.no_empirical_bias_correction else None,
                                weight_bits=args.weight_bits,
                                adaptive_rounding=not args.no_adaptive_rounding)


EVAL_COLUMNS = ["model", "images", "top-1 %", "top-5 %", "drop top-1 pp", "top-1 agreement %", "logit SQNR dB"]


def _comparison_row(c) -> list:
    """One row of eval's table (EVAL_COLUMNS) for an evaluate.Comparison."""
    a = c.accuracy
    return [a.name, a.images, a.top1, a.top5, c.drop_top1, c.agreement, c.logit_sqnr_db]


def cmd_eval(args) -> int:
    import numpy as np

    from .evaluate import compare, fp32_scores, int8_scores, per_layer_sqnr, sqnr_plot_png
    from .metrics import accuracy, format_table

    if args.int8 and args.split != "eval":
        raise EdgeSqueezeError(f"--int8 calibrates on the calibration split, so it evaluates on --split eval "
                               f"only (got --split {args.split}); calibration and evaluation images must be disjoint")
    for scheme in args.int8:  # check every option before any slow work
        _quantize_options(args, scheme)
    classifiers = _load_classifiers(args.models, args.threads) if args.models else []  # bad files fail here
    model = _load_model(args)  # weights first: a bad weights file fails before any image is read
    src, items = _load_items(args)
    labels = np.array([i.label for i in items])
    update, close = _progress(len(items), "fp32", args.quiet)
    t0 = time.perf_counter()
    try:
        fp = fp32_scores(model, items, batch_size=args.batch_size, progress=update)
    finally:
        close()
    base = accuracy("fp32", fp, labels)
    report = {
        "arch": model.arch.name, "weights": str(args.weights), "images": str(src),
        "split": args.split, "calibration_fraction": args.calibration_fraction,
        "results": [{**base.to_dict(), "drop_top1_pp": 0.0, "drop_top5_pp": 0.0, "top1_agreement": 100.0}],
    }
    rows = [["fp32", base.images, base.top1, base.top5, 0.0, 100.0, "-"]]
    sqnr: dict[str, dict[str, float]] = {}
    if args.int8:
        from .pipeline import calibrate_and_quantize

        calib = _calibration_items(args)
        for scheme in args.int8:
            options = _quantize_options(args, scheme)
            passes = 2 if options.equalize > 0 else 1  # equalization calibrates twice
            update, close = _progress(passes * len(calib), f"calibrate {scheme}", args.quiet)
            try:
                qm, _, quantized_fp32 = calibrate_and_quantize(model, calib, options, progress=update)
            finally:
                close()
            name = f"int8-{scheme}"
            update, close = _progress(len(items), name, args.quiet)
            try:
                scores = int8_scores(qm, items, progress=update)
            finally:
                close()
            c = compare(name, scores, fp, labels, base)
            rows.append(_comparison_row(c))
            report["results"].append({**c.to_dict(), "options": {"scheme": scheme, "method": options.method.value,
                                      "bias_correction": options.bias_correction, "equalize": options.equalize,
                                      "adaptive_rounding": options.adaptive_rounding,
                                      "calibration_images": len(calib)}})
            if args.sqnr:
                sub = items[: args.sqnr_images]
                update, close = _progress(len(sub), f"sqnr {scheme}", args.quiet)
                try:
                    sqnr[name] = per_layer_sqnr(quantized_fp32, qm, sub, progress=update)
                finally:
                    close()
    if classifiers:
        _eval_model_files(args, classifiers, items, fp, labels, base, rows, report)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"{model.arch.name} ({args.weights}) on {len(items)} images from {src} (split: {args.split})")
    print(format_table(EVAL_COLUMNS, rows))
    if sqnr:
        first = next(iter(sqnr))
        order = sorted(sqnr[first], key=lambda n: sqnr[first][n])
        print(f"\nper-layer SQNR in dB vs FP32 on {min(len(items), args.sqnr_images)} images (worst first):")
        print(format_table(["tensor", *sqnr], [[n, *(sqnr[v][n] for v in sqnr)] for n in order], floatfmt=".1f"))
        report["sqnr_db"] = sqnr
        if args.sqnr_plot:
            sqnr_plot_png(sqnr, args.sqnr_plot)
            print(f"plot: {args.sqnr_plot}")
    if args.report:
        _write_json(args.report, report)
        print(f"report: {args.report}")
    return 0


def cmd_quantize(args) -> int:
    """The main job: weights -> calibration -> INT8 ONNX + INT8 TFLite (+ FP32 references),
    each verified against the integer reference before it is written."""
    import numpy as np

    from .data import load_pixels
    from .evaluate import compare, fp32_scores, int8_scores
    from .metadata import ModelMetadata
    from .metrics import accuracy, format_table
    from .pipeline import calibrate_and_quantize

    options = _quantize_options(args, args.scheme)
    formats = set(args.formats)
    out_dir, calib_dir = Path(args.out), Path(args.calib_dir)
    for d in (out_dir, calib_dir):
        if d.exists() and not d.is_dir():
            raise EdgeSqueezeError(f"{d} exists and is not a folder; choose another --out/--calib-dir")
    model = _load_model(args)
    src, evals = _load_items(args) if args.split == "eval" else (None, None)
    calib = _calibration_items(args)
    names = _class_names(args)
    arch = model.arch
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_dir.mkdir(parents=True, exist_ok=True)

    passes = 2 if options.equalize > 0 else 1
    update, close = _progress(passes * len(calib), "calibrate", args.quiet)
    t0 = time.perf_counter()
    try:
        qm, stats, quantized_fp32 = calibrate_and_quantize(model, calib, options, labels=names, progress=update)
    finally:
        close()
    calib_seconds = time.perf_counter() - t0
    stem = f"{arch.name}-{options.scheme.value}" + (f"-w{options.weight_bits}" if options.weight_bits != 8 else "")
    qjson, _ = qm.save(calib_dir / stem)

    verify = None
    if evals:
        verify = load_pixels(evals[: args.verify_images], arch.preprocess)
    files = []
    meta_fp32 = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=tuple(names), scheme="fp32")
    if "onnx" in formats:
        from .export.onnx import to_onnx, to_onnx_fp32

        p = to_onnx_fp32(arch, model.numpy_params(), out_dir / f"{arch.name}-fp32.onnx", metadata=meta_fp32)
        files.append([p.name, p.stat().st_size, "fp32", "-", "-"])
        r = to_onnx(qm, out_dir / f"{stem}-int8.onnx", target=args.onnx_target, verify_images=verify)
        files.append([r.path.name, r.bytes, f"int8 ({args.onnx_target})",
                      f"{100 * r.lsb_match:.2f} % within 1 LSB", f"{100 * r.top1_agreement:.1f} %"])
    if "tflite" in formats:
        from .export.tflite import to_tflite, to_tflite_fp32

        r = to_tflite_fp32(arch, model.numpy_params(), out_dir / f"{arch.name}-fp32.tflite", metadata=meta_fp32)
        files.append([r.path.name, r.bytes, "fp32", "-", "-"])
        r = to_tflite(qm, out_dir / f"{stem}-int8.tflite", verify_images=verify)
        files.append([r.path.name, r.bytes, "int8", f"{100 * r.lsb_match:.2f} % within 1 LSB", f"{100 * r.top1_agreement:.1f} %"])

    print(f"{arch.name} ({args.weights}), scheme {options.scheme.value}, ranges by {options.method.value}, "
          f"bias correction {'on' if options.bias_correction else 'off'}, "
          f"empirical bias correction {'on' if options.empirical_bias_correction else 'off'}, "
          f"adaptive rounding {'on' if options.adaptive_rounding else 'off'}, equalization {options.equalize:g}; "
          f"calibrated on {len(calib)} images in {calib_seconds:.1f} s")
    print(f"quantization parameters: {qjson}")
    if files:
        print(format_table(["file", "bytes", "type", "vs integer reference", "top-1 same as reference"], files))
    report = {"arch": arch.name, "weights": str(args.weights), "options": qm.calibration | {"scheme": options.scheme.value},
              "qparams": str(qjson), "files": [dict(zip(["file", "bytes", "type", "check", "top1_vs_reference"], f)) for f in files]}
    if evals:
        update, close = _progress(2 * len(evals), "evaluate", args.quiet)
        try:
            fp = fp32_scores(model, evals, progress=update)
            q = int8_scores(qm, evals, progress=update)
        finally:
            close()
        labels = np.array([i.label for i in evals])
        base = accuracy("fp32", fp, labels)
        c = compare(f"int8-{options.scheme.value}", q, fp, labels, base)
        print(f"\naccuracy on the evaluation split ({len(evals)} images, disjoint from calibration):")
        print(format_table(["model", "top-1 %", "top-5 %", "drop top-1 pp", "top-1 agreement %", "logit SQNR dB"],
                           [["fp32", base.top1, base.top5, 0.0, 100.0, "-"],
                            [c.accuracy.name, c.accuracy.top1, c.accuracy.top5, c.drop_top1, c.agreement,
                             c.logit_sqnr_db]]))
        report["accuracy"] = [base.to_dict(), c.to_dict()]
        if args.sqnr_images:
            from .evaluate import per_layer_sqnr

            sq = per_layer_sqnr(quantized_fp32, qm, evals[: args.sqnr_images])
            worst = sorted(sq, key=sq.get)[:5]
            print(f"worst per-layer SQNR (dB, {min(len(evals), args.sqnr_images)} images): "
                  + ", ".join(f"{n} {sq[n]:.1f}" for n in worst))
            report["sqnr_db"] = sq
    report_path = out_dir / f"{stem}-report.json"
    _write_json(str(report_path), report)
    print(f"report: {report_path}")
    return 0


def _load_classifiers(files, threads=None):
    """Classifier of each model file, all loaded before any slow work (a bad file fails fast)."""
    from .runtime import Classifier

    return [Classifier.load(f, threads=threads) for f in files]


def _eval_model_files(args, classifiers, items, fp, labels, base, rows, report) -> None:
    """Each exported file, run through the deployed path (runtime.Classifier: its own
    preprocessing from its metadata, its runtime), against the FP32 scores on the same images."""
    import numpy as np

    from .data import iter_batches, load_image
    from .evaluate import compare

    names = [c.path.name for c in classifiers]
    for clf in classifiers:
        name = clf.path.name if names.count(clf.path.name) == 1 else str(clf.path)
        if clf.num_classes != fp.shape[1]:
            raise EdgeSqueezeError(f"{clf.path}: gives {clf.num_classes} classes, the FP32 model {fp.shape[1]}; "
                                   "compare files of the same model")
        if args.split != "eval" and clf.metadata.calibration:
            print(f"edgesqueeze eval: note: {name} was calibrated on the calibration split "
                  f"({clf.metadata.calibration.get('split', '?')}); with --split {args.split} some evaluation "
                  "images may be calibration images: use --split eval for numbers on disjoint images",
                  file=sys.stderr)
        update, close = _progress(len(items), name, args.quiet)
        out, ms = [], 0.0
        try:
            for batch in iter_batches(items, args.batch_size):
                pixels = np.stack([clf.preprocess(load_image(i.path), source=str(i.path)) for i in batch])
                out.append(clf.logits(pixels))
                ms += clf.last_inference_ms
                if update:
                    update(len(batch))
        finally:
            close()
        scores = np.concatenate(out)
        c = compare(name, scores, fp, labels, base)
        rows.append(_comparison_row(c))
        report["results"].append({**c.to_dict(), "file": str(clf.path), "backend": clf.backend.value,
                                  "runtime_version": clf.runtime_version, "threads": clf.threads,
                                  "scheme": clf.metadata.scheme, "calibration": clf.metadata.calibration,
                                  "inference_ms_per_image": round(ms / max(1, len(items)), 3)})


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum, with a message naming the bad value."""
    def parse(value: str) -> int:
        try:
            n = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"{n} must be at least {minimum}")
        return n

    return parse


_positive = _int_at_least(1)
_non_negative = _int_at_least(0)


def cmd_classify(args) -> int:
    """Top-k classes of each image; an unreadable image is an error line, the others still run."""
    from .data import load_image
    from .errors import DataError
    from .runtime import Classifier

    import numpy as np

    clf = Classifier.load(args.model, threads=args.threads)
    clf.logits(np.zeros((clf.input_size, clf.input_size, 3), np.uint8))  # warm-up: the times shown are steady-state
    results, failed = [], 0
    for img in args.images:
        try:
            classes = clf.classify(load_image(img), top_k=args.top_k)
        except DataError as e:
            failed += 1
            print(f"edgesqueeze classify: error: {e}", file=sys.stderr)
            results.append({"image": str(img), "error": str(e)})
            continue
        results.append({"image": str(img), "inference_ms": round(clf.last_inference_ms, 3),
                        "top": [c.to_dict() for c in classes]})
        if not args.json:
            print(f"{img}  ({clf.path.name}, {clf.backend.value} {clf.runtime_version}, {clf.threads} threads, "
                  f"{clf.last_inference_ms:.1f} ms)")
            for k, c in enumerate(classes, 1):
                print(f"  {k}. {100 * c.score:6.2f} %  {c.label}  [{c.index}]")
    if args.json:
        print(json.dumps({"model": str(clf.path), "backend": clf.backend.value,
                          "runtime_version": clf.runtime_version, "threads": clf.threads,
                          "results": results}, indent=2))
    return 1 if failed else 0


def cmd_pack(args) -> int:
    """Write the update bundle of one model file (edgesqueeze.bundle): atomic, verified."""
    from .bundle import pack

    info = pack(args.model, args.out)
    print(f"{args.model}: {info.model_bytes:,} bytes")
    print(f"{info.path}: {info.bundle_bytes:,} bytes ({100 * info.ratio:.1f} % of the model, codec {info.codec})")
    print(f"sha256 of {info.name}: {info.sha256}")
    return 0


_RSS_CHILD = """
import resource, sys
import numpy as np
from edgesqueeze.runtime import Classifier
from edgesqueeze.data import load_image
clf = Classifier.load(sys.argv[1], threads=int(sys.argv[2]))
img = load_image(sys.argv[3]) if sys.argv[3] else np.full((300, 400, 3), 128, np.uint8)
for _ in range(int(sys.argv[4])):
    clf.classify(img)
kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux; kept across exec from a big parent
try:  # VmHWM: this process image's own peak (Linux)
    kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration, ValueError):
    pass
print("RSS", kb)
"""


def _child_peak_rss_kb(model: Path, threads: int, image: Path | None, runs: int) -> int | None:
    """Peak RSS in KB of a fresh interpreter that imports the runtime, loads one model and
    classifies `runs` frames: what that model costs in a process of its own. Linux: VmHWM from
    /proc/self/status (ru_maxrss survives the exec, so a child of a big process reports the
    parent's peak); elsewhere resource.getrusage's ru_maxrss."""
    import subprocess

    try:
        r = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(model), str(threads), str(image or ""), str(runs)],
                           capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in r.stdout.splitlines():
        if line.startswith("RSS "):
            return int(line.split()[1])
    return None


def _bench_image():
    """(BGR frame, description): the shared kitten if present, else a fixed synthetic image."""
    import numpy as np

    from . import paths
    from .data import load_image

    shared = paths.shared_dir()
    kitten = shared / "images" / "kitten.jpg" if shared else None
    if kitten is not None and kitten.is_file():
        return load_image(kitten), kitten
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(coarse, (400, 300), interpolation=cv2.INTER_LINEAR), None


def cmd_bench(args) -> int:
    """Inference time of each model file at each thread count, measured side by side."""
    import os

    import numpy as np

    from .metrics import format_table
    from .runtime import Classifier

    threads = list(dict.fromkeys(args.threads or [1, usable_cores()]))  # as Classifier.load's default
    models = [Path(m) for m in args.models]
    runs = [(m, t, Classifier.load(m, threads=t)) for t in threads for m in models]  # every file checked first
    frame, image = _bench_image()
    pixels = [clf.preprocess(frame) for _, _, clf in runs]
    for (_, _, clf), x in zip(runs, pixels):  # warm-up, each model in turn
        for _ in range(args.warmup):
            clf.logits(x)
    # Rounds: each row runs one untimed inference (caches and thread pools warm again after the
    # switch), then a block of timed ones; the order rotates every round. Slow drift (other load,
    # a board's thermal throttling) then hits every row alike, and each block is timed as a
    # camera loop runs: the same model back to back.
    block = min(10, max(1, args.runs // 10))
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    r = 0
    while len(times[0]) < args.runs:
        k = r % len(order)
        n = min(block, args.runs - len(times[0]))
        for i in order[k:] + order[:k]:
            clf = runs[i][2]
            clf.logits(pixels[i])
            for _ in range(n):
                clf.logits(pixels[i])
                times[i].append(clf.last_inference_ms)
        r += 1
    rss = {}
    if not args.no_rss:
        for m, t, _ in runs:
            rss[(m, t)] = _child_peak_rss_kb(m, t, image, max(1, args.warmup))

    versions = {}
    for _, _, clf in runs:
        versions.setdefault(clf.backend.value, clf.runtime_version)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores, {usable_cores()} usable by this process); "
          f"numpy {np.__version__}; "
          + ", ".join(f"{b} {v}" for b, v in versions.items()))
    print(f"input: {image if image else 'synthetic 400x300 image'}; {args.runs} timed runs per row after "
          f"{args.warmup} warm-up, rows interleaved in rounds of {block}; threads: {', '.join(map(str, threads))}")
    rows, report = [], []
    for (m, t, clf), ts in zip(runs, times):
        a = np.asarray(ts)
        med, p90 = float(np.median(a)), float(np.percentile(a, 90))
        kb = rss.get((m, t))
        rows.append([m.name, f"{clf.backend.value} {clf.runtime_version}", t, med, p90,
                     1000.0 / med if med > 0 else float("nan"), f"{m.stat().st_size / 1024:.0f}",
                     f"{kb / 1024:.0f}" if kb else "n/a"])
        report.append({"file": str(m), "backend": clf.backend.value, "runtime_version": clf.runtime_version,
                       "threads": t, "median_ms": med, "p90_ms": p90, "fps": rows[-1][5],
                       "bytes": m.stat().st_size, "peak_rss_kb": kb})
    print(format_table(["model", "runtime", "threads", "median ms", "p90 ms", "FPS", "file KB",
                        "peak RSS MB"], rows))
    if not args.no_rss:
        print("peak RSS: of a separate process that loads only that model and classifies "
              f"{max(1, args.warmup)} frames (Python, numpy, OpenCV and the runtime included)")
    if args.report:
        _write_json(args.report, {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
                                  "runtimes": versions,
                                  "image": str(image) if image else "synthetic", "runs": args.runs,
                                  "warmup": args.warmup, "results": report})
        print(f"report: {args.report}")
    return 0


def _class_names(args) -> list[str]:
    from . import paths
    from .data import read_class_names

    p = args.synset_words or paths.default_synset_words()
    if p is None:
        raise EdgeSqueezeError("no class names: pass --synset-words synset_words.txt (1000 lines, class order)")
    return read_class_names(p)


def _calibration_items(args):
    """The calibration split of the same image source (disjoint from --split eval)."""
    saved = args.split
    try:
        args.split = "calibration"
        _, calib = _load_items(args, limit=args.calib_images)
    finally:
        args.split = saved
    return calib


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="labels CSV (file,class_index,...) or a folder of <synset>_*.JPEG "
                   "images (default: the shared sample_labels.csv)")
    p.add_argument("--synset-words", help="synset_words.txt, for a folder of synset-named images")
    p.add_argument("--split", choices=["all", "calibration", "eval"], default="all",
                   help="which part of the fixed hash split of file names to use (default: all)")
    p.add_argument("--calibration-fraction", type=float, default=1 / 3,
                   help="share of names in the calibration split (default 1/3: ~200 of 600)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=None, choices=["minmax", "percentile", "mse", "kl"],
                   help="how activation ranges are chosen from the calibration statistics (default: "
                   "minmax for affine, kl for ristretto)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="do not correct biases for weight rounding (on by default); turns the empirical "
                   "correction off too")
    p.add_argument("--no-empirical-bias-correction", action="store_true",
                   help="skip the empirical (sequential) bias correction on the calibration images "
                   "(on by default: one integer pass, ~1 min for 194 images)")
    p.add_argument("--no-adaptive-rounding", action="store_true",
                   help="round each weight to its nearest level instead of choosing up or down to lower "
                   "its conv's output error on the calibration images (README, \"Adaptive rounding\")")
    p.add_argument("--equalize", type=float, default=None, metavar="ALPHA",
                   help="cross-layer activation equalization strength in [0, 1] (0: off; default "
                   "0.5 for affine, 0 for ristretto)")
    p.add_argument("--weight-bits", type=int, default=8, metavar="N",
                   help="weight levels: symmetric N-bit grid in int8 containers, 4..8 (default 8); 7 gives "
                   "a < 0.5 MB update bundle at a measured accuracy cost (README, \"Update bundle\")")
    p.add_argument("--calib-images", type=int, default=0, help="use only the first N calibration images")


def _add_weights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default="squeezenet1_0-dc",
                   help="a known name (squeezenet1_0-dc, squeezenet1_0-torchvision, "
                   "squeezenet1_1-torchvision) or a .net/.pth/.caffemodel file")
    p.add_argument("--download", action="store_true", help="download known weights if not found locally")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgesqueeze", description="SqueezeNet to INT8 on a Raspberry-Pi-class board.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="layer tables and parameter counts")
    for name, default, typ in (("--base-e", 128, int), ("--incr-e", 128, int), ("--pct3x3", 0.5, float),
                               ("--freq", 2, int), ("--sr", 0.125, float)):
        info.add_argument(name, type=typ, default=default, help=f"metaparameter (default {default})")
    info.set_defaults(func=cmd_info)

    ev = sub.add_parser("eval", help="top-1/top-5 on labelled images",
                        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weights_args(ev)
    _add_data_args(ev)
    ev.add_argument("--int8", nargs="*", default=[], metavar="SCHEME", choices=["affine", "ristretto"],
                    help="also calibrate on the calibration split and evaluate the integer reference of "
                    "these schemes (affine, ristretto); needs --split eval")
    _add_quant_args(ev)
    ev.add_argument("--sqnr", action="store_true", help="per-layer SQNR table of each INT8 variant")
    ev.add_argument("--sqnr-images", type=int, default=64, help="images for the SQNR table (default 64)")
    ev.add_argument("--sqnr-plot", metavar="PNG", help="draw the per-layer SQNR as a bar chart")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--report", help="write the results as JSON to this file")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--models", nargs="+", default=[], metavar="FILE",
                    help="exported .onnx/.tflite files to evaluate against FP32 on the same images, each run "
                    "through the board runtime (edgesqueeze.runtime.Classifier)")
    ev.add_argument("--threads", type=_positive, default=None, help="runtime threads for --models (default: all cores)")
    ev.set_defaults(func=cmd_eval)

    q = sub.add_parser("quantize", help="the main job: calibrate, quantize, export INT8 ONNX + TFLite",
                       epilog=QUANTIZE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_weights_args(q)
    _add_data_args(q)
    _add_quant_args(q)
    q.set_defaults(split="eval")
    q.add_argument("--scheme", default="affine", choices=["affine", "ristretto"], help="default affine")
    q.add_argument("--formats", nargs="+", default=["onnx", "tflite"], choices=["onnx", "tflite"])
    q.add_argument("--onnx-target", default="x86", choices=["x86", "arm"],
                   help="activation type of the INT8 ONNX: uint8 (x86, fast there) or int8 (arm)")
    q.add_argument("--out", default="export", help="folder for the model files (default ./export)")
    q.add_argument("--calib-dir", default="calib", help="folder for the quantization parameters (default ./calib)")
    q.add_argument("--verify-images", type=int, default=32, help="evaluation images each export is checked on")
    q.add_argument("--sqnr-images", type=int, default=16, help="images for the per-layer SQNR summary (0: skip)")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_quantize)

    from .camera import add_camera_parser  # numpy + OpenCV only; the demo lives there

    add_camera_parser(sub)

    c = sub.add_parser("classify", help="top-k classes of images with an exported .onnx/.tflite file",
                       epilog=CLASSIFY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("model", help="a .onnx or .tflite file written by `edgesqueeze quantize`")
    c.add_argument("images", nargs="+", metavar="IMG", help="image files")
    c.add_argument("--top-k", type=_positive, default=5, help="classes per image (default 5)")
    c.add_argument("--threads", type=_positive, default=None, help="runtime threads (default: all cores)")
    c.add_argument("--json", action="store_true", help="print the results as JSON")
    c.set_defaults(func=cmd_classify)

    b = sub.add_parser("bench", help="inference time of exported files, side by side",
                       epilog=CLASSIFY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("models", nargs="+", metavar="MODEL", help=".onnx / .tflite files")
    b.add_argument("--threads", type=_positive, nargs="+", default=None,
                   help="thread counts to measure (default: 1 and all cores)")
    b.add_argument("--runs", type=_positive, default=100, help="timed runs per model and thread count (default 100)")
    b.add_argument("--warmup", type=_non_negative, default=10, help="untimed runs first (default 10)")
    b.add_argument("--no-rss", action="store_true", help="skip the peak-RSS measurement (a process per row)")
    b.add_argument("--report", help="write the results as JSON to this file")
    b.set_defaults(func=cmd_bench)

    pk = sub.add_parser("pack", help="compress a .tflite/.onnx file into a checked update bundle (.esq)")
    pk.add_argument("model", help="a .onnx or .tflite file written by `edgesqueeze quantize`")
    pk.add_argument("-o", "--out", default=None, help="the bundle to write (default: MODEL.esq); never the model itself")
    pk.set_defaults(func=cmd_pack)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(f"edgesqueeze {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
