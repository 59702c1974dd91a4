"""The exit setting a saved run answers with when none is asked for (predict.py, the model card):
the fastest that run_glue evaluated whose main metric stays within TOLERANCE of full depth."""

from pathlib import Path

from pabee.base.file_io import read_json
from pabee.early_exit.exit_settings import ExitSettings
from pabee.scoring.result_rows import fastest_within, run_rows

TOLERANCE = 0.01  # the chosen exit keeps the main metric within this of full depth


def chosen_exit(folder):
    """(exit settings, why) when none is asked for: the fastest setting run_glue evaluated whose
    main metric stays within TOLERANCE of full depth and whose answers do not ignore the input, on
    the rows run_glue --choose_exit_on gave (calibration_results.json), else on dev (whose figures
    then flatter it: the why says so). Full depth when only settings whose answers ignore the input
    were left, or full depth's own answers do; otherwise without a qualifying setting, the config's
    patience (0, full depth, unless set_patience said)."""
    rows, on = run_rows(Path(folder))
    full = max((r for r in rows if r.criterion == "layer"), key=lambda r: r.setting, default=None)
    if full is not None and full.ignores_input:
        return FULL_DEPTH, f"full depth: on {on} its answers ignore the input even there ({full.ignores_input})"
    settings = [r for r in rows if r.criterion != "layer"]
    candidates = [r for r in settings if not r.ignores_input]
    best = full and fastest_within([(r, r.metrics[r.main], r.speed_up) for r in candidates], full.metrics[full.main],
                                   TOLERANCE)
    skipped = [f"{r.criterion} {r.setting}" for r in settings if r.ignores_input]
    skipping = f"; skipped {', '.join(skipped)}: their answers ignore the input" if skipped else ""
    if best is None and skipped:
        return FULL_DEPTH, f"full depth: no other setting evaluated on {on} qualifies{skipping}"
    if best is None:
        config = read_json(Path(folder) / "config.json")
        patience, threshold = config.get("patience", 0), config.get("regression_threshold", 0.0)
        why = (f"{folder} holds no dev results to choose from (run_glue.py --do_eval writes them), so the config's "
               f"patience {patience}{' (full depth)' if patience == 0 else ''}")
        return ExitSettings("patience", (patience,), threshold), why
    threshold = best.regression_threshold if best.regression_threshold is not None else 0.0
    why = (f"chosen on {on}: the fastest setting evaluated within {TOLERANCE * 100:g} point of full depth ({best.task} "
           f"{best.main} {best.metrics[best.main]:.4f} against {full.metrics[full.main]:.4f}, {best.speed_up:.2f}x "
           f"fewer layers){skipping}{DEV_CHOICE if on == 'dev' else ''}")
    return ExitSettings(best.criterion, (best.setting,), threshold), why


FULL_DEPTH = ExitSettings("patience", (0,), 0.0)
DEV_CHOICE = ("; dev figures at this setting are optimistic, chosen on the same rows: run_glue.py --choose_exit_on "
              "train:10 or a file keeps dev clean")
