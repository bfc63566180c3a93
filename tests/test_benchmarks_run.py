"""benchmarks/run.py's building blocks in its --quick settings on a tiny SqueezeNet built in code
(35x35 input, 10 classes, random weights, a few generated images; no shared data): the five
files, accuracy and ties, the interleaved latency loop, the camera loop, calibration timing,
the MAC count and the peak-rate assumption, and the table/JSON they make. No timing is asserted."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")
cv2 = pytest.importorskip("cv2")

from edgesqueeze.arch import squeezenet1_0_arch  # noqa: E402
from edgesqueeze.data import LabelledImage, load_image, to_uint8_input  # noqa: E402
from edgesqueeze.errors import DataError  # noqa: E402
from scripts import load_script  # noqa: E402
from test_quant import tiny_arch, tiny_params  # noqa: E402

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run():
    return load_script("benchmarks/run.py")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, labelled images, labels): smooth random images written as PNG files."""
    from edgesqueeze.model import SqueezeNet

    arch = tiny_arch()
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    items = []
    for i in range(10):
        img = cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (48, 40), interpolation=cv2.INTER_LINEAR)
        path = folder / f"img{i}.png"
        assert cv2.imwrite(str(path), img)
        items.append(LabelledImage(path, i % arch.num_classes))
    labels = [f"class {i}" for i in range(arch.num_classes)]
    return SqueezeNet.from_params(arch, tiny_params(arch)), items, labels


@pytest.fixture(scope="module")
def built(run, tiny, tmp_path_factory):
    model, items, labels = tiny
    pixels = np.stack([to_uint8_input(load_image(i.path), model.arch.preprocess) for i in items])
    out = tmp_path_factory.mktemp("files")
    files, made = run.build_files(model, items[:6], labels, out, verify_pixels=pixels[:run.QUICK.verify_images])
    return files, made, pixels, np.array([i.label for i in items])


def test_build_files_makes_the_five_files(run, built):
    files, made, _, _ = built
    assert list(files) == list(run.MODELS)
    assert all(p.is_file() and p.stat().st_size > 0 for p in files.values())
    assert {p.suffix for p in files.values()} == {".onnx", ".tflite"}
    assert made["calibration_images"] == 6
    assert made["ours_onnx_vs_reference"]["top1_agreement"] >= 0.99


def test_accuracy_ties_and_output_step(run, built):
    files, _, pixels, truth = built
    acc = run.evaluate_files(files, pixels, truth)
    assert list(acc) == list(run.MODELS)
    base = acc[run.BASELINE]
    assert base["agreement"] == 100.0 and base["drop_top1_pp"] == 0.0
    for a in acc.values():
        assert a["images"] == len(pixels)
        assert 0 <= a["ties"] <= len(pixels)
        assert a["ties_per_1000"] == pytest.approx(1000 * a["ties"] / len(pixels))
        assert 0.0 <= a["top1"] <= a["top5"] <= 100.0
    # our files average conv10's integers in float: a float output, exact ties
    for name in (run.FP32_ONNX, run.FP32_TFLITE, run.OURS_ONNX, run.OURS_TFLITE):
        assert acc[name]["output_step"] is None
    # quantize_static quantizes the head: its output comes from a DequantizeLinear
    assert acc[run.PEER]["output_step"] > 0


def _onnx_head(tmp_path, *, dequantize: bool, int_output: bool = False) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.25, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.uint8), "z"),
             numpy_helper.from_array(np.array([1, 4], np.int64), "shape")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    if int_output:
        out = helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 4])
    else:
        nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]) if dequantize
                     else helper.make_node("Relu", ["x"], ["dq"]))
        nodes.append(helper.make_node("Reshape", ["dq", "shape"], ["y"]))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [out], inits)
    path = tmp_path / f"head_{dequantize}_{int_output}.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_output_step_follows_shape_ops_to_the_dequantize(run, tmp_path):
    assert run.output_step(_onnx_head(tmp_path, dequantize=True)) == 0.25
    assert run.output_step(_onnx_head(tmp_path, dequantize=False)) is None
    assert run.output_step(_onnx_head(tmp_path, dequantize=False, int_output=True)) == 1.0


def test_latency_loop_structure(run, built):
    files, _, pixels, _ = built
    lat = run.measure_latency(files, pixels[0], runs=3, warmup=0, per_round=2)
    assert list(lat) == list(run.MODELS)
    for per_threads in lat.values():
        assert list(per_threads) == [str(t) for t in run.THREADS]
        for v in per_threads.values():
            assert v["runs"] == 4  # ceil(3 / 2) rounds of 2
            assert v["min_ms"] <= v["median_ms"] <= v["p90_ms"]


def test_camera_ratio_and_calibration_timing(run, built, tiny):
    files, _, _, _ = built
    model, items, _ = tiny
    cam = run.camera_ratio(files[run.OURS_TFLITE], frames=3, items=items)
    assert cam["frames"] == 3 and cam["ratio"] == pytest.approx(cam["median_frame_ms"] / cam["median_infer_ms"])
    timing = run.calibration_speed.measure(model, items[:4], description="4 tiny images", batch_size=4,
                                           baseline=False, methods=False, pipeline=True)[0]
    assert timing.images == 4 and timing.pipeline_passes == 2 and timing.load_s is None
    assert timing.tensors > 0 and timing.collect_s > 0 and timing.pipeline_s > 0


def test_conv_macs_match_the_layer_table(run):
    """Independent of the graph walk: Arch.shapes() gives each Fire module's spatial size."""
    for arch in (squeezenet1_0_arch(caffe=True), tiny_arch()):
        shapes = arch.shapes()
        c1 = arch.conv1
        expected = shapes["conv1"][1] ** 2 * c1.out_channels * c1.in_channels * c1.kernel ** 2
        for f in arch.fires:
            s = shapes[f.name][1]
            expected += s * s * (f.in_channels * f.squeeze + f.squeeze * f.expand1x1 + f.squeeze * f.expand3x3 * 9)
        expected += shapes["conv10"][1] ** 2 * arch.num_classes * arch.fires[-1].out_channels
        macs = run.conv_macs(arch)
        assert sum(macs.values()) == expected
        assert len(macs) == len(arch.convs())


def test_peak_rate_assumption(run):
    p = run.peak_int8(frozenset({"avx2", "avx512bw", "avx512_vnni"}), 2.0, "test")
    assert p.macs_per_cycle == 128 and "VNNI" in p.basis
    assert p.limit_ms(256_000_000, 1) == pytest.approx(1.0)
    assert p.limit_ms(256_000_000, 2) == pytest.approx(0.5)
    assert run.peak_int8(frozenset({"asimd", "asimddp"}), 2.4, "test").macs_per_cycle == 32
    assert run.peak_int8(frozenset({"sse2"}), 2.0, "test") is None
    assert run.peak_int8(frozenset({"avx2"}), None, "no clock") is None
    assert run.peak_int8(frozenset(), 1.5, "test", macs_per_cycle=8).macs_per_cycle == 8


def test_cpu_flags_and_clock_from_cpuinfo_text(tmp_path):
    from edgesqueeze.sysinfo import cpu_clock_ghz, cpu_flags

    x86 = "processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\ncpu MHz\t\t: 2300.000\n" \
          "processor\t: 1\nflags\t\t: fpu avx2 avx512_vnni\ncpu MHz\t\t: 2600.5\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(arm) == {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
    assert cpu_flags("") == frozenset()
    none = tmp_path / "no-cpufreq"
    assert cpu_clock_ghz(x86, cpufreq=none)[0] == pytest.approx(2.6005)  # the fastest core
    ghz, why = cpu_clock_ghz(arm, cpufreq=none)
    assert ghz is None and "cpu MHz" in why
    freq = tmp_path / "cpufreq"
    freq.mkdir()
    (freq / "cpuinfo_max_freq").write_text("1800000\n")  # kHz, a Raspberry Pi 4
    assert cpu_clock_ghz(arm, cpufreq=freq) == (pytest.approx(1.8), str(freq / "cpuinfo_max_freq"))


def test_table_and_json(run, built, tiny):
    files, made, pixels, truth = built
    model, items, _ = tiny
    acc = run.evaluate_files(files, pixels, truth)
    lat = run.measure_latency(files, pixels[0], runs=1, warmup=0, per_round=1)
    timing = run.calibration_speed.measure(model, items[:2], description="2 tiny images", batch_size=2,
                                           baseline=False, methods=False, pipeline=True)[0]
    peak = run.peak_int8(frozenset({"avx512_vnni"}), 2.0, "test")
    cam = {"model": "x.tflite", "threads": 1, "frame_size": [640, 480], "frames": 3, "median_frame_ms": 2.0,
           "median_infer_ms": 1.0, "ratio": 2.0, "target": 1.15}
    machine = {"cpu": "test CPU", "machine": "x86_64", "usable_cores": 2, "logical_cores": 2, "cpu_flags": "avx2",
               "clock_ghz": 2.0, "clock_source": "test", "python": "3", "numpy": "2", "onnxruntime": "1",
               "ai_edge_litert": "2", "torch": "2", "opencv": "5"}
    res = run.assemble(settings=run.QUICK, machine=machine, made=made, files=files, accuracy=acc, latency=lat,
                       calibration=timing.to_dict(), camera=cam, arithmetic=run.arithmetic_limit(model.arch, peak, lat),
                       evaluation_images=len(pixels), split="test", command="python benchmarks/run.py --quick",
                       seconds=1.0, load_before=(0.1, 0, 0), load_after=(0.2, 0, 0))
    doc = json.loads(json.dumps(res))  # JSON-ready, and the markdown renders from the JSON alone
    md = run.render_markdown(doc)
    assert md == run.render_markdown(res)
    assert "QUICK SMOKE RUN" in md and "test CPU" in md
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| model"))
    end = lines.index("", start)
    header, table = lines[start], lines[start + 2:end]
    assert [ln.split("|")[1].strip() for ln in table] == list(run.MODELS)
    for col in ("size", "bundle", "1 thr median / p90 ms", "2 thr median / p90 ms", "speed-up vs FP32 ONNX",
                "top-1 %", "top-5 %", "top-1 drop pp", "top-1 agreement %", "ties / 1000"):
        assert col in header
    assert all(len(ln.split("|")) == len(header.split("|")) for ln in table)
    m = doc["models"][run.OURS_ONNX]
    assert m["bytes"] == files[run.OURS_ONNX].stat().st_size
    assert m["speedup_vs_fp32_onnx"]["1"] == pytest.approx(
        lat[run.FP32_ONNX]["1"]["median_ms"] / lat[run.OURS_ONNX]["1"]["median_ms"])
    assert doc["models"][run.FP32_ONNX]["size_vs_fp32_onnx"] == 1.0
    assert doc["arithmetic"]["conv_macs"] == sum(run.conv_macs(model.arch).values())
    assert set(doc["arithmetic"]["fraction_of_peak"]) == set(run.INT8_MODELS)
    assert doc["settings"] == asdict(run.QUICK)
    bundle = doc["models"][run.OURS_TFLITE]["bundle_bytes"]
    assert bundle is None or bundle > 0
    assert "calibration images: 2 tiny images" in md and "assumption for the arithmetic limit" in md


def test_bundle_size_is_the_packed_size(run, built, tmp_path):
    bundle = pytest.importorskip("edgesqueeze.formats.bundle")
    path = built[0][run.OURS_TFLITE]
    assert run.bundle_bytes(path) == len(bundle.pack_bytes(path.read_bytes(), name=path.name))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    assert run.bundle_bytes(junk) is None  # "n/a" in the table, not a crash of the whole run


def test_export_dir_missing_files_named(run, tmp_path):
    with pytest.raises(DataError, match=r"squeezenet1_0-fp32\.onnx.*edgesqueeze quantize"):
        run.export_files(tmp_path, "squeezenet1_0")


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--images", "-1"], ["--ghz", "0"],
                                  ["--export-dir", "/nonexistent/folder"]])
def test_bad_options_rejected(run, argv, capsys):
    with pytest.raises(SystemExit) as e:
        run.parse_args(argv)
    assert e.value.code == 2
    assert argv[0] in capsys.readouterr().err
