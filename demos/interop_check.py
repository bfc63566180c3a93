#!/usr/bin/env python3
"""Interop check: do MediaPipe Tasks and the TFLite Task Library read an exported .tflite the
way edgesqueeze does?

    python demos/interop_check.py MODEL.tflite [--images N] [--max-results K]

1. Two throwaway venvs under --cache (default ~/.cache/edgesqueeze-interop, or
   $EDGESQUEEZE_INTEROP_CACHE), made once and reused: `mediapipe==1.2.3` (it brings
   opencv-contrib-python) and `tflite-support==0.4.4` with `protobuf<4`. tflite-support's wheel
   links libusb-1.0.so.0, which a machine may lack: that venv also gets `libusb-package`, and
   its worker runs with that copy on LD_LIBRARY_PATH.
2. tflite-support's MetadataDisplayer prints the file's metadata JSON and associated files.
   Checked: the JSON parses, input "image", output "probability", min_parser_version, and
   labels.txt packed when the model has class names.
3. The first N images of the shared evaluation split (`edgesqueeze.data.split_calibration`
   over imagenet/sample_labels.csv), each as the model's centre crop (`Classifier.preprocess`),
   are classified by edgesqueeze's Classifier, MediaPipe's ImageClassifier and the Task
   Library's ImageClassifier, both asked for K results (default: every class) and given the
   crop as RGB (mp.Image SRGB / TensorImage), as they expect.
   - An RGB file (the default) is given to both tools as it is. Checked: top-1 equal on >=
     --min-agreement of the images, every (index, label name) the tools return equal to
     edgesqueeze's, and the scores are probabilities: with every class asked for, each image's
     scores sum to 1 (within 1e-3), and they are edgesqueeze's `Classifier.scores` (the file's
     own softmax; the largest difference is reported).
   - A BGR file: its metadata says colour space UNKNOWN (the schema has no BGR), and both tools
     must refuse it rather than feed it RGB. Measured on a temporary copy whose metadata claims
     RGB (one byte differs): fed the RGB crop, what such a tool would do to the file (the cost
     of the channel mismatch: reported, not checked), and fed the crop in the model's BGR
     order under an RGB label (what the model needs: checked as above).
   The tools' scores are the file's output as it is: the probabilities of its softmax.
4. A table with the CPU and the versions. Exit status 0 when every check passes, 1 when one
   fails, 2 for a usage error.

Make a real INT8 file first, e.g.
    edgesqueeze quantize --calib-limit 32 --limit 40 --out /tmp/interop_export --calib-dir /tmp/interop_calib
    (add --channel-order bgr for a BGR file)
    python demos/interop_check.py /tmp/interop_export/squeezenet1_0-affine-int8.tflite --images 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

SHARED = Path(os.environ.get("EDGESQUEEZE_SHARED", ROOT.parent / "shared"))
CACHE = Path(os.environ.get("EDGESQUEEZE_INTEROP_CACHE", Path.home() / ".cache" / "edgesqueeze-interop"))
VENVS = {"mediapipe": ["mediapipe==1.2.3"],
         "tflite-support": ["tflite-support==0.4.4", "protobuf<4", "libusb-package"]}
TASKS = {"mediapipe": "mediapipe", "tasklib": "tflite-support", "display": "tflite-support"}

# Runs inside a venv: its own numpy, no edgesqueeze. argv: task model crops.npy max_results out.json
WORKER = r'''
import json, sys
import numpy as np
task, model, crops_path, k, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
doc = {"loaded": False, "error": None, "results": []}
try:
    if task == "display":
        import importlib.metadata
        from tflite_support import metadata as md
        d = md.MetadataDisplayer.with_model_file(model)
        doc.update(loaded=True, version=importlib.metadata.version("tflite-support"),
                   json=d.get_metadata_json(), files=d.get_packed_associated_file_list())
    elif task == "mediapipe":
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
        doc["version"] = mp.__version__
        opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=k)
        with vision.ImageClassifier.create_from_options(opts) as clf:
            doc["loaded"] = True
            for crop in np.load(crops_path):
                r = clf.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop)))
                doc["results"].append([[c.index, c.category_name, c.score] for c in r.classifications[0].categories])
    else:
        import importlib.metadata
        from tflite_support.task import core, processor, vision
        doc["version"] = importlib.metadata.version("tflite-support")
        opts = vision.ImageClassifierOptions(base_options=core.BaseOptions(file_name=model),
                                             classification_options=processor.ClassificationOptions(max_results=k))
        clf = vision.ImageClassifier.create_from_options(opts)
        doc["loaded"] = True
        for crop in np.load(crops_path):
            r = clf.classify(vision.TensorImage.create_from_array(np.ascontiguousarray(crop)))
            doc["results"].append([[c.index, c.category_name, c.score] for c in r.classifications[0].categories])
except Exception as e:
    doc["error"] = f"{type(e).__name__}: {e}"
json.dump(doc, open(out, "w"))
'''


def ensure_venv(name: str, cache: Path) -> Path:
    """cache/name with VENVS[name] installed (made once; a marker file lists what is in it)."""
    d = cache / name
    want = " ".join(VENVS[name])
    marker = d / ".edgesqueeze-interop"
    if (d / "bin" / "python").exists() and marker.is_file() and marker.read_text() == want:
        return d
    print(f"making {d} ({want}); this takes a few minutes", flush=True)
    d.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(d)], check=True)
    r = subprocess.run([str(d / "bin" / "python"), "-m", "pip", "install", "-q", *VENVS[name]],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"pip install {want} failed in {d}: {r.stderr.strip()[-1500:]}")
    marker.write_text(want)
    return d


def worker_env(venv: Path) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GLOG_minloglevel="2")
    found = list((venv / "lib").glob("python3*/site-packages/libusb_package/libusb-1.0.so"))
    if found:  # tflite-support's extension links libusb-1.0.so.0
        libs = venv / "extra-libs"
        libs.mkdir(exist_ok=True)
        link = libs / "libusb-1.0.so.0"
        if not link.exists():
            link.symlink_to(found[0])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    return env


def run_worker(task: str, model: Path, crops: np.ndarray, k: int, work: Path, cache: Path) -> dict:
    venv = ensure_venv(TASKS[task], cache)
    script, crops_path, out = work / "worker.py", work / f"crops-{task}.npy", work / f"out-{task}.json"
    script.write_text(WORKER)
    np.save(crops_path, crops)
    out.unlink(missing_ok=True)
    r = subprocess.run([str(venv / "bin" / "python"), str(script), task, str(model), str(crops_path), str(k), str(out)],
                       capture_output=True, text=True, env=worker_env(venv), timeout=3600)
    if not out.is_file():
        return {"loaded": False, "error": f"the worker died (rc {r.returncode}): {r.stderr.strip()[-800:]}",
                "results": []}
    return json.loads(out.read_text())


def rgb_claiming_copy(data: bytes) -> bytes:
    """The file with its TFLITE_METADATA saying RGB: rebuilt with the exporter's own builder
    (one byte differs), so the tools can be measured on a BGR file they refuse."""
    from edgesqueeze.export.tflite_metadata import build_metadata_buffer
    from edgesqueeze.formats.flatbuffer import read_metadata_entries
    from edgesqueeze.formats.standard_metadata import STANDARD_KEY, parse_metadata_buffer

    entry = read_metadata_entries(data)[STANDARD_KEY]
    sm = parse_metadata_buffer(entry)[0]
    if build_metadata_buffer(sm) != entry or data.count(entry) != 1:
        raise RuntimeError("the file's TFLITE_METADATA was not written by this edgesqueeze; re-export it")
    new = build_metadata_buffer(replace(sm, inputs=(replace(sm.inputs[0], color_space="RGB"), *sm.inputs[1:])))
    assert len(new) == len(entry)
    return data.replace(entry, new)


def compare(doc: dict, probs: np.ndarray, labels: tuple[str, ...]) -> dict:
    """top-1 agreement, label names, score sums and score differences of a worker's results
    against edgesqueeze's probabilities `probs` (Classifier.scores)."""
    res = doc["results"]
    if len(res) != len(probs):
        return {"images": len(res), "top1": None, "names_equal": None, "max_score_diff": None, "sums": None}
    top1 = [max(r, key=lambda c: c[2])[0] if r else -1 for r in res]
    agree = float(np.mean(np.asarray(top1) == probs.argmax(axis=1)))
    pairs = [(c[0], c[1]) for r in res for c in r]
    names = all(0 <= i < len(labels) and name == labels[i] for i, name in pairs) if labels else None
    diff = max((abs(c[2] - float(probs[n, c[0]])) for n, r in enumerate(res) for c in r), default=None)
    # every class returned: the scores of an image sum to 1 when they are probabilities
    sums = [sum(c[2] for c in r) for r in res if len(r) == probs.shape[1]]
    return {"images": len(res), "top1": agree, "names_equal": names, "names_compared": len(pairs),
            "max_score_diff": diff, "sums": (min(sums), max(sums)) if sums else None}


def check_display(doc: dict, has_labels: bool) -> list[str]:
    if not doc["loaded"]:
        return [f"MetadataDisplayer failed: {doc['error']}"]
    problems = []
    md = json.loads(doc["json"])
    sg = (md.get("subgraph_metadata") or [{}])[0]
    ins = [t.get("name") for t in sg.get("input_tensor_metadata", [])]
    outs = [t.get("name") for t in sg.get("output_tensor_metadata", [])]
    if ins != ["image"] or outs != ["probability"]:
        problems.append(f"MetadataDisplayer: inputs {ins}, outputs {outs} (want ['image'], ['probability'])")
    if not md.get("min_parser_version"):
        problems.append("MetadataDisplayer: no min_parser_version")
    if doc["files"] != (["labels.txt"] if has_labels else []):
        problems.append(f"MetadataDisplayer: associated files {doc['files']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="an exported .tflite")
    ap.add_argument("--images", type=int, default=100, help="evaluation images (default 100)")
    ap.add_argument("--max-results", type=int, default=0, help="results per image asked of the tools (default: all classes)")
    ap.add_argument("--min-agreement", type=float, default=0.99, help="top-1 agreement a check needs (default 0.99)")
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"where the venvs live (default {CACHE})")
    args = ap.parse_args(argv)

    from edgesqueeze.data import load_image, read_labels_csv, split_calibration
    from edgesqueeze.errors import EdgeSqueezeError
    from edgesqueeze.runtime import Classifier
    from edgesqueeze.sysinfo import cpu_model

    csv = SHARED / "imagenet" / "sample_labels.csv"
    if args.model.suffix != ".tflite" or not csv.is_file() or args.images < 1:
        print(f"error: give an exported .tflite, --images >= 1, and the shared data at {SHARED} "
              "(EDGESQUEEZE_SHARED)", file=sys.stderr)
        return 2
    try:
        clf = Classifier.load(args.model)
        items = split_calibration(read_labels_csv(csv))[1][:args.images]
        crops = np.stack([clf.preprocess(load_image(it.path), source=str(it.path)) for it in items])
        probs = clf.scores(crops)
    except EdgeSqueezeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels, bgr = clf.metadata.labels, clf.metadata.channel_order == "BGR"
    k = args.max_results or probs.shape[1]
    rgb = crops[..., ::-1] if bgr else crops
    data = args.model.read_bytes()
    problems: list[str] = []
    rows = []
    versions = {}
    with tempfile.TemporaryDirectory(prefix="interop-") as tmp:
        work = Path(tmp)
        shown = run_worker("display", args.model, crops[:1], 1, work, args.cache)
        versions["tflite-support"] = shown.get("version", "?")
        if shown["loaded"]:
            print(f"MetadataDisplayer ({args.model.name}):\n{shown['json']}\nassociated files: {shown['files']}\n")
        problems += check_display(shown, bool(labels))
        copy = work / f"rgb-claim-{args.model.name}"
        if bgr:
            try:
                copy.write_bytes(rgb_claiming_copy(data))
            except (KeyError, RuntimeError) as e:  # no TFLITE_METADATA, or not ours
                problems.append(f"no copy claiming RGB can be made: {e}")
                copy = None
        for task, tool, package in (("mediapipe", "MediaPipe ImageClassifier", "mediapipe"),
                                    ("tasklib", "Task Library ImageClassifier", "tflite-support")):
            runs = [(args.model, "RGB crop", rgb, True)] if not bgr else [(args.model, "RGB crop", rgb, None)]
            if bgr and copy is not None:
                runs += [(copy, "RGB crop", rgb, False), (copy, "BGR crop as RGB", crops, True)]
            for model, fed, pixels, checked in runs:
                doc = run_worker(task, model, pixels, k, work, args.cache)
                versions[package] = doc.get("version", "?")
                name = "file" if model == args.model else "copy claiming RGB"
                if checked is None:  # the BGR file itself: must be refused for its colour space
                    ok = not doc["loaded"] and "RGB" in (doc["error"] or "")
                    note = f"refused: {doc['error']}" if doc["error"] else "loaded it (would feed RGB to a BGR model)"
                    rows.append((tool, name, fed, "-", "-", "-", "-", "-", note[:70], "PASS" if ok else "FAIL"))
                    if not ok:
                        problems.append(f"{tool} did not refuse the BGR file: {doc['error'] or 'it loaded it'}")
                    continue
                if not doc["loaded"] or doc["error"]:
                    rows.append((tool, name, fed, "-", "-", "-", "-", "-", (doc["error"] or "")[:60], "FAIL"))
                    problems.append(f"{tool} on the {name}: {doc['error']}")
                    continue
                c = compare(doc, probs, labels)
                verdict = "info"
                if checked:
                    sums_ok = c["sums"] is None or (abs(c["sums"][0] - 1) <= 1e-3 and abs(c["sums"][1] - 1) <= 1e-3)
                    ok = c["top1"] is not None and c["top1"] >= args.min_agreement and c["names_equal"] is not False \
                        and sums_ok
                    verdict = "PASS" if ok else "FAIL"
                    if not ok:
                        problems.append(f"{tool} on the {name} fed {fed}: top-1 equal {c['top1']}, label names "
                                        f"equal {c['names_equal']}, score sums {c['sums']}")
                rows.append((tool, name, fed, str(c["images"]),
                             "-" if c["top1"] is None else f"{100 * c['top1']:.1f}",
                             {True: f"yes ({c['names_compared']})", False: "NO", None: "no labels"}[c["names_equal"]],
                             "-" if c["sums"] is None else f"{c['sums'][0]:.5f}..{c['sums'][1]:.5f}",
                             "-" if c["max_score_diff"] is None else f"{c['max_score_diff']:.3g}", "", verdict))
    head = ("tool", "model", "fed", "images", "top-1 equal %", "label names equal", "score sums",
            "max |score - probability|", "note", "result")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(f"model {args.model} ({clf.metadata.arch}, {clf.metadata.scheme}, {clf.metadata.channel_order}, "
          f"{probs.shape[1]} classes); edgesqueeze {clf.backend.value} {clf.runtime_version}")
    print(f"CPU {cpu_model()}; Python {sys.version.split()[0]}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"{len(items)} evaluation images (split_calibration over {csv.name}), {k} results asked per image")
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(v).ljust(w) for v, w in zip(r, widths)) + " |")
    for p in problems:
        print(f"FAIL: {p}")
    print("all checks passed" if not problems else f"{len(problems)} check(s) failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
