"""The main job as one call: weights -> calibration -> verified INT8 (and FP32) files -> accuracy.

    import edgesqueeze

    result = edgesqueeze.quantize("my_squeezenet.pth", "my_images/", labels="labels.txt")
    result.files            # what was written, each verified against the integer reference
    result.evaluation       # FP32 and INT8 on the evaluation images (None without any)

Accuracy-aware option (not the default): `min_agreement` (percent) and/or `max_drop` (percentage
points) keep the fewest convs in float32 (between a dequantize and a quantize, which both
runtimes run) for which the target holds on the 2-fold CV of the calibration images
(quant/sensitivity.py: a per-layer sensitivity table, then a greedy search; never the
evaluation images). The result's `mixed_precision` holds the table, the chosen convs, the CV
figures before and after, and the latency of the written files against their all-integer
counterparts (interleaved medians, 1 and 2 threads). Without either option the export is
all-integer, as always.

`edgesqueeze quantize` is this function plus printing. Every option is checked before any slow
work: a labels file whose count differs from the model's outputs, an image label the model
cannot give, an unknown option value, an output folder that is a file — each is an error before
calibration starts, and no model file is written.

Images: `images` is one set, split into calibration and evaluation by the fixed hash of each
file name (data.split_calibration); `calib_images` and `eval_images` give the two sets
separately instead (each used whole). A set is a folder of images (unlabelled: calibration,
and an evaluation of agreement with FP32 only), a torchvision ImageFolder root, a CSV
`file,class_index[,class_name]`, or a folder of `<synset>_*.JPEG` ImageNet files
(edgesqueeze.imagesets).

Class names, first found: `labels` (a text file, one name per line in class-index order); the
`synset_words` file; the names the images carry (ImageFolder folder names, the CSV's
class_name column) when they name every class; for a 1000-class model, the shared ImageNet
synset_words.txt; else `class_0 ... class_N-1`, with a warning.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np

from .arch import Arch, Preprocess, override_preprocess
from .errors import DataError, OptionError
from .job_result import Evaluation, MixedPrecision, QuantizeResult, Stage, WrittenFile, write_report
from .latency_cost import Latency, latency_cost
from .sysinfo import peak_rss_mb, reset_peak_rss

# Calibration images the main job uses by default, spread over the calibration set. Measured by
# 2-fold CV on the 194 calibration images of v1.0 (benchmarks/cv_options.py): half of each fold's
# images gave 28.73 dB logit SQNR against 28.46 dB for all of them, so more images buy nothing
# measurable here, and calibration time grows with their number.
DEFAULT_CALIB_IMAGES = 96

Format = Literal["onnx", "tflite"]
FORMATS: tuple[str, ...] = ("onnx", "tflite")
OnPass = Callable[[str, int, int], None]  # (pass name, images done, images in the pass)


class _Stages:
    """Times each stage and its peak RSS (the kernel's high-water mark, reset per stage)."""

    def __init__(self):
        self.done: list[Stage] = []

    def run(self, name: str, fn: Callable):
        reset_peak_rss()
        t0 = time.perf_counter()
        out = fn()
        self.done.append(Stage(name, time.perf_counter() - t0, peak_rss_mb()))
        return out


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    got = tuple(dict.fromkeys(str(f).lower() for f in formats))
    bad = [f for f in got if f not in FORMATS]
    if bad or not got:
        raise OptionError(f"formats {list(formats)!r}: each must be one of {', '.join(FORMATS)} (at least one)")
    return got


def _check_count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise OptionError(f"{what}={value!r} must be an integer >= {minimum}")
    return int(value)


def _out_dir(path, what: str) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OptionError(f"{p} exists and is not a folder; choose another {what}")
    return p


def quantize(
    weights: str | os.PathLike = "squeezenet1_0-dc",
    images: str | os.PathLike | None = None,
    *,
    labels: str | os.PathLike | Sequence[str] | None = None,
    calib_images: str | os.PathLike | None = None,
    eval_images: str | os.PathLike | None = None,
    synset_words: str | os.PathLike | None = None,
    arch: str | None = None,
    out: str | os.PathLike = "export",
    calib_dir: str | os.PathLike = "calib",
    formats: Sequence[Format] = FORMATS,
    onnx_target: Literal["x86", "arm"] = "x86",
    scheme: Literal["affine", "ristretto"] = "affine",
    method: Literal["minmax", "percentile", "mse", "kl"] | None = None,
    bias_correction: bool | None = None,
    empirical_bias_correction: bool | None = None,
    adaptive_rounding: bool = True,
    equalize: float | None = None,
    weight_bits: int = 8,
    unsigned_activations: bool | None = None,
    per_channel_weights: bool | None = None,
    range_split: Sequence[str] | None = None,
    range_pieces: int | None = None,
    range_search: bool = False,
    input_size: int | None = None,
    resize: int | tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channel_order: Literal["RGB", "BGR"] | None = None,
    norm_scale: Literal[1, 255] | None = None,
    calibration_fraction: float = 1 / 3,
    calib_limit: int | None = None,
    eval_limit: int = 0,
    verify_images: int = 32,
    sqnr_images: int = 16,
    min_agreement: float | None = None,
    max_drop: float | None = None,
    sensitivity_images: int = 32,
    latency_runs: int = 60,
    download: bool = False,
    on_pass: OnPass | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Calibrate, quantize and export a SqueezeNet; return what was written and measured.

    `weights`: a known name (squeezenet1_0-dc, squeezenet1_0-torchvision, ...) or a .net,
    .pth/.pt (state_dict) or .caffemodel file; the class count comes from the weights and the
    architecture is told from their shapes unless `arch` names it (weights.ARCH_NAMES).
    Preprocessing follows the weights (torchvision: RGB, ImageNet mean/std, short side 256,
    crop 224; the released Caffe model: BGR minus mean, 256x256, crop 227); `input_size`,
    `resize`, `mean`, `std`, `norm_scale` override it (arch.override_preprocess) and are
    written into every file's metadata. `channel_order`: the order the written files take
    (default RGB, whatever the weights were trained with: conv1's input channels are reversed
    after quantization when they differ, export/channels.py).
    `calib_limit`: calibrate on at most this many of the calibration images, evenly spaced
    over them (default DEFAULT_CALIB_IMAGES, 96; 0: all); `eval_limit`: the first N evaluation
    images (0: all).
    `unsigned_activations` / `per_channel_weights`: ristretto's grids (pipeline.QuantizeOptions;
    None: on for ristretto, and must stay None for affine). `range_split`: Fire squeeze tensors
    carried in `range_pieces` int8 pieces (quant/range_split.py; None: fire2.squeeze in
    DEFAULT_RANGE_PIECES, () none);
    `range_search`: activation ranges shrunk where the logits gain on the calibration images (quant/range_search.py).
    `min_agreement` / `max_drop`: the accuracy-aware option (module doc), its CV on every
    calibration image, not only the `calib_limit` ones the files are calibrated on; `sensitivity_images`
    bounds the images each conv's sensitivity is measured on; `latency_runs` is the timed calls
    of each file per thread count for the latency cost.
    `on_pass(name, done, total)` reports progress; `on_warning(text)` hears each warning as it
    happens (they are also in the result). Never prints."""
    from . import paths
    from .data import split_calibration
    from .pipeline import QuantizeOptions

    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        if on_warning:
            on_warning(text)

    # ---- every option, before any slow work
    options = QuantizeOptions.make(scheme=scheme, method=method, bias_correction=bias_correction,
                                   equalize=equalize, empirical_bias_correction=empirical_bias_correction,
                                   weight_bits=weight_bits, adaptive_rounding=adaptive_rounding,
                                   unsigned_activations=unsigned_activations,
                                   per_channel_weights=per_channel_weights, range_split=range_split,
                                   range_pieces=range_pieces, range_search=range_search)
    formats = _check_formats(formats)
    from .export.onnx import as_target

    onnx_target = as_target(onnx_target)
    from .quant.sensitivity import AccuracyTarget, check_sensitivity_images

    target = AccuracyTarget.make(min_agreement=min_agreement, max_drop=max_drop)
    sensitivity_images = check_sensitivity_images(sensitivity_images)
    latency_runs = _check_count(latency_runs, "latency_runs", 1)
    verify_images = _check_count(verify_images, "verify_images", 1)
    sqnr_images = _check_count(sqnr_images, "sqnr_images", 0)
    calib_limit = DEFAULT_CALIB_IMAGES if calib_limit is None else _check_count(calib_limit, "calib_limit", 0)
    eval_limit = _check_count(eval_limit, "eval_limit", 0)
    out_dir, calib_out = _out_dir(out, "output folder"), _out_dir(calib_dir, "folder for the quantization parameters")
    if images is not None and (calib_images is not None or eval_images is not None):
        raise OptionError("give either images (one set, split into calibration and evaluation by file name) "
                          "or calib_images and eval_images (two sets), not both")
    if eval_images is not None and calib_images is None:
        raise OptionError("eval_images needs calib_images too (the images to calibrate on)")
    stages = _Stages()

    # ---- the model: weights, class count, architecture, preprocessing
    paths.ensure_weights_env()
    loaded = stages.run("read weights", lambda: _read_weights(weights, arch, download))
    arch_source = "named" if arch is not None else ("told from the weights" if loaded.alternatives or
                                                     loaded.format == "state-dict" else "of the weights")
    if loaded.alternatives:
        arch_source += (f"; {' or '.join(loaded.alternatives)} would look the same (a simple bypass adds no "
                        f"weights): name it with arch=/--arch if so")
    model_arch = _with_preprocess(loaded.arch, input_size=input_size, resize=resize, mean=mean, std=std,
                                  norm_scale=norm_scale)
    from .arch import DEFAULT_FILE_CHANNEL_ORDER, with_channel_order

    file_order = channel_order or DEFAULT_FILE_CHANNEL_ORDER
    with_channel_order(model_arch, loaded.params, file_order)  # checks the option before any slow work
    n = model_arch.num_classes

    # ---- images and class names, checked against the model before any slow work
    if images is None and calib_images is None:
        images = paths.default_labels_csv()
    # ImageNet synset ids label images only for an ImageNet (1000-class) model, unless asked for
    words = Path(synset_words) if synset_words is not None else (paths.default_synset_words() if n == 1000 else None)
    if images is not None:
        whole = _open(images, words)
        calib, evals = split_calibration(list(whole.items), calibration_fraction=calibration_fraction)
        sets = [whole]
    else:
        cset = _open(calib_images, words)
        calib = list(cset.items)
        sets = [cset]
        evals = []
        if eval_images is not None:
            eset = _open(eval_images, words)
            evals = list(eset.items)
            sets.append(eset)
            overlap = {i.path.resolve() for i in calib} & {i.path.resolve() for i in evals}
            if overlap:
                raise DataError(f"{len(overlap)} image(s) are in both the calibration and the evaluation set "
                                f"(e.g. {sorted(overlap)[0]}); calibration and evaluation images must be disjoint")
        else:
            warn("no evaluation images (eval_images / --eval-images): the files are verified against the "
                 "integer reference, but no accuracy is measured")
    if evals:
        sets[-1].check_labels(n)  # the evaluation images' labels must be classes of the model (calibration needs none)
    names, labels_source = _class_names(labels, synset_words, sets, n, default_words=words)
    if labels_source == "generated":
        warn(f"no class names: the files name the {n} classes class_0 ... class_{n - 1}; pass a labels file "
             "(one name per line, labels=/--labels)")
    # the files are calibrated on `calib_limit` of the calibration images; the accuracy-aware
    # CV runs on all of them: it measures whole images, so twice the images halve its step
    cv_items = list(calib)
    chosen = evenly_spaced(range(len(cv_items)), calib_limit or len(cv_items))
    calib = [cv_items[i] for i in chosen]
    evals = evals[:eval_limit] if eval_limit else evals
    if not calib:
        raise DataError("no calibration images selected; give more images or a larger calibration fraction")
    if target is not None and len(cv_items) < 4:
        raise DataError(f"min_agreement/max_drop choose convs by 2-fold CV on the calibration images, which needs at "
                        f"least 4 of them ({len(cv_items)} found)")
    if target is not None and target.max_drop is not None and not all(i.label >= 0 for i in cv_items):
        unl = sum(1 for i in cv_items if i.label < 0)
        raise DataError(f"max_drop needs a label on every calibration image ({unl} of {len(cv_items)} have none: the "
                        "CV measures the top-1 drop on them); give labelled images, or use min_agreement, which "
                        "needs none")
    labelled = bool(evals) and all(i.label >= 0 for i in evals)
    out_dir.mkdir(parents=True, exist_ok=True)
    calib_out.mkdir(parents=True, exist_ok=True)

    # ---- calibrate and quantize
    from .model import SqueezeNet
    from .pipeline import calibrate_and_quantize

    model = SqueezeNet.from_params(model_arch, loaded.params)
    calib_pixels = cv_pixels = None
    if target is not None:  # decoded once for the CV and the calibration
        cv_pixels = stages.run("read calibration images", lambda: _pixels(
            cv_items, model_arch.preprocess, on_pass, "read calibration images"))
        # a copy only when the files are calibrated on fewer images than the CV runs on
        calib_pixels = cv_pixels if len(chosen) == len(cv_items) else cv_pixels[chosen]
    qm, _, quantized_fp32 = stages.run("calibrate and quantize", lambda: calibrate_and_quantize(
        model, calib, options, labels=names, on_pass=on_pass,
        **({} if calib_pixels is None else {"pixels": calib_pixels})))
    search = None
    if target is not None:
        from .quant.sensitivity import search_float_convs

        search = stages.run("choose float convs (CV)", lambda: search_float_convs(
            model, cv_items, cv_pixels, options, target, sensitivity_images=sensitivity_images, on_pass=on_pass))
    # calibrated in the weights' own channel order, then turned to the files' order: conv1's
    # input channels reversed, every other parameter the same (export/channels.py)
    from .export.channels import quantized_with_channel_order

    qm = quantized_with_channel_order(qm, file_order)
    model_arch, turned = with_channel_order(model_arch, model.numpy_params(), file_order)
    if model_arch is not model.arch:
        model = SqueezeNet.from_params(model_arch, turned)
        quantized_fp32 = SqueezeNet.from_params(*with_channel_order(
            quantized_fp32.arch, quantized_fp32.numpy_params(), file_order))
    if search is not None and search.float_convs:
        from .quant.quantize import float_conv_weights, with_float_convs

        qm = with_float_convs(qm, search.float_convs, float_conv_weights(
            quantized_fp32.arch, quantized_fp32.numpy_params(), search.float_convs))
    stem = f"{model_arch.name}-{options.scheme.value}" + (f"-w{options.weight_bits}" if options.weight_bits != 8 else "")
    if search is not None:  # beside the all-integer files, not over them
        stem += f"-fp{len(search.float_convs)}"
    qjson, _ = qm.save(calib_out / stem)

    # ---- images for verification and evaluation, decoded once
    pixels = stages.run("read evaluation images", lambda: _pixels(evals, model_arch.preprocess, on_pass, "read evaluation images"))
    verify = pixels[:verify_images] if len(pixels) else _pixels(calib[:verify_images], model_arch.preprocess, None, "")

    # ---- export: every INT8 file verified against the integer reference before it is in place
    files = stages.run("export", lambda: _export(model_arch, model, qm, names, formats, onnx_target, out_dir, stem,
                                                 verify))
    mixed = None
    if search is not None:
        latency = ()
        if search.float_convs:
            latency = stages.run("latency cost", lambda: latency_cost(qm, files, onnx_target, latency_runs, on_pass))
        mixed = MixedPrecision(search, latency)

    # ---- accuracy through the written INT8 file (it equals the integer reference: verified above)
    evaluation = None
    if len(pixels):
        evaluation = stages.run("evaluate", lambda: _evaluate(model, files, pixels, evals, labelled, on_pass))
    sq: dict[str, float] = {}
    if sqnr_images and evals:
        from .evaluate import per_layer_sqnr
        from .exact_conv import ExactFloat32Conv

        k = min(sqnr_images, len(evals))
        sq = stages.run("per-layer SQNR", lambda: per_layer_sqnr(
            quantized_fp32, qm, evals[:k], batch_size=4, pixels=pixels[:k], conv_kernel=ExactFloat32Conv()))

    report_path = out_dir / f"{stem}-report.json"
    result = QuantizeResult(
        arch=model_arch.name, num_classes=n, labels=tuple(names), labels_source=labels_source,
        arch_source=arch_source,
        preprocess=model_arch.preprocess, options=options, calibration_images=len(calib), files=tuple(files),
        qparams=Path(qjson), report=report_path, evaluation=evaluation, sqnr_db=sq, stages=tuple(stages.done),
        warnings=tuple(warnings), mixed_precision=mixed)
    write_report(result, weights, [s.source for s in sets])
    return result


def evenly_spaced(items: Sequence, n: int) -> list:
    """At most n of the items, spread evenly over the list (which is in file-name order, so over
    the classes of a synset-named set): item (i * len) // n for i < n."""
    items = list(items)
    if n >= len(items):
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


def _read_weights(weights, arch, download):
    from .weights import read_weights

    return read_weights(weights, arch=arch, download=download)


def _with_preprocess(arch: Arch, **overrides) -> Arch:
    given = {k: v for k, v in overrides.items() if v is not None and k != "norm_scale"}
    if not given:
        return arch
    pre = override_preprocess(arch.preprocess, **given, norm_scale=overrides.get("norm_scale"))
    out = arch.with_preprocess(pre)
    if not all(c > 0 and h > 0 for c, h, _ in out.shapes().values()):
        raise OptionError(f"input size {pre.crop} is too small for {arch.name}: a layer would have no pixels left; "
                          "use a larger input_size/--input-size")
    return out


def _open(source, words):
    from .imagesets import open_images

    return open_images(source, synset_words=words)


def _class_names(labels, synset_words, sets, n: int, *, default_words) -> tuple[tuple[str, ...], str]:
    """(names, where they came from); a count that differs from the model's outputs is an error."""
    from .data import read_class_names
    from .imagesets import read_label_lines

    if labels is not None:
        if isinstance(labels, (str, os.PathLike)):
            names, source = read_label_lines(labels), str(labels)
        else:
            names, source = tuple(str(s) for s in labels), "given list"
            bad = [k for k, s in enumerate(names) if not s.strip() or "\n" in s or "\r" in s]
            if bad:
                raise DataError(f"class name {bad[0]} ({names[bad[0]]!r}) is empty or holds a line break; a labels "
                                "file is one name per line, so every name must be one non-empty line")
        if len(names) != n:
            raise DataError(f"{source}: {len(names)} class names, but the model gives {n} classes; give one name "
                            f"per line for each of the {n} classes, in class-index order")
        return tuple(names), source
    if synset_words is not None:
        names = tuple(read_class_names(synset_words))
        if len(names) != n:
            raise DataError(f"{synset_words}: {len(names)} class names, but the model gives {n} classes; "
                            f"give a labels file with {n} lines")
        return names, str(synset_words)
    for s in sets:
        carried = s.names_for(n)
        if carried is not None:
            return tuple(carried), f"{s.source} ({s.layout.value})"
    if n == 1000 and default_words is not None:  # an ImageNet-1k model
        return tuple(read_class_names(default_words)), str(default_words)
    return tuple(f"class_{i}" for i in range(n)), "generated"


def _pixels(items, pre: Preprocess, on_pass: OnPass | None, name: str) -> np.ndarray:
    """The images decoded once, as the models take them (calibrate.pixel_batches)."""
    from .calibrate import pixel_batches

    out = np.empty((len(items), pre.crop, pre.crop, 3), np.uint8)
    done = 0
    for batch in pixel_batches(items, pre, 32, store=out):
        if on_pass:
            on_pass(name, done, len(items))
        done += len(batch)
    if on_pass and len(items):
        on_pass(name, len(items), len(items))
    return out


def _export(arch, model, qm, names, formats, target, out_dir: Path, stem: str, verify) -> list[WrittenFile]:
    from .formats.metadata import ModelMetadata

    meta_fp32 = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=tuple(names), scheme="fp32")
    files: list[WrittenFile] = []
    params = model.numpy_params()
    if "onnx" in formats:
        from .export.onnx import to_onnx, to_onnx_fp32

        p = to_onnx_fp32(arch, params, out_dir / f"{arch.name}-fp32.onnx", metadata=meta_fp32)
        files.append(WrittenFile(p, p.stat().st_size, "onnx", "fp32", "fp32"))
        r = to_onnx(qm, out_dir / f"{stem}-int8.onnx", target=target, verify_images=verify)
        files.append(WrittenFile(r.path, r.bytes, "onnx", "int8", f"int8{_floats(qm)} ({target.value})", r.lsb_match,
                                 r.top1_agreement))
    if "tflite" in formats:
        from .export.tflite import to_tflite, to_tflite_fp32

        r = to_tflite_fp32(arch, params, out_dir / f"{arch.name}-fp32.tflite", metadata=meta_fp32)
        files.append(WrittenFile(r.path, r.bytes, "tflite", "fp32", "fp32"))
        r = to_tflite(qm, out_dir / f"{stem}-int8.tflite", verify_images=verify)
        files.append(WrittenFile(r.path, r.bytes, "tflite", "int8", f"int8{_floats(qm)}", r.lsb_match,
                                 r.top1_agreement))
    return files


def _floats(qm) -> str:
    n = len(qm.float_convs)
    return f" + {n} float conv{'s' if n != 1 else ''}" if n else ""


def _evaluate(model, files, pixels: np.ndarray, evals, labelled: bool, on_pass: OnPass | None) -> Evaluation:
    """FP32 (the FP32 ONNX file when it was written, else torch) and the INT8 file (its
    runtime: ONNX first, it runs a batch at once) on the same decoded pixels."""
    from .evaluate import compare, fp32_logits
    from .metrics import accuracy
    from .runtime import Classifier

    labels = np.array([i.label for i in evals])
    batch = 8  # memory grows with the batch (v1.0's conv1 output is 4.7 MB per image in float32)
    done = [0]

    def fp32_progress(n: int) -> None:
        done[0] += n
        if on_pass:
            on_pass("evaluate fp32", done[0], len(pixels))

    fp32_onnx = [f for f in files if f.kind == "fp32" and f.format == "onnx"]
    if fp32_onnx:
        # the written FP32 file in onnxruntime: 2-3x faster than torch here (64 images: 2.3 s
        # against 4.7-7.2 s, AMD EPYC, 2 cores), its logits torch's within 1e-4 (a test checks).
        # One image a call: onnxruntime's arena keeps the largest batch's activations (measured
        # +60 MB at 1 image, +156 MB at 8), and the job's peak memory is this stage's
        ref = Classifier.load(fp32_onnx[0].path)
        parts = []
        for k in range(len(pixels)):
            parts.append(ref.logits(pixels[k:k + 1]))
            fp32_progress(len(parts[-1]))
        fp_scores = np.concatenate(parts)
        del ref  # its session's arena goes before the INT8 session is made
    else:
        fp_scores = fp32_logits(model, pixels, batch_size=batch, progress=fp32_progress)
    int8 = sorted((f for f in files if f.kind == "int8"), key=lambda f: f.format != "onnx")[0]
    clf = Classifier.load(int8.path)
    name = f"int8 ({int8.path.name})"
    q = []
    for k in range(0, len(pixels), batch):
        if on_pass:
            on_pass(f"evaluate {int8.path.name}", k, len(pixels))
        q.append(clf.logits(pixels[k:k + batch]))
    if on_pass:
        on_pass(f"evaluate {int8.path.name}", len(pixels), len(pixels))
    base = accuracy("fp32", fp_scores, labels)
    if clf.logits_kind != "logits":  # a .tflite gives log-probabilities: compare like with like
        from .runtime import log_probabilities

        fp_scores = log_probabilities(fp_scores)
    c = compare(name, np.concatenate(q), fp_scores, labels, base)
    return Evaluation(len(pixels), labelled, base, c, int8.path, f"{clf.backend.value} {clf.runtime_version}")


__all__ = ["Evaluation", "Latency", "MixedPrecision", "QuantizeResult", "Stage", "WrittenFile", "quantize"]
