"""`edgesqueeze info`: the SqueezeNet family's layer tables and parameter counts."""

from __future__ import annotations

def cmd_info(args) -> int:
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


def add_parser(sub) -> None:
    info = sub.add_parser("info", help="layer tables and parameter counts")
    for name, default, typ in (("--base-e", 128, int), ("--incr-e", 128, int), ("--pct3x3", 0.5, float),
                               ("--freq", 2, int), ("--sr", 0.125, float)):
        info.add_argument(name, type=typ, default=default, help=f"metaparameter (default {default})")
    info.set_defaults(func=cmd_info)
