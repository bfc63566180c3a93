"""`edgesqueeze info`: the SqueezeNet family's layer tables and parameter counts, or with a
MODEL file (.onnx, .tflite or its .esq bundle) what that file says about itself."""

from __future__ import annotations

import json

INFO_EXAMPLES = """examples:
  edgesqueeze info                                         # the family's layer tables
  edgesqueeze info export/squeezenet1_0-affine-int8.tflite # what an exported file holds
  edgesqueeze info export/squeezenet1_0-affine-int8.onnx.esq --json
"""
LABELS_SHOWN = 5
METAPARAMETERS = (("--base-e", 128, int), ("--incr-e", 128, int), ("--pct3x3", 0.5, float),
                  ("--freq", 2, int), ("--sr", 0.125, float))


def cmd_info(args) -> int:
    if args.model is not None:
        return _describe_file(args)
    if args.json:
        from ..errors import OptionError

        raise OptionError("--json describes a model file: give one, e.g. `edgesqueeze info MODEL.tflite --json`")
    from ..arch import metaparameter_arch, squeezenet1_0_arch, squeezenet1_1_arch
    from ..metrics import format_table

    archs = [squeezenet1_0_arch(), squeezenet1_1_arch(), squeezenet1_0_arch(caffe=True),
             squeezenet1_0_arch(bypass="simple"), squeezenet1_0_arch(bypass="complex"),
             metaparameter_arch(base_e=args.base_e, incr_e=args.incr_e, pct3x3=args.pct3x3,
                                freq=args.freq, sr=args.sr)]
    rows = [[a.name, a.input_size, a.final_pad, a.num_parameters()] for a in archs]
    print(format_table(["arch", "input", "conv10 pad", "parameters"], rows))
    a = archs[-1]
    print(f"\nlayers of {a.name}:")
    rows = [[c.name, c.in_channels, c.out_channels, f"{c.kernel}x{c.kernel}/{c.stride}", c.pad,
             c.out_channels * (c.in_channels * c.kernel**2 + 1)] for c in a.convs()]
    print(format_table(["conv", "in", "out", "kernel", "pad", "params"], rows))
    return 0


def _describe_file(args) -> int:
    from ..errors import OptionError
    from ..runtime import describe  # numpy + the standard library: no runtime, torch or onnx

    changed = [name for name, default, _ in METAPARAMETERS if getattr(args, name[2:].replace("-", "_")) != default]
    if changed:
        one = len(changed) == 1
        raise OptionError(f"{', '.join(changed)} {'shapes' if one else 'shape'} the family's layer table, not a "
                          f"model file; drop {'it' if one else 'them'}, or drop MODEL to see the table")
    info = describe(args.model)
    if args.json:
        print(json.dumps(info.to_dict(LABELS_SHOWN), indent=2))
    else:
        print("\n".join(format_info(info.to_dict(LABELS_SHOWN))))
    return 0


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def format_info(d: dict) -> list[str]:
    """The lines `edgesqueeze info MODEL` prints for a ModelFileInfo.to_dict()."""
    fmt = {"tflite": "TFLite", "onnx": "ONNX"}[d["format"]]
    packed = " in an update bundle" if d["bundle"] else ""
    lines = [f"{d['path']}: {fmt} model{packed}, {d['file_bytes']:,} bytes"]
    rows = []
    if d["bundle"]:
        b = d["bundle"]
        rows.append(("bundle", f"edgesqueeze update bundle of {b['name']} ({b['model_bytes']:,} bytes unpacked, "
                               f"sha256 {b['sha256'][:16]}...)"))
    m = d["metadata"]
    if m is None:
        rows.append(("metadata", "none: not written by edgesqueeze, so `edgesqueeze classify` will not run it; "
                                 "re-export it with `edgesqueeze quantize`"))
    else:
        more = ", ..." if m["classes"] > len(m["first_labels"]) else ""
        rows += [("arch", f"{m['arch']} (written by edgesqueeze {m['version']})"),
                 ("classes", f"{m['classes']}: " + ", ".join(m["first_labels"]) + more),
                 ("scheme", m["scheme"])]
        i = m["input"]
        resize = (f"{i['resize'][0]}x{i['resize'][1]} (exact)" if isinstance(i["resize"], list)
                  else f"short side to {i['resize']}")
        rows += [("input", f"{i['dtype']} {i['layout']} {i['size']}x{i['size']}x3, {i['channel_order']} order"),
                 ("preprocess", f"resize {resize}, centre crop {i['crop']} ({i['style']} style)"),
                 ("normalise", f"mean {', '.join(map(_num, i['mean']))}, std {', '.join(map(_num, i['std']))} "
                               "(0..255 pixels; done inside the file)"),
                 ("calibration", ", ".join(f"{k}={_num(v)}" for k, v in m["calibration"].items()) or "none (FP32)")]
    if d["target"]:
        rows.append(("target", d["target"]))
    if d["opsets"]:
        rows.append(("opsets", ", ".join(f"{k or 'ai.onnx'} {v}" for k, v in d["opsets"].items())))
    for key in ("inputs", "outputs"):
        rows.append((key, "; ".join(f"{t['name']} {t['dtype']} [{', '.join('?' if x is None else str(x) for x in t['shape'])}]"
                                    for t in d[key]) or "none"))
    rows.append(("operators", f"{d['operators']} in all"))
    width = max(len(k) for k, _ in rows)
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    op_width = max((len(op) for op in d["ops"]), default=0)
    lines += [f"    {op:<{op_width}}  {n:>4}" for op, n in d["ops"].items()]
    return lines


def add_parser(sub) -> None:
    import argparse

    info = sub.add_parser("info", help="layer tables and parameter counts, or what a model file holds",
                          description="Without MODEL: the SqueezeNet family's layer tables and parameter counts. "
                          "With MODEL (.onnx, .tflite or .esq bundle): its arch, classes, input contract, "
                          "scheme, calibration, operators and size, read from the file without a runtime.",
                          epilog=INFO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("model", nargs="?", default=None, metavar="MODEL",
                      help="an exported .onnx/.tflite file or its .esq bundle")
    info.add_argument("--json", action="store_true", help="print what MODEL holds as JSON")
    for name, default, typ in METAPARAMETERS:
        info.add_argument(name, type=typ, default=default, help=f"metaparameter of the table (default {default})")
    info.set_defaults(func=cmd_info)
