"""A run's answer in one sentence: which network to ship from a comparison (the most accurate
within the latency budget, against the best of the other kind), and how a search's found network
stands against its target. The HTML report opens with it; ``compare.md`` and the terminal too."""

from __future__ import annotations

from typing import Any

from segnas.config.compare import TARGET_TOLERANCE
from segnas.report.format import is_number, num, pct, signed_pct


def within_budget(row: dict[str, Any]) -> bool | None:
    """Whether a comparison row's network, measured in the comparison's latency session, runs within
    the target (at most ``TARGET_TOLERANCE`` over it); None when it was not measured."""
    vs = row.get("latency_vs_target")
    return vs <= TARGET_TOLERANCE if is_number(vs) else None


def unscored_reasons(rows: list[dict[str, Any]]) -> str:
    """`` Why: <names>: <reason>; ...``: the rows of a comparison that nothing scored, grouped by
    their status (a search refused for its target, a failed training), or by what is still to come."""
    why: dict[str, list[str]] = {}
    for r in rows:
        status = str(r.get("status") or "ok").splitlines()[0]
        if status == "ok" or status.startswith(("over target", "under target")):
            status = "not measured yet" if is_number(r.get("val_miou_mean")) else "not trained yet"
        why.setdefault(status.removeprefix("failed: "), []).append(str(r.get("name")))
    return (" Why: " + "; ".join(f"{', '.join(names)}: {status}" for status, names in why.items()) + ".") \
        if why else ""


def compare_verdict(cmp: dict[str, Any]) -> tuple[str, bool]:
    """The comparison's answer in words: the most accurate network within the latency budget, and
    how the best network of the other kind (searched or hand-designed) stands against it, within the
    budget or not; or that no network runs within it, or that none was both scored and measured.
    Returns the sentence and whether a network runs within the budget."""
    target, tol = num(cmp.get("target_ms"), ".4g"), f"{100 * TARGET_TOLERANCE:.0f}%"
    rows = cmp.get("rows", [])
    scored = [r for r in rows if is_number(r.get("val_miou_mean")) and is_number(r.get("latency_ms"))]
    fits = [r for r in scored if within_budget(r)]
    sessions = cmp.get("latency_sessions") or 1
    test = cmp.get("test_split")

    def told(r: dict[str, Any]) -> str:
        unseen = f", {test} mIoU {pct(r['test_miou_mean'], unit='%')}" if test and is_number(r.get("test_miou_mean")) \
            else ""
        seeds = r.get("seeds") or []
        ok = sum(s.get("status", "ok") == "ok" for s in seeds)
        partial = f"; {ok} of {len(seeds)} seeds trained" if ok < len(seeds) else ""
        return (f"{r.get('name')} ({r.get('kind')}): val mIoU {pct(r['val_miou_mean'], unit='%')}{unseen} at "
                f"{num(r.get('latency_ms'))} ms ({signed_pct(r.get('latency_vs_target'))}{partial})")

    kept = {id(r) for r in scored}
    missing = [str(r.get("name")) for r in rows if id(r) not in kept]
    unscored = f" Not both trained and measured: {', '.join(missing)}." if missing and scored else ""
    if not scored:
        return "No network was both trained and measured: nothing to compare." + unscored_reasons(rows), False
    if not fits:
        fastest = min(scored, key=lambda r: r["latency_ms"])
        return (f"No network runs within the {target} ms budget (+{tol}); the fastest is {told(fastest)}."
                + unscored, False)
    def tied(row: dict[str, Any], pool: list[dict[str, Any]]) -> str:
        """`` (X ties with it)``: the others of ``pool`` of ``row``'s val mIoU, to two decimals of a point."""
        same = [str(r.get("name")) for r in pool if r is not row
                and round(100 * r["val_miou_mean"], 2) == round(100 * row["val_miou_mean"], 2)]
        return f" ({', '.join(same)} tie{'s' * (len(same) == 1)} with it)" if same else ""

    best = max(fits, key=lambda r: r["val_miou_mean"])
    where = "in one session" if sessions == 1 else f"in {sessions} sessions on one machine"
    text = (f"Most accurate within the {target} ms budget (measured at most {tol} over it, {where}): {told(best)}"
            f"{tied(best, [r for r in fits if r.get('kind') == best.get('kind')])}.")
    rival_kind = "zoo" if best.get("kind") == "method" else "method"
    kind_name = "hand-designed" if rival_kind == "zoo" else "searched"
    rivals = [r for r in fits if r.get("kind") == rival_kind]
    if rivals:
        rival = max(rivals, key=lambda r: r["val_miou_mean"])
        gap = 100 * (best["val_miou_mean"] - rival["val_miou_mean"])
        spread = max((100 * r["val_miou_std"] for r in (best, rival) if is_number(r.get("val_miou_std"))), default=0.0)
        standing = (f"ties with {best.get('name')}" if round(gap, 2) == 0 else f"is {gap:.2f} val mIoU points below"
                    + (" (within the seeds' spread)" if gap <= spread else ""))
        text += f" The best {kind_name} network within it, {told(rival)}{tied(rival, rivals)}, {standing}."
    elif over := [r for r in scored if r.get("kind") == rival_kind]:
        rival = max(over, key=lambda r: r["val_miou_mean"])
        text += f" No {kind_name} network runs within it; the most accurate, {told(rival)}."
    return text + unscored, True


def search_verdict(name: str, net: dict[str, Any], target_ms: Any) -> tuple[str, bool]:
    """A search's answer in words: its found network's measured latency against the target (and
    whether the target constrained the search at all) and its accuracy; and whether it runs within it."""
    trained = (net.get("training") or {}).get("best_val_miou")
    accuracy = f", val mIoU {pct(trained, unit='%')} after its final training" if is_number(trained) else ""
    measured, vs = net.get("measured_ms"), net.get("latency_vs_target")
    if is_number(measured) and not is_number(vs):
        return f"Found network {name}: {num(measured)} ms measured (no latency target){accuracy}.", True
    if not is_number(measured) or not is_number(vs):
        return f"Found network {name}: predicted {num(net.get('predicted_ms'))} ms{accuracy}.", True
    text = f"Found network {name}: {num(measured)} ms measured against the {num(target_ms, '.4g')} ms target " \
           f"({signed_pct(vs)}){accuracy}."
    if vs > TARGET_TOLERANCE:
        text += " It runs over the target: search again with a lower target (or check the host was quiet)."
    elif vs < -0.5:
        text += (f" It uses {100 * (1 + vs):.0f}% of the target: the target hardly constrained this search (a lower "
                 "target asks for a faster network; a higher one leaves room for a more accurate one).")
    return text, vs <= TARGET_TOLERANCE
