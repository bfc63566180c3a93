"""`edgesqueeze info MODEL` and `runtime.describe`: what an exported .tflite/.onnx file (or its
.esq bundle) says about itself, read without a runtime, torch or onnx; a file that is not a
model is one error line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")  # the writers (describing a file needs neither onnx nor a runtime)
pytest.importorskip("ai_edge_litert")

from edgesqueeze.arch import Preprocess  # noqa: E402
from edgesqueeze.cli import main  # noqa: E402
from edgesqueeze.formats.metadata import ModelMetadata  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402
from edgesqueeze.runtime import ModelFileError, describe  # noqa: E402
from test_quant import minmax_ranges, tiny_arch, tiny_params  # noqa: E402

PROJECT = Path(__file__).resolve().parent.parent
LABELS = tuple(f"beetle {i}" for i in range(10))
CALIBRATION = {"method": "minmax", "images": 6, "split": "random test images"}
RGB_PRE = Preprocess(style="torchvision", channel_order="RGB", resize=40, crop=35,
                     mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: path}: a tiny SqueezeNet (10 classes, 35x35 BGR, caffe-style) as INT8 TFLite,
    INT8 ONNX, the TFLite file's update bundle, and an FP32 ONNX file with an RGB contract."""
    from edgesqueeze.export.bundle import pack
    from edgesqueeze.export.onnx import to_onnx, to_onnx_fp32
    from edgesqueeze.export.tflite import to_tflite

    arch = tiny_arch()
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=LABELS, calibration=CALIBRATION)
    d = tmp_path_factory.mktemp("info")
    out = {"int8.tflite": d / "int8.tflite", "int8.onnx": d / "int8.onnx", "fp32-rgb.onnx": d / "fp32-rgb.onnx"}
    to_tflite(qm, out["int8.tflite"])
    to_onnx(qm, out["int8.onnx"], target="arm")
    rgb = replace(arch, preprocess=RGB_PRE)
    to_onnx_fp32(rgb, params, out["fp32-rgb.onnx"],
                 metadata=ModelMetadata(arch=arch.name, preprocess=RGB_PRE, labels=LABELS, scheme="fp32"))
    out["int8.tflite.esq"] = pack(out["int8.tflite"]).path
    return out


def test_describe_reads_the_contract_and_the_ops_from_the_file(files):
    t = describe(files["int8.tflite"])
    assert t.format == "tflite" and t.file_bytes == t.model_bytes == files["int8.tflite"].stat().st_size
    assert t.metadata.labels == LABELS and t.metadata.scheme == "affine" and t.metadata.input_size == 35
    assert t.metadata.calibration == CALIBRATION
    assert [(i.dtype, i.shape) for i in t.inputs] == [("uint8", (1, 35, 35, 3))]
    assert [(o.dtype, o.shape) for o in t.outputs] == [("float32", (1, 10))]
    # tiny_arch: conv1, 8 fire modules of 3 convs, conv10 = 26 convs; 8 concatenations; 3 pools
    assert t.ops["CONV_2D"] == 26 and t.ops["CONCATENATION"] == 8 and t.ops["MAX_POOL_2D"] == 3
    assert list(t.ops)[0] == "CONV_2D" and t.num_ops == sum(t.ops.values())

    o = describe(files["int8.onnx"])
    assert o.format == "onnx" and o.target == "arm" and o.opsets.get("", 0) >= 13
    assert o.ops["Conv"] == 26 and o.ops["Concat"] == 8 and o.ops["QuantizeLinear"] > 0
    assert [i.dtype for i in o.inputs] == ["uint8"] and o.inputs[0].shape[1:] == (35, 35, 3)
    assert o.metadata.labels == LABELS and o.metadata.scheme == "affine"


def test_describe_a_bundle_names_what_is_inside(files):
    b = describe(files["int8.tflite.esq"])
    plain = describe(files["int8.tflite"])
    assert b.bundle["name"] == "int8.tflite" and b.file_bytes == files["int8.tflite.esq"].stat().st_size
    assert b.model_bytes == plain.model_bytes == b.bundle["model_bytes"] and b.file_bytes < b.model_bytes
    assert b.ops == plain.ops and b.metadata == plain.metadata


@pytest.mark.parametrize("name, fmt, op, scheme, order", [
    ("int8.tflite", "TFLite", "CONV_2D", "affine", "BGR"),
    ("int8.onnx", "ONNX", "Conv", "affine", "BGR"),
    ("fp32-rgb.onnx", "ONNX", "Conv", "fp32", "RGB"),
])
def test_cli_info_prints_what_the_file_says(files, capsys, name, fmt, op, scheme, order):
    assert main(["info", str(files[name])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{files[name]}: {fmt} model, {files[name].stat().st_size:,} bytes"
    row = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines[1:] if ln.startswith("  ") and not ln.startswith("    ")}
    assert row["classes"].startswith("10: beetle 0, beetle 1, beetle 2, beetle 3, beetle 4, ...")
    assert row["scheme"] == scheme
    assert row["input"] == f"uint8 NHWC 35x35x3, {order} order"
    if order == "RGB":  # torchvision: short side to 40, mean/std in 0..255 units
        assert row["preprocess"] == "resize short side to 40, centre crop 35 (torchvision style)"
        assert row["normalise"].startswith("mean 123.675, 116.28, 103.53, std 58.395, 57.12, 57.375")
        assert row["calibration"] == "none (FP32)"
    else:
        assert row["calibration"] == "images=6, method=minmax, split=random test images"
    ops = {ln.split()[0]: int(ln.split()[1]) for ln in lines if ln.startswith("    ")}
    assert ops[op] == 26 and sum(ops.values()) == int(row["operators"].split()[0])


def test_cli_info_json(files, capsys):
    assert main(["info", str(files["int8.tflite.esq"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    m = doc["metadata"]
    assert doc["format"] == "tflite" and doc["bundle"]["name"] == "int8.tflite"
    assert m["classes"] == 10 and m["first_labels"] == list(LABELS[:5]) and m["scheme"] == "affine"
    assert m["input"]["size"] == 35 and m["input"]["channel_order"] == "BGR" and m["input"]["crop"] == 35
    assert m["calibration"] == CALIBRATION
    assert doc["ops"]["CONV_2D"] == 26 and doc["operators"] == sum(doc["ops"].values())
    assert doc["inputs"] == [{"name": doc["inputs"][0]["name"], "dtype": "uint8", "shape": [1, 35, 35, 3]}]


def test_a_model_without_edgesqueeze_metadata_is_described_without_it(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    p = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph), p)
    info = describe(p)
    assert info.metadata is None and info.ops == {"Relu": 1} and info.inputs[0].shape == ("batch", 4)
    assert main(["info", str(p)]) == 0
    rows = {ln.split()[0]: ln.split(None, 1)[1] for ln in capsys.readouterr().out.splitlines()[1:]}
    assert rows["metadata"].startswith("none: not written by edgesqueeze") and rows["inputs"] == "x float32 [batch, 4]"


@pytest.mark.parametrize("content, words", [
    (b"\xff\xd8\xff\xe0" + bytes(300), "it looks like a JPEG image"),
    (b"name,class\nkitten.jpg,281\n", "unknown model format"),
    (b"", "the file is empty"),
])
def test_cli_info_on_a_file_that_is_not_a_model_is_one_line_exit_2(tmp_path, capsys, content, words):
    p = tmp_path / ("bad.tflite" if content.startswith(b"\xff") else "bad.csv")
    p.write_bytes(content)
    assert main(["info", str(p)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and words in cap.err and p.name in cap.err
    assert "Traceback" not in cap.err and len(cap.err.strip().splitlines()) == 1
    with pytest.raises(ModelFileError):
        describe(p)


def test_cli_info_option_errors(files, capsys):
    assert main(["info", "--json"]) == 2
    assert "--json describes a model file" in capsys.readouterr().err
    assert main(["info", str(files["int8.tflite"]), "--sr", "0.5"]) == 2
    assert "--sr shapes the family's layer table" in capsys.readouterr().err


def test_info_runs_without_torch_onnx_or_any_runtime(files):
    """A board may have none of them: the child makes importing any of them fail."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxruntime", "ai_edge_litert", "tflite_runtime",
                                          "tensorflow"):
                    raise ImportError(f"{name} is blocked in this test")
        sys.meta_path.insert(0, Block())
        from edgesqueeze.cli import main
        sys.exit(main(["info", *sys.argv[1:], "--json"]))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for name, op in (("int8.tflite", "CONV_2D"), ("int8.onnx", "Conv"), ("int8.tflite.esq", "CONV_2D")):
        r = subprocess.run([sys.executable, "-c", code, str(files[name])], capture_output=True, text=True,
                           timeout=120, env=env, cwd=PROJECT)
        assert r.returncode == 0, r.stderr[-2000:]
        doc = json.loads(r.stdout)
        assert doc["ops"][op] == 26 and doc["metadata"]["classes"] == 10
