"""A real SqueezeNet that is not the 1000-class ImageNet one, made from the released weights:
the Deep-Compression v1.0 restricted to a subset of its classes (rows of conv10), rewritten as a
torchvision-layout state_dict that takes torchvision's input (RGB, /255, ImageNet mean/std), with
the images laid out as a user's: an ImageFolder of the subset's classes for evaluation, and a
plain folder of the other sample images for calibration.

    python benchmarks/subset_model.py OUT_DIR [--classes 100] [--seed 0]

writes OUT_DIR/squeezenet_subset.pth, OUT_DIR/labels.txt, OUT_DIR/eval/<class>/*.JPEG and
OUT_DIR/calib/*.JPEG (links to the shared images), and prints the `edgesqueeze quantize` command
that runs the main job on them.

The conversion: the released model takes x_c = BGR - mean_c (0..255 pixels); a torchvision model
takes x_t = (RGB / 255 - m) / s. So x_c[bgr c] = 255 s_c' x_t[c'] + 255 m_c' - mean_c with c' the
same colour in RGB order, and conv1 (no padding) absorbs it exactly: W'[:, c'] = W[:, c] 255 s_c',
b' = b + sum W[:, c] (255 m_c' - mean_c). conv10's pad 1 (a quirk of the release, its border
relu(bias) enters the average) has no place in torchvision's SqueezeNet, so the subset model
drops it: it is a model of its own, measured as such (its FP32 accuracy is printed by the job).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgesqueeze import paths  # noqa: E402
from edgesqueeze.arch import TORCHVISION_PREPROCESS, squeezenet1_0_arch  # noqa: E402
from edgesqueeze.data import read_class_names, read_labels_csv  # noqa: E402


def torchvision_params(caffe_params: dict, classes: list[int]) -> dict:
    """The released v1.0's params for torchvision's input, conv10 restricted to `classes`."""
    pre = TORCHVISION_PREPROCESS  # mean/std in 0..255 units, RGB order
    caffe_mean_bgr = np.array([104.0, 117.0, 123.0])
    out = dict(caffe_params)
    w, b = caffe_params["conv1"]
    w = w.astype(np.float64)
    w_rgb = w[:, ::-1]  # input channel c' (RGB) is Caffe's channel 2 - c'
    std = np.asarray(pre.std)  # 255 s
    mean = np.asarray(pre.mean)  # 255 m
    caffe_mean_rgb = caffe_mean_bgr[::-1]
    w_new = w_rgb * std[None, :, None, None]
    b_new = b.astype(np.float64) + (w_rgb.sum(axis=(2, 3)) * (mean - caffe_mean_rgb)[None, :]).sum(axis=1)
    out["conv1"] = (w_new.astype(np.float32), b_new.astype(np.float32))
    w10, b10 = caffe_params["conv10"]
    out["conv10"] = (np.ascontiguousarray(w10[classes]), np.ascontiguousarray(b10[classes]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    from edgesqueeze.model import SqueezeNet
    from edgesqueeze.weights import load_params

    shared = paths.require_shared("the shared sample")
    paths.ensure_weights_env()
    _, params = load_params("squeezenet1_0-dc")
    items = read_labels_csv(shared / "imagenet" / "sample_labels.csv")
    names = read_class_names(shared / "imagenet" / "synset_words.txt")
    rng = np.random.default_rng(args.seed)
    chosen = sorted(rng.choice(sorted({i.label for i in items}), size=args.classes, replace=False).tolist())
    arch = squeezenet1_0_arch(num_classes=len(chosen))
    model = SqueezeNet.from_params(arch, torchvision_params(params, chosen))
    out = args.out
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "calib").mkdir(exist_ok=True)
    torch.save(model.state_dict(), out / "squeezenet_subset.pth")
    labels = [names[c].split(",")[0].strip() for c in chosen]
    # ImageFolder indices are sorted folder names: name the folders so that sorting keeps class order
    for k, c in enumerate(chosen):
        d = out / "eval" / f"{k:03d}_{labels[k].replace(' ', '_').replace('/', '_')}"
        d.mkdir(exist_ok=True)
        for it in items:
            if it.label == c and not (d / it.path.name).exists():
                os.symlink(it.path.resolve(), d / it.path.name)
    for it in items:
        if it.label not in chosen and not (out / "calib" / it.path.name).exists():
            os.symlink(it.path.resolve(), out / "calib" / it.path.name)
    (out / "labels.txt").write_text("\n".join(labels) + "\n")
    print(f"{len(chosen)} classes; eval {sum(1 for i in items if i.label in chosen)} images, "
          f"calib {sum(1 for i in items if i.label not in chosen)} images")
    print(f"edgesqueeze quantize --weights {out / 'squeezenet_subset.pth'} --labels {out / 'labels.txt'} "
          f"--calib-images {out / 'calib'} --eval-images {out / 'eval'} --out {out / 'export'} "
          f"--calib-dir {out / 'qparams'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
