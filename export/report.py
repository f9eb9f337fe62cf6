"""The export report: a short table of what a bundle takes and answers, and how each runtime fared.

Printed by ``python -m export`` and ``python -m export.verify``, and kept in manifest.json
(``report``), built from the manifest alone. A parity cell is the largest relative difference of
that runtime and option set from the dygraph model over the case's calls and all outputs
(``|difference| / max|reference|``, per output); ``!`` marks a cell beyond tolerance.
"""
from __future__ import annotations


def cell(case: dict) -> str:
    """One parity cell: the worst relative difference over the outputs, ``!`` when the case failed."""
    if "error" in case:
        return "error"
    worst = max((o["max_rel_diff"] for o in case["outputs"].values()), default=0.0)
    return ("0" if worst == 0 else f"{worst:.1e}") + ("" if case["passed"] else "!")


def runtime_rows(parity: dict) -> list[str]:
    """The table: one row per runtime and option set; cases as columns; the reason for those not passed."""
    labels = [c["label"] for c in parity["cases"]]
    widths = [max(len(label), 8) for label in labels]
    head = f"  {'runtime':<16} {'setting':<11} {'status':<12} " + " ".join(f"{lb:>{w}}" for lb, w in zip(labels, widths))
    rows = [head.rstrip()]
    for name, result in parity["runtimes"].items():
        settings = result.get("settings") or [{"label": "-", "cases": []}]
        for setting in settings:
            by_case = {c["case"]: c for c in setting["cases"]}
            cells = " ".join(f"{cell(by_case[lb]) if lb in by_case else '-':>{w}}" for lb, w in zip(labels, widths))
            rows.append(f"  {name:<16} {setting['label']:<11} {result['status']:<12} {cells}".rstrip())
        if result.get("reason"):
            rows.append(f"  {'':<16} {'':<11} {'':<12} {result['reason']}")
    return rows


def report_lines(manifest: dict, where: str, title: str = "[export]") -> list[str]:
    """The whole report for a manifest (``where``: the bundle folder, as the user named it; ``title``: which
    command made it)."""
    parity, signature = manifest["parity"], manifest.get("signature", {})
    lines = [f"{title} {manifest['task']}/{manifest['model_name']} -> {where} ({manifest['graph_format']} graph, "
             f"batch {manifest['batch']}, exported in {manifest['export_seconds']} s)"]
    if conversion := manifest.get("to_static"):
        lines.append(f"  to_static: {conversion['mode']}: {conversion['why']}")
    lines.append("  inputs:  " + "  ".join(signature.get("inputs", [])))
    lines.append("  outputs: " + "  ".join(signature.get("outputs", [])))
    flow = parity.get("control_flow")
    flow_text = "not inspected" if flow is None else \
        (", ".join(f"{n} {kind}" for kind, n in flow.items() if n) or "none")
    lines.append(f"  parity inputs: {parity['calls']} calls in {len(parity['cases'])} cases ({parity['origin']})")
    seen = "not traced (all of the layer's code is Paddle's)" if parity["paths"] is None else \
        f"{parity['paths']} distinct"
    lines.append(f"  paths through forward: {seen}; control flow in the graph: {flow_text}")
    lines.append(f"  tolerance: {parity['tolerance']}; cells: max |difference| / max|reference| over the outputs "
                 "(! beyond tolerance)")
    lines += runtime_rows(parity)
    if parity.get("dygraph_metrics"):
        lines.append("  on the samples: " + ", ".join(f"{k} {v:.4g}" for k, v in parity["dygraph_metrics"].items()))
    lines.append("  files: " + ", ".join([*manifest["files"], "manifest.json"]))
    lines += [f"  note: {note}" for note in manifest.get("notes", [])]
    return lines
