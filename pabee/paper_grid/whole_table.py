"""The paper's table in one command (reproduce_paper.py): the planned runs
(pabee/paper_grid/run_plan.py) handed to the grid as jobs, waited for, then the table written
(pabee/paper_grid/paper_outputs.py). Restartable: a finished run or evaluation is reused, a killed
run resumes from its last checkpoint."""

from pathlib import Path

from pabee.paper_grid import paper_table
from pabee.paper_grid.jobs import Job
from pabee.paper_grid.paper_outputs import chosen_runs, final_rows, held_out_rows, plot_tasks, write_submissions, write_tables
from pabee.paper_grid.run_plan import DONE, check_runs, evaluation_markers, methods_of, models_on, submission_jobs, train_jobs


def reproduce(settings, tasks, runs, depth, grid):
    """Every run trained, the chosen ones evaluated, the table, submissions and plots written.
    `grid` (pabee.paper_grid.driver.Grid) runs the jobs; the table is made of the runs that finished
    and names the others."""
    out = Path(settings.output_dir)
    check_runs(settings, runs)
    failed = grid.run(train_jobs(runs))
    finished = [r for r in runs if (r.folder / DONE).is_file()]
    held_out = settings.choose_exit_on.where == "train"
    picked = {(task.name, model): chosen_runs(finished, task, model, held_out)
              for task in tasks for model in models_on(settings, task)
              if any(r.task == task and r.model == model for r in finished)}
    index = {run: i for i, run in enumerate(runs, start=1)}
    failed += grid.run([Job(f"evaluate:{index[run]}", f"{run.describe()}: exit settings on dev", str(run.folder))
                      for chosen in picked.values() for run in chosen
                      if not all(m.is_file() for m in evaluation_markers(settings, run, depth))])
    evaluated = {pair: chosen for pair, chosen in picked.items()
                 if all(m.is_file() for run in chosen for m in evaluation_markers(settings, run, depth))}
    results = {(model, task): [final_rows(r) for r in chosen] for (task, model), chosen in evaluated.items()}
    choose = {(model, task): [final_rows(r, calibration=True) for r in chosen] for (task, model), chosen in evaluated.items()}
    table = paper_table.build_table(results, [t.name for t in tasks], settings.tolerance,
                                    Path(settings.model_name_or_path).name, methods_of(settings),
                                    choose if held_out else None, held_out_rows(settings) if held_out else paper_table.DEV)
    table["runs"] = {f"{m}|{t}": [str(r.folder) for r in rs] for (t, m), rs in evaluated.items()}
    table["missing"] = [f"{job.describe} ({job.folder})" for job in failed]
    write_tables(out, table)
    missing = grid.run(submission_jobs(settings, table, runs))
    if missing:  # said in the table's files too
        table["missing"] += [f"{job.describe} ({job.folder})" for job in missing]
        write_tables(out, table)
    write_submissions(settings, table)
    plot_tasks(settings, tasks, results, out)
    print(paper_table.markdown(table))
    print(f"Wrote {out / 'paper_table.md'}, .json and .tex" + (f"; {len(failed + missing)} job(s) failed, listed as "
                                                           "missing: call again to retry them" if failed + missing else ""))
    return failed + missing
