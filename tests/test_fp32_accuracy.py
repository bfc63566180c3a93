"""FP32 accuracy of the decoded Deep-Compression v1.0 on the shared images, and the FP32 ONNX
export against PyTorch."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")

from edgesqueeze.data import load_image, normalize, read_labels_csv, to_uint8_input  # noqa: E402
from edgesqueeze.evaluate import fp32_scores  # noqa: E402
from edgesqueeze.metrics import accuracy  # noqa: E402

pytestmark = pytest.mark.shared


@pytest.mark.slow
def test_top1_top5_on_600_sample_images(dc_model, shared):
    items = read_labels_csv(shared / "imagenet" / "sample_labels.csv")
    assert len(items) == 600
    acc = accuracy("fp32", fp32_scores(dc_model, items), np.array([i.label for i in items]))
    # reference (shared/README): top-1 67.8 %, top-5 86.7 %
    assert abs(acc.top1 - 67.8) <= 0.3, acc
    assert abs(acc.top5 - 86.7) <= 0.3, acc


def test_kitten_is_a_cat_or_fox(dc_model, shared):
    x = to_uint8_input(load_image(shared / "images" / "kitten.jpg"), dc_model.arch.preprocess)
    with torch.no_grad():
        top = dc_model(torch.from_numpy(normalize(x, dc_model.arch.preprocess))).argmax().item()
    assert 269 <= top <= 293  # ImageNet wolves/foxes/cats block: 269-293


def test_fp32_onnx_matches_pytorch(dc_model, dc_params, shared, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from edgesqueeze.export.onnx import to_onnx_fp32
    from edgesqueeze.formats.metadata import METADATA_KEY, ModelMetadata

    arch, params = dc_params
    meta = ModelMetadata(arch=arch.name, preprocess=arch.preprocess, labels=tuple(f"c{i}" for i in range(1000)))
    path = to_onnx_fp32(arch, params, tmp_path / "fp32.onnx", metadata=meta)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    back = ModelMetadata.from_json(props[METADATA_KEY])
    assert back.input_size == 227 and back.channel_order == "BGR" and len(back.labels) == 1000
    items = read_labels_csv(shared / "imagenet" / "sample_labels.csv")[:16]
    x = np.stack([to_uint8_input(load_image(i.path), arch.preprocess) for i in items])
    y_onnx = sess.run(["logits"], {"pixels": x})[0]  # the file's outputs: "probability", "logits"
    with torch.no_grad():
        y_torch = dc_model(torch.from_numpy(normalize(x, arch.preprocess))).numpy()
    assert np.abs(y_onnx - y_torch).max() <= 1e-4
    assert (y_onnx.argmax(1) == y_torch.argmax(1)).all()


def test_cli_eval_writes_report(shared, tmp_path, monkeypatch, capsys):
    from edgesqueeze.cli import main

    monkeypatch.setenv("EDGESQUEEZE_WEIGHTS", str(shared / "weights"))
    out = tmp_path / "report.json"
    rc = main(["eval", "--images", str(shared / "imagenet" / "sample_labels.csv"), "--split", "eval",
               "--limit", "24", "--report", str(out), "--quiet"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["split"] == "eval" and rep["results"][0]["images"] == 24
    assert "top-1 %" in capsys.readouterr().out
