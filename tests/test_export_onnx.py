"""INT8 ONNX writer (QDQ) against the integer reference; FP32 writer still working.

Most tests use a tiny SqueezeNet built in code (35x35 input, 10 classes; no shared data);
the last two run the real Deep-Compression v1.0 on 64 evaluation images (marked `shared`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import replace

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgesqueeze.errors import DataError, OptionError  # noqa: E402
from edgesqueeze.export import onnx as xo  # noqa: E402
from edgesqueeze.export import onnx_graph as og  # noqa: E402
from edgesqueeze.export import onnx_verify as ov  # noqa: E402
from edgesqueeze.export.files import ExportError  # noqa: E402
from edgesqueeze.export.onnx import (  # noqa: E402
    ExportReport,
    NotQuantizedError,
    Target,
    build_int8_model,
    read_metadata,
    read_target,
    session_config,
    synthetic_images,
    to_onnx,
    to_onnx_fp32,
)
from edgesqueeze.graph import OpKind  # noqa: E402
from edgesqueeze.formats.metadata import METADATA_KEY, ModelMetadata  # noqa: E402
from edgesqueeze.quant.params import QParams  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.export.ops import max_score_diff  # noqa: E402
from edgesqueeze.quant.reference import run_int8, softmax  # noqa: E402
from test_quant import float_forward, minmax_ranges, tiny_arch, tiny_params  # noqa: E402

LABELS = tuple(f"class {i}" for i in range(10))
CALIBRATION = {"method": "minmax", "images": 6, "split": "synthetic", "bias_correction": False,
               "ranges": {"conv1": [0.0, 1.0]}}


def tiny_qm(bypass="none", scheme="affine"):
    arch = tiny_arch(bypass=bypass)
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    return quantize_model(arch, params, minmax_ranges(arch, params, calib), scheme=scheme,
                          labels=LABELS, calibration=CALIBRATION)


@pytest.fixture(scope="module")
def qm():
    return tiny_qm()


@pytest.fixture(scope="module")
def pixels():
    """Test images other than the writer's own synthetic verification set."""
    return np.random.default_rng(7).integers(0, 256, (12, 35, 35, 3), dtype=np.uint8)


def session(path, target):
    so = ort.SessionOptions()
    for k, v in session_config(target).items():
        so.add_session_config_entry(k, v)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def n_convs(qm):
    return sum(1 for n in qm.nodes if n.kind is OpKind.CONV)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# ---------------------------------------------------------------- the file and its numbers


@pytest.mark.parametrize("target", list(Target))
def test_int8_file_matches_reference(qm, pixels, tmp_path, target):
    path = tmp_path / f"tiny-{target.value}.onnx"
    rep = to_onnx(qm, path, target=target)
    assert isinstance(rep, ExportReport) and rep.path == path and rep.target is target
    assert path.is_file() and rep.bytes == path.stat().st_size
    assert rep.synthetic_images and rep.images == ov.SYNTHETIC_IMAGES
    assert rep.lsb_match >= 0.999 and rep.max_lsb_diff <= 1 and rep.top1_agreement == 1.0
    assert rep.integer_convs == n_convs(qm) == 26 and rep.float_convs == 0
    assert rep.ort_version == ort.__version__

    # the contract: uint8 NHWC "pixels" in, float32 "probability" and "logits" out
    sess = session(path, target)
    (inp,), outs = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("pixels", "tensor(uint8)", [35, 35, 3])
    assert [(o.name, o.type, o.shape[1:]) for o in outs] == [("probability", "tensor(float)", [10]),
                                                            ("logits", "tensor(float)", [10])]

    # independently of the writer's own check: other images, the file as written
    probs, logits = sess.run(None, {"pixels": pixels})
    ref = run_int8(qm, pixels, keep=True)
    s10 = qm.tensors["conv10"].scale
    assert (logits.argmax(1) == ref.logits.argmax(1)).all() and (probs.argmax(1) == ref.logits.argmax(1)).all()
    assert np.abs(logits - ref.logits).max() <= s10
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    hw = ref.tensors["conv10"].shape[1] * ref.tensors["conv10"].shape[2]
    assert np.abs(probs - ref.probabilities).max() <= max_score_diff(s10, hw)
    assert rep.max_score_diff <= max_score_diff(s10, hw)
    # the head tensor through the verification copy: <= 1 LSB, in the target's 8-bit type
    model = onnx.load(path)
    vcopy, head = ov._with_head_output(model, qm, target)
    got = ov._session(ort, vcopy, target=target).run([head], {"pixels": pixels})[0]
    assert got.dtype == (np.uint8 if target is Target.X86 else np.int8)
    want = ref.tensors["conv10"].astype(int) + (128 if target is Target.X86 else 0)
    assert np.abs(got.transpose(0, 2, 3, 1).astype(int) - want).max() <= 1


@pytest.mark.parametrize("target", list(Target))
def test_qdq_structure(qm, target):
    """QDQ from our parameters: per-channel weights, int32 biases with scale s_in * s_w,
    activations in the target's type with zero point + 128 for x86."""
    model = build_int8_model(qm, target=target)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    c = qm.convs["fire2.expand3x3"]
    w = inits["fire2.expand3x3.weight_quantized"]
    wzp = inits["fire2.expand3x3.weight_zero_point"]
    # x86: uint8 weights with zero point 128 (u8 x u8 is exact on every x86 CPU); arm: int8, zp 0
    assert w.dtype == wzp.dtype == (np.uint8 if target is Target.X86 else np.int8)
    assert np.array_equal(w.astype(int) - wzp.astype(int)[:, None, None, None], c.weight.transpose(0, 3, 1, 2))
    assert np.array_equal(inits["fire2.expand3x3.weight_scale"], c.weight_scale)
    b = inits["fire2.expand3x3.bias_quantized"]
    assert b.dtype == np.int32 and np.array_equal(b, c.bias)
    s_in = np.float32(qm.tensors[c.input].scale)
    assert np.array_equal(inits["fire2.expand3x3.bias_scale"], s_in * c.weight_scale.astype(np.float32))
    zp = inits["fire2.squeeze.zero_point"]
    assert zp.dtype == (np.uint8 if target is Target.X86 else np.int8)
    assert int(zp) == qm.tensors["fire2.squeeze"].zero_point + (128 if target is Target.X86 else 0)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 26 and ops.count("QuantizeLinear") >= 26
    # the head averages the 8-bit integers themselves (the one Cast; the input uses DQ)
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert [c.input[0] for c in casts] == [xo.head_tensor(qm)]
    assert ops[-6:] == ["Cast", "GlobalAveragePool", "Flatten", "Sub", "Mul", "Softmax"]
    pools = [n for n in model.graph.node if n.op_type == "MaxPool"]
    assert len(pools) == 3 and all(a.i == 1 for p in pools for a in p.attribute if a.name == "ceil_mode")
    assert model.graph.node[0].op_type == "Transpose" and model.graph.node[0].input[0] == "pixels"


def test_optimized_graph_runs_integer_convs(qm, tmp_path):
    """onnxruntime fuses DQ/Conv/Relu/Q into QLinearConv, Concat into QLinearConcat."""
    path = tmp_path / "x86.onnx"
    rep = to_onnx(qm, path)
    ops = dict(rep.optimized_ops)
    assert ops.get("QLinearConv") == 26 and "Conv" not in ops and "Relu" not in ops
    assert ops.get("QLinearConcat") == 8
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    n_int, n_float, _ = ov.optimized_conv_ops(onnx.load(tmp_path / "opt.onnx"))
    assert (n_int, n_float) == (26, 0)


@pytest.mark.skipif(platform.machine().lower() in ("aarch64", "arm64") or platform.machine().lower().startswith("arm"),
                    reason="on ARM onnxruntime allows int8 QLinearConv by default")
def test_arm_file_without_int8_flag_fails_the_integer_check_on_x86(qm, tmp_path, monkeypatch):
    """Why session_config exists: on x86, by default, onnxruntime leaves s8s8 convs as float
    Conv; the integer-op gate catches it and nothing is written."""
    monkeypatch.setattr(ov, "session_config", lambda target: {})
    path = tmp_path / "arm.onnx"
    with pytest.raises(ExportError, match=r"as float convs") as e:
        to_onnx(qm, path, target="arm")
    assert "of 26 convs as integer ops" in str(e.value)
    assert not path.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("bypass", ["simple", "complex"])
def test_bypass_add_exports_exactly(bypass, tmp_path):
    q = tiny_qm(bypass)
    rep = to_onnx(q, tmp_path / "b.onnx")
    adds = sum(1 for n in q.nodes if n.kind is OpKind.ADD)
    assert adds >= 4 and dict(rep.optimized_ops).get("QLinearAdd") == adds
    assert rep.max_lsb_diff <= 1 and rep.float_convs == 0 and rep.integer_convs == n_convs(q)


def test_relu_with_zero_point_above_qmin_and_ristretto(qm, tmp_path):
    """A ReLU conv whose zero point is not the type minimum cannot drop its Relu into the Q:
    it is written Conv -> Q -> DQ -> Relu -> Q, still exact, still an integer conv."""
    t = dict(qm.tensors)
    t["fire2.squeeze"] = QParams(t["fire2.squeeze"].scale, -100)
    shifted = replace(qm, tensors=t)
    rep = to_onnx(shifted, tmp_path / "zp.onnx", target="arm")
    assert rep.exact_match == 1.0 and rep.float_convs == 0 and rep.integer_convs == 26
    assert dict(rep.optimized_ops).get("Relu") == 1
    rist = tiny_qm(scheme="ristretto")
    rep = to_onnx(rist, tmp_path / "rist.onnx")
    assert rep.max_lsb_diff <= 1 and rep.float_convs == 0
    assert read_metadata(onnx.load(tmp_path / "rist.onnx")).scheme == "ristretto"


def test_metadata_round_trip(qm, tmp_path):
    path = tmp_path / "m.onnx"
    to_onnx(qm, path, target=Target.ARM)
    meta = read_metadata(onnx.load(path))
    assert meta.labels == LABELS and meta.input_size == 35 and meta.channel_order == "BGR"
    assert meta.scheme == "affine" and meta.input_dtype == "uint8" and meta.input_layout == "NHWC"
    assert meta.calibration == {"method": "minmax", "images": 6, "split": "synthetic", "bias_correction": False}
    assert read_target(onnx.load(path)) is Target.ARM
    props = session(path, Target.ARM).get_modelmeta().custom_metadata_map
    assert ModelMetadata.from_json(props[METADATA_KEY]).preprocess == qm.arch.preprocess
    assert props["labels"].split("\n") == list(LABELS)
    assert props[xo.TARGET_KEY] == "arm"


def test_fp32_writer_still_works(qm, pixels, tmp_path):
    arch = qm.arch
    params = tiny_params(arch)
    meta = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=LABELS)
    path = to_onnx_fp32(arch, params, tmp_path / "fp32.onnx", metadata=meta)
    p, y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixels": pixels})
    want = float_forward(arch, params, pixels)["logits"]
    assert np.abs(y - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert np.abs(p - softmax(want)).max() <= 1e-5


# ---------------------------------------------------------------- errors


def test_unsupported_ops_named_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(og, "INT8_SUPPORTED", frozenset({OpKind.CONV, OpKind.CONCAT, OpKind.MEAN}))
    q = tiny_qm("simple")
    path = tmp_path / "b.onnx"
    with pytest.raises(ExportError) as e:
        to_onnx(q, path)
    msg = str(e.value)
    for name in ("fire3.add (add)", "fire5.add (add)", "fire7.add (add)", "fire9.add (add)",
                 "pool1 (maxpool)", "pool4 (maxpool)", "pool8 (maxpool)"):
        assert name in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("thing", ["params", "arch", "torch"])
def test_not_a_quantized_model(qm, tmp_path, thing):
    if thing == "torch":
        torch = pytest.importorskip("torch")
        obj = torch.nn.Conv2d(3, 4, 1)
    else:
        obj = tiny_params(qm.arch) if thing == "params" else qm.arch
    with pytest.raises(NotQuantizedError, match="run the quantizer first") as e:
        to_onnx(obj, tmp_path / "x.onnx")
    assert isinstance(e.value, TypeError) and isinstance(e.value, ExportError)
    assert list(tmp_path.iterdir()) == []


def test_target_option(qm, tmp_path):
    with pytest.raises(OptionError, match=r"'x86', 'arm'") as e:
        to_onnx(qm, tmp_path / "x.onnx", target="riscv")
    assert "target='riscv'" in str(e.value)
    assert xo.as_target("ARM") is Target.ARM and xo.as_target(Target.X86) is Target.X86
    with pytest.raises(TypeError):
        to_onnx(qm, tmp_path / "x.onnx", "x86")  # keyword-only
    assert list(tmp_path.iterdir()) == []


def test_verify_images_checked(qm, tmp_path):
    with pytest.raises(DataError, match="uint8 NHWC"):
        to_onnx(qm, tmp_path / "x.onnx", verify_images=np.zeros((2, 35, 35, 3), np.float32))
    with pytest.raises(DataError, match=r"\(N, 35, 35, 3\)"):
        to_onnx(qm, tmp_path / "x.onnx", verify_images=np.zeros((2, 36, 36, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_synthetic_images_are_fixed_and_varied():
    a, b = synthetic_images(35), synthetic_images(35)
    assert a.dtype == np.uint8 and a.shape == (16, 35, 35, 3) and np.array_equal(a, b)
    assert a.std() > 30 and len({img.tobytes() for img in a}) == 16
    assert all(img.max() - img.min() > 40 for img in a)  # no flat image


# ---------------------------------------------------------------- atomic write


def test_failed_verification_leaves_previous_file(qm, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous model")
    real = ov.reference_outputs

    def off_by_three(q, images):
        logits, head = real(q, images)
        return logits, np.clip(head.astype(int) + 3, -128, 127).astype(np.int8)

    monkeypatch.setattr(ov, "reference_outputs", off_by_three)
    with pytest.raises(ExportError) as e:
        to_onnx(qm, path)
    msg = str(e.value)
    assert "did not verify" in msg and "max difference 3 LSB" in msg and "within 1 LSB" in msg
    assert path.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_missing_folder(qm, tmp_path):
    path = tmp_path / "nope" / "model.onnx"
    with pytest.raises(ExportError, match="does not exist"):
        to_onnx(qm, path)
    assert not path.parent.exists()


def test_parent_is_a_file(qm, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    with pytest.raises(ExportError, match="does not exist"):
        to_onnx(qm, f / "model.onnx")
    assert f.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_read_only_folder(qm, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "model.onnx").write_bytes(b"old")
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a 0o555 folder is still writable (see test_parent_is_a_file)")
        with pytest.raises(ExportError, match="not writable"):
            to_onnx(qm, ro / "model.onnx")
        assert (ro / "model.onnx").read_bytes() == b"old" and len(list(ro.iterdir())) == 1
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------- real data


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("target", list(Target))
def test_real_model_matches_reference(dc_quantized, eval_pixels, tmp_path, target):
    """Deep-Compression v1.0 on 64 evaluation images, both targets (one reference run: cached)."""
    pixels, _ = eval_pixels
    path = tmp_path / f"dc-{target.value}.onnx"
    rep = to_onnx(dc_quantized, path, target=target, verify_images=pixels)
    assert rep.images == 64 and not rep.synthetic_images and rep.head_values == 64 * 15 * 15 * 1000
    assert rep.lsb_match >= 0.999 and rep.max_lsb_diff <= 2
    assert rep.top1_agreement >= 0.995
    assert rep.integer_convs == 26 and rep.float_convs == 0
    assert 0.5e6 < rep.bytes < 2e6  # int8 weights: ~1.25 M parameters
    # the written file in a plain session, against run_int8's logits (the writer's cached run)
    few = pixels[:16]
    logits = session(path, target).run(["logits"], {"pixels": few})[0]
    ref_logits, _ = ov.reference_outputs(dc_quantized, pixels)
    assert (logits.argmax(1) == ref_logits[:16].argmax(1)).all()
    assert np.abs(logits - ref_logits[:16]).max() <= dc_quantized.tensors["conv10"].scale


@pytest.mark.parametrize("target", list(Target))
def test_head_keeps_exact_ties(target):
    """As the TFLite head (tests/test_export_tflite.py): channels whose 8-bit values have equal
    sums but different spreads give exactly equal logits in onnxruntime, and the logits are
    s * (mean(q) - zp)."""
    from types import SimpleNamespace

    from onnx import helper, numpy_helper

    from edgesqueeze.graph import Node

    rng = np.random.default_rng(0)
    h = w = 15
    q = rng.integers(-60, 100, (1, 8, h, w))
    for c in range(1, 8, 2):  # channel c: channel c - 1 shuffled, with 20 unit moves: same sum
        v = rng.permutation(q[0, c - 1].ravel())
        idx = rng.choice(v.size, 40, replace=False)
        v[idx[:20]] += 1
        v[idx[20:]] -= 1
        q[0, c] = v.reshape(h, w)
    scale, zp = 0.0731, -97
    b = og._QDQBuilder(helper, numpy_helper, SimpleNamespace(tensors={"conv10": QParams(scale, zp)}), target)
    b.node(Node(OpKind.MEAN, "logits", ("conv10",)))
    b.nodes.append(og._softmax(helper))
    elem = onnx.TensorProto.UINT8 if target is Target.X86 else onnx.TensorProto.INT8
    graph = helper.make_graph(b.nodes, "head", [helper.make_tensor_value_info("conv10", elem, [1, 8, h, w])],
                              og._outputs(helper, onnx, 8), b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = (q + b.offset).astype(b.qdtype)
    probs, got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"conv10": x})
    probs, got = probs[0], got[0]
    sums = q.sum(axis=(2, 3))[0]
    np.testing.assert_allclose(got, (sums - zp * h * w) * (scale / (h * w)), rtol=1e-6)
    np.testing.assert_allclose(probs, softmax(got), rtol=1e-5)
    for a in range(8):
        for c in range(8):
            for out in (got, probs):
                assert (out[a] == out[c]) == (sums[a] == sums[c])
                assert (out[a] < out[c]) == (sums[a] < sums[c])
    assert all(sums[c] == sums[c - 1] for c in range(1, 8, 2))  # the test does contain ties
