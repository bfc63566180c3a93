"""Full-size v1.1 and torchvision-layout v1.0 (224 input: ceil-mode pools on even sizes) through
both writers, verified against the integer reference. Random weights, calibrated in code."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

from edgesqueeze.arch import pool_output_size  # noqa: E402
from edgesqueeze.model import squeezenet1_0, squeezenet1_1  # noqa: E402
from edgesqueeze.quant.quantize import quantize_model  # noqa: E402


def calibrated(model, seed):
    torch.manual_seed(seed)
    model.eval()
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    pre = model.arch.preprocess
    x = (pixels - np.array(pre.mean)) / np.array(pre.std)
    ranges = {}

    def tap(name, t):
        lo, hi = float(t.min()), float(t.max())
        a, b = ranges.get(name, (lo, hi))
        ranges[name] = (min(a, lo), max(b, hi))

    with torch.no_grad():
        model(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32)), tap=tap)
    qm = quantize_model(model.arch, model.numpy_params(), ranges, labels=tuple(f"c{i}" for i in range(1000)))
    return qm, rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)


@pytest.mark.parametrize("factory", [squeezenet1_1, squeezenet1_0], ids=["v1.1", "v1.0-224"])
def test_full_size_exports_match_reference(factory, tmp_path):
    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite

    qm, pixels = calibrated(factory(), seed=7)
    if factory is squeezenet1_0:  # 224 input: conv1 gives 109, pools 109 -> 54 -> 27 (even: ceil != floor)
        assert pool_output_size(54, 3, 2, True) == 27 != pool_output_size(54, 3, 2, False)
    t = to_tflite(qm, tmp_path / "m.tflite", verify_images=pixels)
    o = to_onnx(qm, tmp_path / "m.onnx", verify_images=pixels)
    for r in (t, o):
        assert r.lsb_match >= 0.999 and r.max_lsb_diff <= 1, r
        assert r.top1_agreement == 1.0
    assert t.bytes <= 1.4e6
