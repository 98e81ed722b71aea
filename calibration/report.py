"""The calibration report: JSON (everything, machine-readable) and Markdown (the same, for people)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from metasr.fileio import atomic_path

__all__ = ["format_markdown", "write_report"]


def _db(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3f}"


def _bins_table(score: dict) -> list[str]:
    lines = [
        "| scales | crops | FP32 vs HR dB | this vs HR dB | loss dB | at dB | this vs FP32 dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in score["bins"]:
        lines.append(
            f"| ({b['lo']:g}, {b['hi']:g}] | {b['crops']} | {_db(b['psnr_fp32'])} | {_db(b['psnr'])} | "
            f"{_db(b['loss_db'])} | {_db(b.get('psnr_reference', math.nan))} | {_db(b['psnr_vs_fp32'])} |"
        )
    return lines


def format_markdown(report: dict) -> str:
    """Markdown of a calibration report dict (see :func:`metasr.calibration.calibrate.calibrate`)."""
    verdict = "met" if report["met"] else "NOT MET"
    lines = [
        f"# Calibration: {report['precision']} ({verdict})",
        "",
        f"Budget: worst scale bin loses at most {report['budget_db']:g} dB Y-PSNR against FP32 on an image "
        f"reconstructed at {report.get('reference_psnr_db', 0):g} dB and stays >= {report['min_psnr_db']:g} dB "
        f"against the FP32 output, measured on {report['held_apart']} held-apart crops (images not used for the "
        f"ranges). Calibration: {report['crops']} crops from {', '.join(report['images'])}"
        f" ({', '.join(report.get('images_resolved', []))}), seed {report['seed']}, method {report['method']}"
        + (f" (ranges: `{report['ranges_file']}`)" if report.get("ranges_file") else "")
        + ".",
        "",
        "Loss per bin: max(FP32 vs HR - this vs HR, 10 log10(1 + MSE vs FP32 / reference MSE)), Y channel, "
        "ceil(r) shaved, MSE pooled over the bin's crops; the reference MSE is the smaller of the crops' FP32 MSE "
        "and that of an image reconstructed at the reference PSNR in the smallest-scale bin (as much better than "
        "the crops in the other bins): column 'at dB'.",
    ]
    for target, form in report["forms"].items():
        lines += ["", f"## {form['file']} (target {target}): {'met' if form['met'] else 'NOT MET'}", ""]
        if not form["met"]:
            w = max(form["final"]["bins"], key=lambda b: b["loss_db"])
            lines += [
                f"**Budget not met** in scale bin ({w['lo']:g}, {w['hi']:g}]: loss {_db(w['loss_db'])} dB "
                f"(budget {report['budget_db']:g}), {_db(w['psnr_vs_fp32'])} dB against the FP32 output "
                f"(minimum {report['min_psnr_db']:g}), after keeping {len(form['kept'])} tensors in float.",
                "",
            ]
        if "full" in form:
            lines += ["Before the sensitivity pass (both rules applied):", "", *_bins_table(form["full"]), ""]
        lines += ["As written:", "", *_bins_table(form["final"]), ""]
        lines += ["Kept in float:", ""]
        lines += [f"- `{t}`: structural rule (below)" for t in form.get("rule_kept", [])]
        lines += [f"- `{k['name']}`: {k['reason']}" for k in form["kept"]]
        lines += [f"- `{w}` (weight): weight rule (below)" for w in form.get("weight_rule_kept", [])]
        if not form.get("rule_kept") and not form["kept"] and not form.get("weight_rule_kept"):
            lines += ["- nothing"]
        if form.get("pruned"):
            lines += [
                "",
                "Kept on the way, then dropped (the budget holds without them): "
                + ", ".join(f"`{p}`" for p in form["pruned"])
                + ".",
            ]
        if "int8_kernels" in form:
            lines += ["", f"Convolutions that run as INT8 kernels: {form['int8_kernels']}."]
        if form.get("layout_anchored"):
            anchored = ", ".join(f"`{t}`" for t in form["layout_anchored"])
            lines += ["", f"Layout anchors after: {anchored} ({form['layout_anchor']})."]
        if form.get("rule"):
            lines += ["", f"Structural rule: {form['rule']}."]
        if form.get("weight_rule"):
            lines += ["", f"Weight rule: {form['weight_rule']}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, stem: Path) -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.md`` atomically; returns both paths."""
    json_path, md_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(format_markdown(report))
    return json_path, md_path
