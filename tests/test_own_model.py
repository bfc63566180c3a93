"""A user's own SqueezeNet through `edgesqueeze quantize`: any class count, class names, the
image layouts people have, preprocessing that follows the weights or is given, and errors
before any work. The models are small (v1.1 with a few classes, 64x64 input) so each main
job runs in seconds; the same code runs the real 1000-class default elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgesqueeze.arch import Bypass, squeezenet1_0_arch, squeezenet1_1_arch  # noqa: E402
from edgesqueeze.cli import main  # noqa: E402
from edgesqueeze.errors import DataError, OptionError, WeightsError  # noqa: E402
from edgesqueeze.model import SqueezeNet  # noqa: E402
from edgesqueeze.weights import read_weights  # noqa: E402

CLASSES = ("cat", "dog", "fox", "owl", "yak")
SMALL = ["--input-size", "64", "--resize", "72", "--verify-images", "4", "--sqnr-images", "0", "--quiet"]


def _image(rng, path: Path) -> None:
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cv2.resize(coarse, (96, 80), interpolation=cv2.INTER_CUBIC))


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A 5-class v1.1 state_dict (seeded), its labels file, and the same 20 images as an
    ImageFolder, a CSV with class names, a CSV without, and a plain folder."""
    root = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    model = SqueezeNet(squeezenet1_1_arch(num_classes=len(CLASSES)))
    with torch.no_grad():  # spread the logits, so that top-1 is not decided by noise alone
        model.classifier[1].weight.mul_(20.0)
    torch.save(model.state_dict(), root / "own5.pth")
    (root / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    rng = np.random.default_rng(0)
    rows = []
    for k, name in enumerate(CLASSES):
        d = root / "folder" / name
        d.mkdir(parents=True)
        for j in range(4):
            _image(rng, d / f"{name}{j}.jpg")
            rows.append((f"folder/{name}/{name}{j}.jpg", k, name))
    (root / "named.csv").write_text("file,class_index,class_name\n" + "".join(f"{f},{k},{n}\n" for f, k, n in rows))
    (root / "plain.csv").write_text("file,class_index\n" + "".join(f"{f},{k}\n" for f, k, _ in rows))
    plain = root / "plain"
    plain.mkdir()
    for f, _, _ in rows:
        (plain / Path(f).name).write_bytes((root / f).read_bytes())
    return root


def _int8_files(out: Path) -> list[Path]:
    return sorted(out.glob("*-int8.*"))


def _metadata_labels(path: Path) -> tuple[str, ...]:
    from edgesqueeze.runtime import Classifier

    return Classifier.load(path).labels


@pytest.mark.parametrize("layout,names", [("folder", CLASSES), ("named.csv", CLASSES),
                                          ("plain.csv", tuple(f"class_{i}" for i in range(5)))])
def test_each_labelled_layout_runs_and_names_come_from_the_images(own, tmp_path, capsys, layout, names):
    out = tmp_path / "export"
    rc = main(["quantize", "--weights", str(own / "own5.pth"), "--images", str(own / layout),
               "--out", str(out), "--calib-dir", str(tmp_path / "calib"), *SMALL])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    files = _int8_files(out)
    assert [f.suffix for f in files] == [".onnx", ".tflite"]
    for f in files:
        assert _metadata_labels(f) == names
    assert "5 classes" in cap.out and "top-1 agreement" in cap.out
    if names[0] == "class_0":  # a CSV without names: generated, said once on stderr
        assert "warning: no class names" in cap.err
    else:
        assert "warning" not in cap.err
    report = json.loads(next(out.glob("*-report.json")).read_text())
    assert report["num_classes"] == 5 and report["evaluation"]["labelled"] is True
    assert [s["name"] for s in report["stages"]][:2] == ["read weights", "calibrate and quantize"]
    assert all(s["seconds"] >= 0 for s in report["stages"])


def test_labels_file_wins_and_reaches_classify(own, tmp_path, capsys):
    out = tmp_path / "export"
    (tmp_path / "mine.txt").write_text("\n".join(n.upper() for n in CLASSES) + "\n")
    assert main(["quantize", "--weights", str(own / "own5.pth"), "--labels", str(tmp_path / "mine.txt"),
                 "--images", str(own / "folder"), "--out", str(out), "--calib-dir", str(tmp_path / "c"), *SMALL]) == 0
    capsys.readouterr()
    tfl = next(out.glob("*-int8.tflite"))
    image = next((own / "folder" / "owl").iterdir())
    assert main(["classify", str(tfl), str(image), "--json", "--top-k", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {c["label"] for c in doc["results"][0]["top"]} == {n.upper() for n in CLASSES}


def test_labels_count_mismatch_is_refused_before_any_work(own, tmp_path, capsys):
    bad = tmp_path / "four.txt"
    bad.write_text("a\nb\nc\nd\n")
    out = tmp_path / "export"
    rc = main(["quantize", "--weights", str(own / "own5.pth"), "--labels", str(bad), "--images", str(own / "folder"),
               "--out", str(out), "--calib-dir", str(tmp_path / "calib"), *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "4 class names" in err and "5 classes" in err and "four.txt" in err
    assert not out.exists() and not (tmp_path / "calib").exists()  # nothing written, not even folders


def test_separate_calibration_and_unlabelled_evaluation_sets(own, tmp_path, capsys):
    calib, evals = tmp_path / "calib_imgs", tmp_path / "eval_imgs"
    calib.mkdir()
    evals.mkdir()
    for k, f in enumerate(sorted((own / "plain").iterdir())):
        (calib if k % 2 else evals).joinpath(f.name).write_bytes(f.read_bytes())
    out = tmp_path / "export"
    rc = main(["quantize", "--weights", str(own / "own5.pth"), "--labels", str(own / "labels.txt"),
               "--calib-images", str(calib), "--eval-images", str(evals), "--out", str(out),
               "--calib-dir", str(tmp_path / "c"), *SMALL])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "agreement with FP32 only" in cap.out and "10 evaluation images" in cap.out
    report = json.loads(next(out.glob("*-report.json")).read_text())
    assert report["calibration_images"] == 10 and report["evaluation"]["labelled"] is False
    fp32, int8 = report["accuracy"]
    assert fp32["top1"] is None and 0 <= int8["top1_agreement"] <= 100  # no labels: no accuracy, as JSON null


def test_overlapping_calibration_and_evaluation_sets_are_refused(own, tmp_path, capsys):
    rc = main(["quantize", "--weights", str(own / "own5.pth"), "--calib-images", str(own / "plain"),
               "--eval-images", str(own / "plain"), "--out", str(tmp_path / "e"), "--calib-dir", str(tmp_path / "c"),
               *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and "disjoint" in err and not (tmp_path / "e").exists()


def test_preprocessing_overrides_are_written_into_the_files(own, tmp_path, capsys):
    out = tmp_path / "export"
    rc = main(["quantize", "--weights", str(own / "own5.pth"), "--images", str(own / "folder"), "--out", str(out),
               "--calib-dir", str(tmp_path / "c"), "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25",
               "--channel-order", "BGR", *SMALL])
    assert rc == 0, capsys.readouterr().err
    from edgesqueeze.runtime import Classifier

    for f in _int8_files(out) + sorted(out.glob("*-fp32.*")):
        pre = Classifier.load(f).metadata.preprocess
        assert pre.crop == 64 and pre.resize == 72 and pre.channel_order == "BGR"
        assert pre.mean == pytest.approx((127.5,) * 3) and pre.std == pytest.approx((63.75,) * 3)


def test_a_caffe_style_mean_without_its_scale_is_an_option_error(own, tmp_path, capsys):
    rc = main(["quantize", "--weights", str(own / "own5.pth"), "--images", str(own / "folder"),
               "--out", str(tmp_path / "e"), "--calib-dir", str(tmp_path / "c"), "--mean", "104,117,123", *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and "--norm-scale 255" in err and not (tmp_path / "e").exists()


# ------------------------------------------------------------------ architecture from the weights


@pytest.mark.parametrize("make,name,alternatives", [
    (lambda: squeezenet1_0_arch(num_classes=7), "squeezenet1_0", ("squeezenet1_0-simple-bypass",)),
    (lambda: squeezenet1_1_arch(num_classes=3), "squeezenet1_1", ("squeezenet1_1-simple-bypass",)),
    (lambda: squeezenet1_0_arch(num_classes=12, bypass=Bypass.COMPLEX), "squeezenet1_0-complex-bypass", ()),
])
def test_arch_and_class_count_are_told_from_the_state_dict(tmp_path, make, name, alternatives):
    arch = make()
    model = SqueezeNet(arch)
    p = tmp_path / "w.pth"
    torch.save(model.state_dict(), p)
    w = read_weights(p)
    assert w.arch.name == name and w.num_classes == arch.num_classes and w.alternatives == alternatives
    for conv_name, conv in model.named_convs():
        np.testing.assert_array_equal(w.params[conv_name][0], conv.weight.detach().numpy())


def test_named_arch_takes_the_class_count_from_the_weights(tmp_path):
    p = tmp_path / "w.pth"
    torch.save(SqueezeNet(squeezenet1_1_arch(num_classes=9)).state_dict(), p)
    assert read_weights(p, arch="squeezenet1_1-simple-bypass").arch.num_classes == 9
    with pytest.raises(WeightsError, match="does not fit squeezenet1_0"):
        read_weights(p, arch="squeezenet1_0")
    with pytest.raises(OptionError, match="squeezenet1_1-complex-bypass"):  # lists the names
        read_weights(p, arch="squeezenet2")


def test_unknown_conv1_lists_the_candidates(tmp_path):
    sd = SqueezeNet(squeezenet1_1_arch(num_classes=4)).state_dict()
    sd["features.0.weight"] = torch.zeros(32, 3, 5, 5)
    p = tmp_path / "odd.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsError) as e:
        read_weights(p)
    assert "odd.pth" in str(e.value) and "(32, 3, 5, 5)" in str(e.value) and "squeezenet1_0" in str(e.value)


def test_a_pickled_whole_model_gets_a_plain_message(tmp_path, capsys):
    p = tmp_path / "whole.pth"
    torch.save(SqueezeNet(squeezenet1_1_arch(num_classes=4)), p)
    rc = main(["quantize", "--weights", str(p), "--images", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "torch.save(model.state_dict()" in err
    assert "\x1b[" not in err and "Traceback" not in err


def test_python_api_returns_what_was_written(own, tmp_path):
    import edgesqueeze

    r = edgesqueeze.quantize(own / "own5.pth", own / "named.csv", out=tmp_path / "export", calib_dir=tmp_path / "c",
                             formats=["tflite"], input_size=64, resize=72, verify_images=4, sqnr_images=0)
    assert r.num_classes == 5 and r.labels == CLASSES and r.arch == "squeezenet1_1"
    assert [f.path.suffix for f in r.files] == [".tflite", ".tflite"]
    assert all(f.path.is_file() and f.bytes == f.path.stat().st_size for f in r.files)
    assert r.files[1].lsb_match == 1.0 and r.report.is_file() and r.qparams.is_file()
    assert r.evaluation is not None and r.evaluation.images + r.calibration_images == 20
    with pytest.raises(OptionError, match="formats"):
        edgesqueeze.quantize(own / "own5.pth", own / "named.csv", formats=["pt"], out=tmp_path / "x")
    with pytest.raises(DataError, match="not found"):
        edgesqueeze.quantize(own / "own5.pth", tmp_path / "nowhere", out=tmp_path / "x")
    for names in (["cat", "dog", "", "owl", "yak"], ["cat", "dog\nfox", "fox", "owl", "yak"]):
        with pytest.raises(DataError, match="empty or holds a line break"):
            edgesqueeze.quantize(own / "own5.pth", own / "named.csv", labels=names, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_evenly_spaced_calibration_subset():
    from edgesqueeze.job import DEFAULT_CALIB_IMAGES, evenly_spaced

    items = list(range(194))
    got = evenly_spaced(items, DEFAULT_CALIB_IMAGES)
    assert len(got) == DEFAULT_CALIB_IMAGES == len(set(got))
    assert got[0] == 0 and got[-1] >= 190  # spread over the whole list, not its first part
    assert max(b - a for a, b in zip(got, got[1:])) <= 3
    assert evenly_spaced(items[:10], 96) == items[:10]
