"""Every Python snippet of README.md and docs/*.md runs as written, in a folder that holds what
the README says a reader has: their own model (`my_squeezenet.pth`, `labels.txt`, an ImageFolder
`my_images/`), the main job's files in `export/`, and an image `kitten.jpg`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parent.parent
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


SNIPPET_FILES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]


def snippets(path: Path) -> list[str]:
    return SNIPPET.findall(path.read_text(encoding="utf-8"))


def python_snippets() -> list[tuple[Path, int, str]]:
    """(file, index in the file, code) of every ```python block of README.md and docs/*.md."""
    return [(path, k, code) for path in SNIPPET_FILES for k, code in enumerate(snippets(path))]


def test_the_readme_has_python_snippets():
    assert len(snippets(PROJECT / "README.md")) >= 2


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory):
    torch = pytest.importorskip("torch")
    cv2 = pytest.importorskip("cv2")
    from edgesqueeze.arch import squeezenet1_1_arch
    from edgesqueeze.job import quantize
    from edgesqueeze.model import SqueezeNet

    root = tmp_path_factory.mktemp("reader")
    torch.manual_seed(1)
    model = SqueezeNet(squeezenet1_1_arch(num_classes=3))
    torch.save(model.state_dict(), root / "my_squeezenet.pth")
    names = ("red", "green", "blue")
    (root / "labels.txt").write_text("\n".join(names) + "\n")
    rng = np.random.default_rng(1)
    for k, name in enumerate(names):
        d = root / "my_images" / name
        d.mkdir(parents=True)
        for j in range(6):
            coarse = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
            coarse[..., 2 - k] = 255  # a dominant colour per class
            cv2.imwrite(str(d / f"{j}.jpg"), cv2.resize(coarse, (120, 100), interpolation=cv2.INTER_CUBIC))
    shutil.copy(root / "my_images" / "red" / "0.jpg", root / "kitten.jpg")
    # the main job's file the runtime snippet loads, from a small model of the same layout
    r = quantize(root / "my_squeezenet.pth", root / "my_images", out=root / "main_job", calib_dir=root / "q",
                 formats=["tflite"], input_size=64, resize=72, verify_images=2, sqnr_images=0)
    (root / "export").mkdir()
    int8 = next(f.path for f in r.files if f.kind == "int8")
    shutil.copy(int8, root / "export" / "squeezenet1_0-affine-int8.tflite")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("path,index,code", python_snippets(),
                         ids=[f"{p.relative_to(PROJECT)}:{k + 1}" for p, k, _ in python_snippets()])
def test_readme_snippet_runs(reader_folder, monkeypatch, capsys, path, index, code):
    monkeypatch.chdir(reader_folder)
    name = f"{path.relative_to(PROJECT)} python snippet {index + 1}"
    exec(compile(code, name, "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # every snippet shows something
