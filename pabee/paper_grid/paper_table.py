"""The paper's table from result rows (scoring.result_rows.ResultRow, as run_glue writes them in
pabee_results.json): which exit setting stands for each method, the reference numbers, and the
table as markdown, JSON and LaTeX.

A method is a training regime plus the exit setting it is shown at. PABEE's patience is the
fastest whose metric stays within `tolerance` of full depth; baselines are shown at the setting
whose speed-up is closest to PABEE's on the same task, as the paper compares methods at similar
speed-ups. Settings are chosen on rows the cells do not score (`choose`: each run's rows held out
of training, pabee.scoring.split_choice's point) and the cells score dev; chosen on dev itself, as the paper did,
the table says it is optimistic. With several seeds every number is the median, with the min-max
beside it; settings are chosen on the medians.
"""

import re
import statistics

from pabee.data.glue import TASKS
from pabee.early_exit.rules import RULES
from pabee.scoring.report import markdown as markdown_lines
from pabee.scoring.result_rows import fastest_within

# The paper's eight GLUE tasks and the metrics of their columns (the first one is averaged).
PAPER_TASKS = ["CoLA", "MNLI", "MRPC", "QNLI", "QQP", "RTE", "SST-2", "STS-B"]
COLUMNS = {"cola": ["mcc"], "mrpc": ["f1", "acc"], "qqp": ["f1", "acc"], "sts-b": ["pearson", "spearmanr"]}


def columns_of(task):
    return COLUMNS.get(task, ["acc"])


def method_folder(method):
    """A method's folder name under submission/: "DeeBERT (entropy)" -> deebert-entropy."""
    return re.sub(r"[^a-z0-9]+", "-", method.lower()).strip("-")


# method: (training regime, criterion, how its setting is chosen, the model it needs, its --methods key):
# the paper's table, then the later methods that beat PABEE (docs/methods.md).
CLOSEST = "speed-up closest to PABEE's"
DEV = "dev, the rows the cells score (optimistic: each setting was picked for doing well on them)"
METHODS = {
    "Vanilla": ("last", "patience", "full depth", "vanilla", "vanilla"),
    "k-layer": ("last", "patience", "full depth of the first k layers", "k-layer", "k-layer"),
    "PABEE": ("pabee", "patience", "fastest patience within the tolerance of full depth", "pabee", "pabee"),
    "DeeBERT (entropy)": ("two_stage", "entropy", CLOSEST, "two_stage", "deebert"),
    "Shallow-Deep (confidence)": ("self_distill", "confidence", CLOSEST, "self_distill", "shallow-deep"),
    "PABEE model + entropy": ("pabee", "entropy", CLOSEST, "pabee", "pabee+entropy"),
    "PABEE model + confidence": ("pabee", "confidence", CLOSEST, "pabee", "pabee+confidence"),
    "PABEE model + fixed layer": ("pabee", "fixed", CLOSEST, "pabee", "pabee+fixed"),
}
LATER_METHODS = {
    "F-PABEE (KL)": ("pabee", "kl_patience", CLOSEST, "pabee", "fpabee-kl"),
    "F-PABEE (JS)": ("pabee", "js_patience", CLOSEST, "pabee", "fpabee-js"),
    "PCEE-BERT": ("pabee", "entropy_patience", CLOSEST, "pabee", "pcee"),
    "GPFEE (past)": ("pabee", "past_entropy", CLOSEST, "pabee", "gpfee-past"),
    "BERxiT (entropy)": ("alternate", "entropy", CLOSEST, "alternate", "berxit"),
    "BERxiT-LTE": ("alternate_lte", "lte", CLOSEST, "alternate_lte", "berxit-lte"),
    "ElasticBERT (patience)": ("equilibrium", "patience", CLOSEST, "equilibrium", "elasticbert"),
    "COSEE": ("cosee", "energy", CLOSEST, "cosee", "cosee"),
}
ALL_METHODS = {**METHODS, **LATER_METHODS}
KEYS = {method[4]: name for name, method in ALL_METHODS.items()}
PAPER_METHODS = tuple(method[4] for method in METHODS.values())  # the default of reproduce_paper.py --methods
MODELS = {"vanilla": "last", "k-layer": "last", "pabee": "pabee", "two_stage": "two_stage",
          "self_distill": "self_distill", "alternate": "alternate", "alternate_lte": "alternate_lte",
          "equilibrium": "equilibrium", "cosee": "cosee"}


def models_for(methods):
    """The models (MODELS keys) that the method names need, in MODELS' order; PABEE's always, as
    every baseline's setting is matched to its speed-up."""
    wanted = {ALL_METHODS[m][3] for m in methods} | {"pabee"}
    return [model for model in MODELS if model in wanted]


# Dev-set numbers published in the paper (Table 1), for the checkpoints it used.
REFERENCE = {
    "albert-base-v2": {
        "paper: ALBERT-base": {"cola": 58.9, "mnli": 84.6, "mrpc": 89.5, "qnli": 91.7, "qqp": 89.6, "rte": 78.6,
                               "sst-2": 92.8, "sts-b": 89.5},
        "paper: ALBERT-base + PABEE (1.57x)": {"cola": 61.2, "mnli": 85.1, "mrpc": 90.0, "qnli": 91.8, "qqp": 89.6,
                                               "rte": 80.1, "sst-2": 93.0, "sts-b": 90.1},
    },
    "bert-base-uncased": {
        "paper: BERT-base": {"mnli": 84.5, "sst-2": 92.1, "sts-b": 88.9},
        "paper: BERT-base + PABEE (1.62x)": {"mnli": 83.6, "sst-2": 92.0, "sts-b": 88.7},
    },
}
REFERENCE_ROW = {"paper: ALBERT-base": "Vanilla", "paper: ALBERT-base + PABEE (1.57x)": "PABEE",
                 "paper: BERT-base": "Vanilla", "paper: BERT-base + PABEE (1.62x)": "PABEE"}


def rows_at(seed_rows, criterion, setting):
    """The row of (criterion, setting) from each seed's rows (final checkpoint, first task)."""
    found = []
    for rows in seed_rows:
        match = [r for r in rows if r.criterion == criterion and r.setting == setting]
        if match:
            found.append(match[0])
    return found


def settings_of(seed_rows, criterion):
    return sorted({r.setting for rows in seed_rows for r in rows if r.criterion == criterion})


def value(row, key):
    """A row's speed-up or one of its metrics."""
    return row.speed_up if key == "speed_up" else row.metrics[key]


def median_of(rows, key):
    return statistics.median(value(r, key) for r in rows)


def choose_patience(seed_rows, metric, tolerance):
    """The fastest patience whose median dev metric is within `tolerance` of full depth's (ties:
    the smaller patience)."""
    full = median_of(rows_at(seed_rows, "patience", 0), metric)
    candidates = [(p, median_of(rows_at(seed_rows, "patience", p), metric),
                   median_of(rows_at(seed_rows, "patience", p), "speed_up"))
                  for p in settings_of(seed_rows, "patience") if len(rows_at(seed_rows, "patience", p)) == len(seed_rows)]
    return fastest_within(candidates, full, tolerance)


def closest_speed_up(seed_rows, criterion, metric, target):
    """The setting whose median speed-up is closest to `target` (ties: the better metric)."""
    settings = [s for s in settings_of(seed_rows, criterion) if len(rows_at(seed_rows, criterion, s)) == len(seed_rows)]
    if not settings:
        return None
    return min(settings, key=lambda s: (round(abs(median_of(rows_at(seed_rows, criterion, s), "speed_up") - target), 9),
                                        -median_of(rows_at(seed_rows, criterion, s), metric)))


def cell(seed_rows, task, criterion, setting):
    rows = rows_at(seed_rows, criterion, setting)
    values = {m: [r.metrics[m] for r in rows] for m in columns_of(task)}
    return {"criterion": criterion, "setting": setting, "seeds": len(rows),
            "values": {m: {"median": statistics.median(v), "min": min(v), "max": max(v)} for m, v in values.items()},
            "speed_up": {"median": median_of(rows, "speed_up"), "min": min(r.speed_up for r in rows),
                         "max": max(r.speed_up for r in rows)}}


def build_table(results, tasks, tolerance, model_name="", methods=tuple(METHODS), choose=None, chosen_on=DEV):
    """results: {(method model, task): [result rows of each seed]} (final checkpoint rows of the task),
    which the cells score; `choose`: the same from the rows settings are chosen on (`chosen_on`
    says what they are; None: `results` themselves, dev). `methods`: the method names to show.
    Returns the table as a JSON-ready dict."""
    cells, chosen = {}, {}
    choose = choose or results
    for task in tasks:
        metric = columns_of(task)[0]
        pabee = choose.get(("pabee", task))
        target = None
        if pabee:
            patience = choose_patience(pabee, metric, tolerance)
            target = median_of(rows_at(pabee, "patience", patience), "speed_up")
            chosen[task] = {"patience": patience, "speed_up": target}
        for method, (_, criterion, how, model, _) in ALL_METHODS.items():
            seed_rows = results.get((model, task))
            if not seed_rows or (method not in methods):
                continue
            if method == "PABEE":
                setting = chosen[task]["patience"]
            elif how.startswith("full depth"):
                setting = 0
            elif target is None or (RULES[criterion].needs_probabilities and TASKS[task].is_regression):
                continue  # no PABEE speed-up to match, or no class probabilities
            else:
                setting = closest_speed_up(choose[model, task], criterion, metric, target)
                if setting is None:
                    continue
            cells[f"{method}|{task}"] = cell(seed_rows, task, criterion, setting)
    methods = [m for m in ALL_METHODS if any(f"{m}|{t}" in cells for t in tasks)]  # in the table's order
    averages = {m: statistics.mean(cells[f"{m}|{t}"]["values"][columns_of(t)[0]]["median"] for t in tasks)
                for m in methods if all(f"{m}|{t}" in cells for t in tasks)}
    return {"tasks": tasks, "methods": methods, "cells": cells, "average": averages, "pabee_choice": chosen,
            "tolerance": tolerance, "how_chosen": {m: ALL_METHODS[m][2] for m in methods}, "chosen_on": chosen_on,
            "reference": REFERENCE.get(model_name, {})}


def fmt(stat, scale=100.0):
    text = f"{stat['median'] * scale:.1f}"
    return text if stat["min"] == stat["max"] else f"{text} ({stat['min'] * scale:.1f}-{stat['max'] * scale:.1f})"


def cell_text(cell_):
    values = "/".join(fmt(v) for v in cell_["values"].values())
    return f"{values} @{cell_['speed_up']['median']:.2f}x"


def header(tasks):
    return [f"{t.upper()} ({'/'.join(columns_of(t))})" for t in tasks]


def markdown(table):
    tasks = table["tasks"]
    lines = []
    for method in table["methods"]:
        cells = [cell_text(table["cells"][f"{method}|{t}"]) if f"{method}|{t}" in table["cells"] else "-"
                 for t in tasks]
        lines.append([method, *cells, f"{table['average'][method] * 100:.1f}" if method in table["average"] else "-"])
    for name, numbers in table["reference"].items():
        lines.append([name, *[reference_cell(table, name, numbers, t) for t in tasks], "-"])
    notes = ["", "Cells: dev metric(s) x 100 at the method's setting, then its speed-up (L / mean exit layer); "
             "with several seeds the median and (min-max).",
             f"Settings chosen on {table.get('chosen_on', DEV)}; cells scored on dev.",
             f"PABEE: the fastest patience within {table['tolerance'] * 100:g} point(s) of full depth: "
             + ", ".join(f"{t}: patience {c['patience']} at {c['speed_up']:.2f}x"
                         for t, c in table["pabee_choice"].items()) + ".",
             "Baselines: the threshold or layer whose speed-up is closest to PABEE's on the same task; "
             "the settings: " + "; ".join(f"{k.split('|')[0]} on {k.split('|')[1]}: {c['criterion']} {c['setting']}"
                                          for k, c in table["cells"].items() if c["criterion"] != "patience") + "."]
    notes += [f"Missing (failed; call again to retry): {'; '.join(table['missing'])}."] if table.get("missing") else []
    return markdown_lines(["method", *header(tasks), "average"], lines) + "\n".join(notes) + "\n"


def reference_cell(table, name, numbers, task):
    """A published number, with our difference from it in the row it stands for."""
    if task not in numbers:
        return "-"
    mine = table["cells"].get(f"{REFERENCE_ROW[name]}|{task}")
    diff = f" (ours {mine['values'][columns_of(task)[0]]['median'] * 100 - numbers[task]:+.1f})" if mine else ""
    return f"{numbers[task]:.1f}{diff}"


def latex(table):
    tasks = table["tasks"]
    lines = [r"\begin{tabular}{l" + "c" * (len(tasks) + 1) + "}", r"\toprule",
             "Method & " + " & ".join(h.replace("_", r"\_") for h in header(tasks)) + r" & Avg. \\", r"\midrule"]
    for method in table["methods"]:
        cells = [cell_text(table["cells"][f"{method}|{t}"]).replace("@", "").replace("x", r"$\times$")
                 if f"{method}|{t}" in table["cells"] else "--" for t in tasks]
        average = f"{table['average'][method] * 100:.1f}" if method in table["average"] else "--"
        lines.append(f"{method} & " + " & ".join(cells) + f" & {average} " + r"\\")
    for name, numbers in table["reference"].items():
        lines.append(name.replace("paper: ", "Paper: ") + " & " + " & ".join(
            f"{numbers[t]:.1f}" if t in numbers else "--" for t in tasks) + r" & -- \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"
