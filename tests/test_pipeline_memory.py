"""The memory-lean forms of the calibration steps compute what the plain forms compute.

- the integer reference run chunk by chunk, pools, concats and the head fed chunk by chunk
  (reference._run) against a plain node-by-node run over the whole batch;
- empirical bias correction streamed (the accumulator means from tap sums, reference._run
  with before_conv) against the same correction computed from every accumulator of a layer.

Tiny SqueezeNets built in code (test_quant's), no shared data.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edgesqueeze.graph import INPUT, OpKind
from edgesqueeze.quant import kernels
from edgesqueeze.quant.empirical import empirical_bias_correction, tap_sums
from edgesqueeze.quant.quantize import quantize_model
from edgesqueeze.quant.reference import Requant, _run, conv_macs, pixels_to_int8, run_int8

from test_quant import minmax_ranges, smooth_pixels, tiny_arch, tiny_params


def node_by_node(qm, pixels, how=Requant.FLOAT32, fp32_means=None):
    """(logits, {tensor: int8}, convs, shifts): every node over the whole batch, every conv's
    int32 accumulators held at once. With `fp32_means`, each conv's bias is corrected from the
    mean of those accumulators before it is requantized (empirical bias correction)."""
    t = qm.tensors
    env = {INPUT: pixels_to_int8(pixels)}
    convs, shifts, logits = dict(qm.convs), {}, None
    for n in qm.nodes:
        if n.kind is OpKind.CONV:
            c = convs[n.name]
            p = n.conv.pad
            acc = kernels.conv2d_accumulate(env[n.inputs[0]], t[c.input].zero_point, c.weight, c.bias,
                                            stride=n.conv.stride, padding=(p, p, p, p)).astype(np.int64)
            if fp32_means is not None:
                count = acc.size // acc.shape[-1]
                acc_scale = np.float32(t[c.input].scale) * c.weight_scale.astype(np.float32)
                delta = np.rint(acc.sum(axis=(0, 1, 2)) / count
                                - fp32_means[n.name] / acc_scale.astype(np.float64)).astype(np.int64)
                acc -= delta
                c = convs[n.name] = replace(c, bias=(c.bias - delta).astype(np.int32))
                shifts[n.name] = float(np.abs(delta).mean())
            zp = t[n.name].zero_point
            qmin = max(zp, -128) if n.relu else -128
            if how is Requant.FLOAT32:
                env[n.name] = kernels.requantize_fp32(acc, c.real_multiplier(t), zp, qmin, 127, np.int8)
            else:
                mult, shift = kernels.quantize_multiplier(c.real_multiplier(t, dtype=np.float64))
                env[n.name] = kernels.requantize(acc, mult, shift, zp, qmin, 127, np.int8)
        elif n.kind is OpKind.MAXPOOL:
            env[n.name] = kernels.max_pool(env[n.inputs[0]], kernel=n.kernel, stride=n.stride, ceil_mode=n.ceil_mode)
        elif n.kind is OpKind.CONCAT:
            env[n.name] = np.concatenate([env[i] for i in n.inputs], axis=-1)
        elif n.kind is OpKind.ADD:
            a, b = (kernels.dequantize(env[i], t[i].scale, t[i].zero_point) for i in n.inputs)
            env[n.name] = kernels.quantize(a + b, t[n.name].scale, t[n.name].zero_point, np.int8)
        elif n.kind is OpKind.MEAN:
            src = n.inputs[0]
            q = env[src].astype(np.int64) - t[src].zero_point
            logits = (q.sum(axis=(1, 2)) * (t[src].scale / (q.shape[1] * q.shape[2]))).astype(np.float32)
    return logits, env, convs, shifts


def fp32_means_near(qm, pixels, seed):
    """Per-conv 'FP32' means a few accumulator steps away from the integer model's own, so the
    correction has something to correct."""
    rng = np.random.default_rng(seed)
    _, env, _, _ = node_by_node(qm, pixels)
    out = {}
    for n in qm.nodes:
        if n.kind is OpKind.CONV:
            c = qm.convs[n.name]
            p = n.conv.pad
            acc = kernels.conv2d_accumulate(env[n.inputs[0]], qm.tensors[c.input].zero_point, c.weight, c.bias,
                                            stride=n.conv.stride, padding=(p, p, p, p))
            step = np.float64(np.float32(qm.tensors[c.input].scale) * c.weight_scale)
            mean = acc.sum(axis=(0, 1, 2), dtype=np.int64) / (acc.size // acc.shape[-1])
            out[n.name] = (mean + rng.normal(0, 20, mean.shape)) * step
    return out


@pytest.fixture(scope="module", params=["none", "simple", "complex"])
def model(request):
    arch = tiny_arch(bypass=request.param)
    params = tiny_params(arch, seed=7)
    pixels = smooth_pixels(np.random.default_rng(8), 11, noise=6.0)
    return quantize_model(arch, params, minmax_ranges(arch, params, pixels)), pixels


@pytest.mark.parametrize("how", list(Requant))
@pytest.mark.parametrize("chunk", [None, 1, 4, 64])
def test_chunked_run_equals_node_by_node(model, how, chunk):
    qm, pixels = model
    logits, env, _, _ = node_by_node(qm, pixels, how)
    run = _run(qm, pixels, how, chunk=chunk)
    np.testing.assert_array_equal(run.logits, logits)
    kept = _run(qm, pixels, how, chunk=chunk, keep=True)
    np.testing.assert_array_equal(kept.logits, logits)
    assert set(kept.tensors) == set(env)
    for name, q in env.items():
        np.testing.assert_array_equal(kept.tensors[name], q, err_msg=name)


def test_progress_counts_every_multiply_accumulate(model):
    qm, pixels = model
    seen = []
    _run(qm, pixels, Requant.FLOAT32, chunk=3, progress=lambda done, total: seen.append((done, total)))
    macs = conv_macs(qm, pixels.shape)
    assert seen[-1] == (sum(macs.values()), sum(macs.values()))
    assert all(b[0] > a[0] for a, b in zip(seen, seen[1:]))
    # one call per chunk of every conv
    assert len(seen) == len(macs) * -(-len(pixels) // 3)


def test_tap_sums_are_the_accumulator_sums(model):
    qm, pixels = model
    _, env, _, _ = node_by_node(qm, pixels)
    for n in qm.nodes:
        if n.kind is not OpKind.CONV:
            continue
        c = qm.convs[n.name]
        x, zp = env[n.inputs[0]], qm.tensors[c.input].zero_point
        p = n.conv.pad
        acc = kernels.conv2d_accumulate(x, zp, c.weight, None, stride=n.conv.stride, padding=(p, p, p, p))
        o, kh, kw, _ = c.weight.shape
        taps = tap_sums(x, zp, (kh, kw), n.conv.stride, p, acc.shape[1:3])
        np.testing.assert_array_equal(c.weight.reshape(o, -1).astype(np.int64) @ taps.reshape(-1),
                                      acc.sum(axis=(0, 1, 2), dtype=np.int64), err_msg=n.name)


@pytest.mark.parametrize("stride,pad,size", [(1, 0, 9), (1, 1, 9), (2, 0, 9), (2, 0, 10), (2, 1, 10), (3, 2, 11)])
def test_tap_sums_strides_and_padding(stride, pad, size):
    rng = np.random.default_rng(stride * 10 + pad)
    x = rng.integers(-128, 128, (3, size, size, 2)).astype(np.int8)
    w = np.ones((1, 3, 3, 2), np.int8)
    for k in np.ndindex(3, 3, 2):  # one tap at a time: the accumulator sum is that tap's sum
        w1 = np.zeros_like(w)
        w1[(0, *k)] = 1
        acc = kernels.conv2d_accumulate(x, -5, w1, None, stride=stride, padding=(pad,) * 4)
        taps = tap_sums(x, -5, (3, 3), stride, pad, acc.shape[1:3])
        assert taps[k] == acc.sum(dtype=np.int64), k


@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_streamed_correction_equals_the_accumulator_form(model, chunk):
    qm, pixels = model
    fp = fp32_means_near(qm, pixels, seed=3)
    _, _, convs, shifts = node_by_node(qm, pixels, fp32_means=fp)
    fixed, got = empirical_bias_correction(qm, pixels, fp, chunk=chunk)
    assert got == shifts
    assert max(shifts.values()) > 5  # there was something to correct
    for name, c in convs.items():
        np.testing.assert_array_equal(fixed.convs[name].bias, c.bias, err_msg=name)
        np.testing.assert_array_equal(fixed.convs[name].weight, qm.convs[name].weight)
    np.testing.assert_array_equal(run_int8(fixed, pixels).logits, node_by_node(fixed, pixels)[0])


# ---------------------------------------------------------------- exact_conv (torch)


@pytest.mark.parametrize("chunk", [None, 3])
def test_float32_kernels_give_the_numpy_correction(model, chunk):
    pytest.importorskip("torch")
    from edgesqueeze.exact_conv import ExactFloat32Conv

    qm, pixels = model
    fp = fp32_means_near(qm, pixels, seed=5)
    a, sa = empirical_bias_correction(qm, pixels, fp, chunk=chunk)
    kernel = ExactFloat32Conv()
    b, sb = empirical_bias_correction(qm, pixels, fp, chunk=chunk, conv_kernel=kernel)
    assert sa == sb and not kernel.use_numpy
    assert kernel.checked == set(qm.convs)
    for name in a.convs:
        np.testing.assert_array_equal(a.convs[name].bias, b.convs[name].bias)
    np.testing.assert_array_equal(_run(qm, pixels, Requant.FLOAT32, conv_kernel=ExactFloat32Conv()).logits,
                                  run_int8(qm, pixels).logits)


def test_float32_kernels_split_wide_layers_into_exact_groups():
    """K * 255 * max|w| above 2^24 (here 9 * 2048 * 255 * 127) needs several channel groups;
    extreme inputs and weights make every partial sum as large as it can be."""
    torch = pytest.importorskip("torch")
    from edgesqueeze.arch import ConvSpec
    from edgesqueeze.exact_conv import ExactFloat32Conv
    from edgesqueeze.graph import Node
    from edgesqueeze.quant.params import QConv, QParams
    from edgesqueeze.quant.reference import Requantizer, int8_conv

    rng = np.random.default_rng(0)
    cin, cout = 2048, 4
    spec = ConvSpec("wide", cin, cout, kernel=3, stride=1, pad=1, relu=False)
    w = np.where(rng.random((cout, 3, 3, cin)) < 0.5, 127, -127).astype(np.int8)
    w[1] = 127  # one channel whose every product has the same sign
    x = np.full((2, 5, 5, cin), 127, np.int8)
    x[1] = rng.integers(-128, 128, (5, 5, cin))
    conv = QConv("wide", spec, w, np.full(cout, 1e-6, np.float32), np.zeros(cout, np.int32), "x", "wide")
    tensors = {"x": QParams(1.0, -128), "wide": QParams(1.0, 0)}
    requantize = Requantizer(conv, tensors, 0, -128, Requant.FLOAT32)
    node = Node(OpKind.CONV, "wide", ("x",), conv=spec)
    kernel = ExactFloat32Conv()
    np.testing.assert_array_equal(kernel._float32(x, node, conv, -128, requantize),
                                  int8_conv(x, node, conv, -128, requantize))


def test_a_float32_kernel_that_differs_hands_the_run_to_numpy(model, monkeypatch):
    pytest.importorskip("torch")
    from edgesqueeze.exact_conv import ExactFloat32Conv

    qm, pixels = model
    kernel = ExactFloat32Conv()
    monkeypatch.setattr(ExactFloat32Conv, "_float32", staticmethod(lambda x, *a: np.zeros((1,), np.int8)))
    np.testing.assert_array_equal(_run(qm, pixels, Requant.FLOAT32, conv_kernel=kernel).logits,
                                  run_int8(qm, pixels).logits)
    assert kernel.use_numpy


def test_without_ieee_float32_the_numpy_kernels_run(model):
    torch = pytest.importorskip("torch")
    from edgesqueeze.conv_moments import ConvGeometry, TensorPatchMoments
    from edgesqueeze.exact_conv import ExactFloat32Conv

    qm, pixels = model
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 15, 15)).astype(np.float32))
    fast = TensorPatchMoments({"conv1": ConvGeometry((7, 7), 2, 0)})
    fast.update(x)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # float32 products may now run in bfloat16
    try:
        kernel = ExactFloat32Conv()
        assert kernel.use_numpy
        np.testing.assert_array_equal(_run(qm, pixels, Requant.FLOAT32, conv_kernel=kernel).logits,
                                      run_int8(qm, pixels).logits)
        slow = TensorPatchMoments({"conv1": ConvGeometry((7, 7), 2, 0)})
        slow.update(x)  # float64 products: exact on integers as well
    finally:
        torch.set_float32_matmul_precision(old)
    np.testing.assert_array_equal(fast.moments()["conv1"].second, slow.moments()["conv1"].second)
