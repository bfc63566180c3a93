"""Weights -> calibration -> QuantizedModel, the steps `edgesqueeze quantize` runs (torch).

    qm, stats, quantized_fp32_model = calibrate_and_quantize(model, calibration_items, QuantizeOptions.make(...))

The passes over the calibration images, as `on_pass(name, images_done, images_total)` names them:

- "statistics": the FP32 model as given. With equalization it keeps only what equalization
  needs, the per-channel maxima of the rescaled tensors (calibrate.ChannelMaxima); without, it
  is the pass below.
- "statistics (equalized)": the FP32 model being quantized (after equalization, the equalized
  one): every tensor's statistics (calibrate.StatsCollector) and, when adaptive rounding or
  empirical bias correction is on, in the same forward passes its conv inputs
  (ConvInputObserver: pre-ReLU means, patch moments); the name then reads "statistics and conv
  inputs (equalized)" ("statistics and conv inputs" without equalization).
- "empirical bias correction": the integer model, layer by layer over all images
  (quant/empirical.py, its convolutions on torch's float32 kernels with the integer reference's
  results: exact_conv.py); its count is the integer work done, in images' worth of it.

Each image is decoded once, in the first pass, and its uint8 pixels (N x S x S x 3: 30 MB for
194 images of v1.0) serve every later pass; `pixels=` skips the decoding altogether.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .calibrate import (DEFAULT_BINS, ChannelMaxima, Method, Scratch, StatsCollector, as_method, channel_sums, check_pixels,
                        choose_range, pixel_batches)
from .conv_moments import ConvGeometry, TensorPatchMoments
from .exact_conv import ExactFloat32Conv
from .graph import INPUT, OpKind, lower
from .data import DEFAULT_CALIBRATION_FRACTION, SPLIT_SALT, LabelledImage, normalize
from .errors import DataError, OptionError
from .quant.params import QuantizedModel, Scheme, parse_enum
from .quant.rounding import PatchMoments
from .model import SqueezeNet
from .quant.empirical import empirical_bias_correction
from .quant.equalize import DEFAULT_EQUALIZE, equalization_pairs, equalize
from .quant.quantize import check_weight_bits, qparams_rule, quantize_model
from .quant.range_split import DEFAULT_RANGE_PIECES, check_pieces, clamped, split_squeeze, splittable
from .quant.reconstruct import DEFAULT_ITERATIONS as RECONSTRUCTION_ITERATIONS, reconstruct

# the affine default: fire2's squeeze output, which carries about half of the logit error of the
# released v1.0 (benchmarks/noise_budget.py); every SqueezeNet here numbers its Fires from 2
DEFAULT_RANGE_SPLIT = ("fire2.squeeze",)
PASS_STATISTICS = "statistics"
MAXIMA_BATCH = 8  # images per forward pass of the first pass when it only keeps channel maxima
PASS_EMPIRICAL = "empirical bias correction"
PASS_RECONSTRUCTION = "block reconstruction"
OnPass = Callable[[str, int, int], None]
_libc = None


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim; nothing elsewhere).
    A forward pass frees tens of 1-30 MB tensors per batch, which glibc keeps in its heap, so
    each pass would start on the last one's leftovers. Called between passes, not per batch:
    a page handed back is faulted in again when it is reused, and on a VM whose balloon reports
    free pages to the host (this one does: virtio-balloon with free page reporting) that fault
    is served by the host."""
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)

MIN_CALIBRATION_IMAGES = {Method.MINMAX: 1, Method.PERCENTILE: 8, Method.MSE: 8, Method.KL: 8}


@dataclass(frozen=True)
class QuantizeOptions:
    scheme: Scheme = Scheme.AFFINE
    method: Method = Method.MINMAX
    bias_correction: bool = True
    percentile: float = 99.99
    equalize: float = DEFAULT_EQUALIZE  # cross-layer activation equalization strength; 0 = off
    empirical_bias_correction: bool = True  # quant/empirical.py, after the analytic correction
    weight_bits: int = 8  # weight grid ±(2^(b-1)-1) in int8 (quant/quantize.py); fewer levels: a smaller bundle
    adaptive_rounding: bool = True  # quant/rounding.py: weights rounded for the layer's output error
    reconstruction: bool = False  # quant/reconstruct.py: activation steps (and rounding) learned per block
    reconstruction_iterations: int = RECONSTRUCTION_ITERATIONS  # Adam steps per block
    reconstruction_rounding: bool = False  # reconstruction also learns the weight rounding (AdaRound)
    reconstruction_steps: bool = True  # reconstruction learns the activation step sizes (False: rounding only)
    range_search: bool = False  # quant/range_search.py: activation ranges shrunk where the logits gain
    equalize_per_layer: bool = False  # quant/eq_search.py: alpha per pair from EQ_ALPHAS (not `equalize`)
    unsigned_activations: bool = False  # ristretto: never-negative tensors without a sign bit
    per_channel_weights: bool = False  # ristretto: a power-of-two weight scale per output channel
    range_split: tuple[str, ...] = ()  # quant/range_split.py: Fire squeeze tensors carried in pieces
    range_pieces: int = DEFAULT_RANGE_PIECES  # how many pieces each of them is carried in

    @classmethod
    def make(cls, *, scheme: Scheme | str = Scheme.AFFINE, method: Method | str | None = None,
             bias_correction: bool | None = None, percentile: float = 99.99,
             equalize: float | None = None, empirical_bias_correction: bool | None = None,
             weight_bits: int = 8, adaptive_rounding: bool = True, reconstruction: bool = False,
             reconstruction_iterations: int = RECONSTRUCTION_ITERATIONS,
             reconstruction_rounding: bool = False, reconstruction_steps: bool = True,
             range_search: bool = False, equalize_per_layer: bool = False, unsigned_activations: bool | None = None,
             per_channel_weights: bool | None = None,
             range_split: Sequence[str] | None = None,
             range_pieces: int | None = None) -> "QuantizeOptions":
        """Checked once on entry: unknown names raise OptionError listing the allowed ones.

        Defaults per scheme (None), chosen by two-fold cross-validation on the calibration
        split alone — calibrate on one half, measure the logits' SQNR against FP32 on the
        other — never on the evaluation images (README, "How the defaults were chosen"):
        - affine: min/max ranges, bias correction, equalization 0.5, empirical bias correction,
          fire2's squeeze output in 2 pieces (CV: 30.06 dB; 28.42 dB without the range split);
        - ristretto: KL ranges, unsigned never-negative tensors, a weight shift per output
          channel, bias correction and empirical bias correction, equalization 0.5 with
          power-of-two-friendly factors, fire2's squeeze output in 2 pieces (CV: 29.93 dB;
          27.1 dB without equalization and the split, 21.3 dB also with signed tensors and one
          weight shift per layer).
        Turning `bias_correction` off turns the empirical correction off too unless it is asked
        for explicitly. `weight_bits` (4..8, default 8): fewer weight levels for a smaller update
        bundle, at the accuracy cost the README's "Update bundle" table measures.
        `adaptive_rounding` (on by default, both schemes): each weight rounded up or down to
        lower its conv's output error on the calibration patches (quant/rounding.py; README
        "Adaptive rounding").
        `reconstruction` (off by default): after the ranges and the rounding are chosen, each
        block (conv1, each Fire module, conv10) fed its real quantized input learns its
        activation step sizes against the FP32 block output, `reconstruction_iterations` Adam
        steps per block; `reconstruction_rounding` also learns each weight's rounding
        (quant/reconstruct.py); `reconstruction_steps=False` keeps calibration's steps, so only
        the rounding is learned (with `reconstruction_rounding`; the one form that combines with
        a range split). Empirical bias correction, when on, runs after it.
        `range_search` (off): after calibration, each activation range is shrunk by the factor
        that raises the logit SQNR against FP32 on the calibration images (at most
        range_search.DEFAULT_SEARCH_IMAGES; quant/range_search.py). `equalize_per_layer` (off): each equalization pair takes the
        strength of quant/eq_search.EQ_ALPHAS that leaves the least error at its consumers,
        instead of the one `equalize` strength (which must then be > 0 to equalize at all).
        `unsigned_activations` and `per_channel_weights` (ristretto only; default on): a tensor
        that is never negative spends no bit on a sign (quant.quantize.power_of_two_qparams),
        and each output channel's weights take their own power of two. Off, both, is Ristretto
        as published: signed activations, one weight scale per layer.
        `range_split`: Fire squeeze outputs carried in `range_pieces` (2..4) pieces of an equal
        share of the range each, for 1/pieces^2 of their rounding noise at the cost of up to
        pieces - 1 extra channels per channel (quant/range_split.py); not with reconstruction
        that learns step sizes. Default (None): DEFAULT_RANGE_SPLIT (docs/quantization.md, "Range
        splitting") unless reconstruction learns step sizes, then none; () turns it off.
        `range_pieces` None: DEFAULT_RANGE_PIECES."""
        scheme = parse_enum(Scheme, scheme, "scheme")
        ristretto = scheme is Scheme.RISTRETTO
        for opt, value in (("unsigned_activations", unsigned_activations), ("per_channel_weights", per_channel_weights)):
            if not ristretto and value is not None:
                raise OptionError(f"{opt}={value!r} is an option of the ristretto scheme; leave it unset for "
                                  "affine (its activations use all 256 levels and its weights are per channel)")
        learns_steps = bool(reconstruction) and bool(reconstruction_steps)
        if reconstruction and not reconstruction_steps and not reconstruction_rounding:
            raise OptionError("reconstruction with reconstruction_steps=False and reconstruction_rounding=False has "
                              "nothing to learn; set reconstruction_rounding=True (the rounding alone is learned)")
        if range_split is None:
            range_split = () if learns_steps else DEFAULT_RANGE_SPLIT
        if isinstance(range_split, str) or not all(isinstance(t, str) for t in range_split):
            raise OptionError(f"range_split={range_split!r} must be a sequence of tensor names, e.g. "
                              "('fire2.squeeze',)")
        range_split = tuple(dict.fromkeys(range_split))
        if range_split and learns_steps:
            raise OptionError(f"range_split={range_split!r} cannot be combined with reconstruction that learns step "
                              "sizes: the split tensor's grid must end exactly at its clamp, which learned steps "
                              "cannot keep; set reconstruction_steps=False (the rounding alone is learned), or "
                              "drop range_split or reconstruction")
        unsigned_activations = ristretto if unsigned_activations is None else bool(unsigned_activations)
        per_channel_weights = ristretto if per_channel_weights is None else bool(per_channel_weights)
        if method is None:
            method = Method.MINMAX if scheme is Scheme.AFFINE else Method.KL
        if bias_correction is None:
            bias_correction = True
        if equalize is None:
            equalize = DEFAULT_EQUALIZE
        if empirical_bias_correction is None:
            empirical_bias_correction = bool(bias_correction)
        if not 0.0 <= float(equalize) <= 1.0:
            raise OptionError(f"equalize={equalize} must lie in [0, 1] (0 turns it off)")
        if isinstance(reconstruction_iterations, bool) or not isinstance(reconstruction_iterations, int) \
                or reconstruction_iterations < 1:
            raise OptionError(f"reconstruction_iterations={reconstruction_iterations!r} must be a positive integer")
        return cls(scheme, as_method(method), bool(bias_correction), float(percentile), float(equalize),
                   bool(empirical_bias_correction), weight_bits=check_weight_bits(weight_bits),
                   adaptive_rounding=bool(adaptive_rounding), reconstruction=bool(reconstruction),
                   reconstruction_iterations=reconstruction_iterations,
                   reconstruction_rounding=bool(reconstruction_rounding),
                   reconstruction_steps=bool(reconstruction_steps), range_search=bool(range_search),
                   equalize_per_layer=bool(equalize_per_layer), unsigned_activations=unsigned_activations,
                   per_channel_weights=per_channel_weights, range_split=range_split,
                   range_pieces=check_pieces(DEFAULT_RANGE_PIECES if range_pieces is None else range_pieces))


def quantize_from_stats(model, stats, options: QuantizeOptions, *, labels: Sequence[str] = (),
                        calibration: dict | None = None,
                        patch_moments: dict[str, PatchMoments] | None = None) -> QuantizedModel:
    """Quantize `model`'s weights with the ranges `options` chooses from `stats` (which must be
    statistics of this very model: after equalization, of the equalized one). With
    `options.adaptive_rounding`, `patch_moments` (conv_input_statistics, of this model) are
    required."""
    if options.adaptive_rounding and patch_moments is None:
        raise OptionError("adaptive rounding needs the conv input patch moments "
                          "(pipeline.conv_input_statistics of this model); pass them or set adaptive_rounding=False")
    pow2 = options.scheme is Scheme.RISTRETTO
    ranges = {n: choose_range(s, options.method, percentile=options.percentile, power_of_two=pow2,
                              unsigned=options.unsigned_activations)
              for n, s in stats.items()}
    means = ({n: s.channel_mean for n, s in stats.items() if s.channel_mean is not None}
             if options.bias_correction else None)
    for t, clip in clamped(model.arch).items():  # a range-split squeeze's grid ends exactly at its clamp
        ranges[t] = (0.0, float(clip))
    info = {"method": options.method.value, "bias_correction": options.bias_correction,
            "equalize": options.equalize, "empirical_bias_correction": False, "weight_bits": options.weight_bits,
            "adaptive_rounding": options.adaptive_rounding,
            "ranges": {n: list(r) for n, r in ranges.items()}, **(calibration or {})}
    return quantize_model(model.arch, model.numpy_params(), ranges, scheme=options.scheme,
                          labels=tuple(labels), calibration=info, channel_means=means,
                          weight_bits=options.weight_bits,
                          patch_moments=patch_moments if options.adaptive_rounding else None,
                          unsigned_activations=options.unsigned_activations,
                          per_channel_weights=options.per_channel_weights)


def split_grid_top(options: QuantizeOptions):
    """None for affine (a range split's T is max / 2 exactly), else hi -> the top of the power-of-two
    grid ristretto gives [0, hi]: requantization clamps there, so that is where T must be."""
    if options.scheme is not Scheme.RISTRETTO:
        return None
    rule = qparams_rule(options.scheme, unsigned=options.unsigned_activations)

    def top(hi: float) -> float:
        q = rule(0.0, hi)
        return float((127 - q.zero_point) * q.scale)
    return top


def pass_name(*, equalized: bool, conv_inputs: bool) -> str:
    """The name on_pass gives an FP32 statistics pass (module doc)."""
    return PASS_STATISTICS + (" and conv inputs" if conv_inputs else "") + (" (equalized)" if equalized else "")


def calibrate_and_quantize(model, items: Sequence[LabelledImage], options: QuantizeOptions, *,
                           labels: Sequence[str] = (), batch_size: int = 32,
                           progress: Callable[[int], None] | None = None,
                           pixels: np.ndarray | None = None,
                           on_pass: OnPass | None = None):
    """(QuantizedModel, stats, fp32 model). `items` are the calibration images (never the
    evaluation ones). The returned FP32 model is the one that was quantized: after
    equalization its logits are the original's but its channels are rescaled, so per-layer
    comparisons (SQNR) must use it, not the original.

    `pixels`: the items already decoded (uint8 (N, S, S, 3), data.load_pixels); otherwise each
    is decoded once, in the first pass. `on_pass(name, images_done, images_total)`: called with
    images_done = 0 when a pass starts and after every batch (module doc for the names).
    `progress(n)`: the number of images of each batch of the FP32 statistics passes (two with
    equalization, else one). Peak memory: the FP32 activations of one batch (about 300 MB at
    batch 32 for v1.0), or the int8 activations of all images at two layers in the empirical
    pass, whichever is larger."""
    need = MIN_CALIBRATION_IMAGES[options.method]
    if len(items) < need:
        raise DataError(f"{len(items)} calibration image(s) is too few for method "
                        f"'{options.method.value}' (needs at least {need}); give more images or use --method minmax")
    if int(batch_size) < 1:
        raise OptionError(f"batch_size={batch_size} must be at least 1")
    if options.range_split:
        bad = [t for t in options.range_split if t not in splittable(model.arch)]
        if bad:
            raise OptionError(f"range_split {', '.join(map(repr, bad))} is not a Fire squeeze output of "
                              f"{model.arch.name}; choose among {', '.join(splittable(model.arch))}")
    items = list(items)
    count = len(items)
    pre = model.arch.preprocess
    store = None
    if pixels is not None:
        pixels = check_pixels(pixels, count, pre)
    else:  # filled by the first pass
        store = np.empty((count, pre.crop, pre.crop, 3), np.uint8)
    equalizing = options.equalize > 0 and bool(equalization_pairs(model.arch))
    conv_inputs = options.adaptive_rounding or options.empirical_bias_correction

    def run(name: str, net, tap, *, collector=None, observer=None, size: int = int(batch_size)) -> None:
        nonlocal pixels
        if on_pass is not None:
            on_pass(name, 0, count)
        done = 0
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), (observer or nullcontext()):
                for batch in pixel_batches(items, pre, size, pixels=pixels, store=store):
                    if observer is not None:
                        observer.next_batch()
                    x = torch.from_numpy(normalize(batch, pre))
                    if collector is not None:
                        collector.observe_input(x)
                    net(x, tap=tap)
                    done += len(batch)
                    if progress is not None:
                        progress(len(batch))
                    if on_pass is not None:
                        on_pass(name, done, count)
        finally:
            net.train(was_training)
        release_free_heap()
        if pixels is None:
            pixels = store

    if equalizing:
        # rescale channels with the first pass's per-channel maxima, then calibrate the
        # equalized model: its activation ranges are what gets quantized
        # maxima do not depend on how the images are batched: smaller batches, a quarter of
        # the activation memory at the default 32
        maxima = ChannelMaxima(tensor for tensor, _, _ in equalization_pairs(model.arch))
        run(PASS_STATISTICS, model, maxima.tap, size=min(int(batch_size), MAXIMA_BATCH))
        channel_max = maxima.result()
        alpha = options.equalize
        if options.equalize_per_layer:
            from .quant.eq_search import DEFAULT_EQ_IMAGES, choose_alphas

            alpha, _ = choose_alphas(model, pixels[:DEFAULT_EQ_IMAGES], channel_max,
                                     weight_bits=options.weight_bits)
        params, factors = equalize(model.arch, model.numpy_params(), channel_max, alpha=alpha,
                                   power_of_two=options.scheme is Scheme.RISTRETTO)
        model = SqueezeNet.from_params(model.arch, params)
        # ReLU commutes with the positive factors: the equalized model's channel maxima, exactly
        split_maxima = {t: channel_max[t] * factors[t] for t in options.range_split if t in factors}
    else:
        split_maxima = {}
    splits = []
    if options.range_split:
        missing = [t for t in options.range_split if t not in split_maxima]
        if missing:  # not an equalized pair (or no equalization): one pass for their maxima
            found = ChannelMaxima(missing)
            run(PASS_STATISTICS, model, found.tap, size=min(int(batch_size), MAXIMA_BATCH))
            split_maxima.update(found.result())
        for t in options.range_split:
            if not float(np.max(split_maxima[t])) > 0:  # never fires on these images: nothing to split
                splits.append({"tensor": t, "skipped": "never positive on the calibration images"})
                continue
            arch, params, record = split_squeeze(model.arch, model.numpy_params(), t, split_maxima[t],
                                                 pieces=options.range_pieces, grid_top=split_grid_top(options))
            model = SqueezeNet.from_params(arch, params)
            splits.append(record.to_dict())
    scratch = Scratch()  # the float64 temporaries of both, one set
    # min/max reads no histogram: skipping it saves a histc over every value of every tensor
    bins = 0 if options.method is Method.MINMAX else DEFAULT_BINS
    collector = StatsCollector(model.arch, bins, scratch=scratch)
    observer = ConvInputObserver(model, patches=options.adaptive_rounding, scratch=scratch) if conv_inputs else None
    run(pass_name(equalized=equalizing, conv_inputs=conv_inputs), model, collector.tap,
        collector=collector, observer=observer)
    stats = collector.stats()
    conv_stats = observer.result() if observer is not None else None
    del collector, observer, scratch
    release_free_heap()
    calibration = {"images": count,
                   "split": f"sha256('{SPLIT_SALT}' + name) < {DEFAULT_CALIBRATION_FRACTION:.4f}"}
    if splits:
        calibration["range_split"] = splits
    qm = quantize_from_stats(model, stats, options, labels=labels, calibration=calibration,
                             patch_moments=conv_stats.patch_moments if conv_stats else None)
    if options.reconstruction:
        release_free_heap()
        if on_pass is not None:
            on_pass(PASS_RECONSTRUCTION, 0, count)
        blocks_done = on_pass and (lambda done, total: on_pass(PASS_RECONSTRUCTION, done * count // total, count))
        qm, report = reconstruct(qm, model, pixels, iterations=options.reconstruction_iterations,
                                 learn_rounding=options.reconstruction_rounding,
                                 learn_steps=options.reconstruction_steps, progress=blocks_done or None)
        qm = replace(qm, calibration={**qm.calibration, "reconstruction": {
            "iterations": options.reconstruction_iterations, "rounding": options.reconstruction_rounding,
            "steps": options.reconstruction_steps,
            "block_sqnr_db": {k: round(v[-1], 2) for k, v in report.items()}}})

    def with_empirical_correction(qm):
        """qm after empirical bias correction, the pass reported to on_pass and recorded."""
        release_free_heap()
        if on_pass is not None:
            on_pass(PASS_EMPIRICAL, 0, count)
        shown = [0]

        def work(done: int, total: int) -> None:
            # the integer pass goes layer by layer: its count is the work done in images' worth,
            # reported when it grows
            images = done * count // max(total, 1)
            if on_pass is not None and images > shown[0]:
                shown[0] = images
                on_pass(PASS_EMPIRICAL, images, count)

        qm, shifts = empirical_bias_correction(qm, pixels, conv_stats.preactivation_means, progress=work,
                                               conv_kernel=ExactFloat32Conv())
        return replace(qm, calibration={**qm.calibration, "empirical_bias_correction": True,
                                        "empirical_shift_mean_acc_steps": {k: round(v, 2) for k, v in shifts.items()}})

    before_empirical = qm
    if options.empirical_bias_correction:
        qm = with_empirical_correction(qm)
    if options.range_search:
        from .evaluate import fp32_logits
        from .quant.range_search import DEFAULT_SEARCH_IMAGES, search_ranges, with_ranges

        # searched on the model as it stands (empirical correction included), then applied to
        # the model before that correction, which runs again for the new ranges
        sub = pixels[:DEFAULT_SEARCH_IMAGES]
        ranges, found = search_ranges(qm, sub, fp32_logits(model, sub), conv_kernel=ExactFloat32Conv())
        qm = with_ranges(before_empirical, ranges)
        if options.empirical_bias_correction:
            qm = with_empirical_correction(qm)
        qm = replace(qm, calibration={**qm.calibration, "range_search": found.to_dict()})
    return qm, stats, model


@dataclass(frozen=True)
class ConvStatistics:
    """What one FP32 pass over the calibration pixels gives the steps after calibration:
    per conv, the per-channel mean of its output before the ReLU (empirical bias correction)
    and the moments of its input patches (adaptive rounding)."""

    preactivation_means: dict[str, np.ndarray]
    patch_moments: dict[str, PatchMoments]


class ConvInputObserver:
    """Forward hooks on every conv of `model` that accumulate, batch by batch, what
    ConvStatistics holds: the per-channel sum of each conv's output before its ReLU (float64)
    and, with `patches`, the patch moments of each conv input tensor (conv_moments.py; the
    convs reading one tensor share them). Use as a context manager around the forward passes."""

    def __init__(self, model: SqueezeNet, *, patches: bool = True, scratch: Scratch | None = None):
        self.model, self.patches = model, patches
        pre = model.arch.preprocess
        self._input = INPUT
        # the folded conv1 sees raw pixels: x * std + mean of its normalised input
        self._affine = (torch.tensor(pre.std, dtype=torch.float64).view(1, -1, 1, 1),
                        torch.tensor(pre.mean, dtype=torch.float64).view(1, -1, 1, 1))
        self.source: dict[str, str] = {}
        readers: dict[str, dict] = {}
        for n in lower(model.arch):
            if n.kind is OpKind.CONV:
                self.source[n.name] = n.inputs[0]
                c = n.conv
                readers.setdefault(n.inputs[0], {})[n.name] = ConvGeometry((c.kernel, c.kernel), c.stride, c.pad)
        self.moments = {t: TensorPatchMoments(r) for t, r in readers.items()} if patches else {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._done: set[str] = set()  # tensors whose moments this batch already has
        self._handles = []
        self.scratch = scratch or Scratch()

    def __enter__(self) -> "ConvInputObserver":
        self._handles = [conv.register_forward_hook(self._hook(name)) for name, conv in self.model.named_convs()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def next_batch(self) -> None:
        self._done.clear()

    def _hook(self, name: str):
        def hook(conv, inputs, out):
            s = channel_sums(out, self.scratch)
            self.sums[name] = s if name not in self.sums else self.sums[name] + s
            self.counts[name] = self.counts.get(name, 0) + out.shape[0] * out.shape[2] * out.shape[3]
            src = self.source[name]
            if self.patches and src not in self._done:
                self._done.add(src)
                scale, shift = self._affine if src == self._input else (None, None)
                self.moments[src].update(inputs[0], scale=scale, shift=shift, scratch=self.scratch)
        return hook

    def result(self) -> ConvStatistics:
        means = {name: (self.sums[name] / self.counts[name]).numpy() for name in self.sums}
        moments = {}
        for m in self.moments.values():
            moments.update(m.moments())
        return ConvStatistics(means, {n: moments[n] for n in self.source if n in moments})


def conv_input_statistics(model: SqueezeNet, pixels: np.ndarray, *, batch_size: int = 32,
                          patches: bool = True) -> ConvStatistics:
    """One FP32 pass over uint8 pixels (N, S, S, 3). Pre-activation means include the padded
    border (what the integer model's accumulator holds). Patch moments are in the quantized
    conv's input units: conv1's in raw pixels (its input normalisation is folded, quantize.py),
    and in the OHWI order of its weights; `patches=False` skips them (empirical bias
    correction alone)."""
    pre = model.arch.preprocess
    was_training = model.training
    model.eval()
    try:
        with ConvInputObserver(model, patches=patches) as obs, torch.no_grad():
            for i in range(0, len(pixels), batch_size):
                obs.next_batch()
                model(torch.from_numpy(normalize(pixels[i:i + batch_size], pre)))
    finally:
        model.train(was_training)
    return obs.result()


def preactivation_means(model: SqueezeNet, pixels: np.ndarray, *, batch_size: int = 32) -> dict[str, np.ndarray]:
    """{conv name: per-channel mean of the conv's output before its ReLU} over uint8 pixels
    (N, S, S, 3), border included (what the integer model's accumulator holds)."""
    return conv_input_statistics(model, pixels, batch_size=batch_size, patches=False).preactivation_means
