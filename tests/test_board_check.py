"""Pure parts of demos/board_check.py (the board run itself needs pi-emu and is not run here)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

PATH = Path(__file__).resolve().parents[1] / "demos" / "board_check.py"


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("board_check", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_helper_compiles_and_imports_only_board_modules(bc):
    compile(bc.HELPER, "board_helper.py", "exec")
    import ast

    imports = set()
    for node in ast.walk(ast.parse(bc.HELPER)):
        if isinstance(node, ast.Import):
            imports |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.module == "edgesqueeze.runtime"
            imports.add("edgesqueeze")
    assert "torch" not in bc.HELPER
    assert {"json", "sys", "time", "numpy", "cv2", "edgesqueeze"} >= imports


def test_margins(bc):
    lg = np.array([[1.0, 3.0, 2.5], [5.0, 0.0, 5.0]], np.float32)
    np.testing.assert_allclose(bc.margins(lg), [0.5, 0.0])


def test_last_json(bc):
    assert bc._last_json('{"a": 1}\nnoise\n{"summary": true, "frames": 3}\n') == {"summary": True, "frames": 3}
    assert bc._last_json('{\n  "model": "m",\n  "results": []\n}\n') == {"model": "m", "results": []}
    assert bc._last_json("nothing here") is None


def test_run_cmd_reports_rc_and_timeout(bc):
    r = bc.run_cmd(["python3", "-c", "import sys; print('x'); sys.exit(3)"], timeout=30, log=False)
    assert r["rc"] == 3 and r["stdout"].strip() == "x"
    r = bc.run_cmd(["python3", "-c", "import time; time.sleep(5)"], timeout=0.5, log=False)
    assert r["rc"] == 124


def test_missing_model_is_a_usage_error(bc, tmp_path):
    with pytest.raises(SystemExit) as e:
        bc.main(["--models", str(tmp_path / "nope.tflite"), "--skip-setup"])
    assert e.value.code == 2


def test_legacy_takes_tflite_files_only(bc, tmp_path):
    onnx = tmp_path / "m-int8.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(SystemExit) as e:
        bc.main(["--models", str(onnx), "--skip-setup", "--legacy"])
    assert e.value.code == 2


def test_reference_path_and_compare_logits(bc):
    assert bc.reference_path(Path("/x/export/squeezenet1_0-affine-int8.tflite")) == \
        bc.ROOT / "calib" / "squeezenet1_0-affine.json"
    a = np.array([[1.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 0.0, 5.0]], np.float32)
    b = a.copy()
    b[1] = [1.0, 3.0, 0.0]  # top-1 changes
    b[2, 2] = 5.25  # same top-1, not bit-identical
    assert bc.compare_logits(a, b) == {"identical_top1": 2, "identical_logits": 1, "max_abs_logit_diff": 2.0}
