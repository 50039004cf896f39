"""A run's answer in one sentence: which network to ship from a comparison (the most accurate
within the latency budget, against the best of the other kind), and how a search's found network
stands against its target. The HTML report opens with it; ``compare.md`` and the terminal too."""

from __future__ import annotations

from typing import Any

from segnas.config.compare import TARGET_TOLERANCE
from segnas.report.format import is_number, pct, signed_pct


def _ms(value: Any, fmt: str = ".2f") -> str:
    return format(value, fmt) if is_number(value) else "-"


def within_budget(row: dict[str, Any]) -> bool | None:
    """Whether a comparison row's network, measured in the comparison's latency session, runs within
    the target (at most ``TARGET_TOLERANCE`` over it); None when it was not measured."""
    vs = row.get("latency_vs_target")
    return vs <= TARGET_TOLERANCE if is_number(vs) else None


def compare_verdict(cmp: dict[str, Any]) -> tuple[str, bool]:
    """The comparison's answer in words: the most accurate network within the latency budget, and
    how the best searched network stands against it (or that none runs within it); and whether one does."""
    target, tol = cmp.get("target_ms"), f"{100 * TARGET_TOLERANCE:.0f}%"
    scored = [r for r in cmp.get("rows", []) if is_number(r.get("val_miou_mean"))]
    fits = [r for r in scored if within_budget(r)]

    test = cmp.get("test_split")

    def told(r: dict[str, Any]) -> str:
        unseen = f", {test} mIoU {pct(r['test_miou_mean'], unit='%')}" if test and is_number(r.get("test_miou_mean")) \
            else ""
        return (f"{r.get('name')} ({r.get('kind')}): val mIoU {pct(r['val_miou_mean'], unit='%')}{unseen} at "
                f"{_ms(r.get('latency_ms'))} ms ({signed_pct(r.get('latency_vs_target'))})")

    if not fits:
        timed = [r for r in scored if is_number(r.get("latency_ms"))]
        fastest = f"; the fastest is {told(min(timed, key=lambda r: r['latency_ms']))}" if timed else ""
        return f"No network runs within the {_ms(target, '.4g')} ms budget (+{tol}){fastest}.", False
    best = max(fits, key=lambda r: r["val_miou_mean"])
    text = (f"Most accurate within the {_ms(target, '.4g')} ms budget (measured at most {tol} over it, all in "
            f"one session): {told(best)}.")
    rival_kind = "zoo" if best.get("kind") == "method" else "method"
    rivals = [r for r in fits if r.get("kind") == rival_kind]
    if rivals:
        rival = max(rivals, key=lambda r: r["val_miou_mean"])
        gap = 100 * (best["val_miou_mean"] - rival["val_miou_mean"])
        text += (f" The best {'hand-designed' if rival_kind == 'zoo' else 'searched'} network within it, "
                 f"{told(rival)}, is {gap:.2f} val mIoU points below.")
    return text, True


def search_verdict(name: str, net: dict[str, Any], target_ms: Any) -> tuple[str, bool]:
    """A search's answer in words: its found network's measured latency against the target (and
    whether the target constrained the search at all) and its accuracy; and whether it runs within it."""
    trained = (net.get("training") or {}).get("best_val_miou")
    accuracy = f", val mIoU {pct(trained, unit='%')} after its final training" if is_number(trained) else ""
    measured, vs = net.get("measured_ms"), net.get("latency_vs_target")
    if not is_number(measured) or not is_number(vs):
        return f"Found network {name}: predicted {_ms(net.get('predicted_ms'))} ms{accuracy}.", True
    text = f"Found network {name}: {_ms(measured)} ms measured against the {_ms(target_ms, '.4g')} ms target " \
           f"({signed_pct(vs)}){accuracy}."
    if vs > TARGET_TOLERANCE:
        text += " It runs over the target: search again with a lower target (or check the host was quiet)."
    elif vs < -0.5:
        text += (f" It uses {100 * (1 + vs):.0f}% of the target: the target hardly constrained this search (a lower "
                 "target asks for a faster network; a higher one leaves room for a more accurate one).")
    return text, vs <= TARGET_TOLERANCE
