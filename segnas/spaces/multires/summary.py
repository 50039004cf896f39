"""A printable summary of a ``multires`` network: one row per eval-mode piece (part, branches,
layer, scale, operator, channels, stride), its parameter count and FLOPs."""

from __future__ import annotations

from typing import Any

from segnas.spaces.multires.arch import MultiResArch, scale_name
from segnas.spaces.multires.network import MultiResNet, plan_network


def structure_rows(arch: MultiResArch, num_classes: int) -> list[dict[str, Any]]:
    """One row per eval-mode piece: part, branch(es), layer, scale, op, cin, cout, stride."""
    plan = plan_network(arch, num_classes)
    label = lambda group: "+".join(scale_name(arch.branches[k].last) for k in group)  # noqa: E731
    rows = [dict(part="stem", branch="", layer=i, scale=f"1/{2 ** i}", op=p.template.op,
                 cin=p.template.cin, cout=p.template.cout, stride=p.template.stride) for i, p in enumerate(plan.stem)]
    for s in plan.steps:
        t = s.piece.template
        rows.append(dict(part="cell", branch=label(s.group), layer=s.layer, scale=scale_name(s.scale), op=t.op,
                         cin=t.cin, cout=t.cout, stride=t.stride))
    for k, per_branch in enumerate(plan.fusion):
        for scale, arm, up, refine in per_branch:
            for p, sc in ((arm, scale + 1), (up, scale + 1), (refine, scale)):
                t = p.template
                extra = dict(t.extra)
                op = t.op + (f"(k{extra['kernel']})" if t.op == "conv_bn_relu" else f"(x{extra['factor']})")
                rows.append(dict(part="fusion", branch=label([k]), layer="", scale=scale_name(sc), op=op,
                                 cin=t.cin, cout=t.cout, stride=1))
    for name, p in (("ffm", plan.ffm), ("head", plan.head), ("upsample", plan.upsample)):
        t = p.template
        rows.append(dict(part=name, branch="", layer="", scale=scale_name(0), op=t.op, cin=t.cin, cout=t.cout,
                         stride=1))
    return rows


def summarize(arch: MultiResArch, num_classes: int, input_size: tuple[int, int], flops: bool = True) -> str:
    """The structure table, the deployed parameter count and (optionally) FLOPs at ``input_size`` (H, W)."""
    from segnas.cost.flops import count_flops
    from segnas.cost.params import count_parameters

    rows = structure_rows(arch, num_classes)
    cols = ["part", "branch", "layer", "scale", "op", "cin", "cout", "stride"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    model = MultiResNet(arch, num_classes)
    lines.append(f"parameters (deployed, no aux heads): {count_parameters(model):,} "
                 f"({count_parameters(model) / 1e6:.3f} M)")
    if flops:
        res = count_flops(model, (1, 3, *input_size))
        lines.append(f"at {input_size[0]}x{input_size[1]}, {num_classes} classes: "
                     f"{res.gflops:.2f} GFLOPs = {res.gmacs:.2f} GMACs")
    return "\n".join(lines)
