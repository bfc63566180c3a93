"""TFLite writer: tiny SqueezeNets built in code, run in LiteRT against the integer reference,
and (marked `shared`) the real Deep-Compression v1.0 on real images."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from edgesqueeze.errors import DataError  # noqa: E402
from edgesqueeze.export import tflite as T  # noqa: E402
from edgesqueeze.export import tflite_graph as G  # noqa: E402
from edgesqueeze.export import tflite_verify as V  # noqa: E402
from edgesqueeze.export.files import ExportError  # noqa: E402
from edgesqueeze.export.tflite_flatbuffer import _Graph  # noqa: E402
from edgesqueeze.formats.tflite import _schema, read_tflite_metadata, tflite_ops  # noqa: E402
from edgesqueeze.graph import Node, OpKind  # noqa: E402
from edgesqueeze.quant import kernels  # noqa: E402
from edgesqueeze.quant.params import QParams  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.quant.reference import run_int8, softmax  # noqa: E402
from test_quant import PRE, float_forward, minmax_ranges, tiny_arch, tiny_params  # noqa: E402

LABELS = tuple(f"class {i}" for i in range(10))


def make_tiny(crop: int, final_pad: int, bypass: str = "none"):
    """Tiny SqueezeNet: crop 35 pools 15 -> 7 -> 3 -> 1 (odd: VALID), crop 41 pools 18 -> 9 -> 4 -> 2
    (even sizes: SAME, odd: VALID); final_pad 1 puts a PAD before conv10."""
    arch = replace(tiny_arch(bypass=bypass), preprocess=replace(PRE, crop=crop), final_pad=final_pad)
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, crop, crop, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=LABELS,
                        calibration={"method": "minmax", "images": 6, "split": "random test images",
                                     "ranges": {"conv1": [0.0, 1.0]}})
    return arch, params, qm


@pytest.fixture(scope="module", params=[(35, 1), (41, 0)], ids=["crop35-pad1", "crop41-pad0"])
def tiny_export(request, tmp_path_factory):
    crop, final_pad = request.param
    arch, params, qm = make_tiny(crop, final_pad)
    path = tmp_path_factory.mktemp("tfl") / "tiny.tflite"
    report = T.to_tflite(qm, path)
    return arch, params, qm, path, report


def run_tflite(path_or_bytes, images, outputs=None):
    from ai_edge_litert.interpreter import Interpreter

    kw = {"model_content": path_or_bytes} if isinstance(path_or_bytes, bytes) else {"model_path": str(path_or_bytes)}
    it = Interpreter(**kw)
    it.allocate_tensors()
    details = {d["name"]: d for d in it.get_output_details()}
    names = outputs or list(details)
    res = {n: [] for n in names}
    for img in images:
        it.set_tensor(it.get_input_details()[0]["index"], img[None])
        it.invoke()
        for n in names:
            res[n].append(it.get_tensor(details[n]["index"])[0].copy())
    return {n: np.stack(v) for n, v in res.items()}


def model_t(path):
    from ai_edge_litert import schema_py_generated as s

    return s, s.ModelT.InitFromPackedBuf(bytearray(Path(path).read_bytes()), 0)


def pool_paddings(path) -> list[str]:
    s, m = model_t(path)
    codes = m.operatorCodes
    out = []
    for op in m.subgraphs[0].operators:
        if codes[op.opcodeIndex].builtinCode == s.BuiltinOperator.MAX_POOL_2D:
            out.append("SAME" if op.builtinOptions.padding == s.Padding.SAME else "VALID")
    return out


# ---------------------------------------------------------------- INT8 vs the integer reference


def test_int8_file_matches_integer_reference(tiny_export):
    arch, _, qm, path, report = tiny_export
    assert path.is_file() and report.bytes == path.stat().st_size
    assert report.kind == "int8" and report.images == V.SYNTHETIC_IMAGES
    assert report.lsb_match >= 0.999 and report.max_lsb_diff <= 1 and report.top1_agreement >= 0.995
    # independently of the exporter's own check: run the shipped file on other images
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (6, arch.input_size, arch.input_size, 3), dtype=np.uint8)
    got = run_tflite(path, images)["probability"]
    ref = run_int8(qm, images)
    assert got.shape == (6, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (got.argmax(1) == ref.logits.argmax(1)).all()
    head_scale = qm.tensors["conv10"].scale
    hw = arch.shapes()["conv10"][1] ** 2
    assert np.abs(got - ref.probabilities).max() <= T.max_score_diff(head_scale, hw)
    assert report.max_score_diff <= T.max_score_diff(head_scale, hw)
    # the logits before the softmax, through the verification variant
    g, head = G._build_int8(qm)
    variant = g.pack(inputs=[T.PIXELS], outputs=["logits"], metadata={}, description="")
    logits = run_tflite(variant, images)["logits"]
    assert np.abs(logits - ref.logits).max() <= head_scale / hw  # within one LSB of one cell


def test_head_tensor_within_one_lsb(tiny_export):
    """The verification variant exposes conv10's int8 output; compare it element by element."""
    arch, _, qm, path, _ = tiny_export
    g, head = G._build_int8(qm)
    variant = g.pack(inputs=[T.PIXELS], outputs=["probability", head], metadata={}, description="")
    images = T.synthetic_images(arch.input_size, 4, seed=3)
    got = run_tflite(variant, images, [head])[head]
    ref = run_int8(qm, images, keep=True).tensors[head]
    assert got.dtype == np.int8 and got.shape == ref.shape
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert (diff <= 1).mean() >= 0.999 and diff.max() <= 1


def test_pool_and_conv10_padding_paths(tiny_export):
    arch, _, qm, path, _ = tiny_export
    ops = dict(tflite_ops(path))
    pads = pool_paddings(path)
    if arch.input_size == 35:  # 15 -> 7 -> 3 -> 1: odd sizes, ceil == floor
        assert pads == ["VALID"] * 3
        assert "PAD" in ops  # conv10 pad 1
    else:  # 18 (even) -> 9 (odd) -> 4 (even) -> 2
        assert pads == ["SAME", "VALID", "SAME"]
        assert "PAD" not in ops


def test_op_versions(tiny_export):
    _, _, qm, path, report = tiny_export
    ops = tflite_ops(path)
    # first use first: DEQUANTIZE of the uint8 pixels (1), then of conv10's int8 output (2)
    want = [("DEQUANTIZE", 1), ("QUANTIZE", 1), ("CONV_2D", 3), ("MAX_POOL_2D", 2), ("CONCATENATION", 2),
            *([("PAD", 2)] if qm.arch.final_pad else []), ("DEQUANTIZE", 2), ("MEAN", 1), ("MUL", 1), ("SOFTMAX", 1)]
    assert list(ops) == want
    assert list(report.ops) == want


def test_io_contract(tiny_export):
    from ai_edge_litert.interpreter import Interpreter

    arch, _, qm, path, _ = tiny_export
    it = Interpreter(model_path=str(path))
    inp, = it.get_input_details()
    out, = it.get_output_details()
    assert inp["name"] == "pixels" and inp["dtype"] == np.uint8
    assert tuple(inp["shape"]) == (1, arch.input_size, arch.input_size, 3)
    assert inp["quantization"] == (1.0, 0)
    assert out["name"] == "probability" and out["dtype"] == np.float32 and tuple(out["shape"]) == (1, 10)
    assert list(it.get_signature_list()) == ["serving_default"]


def test_metadata_round_trip(tiny_export):
    _, _, qm, path, _ = tiny_export
    md = read_tflite_metadata(path)
    assert md == read_tflite_metadata(path.read_bytes())
    assert md.arch == qm.arch.name and md.preprocess == qm.arch.preprocess
    assert md.labels == LABELS and md.scheme == "affine" and md.input_size == qm.arch.input_size
    assert md.calibration == {"method": "minmax", "images": 6, "split": "random test images"}  # no ranges
    # the stdlib reader agrees with the schema's generated reader
    s, m = model_t(path)
    entries = {e.name.decode(): bytes(m.buffers[e.buffer].data) for e in m.metadata}
    assert list(entries) == ["edgesqueeze", "TFLITE_METADATA"]  # the standard one: test_tflite_metadata.py
    assert entries["edgesqueeze"].decode() == md.to_json()


def test_read_metadata_errors(tmp_path):
    with pytest.raises(DataError, match="not a readable TFLite model"):
        read_tflite_metadata(b"\x00" * 64)
    with pytest.raises(DataError, match="cannot read"):
        read_tflite_metadata(tmp_path / "absent.tflite")
    g = _Graph(_schema())
    g.tensor("x", (1, 4), "FLOAT32")
    g.tensor("axes", (1,), "INT32", data=np.array([1], np.int32))
    g.tensor("y", (1,), "FLOAT32")
    g.op("MEAN", ["x", "axes"], ["y"], g.s.ReducerOptionsT(), "ReducerOptions")
    with pytest.raises(DataError, match="no 'edgesqueeze' metadata"):
        read_tflite_metadata(g.pack(inputs=["x"], outputs=["y"], metadata={}, description=""))


def test_head_keeps_exact_ties():
    """Channels whose int8 values have equal sums but different spreads must give exactly equal
    logits and probabilities (the reference's ties), the logits must be s * (mean(q) - zp), and
    the order of distinct sums must be kept."""
    rng = np.random.default_rng(0)
    h = w = 15
    q = rng.integers(-60, 100, (1, h, w, 8)).astype(np.int8)
    for c in range(1, 8, 2):  # channel c: channel c - 1 shuffled, with 20 unit moves: same sum
        v = rng.permutation(q[0, :, :, c - 1].astype(int).ravel())
        idx = rng.choice(v.size, 40, replace=False)
        v[idx[:20]] += 1
        v[idx[20:]] -= 1
        q[0, :, :, c] = v.reshape(h, w)
    sums = q.astype(np.int64).sum(axis=(1, 2))[0]
    scale, zp = 0.0731, -97
    g = _Graph(_schema())
    g.tensor("conv10", q.shape, "INT8", scale=[1.0], zero_point=[zp])  # as the writer makes conv10
    G._int8_head(g, "conv10", QParams(scale, zp))
    got = run_tflite(g.pack(inputs=["conv10"], outputs=["logits", "probability"], metadata={}, description=""), q)
    logits, probs = got["logits"][0], got["probability"][0]
    ref = (sums - zp * h * w) * (scale / (h * w))
    np.testing.assert_allclose(logits, ref, rtol=1e-6)
    np.testing.assert_allclose(probs, softmax(ref), rtol=1e-5)
    for a in range(8):
        for b in range(8):
            for out in (logits, probs):
                assert (out[a] == out[b]) == (sums[a] == sums[b])
                assert (out[a] < out[b]) == (sums[a] < sums[b])
    assert all(sums[c] == sums[c - 1] for c in range(1, 8, 2))  # the test does contain ties
    assert len({int(s) for s in sums}) == 4
    assert [code for code, _ in g.op_versions] == ["DEQUANTIZE", "MEAN", "MUL", "SOFTMAX"]


def test_head_conv_written_with_scale_one(tiny_export):
    """conv10's output scale is 1 in the file (DEQUANTIZE then gives q - zp exactly) and its
    weight scales carry the reference's requantization multiplier: XNNPACK's float32
    input_scale * weight_scale / 1 is that multiplier on every channel where a float32 weight
    scale can make it, and within 1 ulp elsewhere."""
    _, _, qm, path, _ = tiny_export
    s, m = model_t(path)
    tensors = {t.name.decode(): t for t in m.subgraphs[0].tensors}
    out = tensors["conv10"].quantization
    assert list(out.scale) == [1.0] and list(out.zeroPoint) == [qm.tensors["conv10"].zero_point]
    qc = qm.convs["conv10"]
    s_in = np.float32(qm.tensors[qc.input].scale)
    w = np.asarray(tensors["conv10.weight"].quantization.scale, np.float32)
    got = (s_in * w).astype(np.float32)
    want = qc.real_multiplier(qm.tensors)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1 and (ulps == 0).mean() >= 0.8
    bias = np.asarray(tensors["conv10.bias"].quantization.scale, np.float32)
    np.testing.assert_array_equal(bias, got)


def test_head_weight_scales_exact_where_possible():
    rng = np.random.default_rng(3)
    s_in = np.float32(8.630903)
    m = rng.uniform(1e-4, 1e-2, 500).astype(np.float32)
    w = T.head_weight_scales(m, s_in)
    got = (s_in * w).astype(np.float32)
    ulps = np.abs(got.view(np.int32).astype(np.int64) - m.view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    # every miss is a multiplier no float32 weight scale reaches
    for i in np.flatnonzero(ulps):
        cands = (w[i:i + 1].view(np.int32) + np.arange(-8, 9, dtype=np.int32)).view(np.float32)
        assert not ((s_in * cands).astype(np.float32) == m[i]).any()


@pytest.mark.parametrize("kind", ["int8", "fp32"])
def test_whole_graph_in_one_xnnpack_partition(tiny_export, tmp_path, kind):
    """No operator left outside LiteRT's XNNPACK delegate (a CAST, say, would split the graph)."""
    arch, params, qm, path, _ = tiny_export
    if kind == "fp32":
        path = tmp_path / "f.tflite"
        T.to_tflite_fp32(arch, params, path, metadata=T.fp32_metadata(arch, LABELS))
    d = T.xnnpack_delegation(path)
    assert d.partitions == 1 and d.whole and d.ops > 10
    # and the check can fail: an op XNNPACK does not take (CAST) splits the graph
    g = _Graph(_schema())
    g.tensor("x", (1, 8), "INT8", scale=[1.0], zero_point=[0])
    g.tensor("xf", (1, 8), "FLOAT32")
    o = g.s.CastOptionsT()
    o.inDataType, o.outDataType = g.s.TensorType.INT8, g.s.TensorType.FLOAT32
    g.op("CAST", ["x"], ["xf"], o, "CastOptions")
    G._softmax_op(g, "xf", "p")
    split = T.xnnpack_delegation(g.pack(inputs=["x"], outputs=["p"], metadata={}, description=""))
    assert not split.whole and split.ops == 2


# ---------------------------------------------------------------- padding equivalences


@pytest.mark.parametrize("size,kernel,stride", [(8, 3, 2), (9, 3, 2), (12, 3, 2), (13, 3, 2), (10, 3, 3), (11, 2, 3)])
def test_max_pool_ceil_mode_in_litert(size, kernel, stride):
    """SAME (even sizes, 3x3/2), VALID (odd) and PADV2 with -128 (the rest) all equal
    kernels.max_pool in ceil mode, on random int8 values."""
    pad = T.pool_padding(size, kernel, stride, True)
    if (kernel, stride) == (3, 2):
        assert pad.explicit is None and pad.padding == ("SAME" if size % 2 == 0 else "VALID")
    if (size, kernel, stride) == (10, 3, 3):
        assert pad.explicit == (0, 2)
    g = _Graph(_schema())
    g.tensor("x", (1, size, size, 5), "INT8", scale=[0.25], zero_point=[-3])
    G._pool_op(g, Node(OpKind.MAXPOOL, "y", ("x",), kernel=kernel, stride=stride, ceil_mode=True))
    buf = g.pack(inputs=["x"], outputs=["y"], metadata={}, description="")
    T.check_flatbuffer(buf)
    x = np.random.default_rng(size).integers(-128, 128, (3, size, size, 5), dtype=np.int8)
    x[0] = -128  # all-minimum input: a padded cell must never win
    got = run_tflite(buf, x, ["y"])["y"]
    want = kernels.max_pool(x, kernel=kernel, stride=stride, ceil_mode=True)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_conv_padding_rules():
    assert T.conv_padding(227, 7, 2, 0) == G._Pad("VALID", None, 111)  # conv1
    assert T.conv_padding(55, 3, 1, 1) == G._Pad("SAME", None, 55)  # expand3x3
    assert T.conv_padding(13, 1, 1, 1) == G._Pad("VALID", (1, 1), 15)  # v1.0's conv10
    assert T.conv_padding(10, 3, 2, 1).explicit == (1, 1)  # SAME would pad 0 before, 1 after


# ---------------------------------------------------------------- refusals and atomic writes


def test_unsupported_ops_named_before_writing(tmp_path, monkeypatch):
    _, _, qm = make_tiny(35, 1, bypass="simple")
    monkeypatch.setattr(G, "SUPPORTED", G.SUPPORTED - {OpKind.ADD})
    with pytest.raises(ExportError) as e:
        T.to_tflite(qm, tmp_path / "m.tflite")
    adds = [n.name for n in qm.nodes if n.kind is OpKind.ADD]
    assert len(adds) >= 2 and all(a in str(e.value) for a in adds)
    assert list(tmp_path.iterdir()) == []


def test_bypass_add_exported(tmp_path):
    arch, _, qm = make_tiny(41, 0, bypass="complex")
    r = T.to_tflite(qm, tmp_path / "bypass.tflite")
    assert dict(r.ops)["ADD"] == 2 and r.lsb_match >= 0.999 and r.top1_agreement >= 0.995
    images = T.synthetic_images(41, 3, seed=5)
    got = run_tflite(tmp_path / "bypass.tflite", images)["probability"]
    assert (got.argmax(1) == run_int8(qm, images).logits.argmax(1)).all()


def test_concat_with_mismatched_qparams_refused(tmp_path):
    _, _, qm = make_tiny(35, 1)
    t = dict(qm.tensors)
    t["fire3.expand3x3"] = QParams(t["fire3.expand3x3"].scale * 2, t["fire3.expand3x3"].zero_point)
    bad = replace(qm, tensors=t)
    with pytest.raises(ExportError, match=r"concat fire3\.concat .*fire3\.expand3x3"):
        T.to_tflite(bad, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_leaves_target_untouched(tmp_path, monkeypatch):
    _, _, qm = make_tiny(35, 1)
    target = tmp_path / "m.tflite"
    target.write_bytes(b"previous version")
    real = V._reference

    def off_by_two(qm_, images, head, batch=8):
        h, logits = real(qm_, images, head, batch)
        return np.clip(h.astype(int) + 2, -128, 127).astype(np.int8), logits

    monkeypatch.setattr(V, "_reference", off_by_two)
    with pytest.raises(ExportError, match=r"within 1 LSB \d+\.\d+ %.*max 2 LSB") as e:
        T.to_tflite(qm, target)
    assert "Nothing was written" in str(e.value)
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]  # no .partial left behind


def test_top1_disagreement_fails(tmp_path, monkeypatch):
    _, _, qm = make_tiny(41, 0)
    real = V._reference

    def shuffled(qm_, images, head, batch=8):
        h, logits = real(qm_, images, head, batch)
        return h, -logits  # the reference's worst class becomes its best

    monkeypatch.setattr(V, "_reference", shuffled)
    with pytest.raises(ExportError, match=r"top-1 agreement \d+\.\d+ %"):
        T.to_tflite(qm, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_and_bad_images(tmp_path):
    _, _, qm = make_tiny(35, 1)
    with pytest.raises(ExportError, match="does not exist"):
        T.to_tflite(qm, tmp_path / "no" / "such" / "m.tflite")
    with pytest.raises(DataError, match="uint8"):
        T.to_tflite(qm, tmp_path / "m.tflite", verify_images=np.zeros((2, 35, 35, 3), np.float32))
    with pytest.raises(DataError, match="35, 35, 3"):
        T.to_tflite(qm, tmp_path / "m.tflite", verify_images=np.zeros((2, 36, 36, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_named(tiny_export, monkeypatch, tmp_path):
    *_, path, _ = tiny_export
    _, _, qm = make_tiny(35, 1)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.schema_py_generated", None)
    with pytest.raises(ImportError, match=r"pip install 'edgesqueeze\[tflite\]'"):
        T.to_tflite(qm, tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []
    assert read_tflite_metadata(path).labels == LABELS  # reading needs no extra


def test_check_flatbuffer_rejects_malformed(tiny_export):
    *_, path, _ = tiny_export
    buf = path.read_bytes()
    T.check_flatbuffer(buf)
    with pytest.raises(ExportError):
        T.check_flatbuffer(buf[: len(buf) // 3])
    with pytest.raises(ExportError, match="TFL3"):
        T.check_flatbuffer(b"\x10\x00\x00\x00XXXX" + buf[8:])
    # a constant tensor whose data does not match its shape
    g = _Graph(_schema())
    g.tensor("x", (1, 4), "FLOAT32")
    g.tensor("axes", (1,), "INT32", data=np.array([1], np.int32))
    g.tensors[1].shape = np.array([3], np.int32)
    g.tensor("y", (1,), "FLOAT32")
    g.op("MEAN", ["x", "axes"], ["y"], g.s.ReducerOptionsT(), "ReducerOptions")
    with pytest.raises(ExportError, match="axes: 4 data bytes"):
        T.check_flatbuffer(g.pack(inputs=["x"], outputs=["y"], metadata={}, description=""))


def test_synthetic_images_are_deterministic():
    a, b = T.synthetic_images(35), T.synthetic_images(35)
    assert a.dtype == np.uint8 and a.shape == (16, 35, 35, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[2])


def test_export_does_not_import_tensorflow(tmp_path):
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_export_tflite import make_tiny\n"
        "from edgesqueeze.export.tflite import to_tflite\n"
        "from edgesqueeze.formats.tflite import read_tflite_metadata\n"
        "_, _, qm = make_tiny(35, 1)\n"
        f"r = to_tflite(qm, {str(tmp_path / 'm.tflite')!r})\n"
        f"read_tflite_metadata({str(tmp_path / 'm.tflite')!r})\n"
        "print(r.lsb_match, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1.0 []"


def test_reading_metadata_needs_no_schema_module():
    code = ("import sys\nfrom edgesqueeze.formats import standard_metadata, tflite\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ai_edge_litert', 'flatbuffers', 'tensorflow')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- FP32


@pytest.mark.parametrize("crop,final_pad,bypass", [(35, 1, "none"), (41, 0, "complex")])
def test_fp32_file_matches_float_reference(tmp_path, crop, final_pad, bypass):
    arch, params, _ = make_tiny(crop, final_pad, bypass)
    md = T.fp32_metadata(arch, LABELS)
    r = T.to_tflite_fp32(arch, params, tmp_path / "f.tflite", metadata=md)
    assert r.kind == "fp32" and all(v == 1 for _, v in r.ops)
    assert ("PAD" in dict(r.ops)) == bool(final_pad) and ("ADD" in dict(r.ops)) == (bypass != "none")
    assert read_tflite_metadata(tmp_path / "f.tflite") == md
    images = T.synthetic_images(crop, 6, seed=11)
    got = run_tflite(tmp_path / "f.tflite", images)["probability"]
    want = softmax(float_forward(arch, params, images)["logits"])
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5


# ---------------------------------------------------------------- channel order


def test_rgb_file_from_a_bgr_model_is_the_same_integer_model(tmp_path):
    """quantized_with_channel_order: the BGR-calibrated model turned to RGB has the same
    parameters with conv1's input channels reversed; the RGB file gives on the reversed pixels
    what the BGR file gives on the original ones, and says RGB in both metadata entries. The
    runtime, fed the same BGR frame, gives the same probabilities from either file."""
    from edgesqueeze.export.channels import quantized_with_channel_order
    from edgesqueeze.formats.standard_metadata import read_standard_metadata
    from edgesqueeze.runtime import Classifier

    _, _, qm = make_tiny(35, 1)
    rgb = quantized_with_channel_order(qm, "RGB")
    assert rgb.tensors == qm.tensors and rgb.labels == qm.labels and rgb.calibration == qm.calibration
    assert rgb.arch.preprocess.channel_order == "RGB" and rgb.arch.preprocess.mean == qm.arch.preprocess.mean[::-1]
    for name, c in qm.convs.items():
        r = rgb.convs[name]
        want = c.weight[..., ::-1] if name == "conv1" else c.weight
        assert np.array_equal(r.weight, want) and np.array_equal(r.bias, c.bias)
        assert np.array_equal(r.weight_scale, c.weight_scale)
    assert quantized_with_channel_order(rgb, "rgb") is rgb
    px = T.synthetic_images(35, 6, seed=4)
    flipped = np.ascontiguousarray(px[..., ::-1])
    np.testing.assert_array_equal(run_int8(rgb, flipped).logits, run_int8(qm, px).logits)
    T.to_tflite(qm, tmp_path / "bgr.tflite")
    r = T.to_tflite(rgb, tmp_path / "rgb.tflite", verify_images=flipped)
    assert r.exact_match == 1.0 and r.top1_agreement == 1.0
    assert read_tflite_metadata(tmp_path / "rgb.tflite").channel_order == "RGB"
    std = read_standard_metadata((tmp_path / "rgb.tflite").read_bytes())
    assert std.inputs[0].color_space == "RGB"
    assert read_standard_metadata((tmp_path / "bgr.tflite").read_bytes()).inputs[0].color_space == "UNKNOWN"
    np.testing.assert_array_equal(run_tflite(tmp_path / "rgb.tflite", flipped)["probability"],
                                  run_tflite(tmp_path / "bgr.tflite", px)["probability"])
    frame = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)  # an OpenCV BGR frame
    a, b = (Classifier.load(tmp_path / f, threads=1) for f in ("bgr.tflite", "rgb.tflite"))
    np.testing.assert_array_equal(b.preprocess(frame), a.preprocess(frame)[..., ::-1])
    np.testing.assert_array_equal(b.scores(b.preprocess(frame)), a.scores(a.preprocess(frame)))


def test_rgb_turn_also_reverses_a_float_conv1():
    """conv1 kept in float (float_convs): turning the model to RGB reverses its float32 weights
    too, so the integer reference on the reversed pixels still gives the BGR model's logits."""
    from edgesqueeze.export.channels import quantized_with_channel_order
    from edgesqueeze.quant.quantize import with_float_convs

    _, _, qm = make_tiny(35, 1)
    conv = qm.convs["conv1"]
    w = (conv.weight.astype(np.float32) * conv.weight_scale.reshape(-1, 1, 1, 1)).astype(np.float32)
    w[..., 0] *= 1.5  # an asymmetric float conv1, so a missed turn changes the logits
    floated = with_float_convs(qm, ["conv1"], {"conv1": (w, np.zeros(len(w), np.float32))})
    rgb = quantized_with_channel_order(floated, "RGB")
    np.testing.assert_array_equal(rgb.float_weights["conv1"][0], w[..., ::-1])
    px = T.synthetic_images(35, 4, seed=7)
    np.testing.assert_array_equal(run_int8(rgb, np.ascontiguousarray(px[..., ::-1])).logits,
                                  run_int8(floated, px).logits)


# ---------------------------------------------------------------- the real model


@pytest.mark.shared
@pytest.mark.slow
def test_real_deep_compression_v1_0(dc_quantized, eval_pixels, tmp_path):
    pixels, labels = eval_pixels
    path = tmp_path / "squeezenet1_0_int8.tflite"
    r = T.to_tflite(dc_quantized, path, verify_images=pixels)
    assert r.images == 64 and r.image_source == "given"
    assert r.lsb_match >= 0.999 and r.top1_agreement >= 0.995
    assert r.bytes == path.stat().st_size <= 1_400_000
    assert list(r.ops) == [("DEQUANTIZE", 1), ("QUANTIZE", 1), ("CONV_2D", 3), ("MAX_POOL_2D", 2),
                           ("CONCATENATION", 2), ("PAD", 2), ("DEQUANTIZE", 2), ("MEAN", 1), ("MUL", 1), ("SOFTMAX", 1)]
    assert pool_paddings(path) == ["VALID"] * 3  # 111 -> 55 -> 27 -> 13: odd sizes
    md = read_tflite_metadata(path)
    assert len(md.labels) == 1000 and md.channel_order == "BGR" and md.input_size == 227
    assert "ranges" not in md.calibration and md.calibration["images"] == 32
    probs = run_tflite(path, pixels[:16])["probability"]
    assert (probs.argmax(1) == labels[:16]).mean() >= 0.4  # a working classifier, not noise
    assert T.xnnpack_delegation(path).whole


@pytest.mark.shared
@pytest.mark.slow
def test_real_model_turned_to_rgb_gives_the_same_integers(dc_quantized, eval_pixels):
    """The released Caffe model (BGR), calibrated, then turned to RGB: the integer reference
    gives bit-identical logits on the reversed evaluation images."""
    from edgesqueeze.export.channels import quantized_with_channel_order

    pixels, _ = eval_pixels
    rgb = quantized_with_channel_order(dc_quantized, "RGB")
    assert dc_quantized.arch.preprocess.channel_order == "BGR" and rgb.arch.preprocess.mean == (123.0, 117.0, 104.0)
    px = pixels[:16]
    np.testing.assert_array_equal(run_int8(rgb, np.ascontiguousarray(px[..., ::-1])).logits,
                                  run_int8(dc_quantized, px).logits)


@pytest.mark.shared
@pytest.mark.slow
def test_the_job_writes_rgb_files_from_the_bgr_caffe_weights(shared, tmp_path):
    """`quantize` on the released Caffe model (trained on BGR): the files take RGB by default,
    their standard metadata says RGB, the saved parameters are the turned model's, and the
    file's top-1 on the RGB crops is the integer reference's."""
    from edgesqueeze.data import load_image, read_labels_csv, split_calibration
    from edgesqueeze.formats.standard_metadata import read_standard_metadata
    from edgesqueeze.job import quantize
    from edgesqueeze.quant.params import QuantizedModel
    from edgesqueeze.runtime import Classifier

    r = quantize("squeezenet1_0-dc", out=tmp_path / "e", calib_dir=tmp_path / "c", formats=("tflite",),
                 calib_limit=4, eval_limit=4, verify_images=4, sqnr_images=0, empirical_bias_correction=False,
                 adaptive_rounding=False)
    assert r.preprocess.channel_order == "RGB" and r.preprocess.mean == (123.0, 117.0, 104.0)
    int8 = next(f.path for f in r.files if f.kind == "int8")
    clf = Classifier.load(int8, threads=1)
    assert clf.metadata.channel_order == "RGB"
    assert read_standard_metadata(int8.read_bytes()).inputs[0].color_space == "RGB"
    qm = QuantizedModel.load(r.qparams)
    assert qm.arch.preprocess.channel_order == "RGB"
    items = split_calibration(read_labels_csv(shared / "imagenet" / "sample_labels.csv"))[1][:6]
    px = np.stack([clf.preprocess(load_image(i.path)) for i in items])  # BGR frames -> RGB crops
    assert (clf.scores(px).argmax(1) == run_int8(qm, px).logits.argmax(1)).all()
