"""reproduce_paper.py: the plan, bad input, the table from the runs' own rows, a killed call
restarted to the same table, the settings chosen, the paper's reference rows."""

import json
import signal
from pathlib import Path

import pytest

import reproduce_paper
from pabee.fine_tuning import loop
from pabee.paper_grid import paper_table
from pabee.scoring.result_rows import ResultRow, read_calibration

# in this process, one run after the other: these tests patch training (tests/test_grid.py spreads runs)
GRID = ["--learning_rates", "3e-3", "--batch_sizes", "16", "--seeds", "1", "--max_steps", "60", "--launcher", "local"]


def call(world, out, *extra, tasks=("SST-2", "STS-B")):
    return reproduce_paper.main(["bert", *tasks, "--glue_dir", str(world / "glue"), "--model_name_or_path",
                                 str(world / "bert"), "--output_dir", str(out), *GRID, *extra])


def test_dry_run_prints_the_plan_and_writes_nothing(world, tmp_path, capsys):
    assert call(world, tmp_path / "out", "--dry_run", "--seeds", "2") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 5 * 2 + 1 and lines[0].startswith("[1/20] SST-2 vanilla lr=3e-3 bs=16 seed=1: 60 steps")
    assert "two_stage lr=3e-3 bs=16 seed=1: 120 steps" in "\n".join(lines)
    assert lines[-1].startswith("20 runs, 1680 optimizer steps in all")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,message", [
    (["gpt2", "SST-2"], "unknown backbone 'gpt2'"),
    (["bert", "SQuAD"], "unknown task 'SQuAD'"),
    (["bert", "SST-2", "--learning_rates", "1e-5,fast"], "--learning_rates 1e-5,fast: give a comma list of numbers"),
    (["bert", "SST-2", "--batch_sizes", "16,0"], "--batch_sizes 16,0: give a comma list of numbers > 0"),
    (["bert", "SST-2", "--seeds", "0"], "--seeds 0: give 1 or more"),
    (["bert", "CoLA"], "missing"),
])
def test_bad_input_one_line_exit_2_nothing_written(argv, message, world, tmp_path, capsys):
    out = tmp_path / "out"
    code = reproduce_paper.main([*argv, "--glue_dir", str(world / "glue"), "--model_name_or_path",
                                 str(world / "bert"), "--output_dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


@pytest.fixture(scope="module")
def reproduced(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    assert call(world, out) == 0
    return out


def test_table_cells_are_the_runs_own_rows(reproduced):
    table = json.loads((reproduced / "paper_table.json").read_text())
    assert table["methods"] == list(paper_table.METHODS) and table["tasks"] == ["sst-2", "sts-b"]
    for key, cell in table["cells"].items():
        method, task = key.split("|")
        (folder,) = table["runs"][f"{paper_table.METHODS[method][3]}|{task}"]
        rows = json.loads((Path(folder) / "pabee_results.json").read_text())
        row = next(r for r in rows if r["checkpoint"] == "final" and r["task"] == task
                   and r["criterion"] == cell["criterion"] and r["setting"] == cell["setting"])
        for metric, value in cell["values"].items():
            assert value["median"] == row[metric] == value["min"] == value["max"]
        assert cell["speed_up"]["median"] == row["speed_up"]
        assert row["training"] == paper_table.METHODS[method][0]
    assert "sts-b" not in {k.split("|")[1] for k in table["cells"] if "entropy" in k or "confidence" in k}
    assert table["chosen_on"].startswith("10% of each run's training rows, held out of its training")
    for task in ("sst-2", "sts-b"):  # chosen on the rows held out of training, not on dev
        (pabee,) = table["runs"][f"pabee|{task}"]
        held = [r for r in read_calibration(pabee)[0] if r.checkpoint == "final"]
        assert {r.n for r in held} == {40}
        metric = paper_table.columns_of(task)[0]
        assert table["cells"][f"PABEE|{task}"]["setting"] == paper_table.choose_patience([held], metric, 0.01)
    assert table["cells"]["Vanilla|sst-2"]["values"]["acc"]["median"] >= 0.8
    markdown = (reproduced / "paper_table.md").read_text()
    assert markdown.startswith("| method | SST-2 (acc) | STS-B (pearson/spearmanr) | average |")
    assert (reproduced / "paper_table.tex").read_text().startswith(r"\begin{tabular}")
    assert {p.name for p in (reproduced / "submission" / "pabee").iterdir()} == {"SST-2.tsv", "STS-B.tsv"}
    assert (reproduced / "paper_tradeoff_SST-2.png").stat().st_size > 1000


def test_runs_trained_for_another_choice_are_not_reused(world, reproduced, capsys):
    assert call(world, reproduced, "--choose_on", "dev") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was trained for --choose_on train:10, not this call's" in err, err


def test_killed_call_restarts_to_the_same_table(world, reproduced, tmp_path, monkeypatch):
    steps = {"n": 0}
    requested = loop.StopOnSignal.requested

    def stop_once(self, runtime):  # a SIGTERM in the middle of the third run
        steps["n"] += 1
        if steps["n"] == 150:
            self.signal = signal.SIGTERM
        return requested(self, runtime)

    monkeypatch.setattr(loop.StopOnSignal, "requested", stop_once)
    out = tmp_path / "again"
    assert call(world, out) == 128 + signal.SIGTERM
    assert list((out / "runs" / "SST-2" / "pabee").glob("*/checkpoint-30"))
    monkeypatch.setattr(loop.StopOnSignal, "requested", requested)
    assert call(world, out) == 0
    first, second = (json.loads((d / "paper_table.json").read_text()) for d in (reproduced, out))
    first.pop("runs"), second.pop("runs")
    assert first == second
    assert call(world, out) == 0  # everything reused: the same table once more
    assert json.loads((out / "paper_table.json").read_text())["cells"] == first["cells"]


def rows(*points, criterion="entropy"):
    return [ResultRow("final", "sst-2", criterion, s, 10, 6 / v, v, 1 - 1 / v, {"acc": m}) for s, v, m in points]


def test_settings_are_chosen_by_speed_up_and_tolerance():
    seed = rows((0.1, 1.2, 0.90), (0.3, 1.6, 0.87), (0.5, 2.1, 0.80), (0.6, 1.55, 0.86))
    assert paper_table.closest_speed_up([seed], "entropy", "acc", 1.57) == 0.6  # 1.55 is closer than 1.6
    assert paper_table.closest_speed_up([seed], "entropy", "acc", 1.575) == 0.3  # a tie: the better metric
    assert paper_table.closest_speed_up([seed], "confidence", "acc", 1.5) is None
    patience = rows((0, 1.0, 0.90), (1, 3.0, 0.70), (2, 2.0, 0.895), (3, 1.5, 0.91), criterion="patience")
    assert paper_table.choose_patience([patience], "acc", 0.01) == 2
    assert paper_table.choose_patience([patience], "acc", 0.0) == 3
    two = [patience, rows((0, 1.0, 0.92), (1, 3.0, 0.91), (2, 2.0, 0.80), (3, 1.5, 0.92), criterion="patience")]
    assert paper_table.choose_patience(two, "acc", 0.01) == 3  # medians over seeds: patience 1 at 0.805, 2 at 0.8475


def test_settings_come_from_the_choosing_rows_and_cells_from_dev():
    choose = rows((0, 1.0, 0.90), (1, 3.0, 0.895), (2, 2.0, 0.70), criterion="patience")
    dev = rows((0, 1.0, 0.91), (1, 3.0, 0.60), (2, 2.0, 0.905), criterion="patience")
    held = paper_table.build_table({("pabee", "sst-2"): [dev]}, ["sst-2"], 0.01, methods=("PABEE",),
                                   choose={("pabee", "sst-2"): [choose]}, chosen_on="rows held out")
    assert held["cells"]["PABEE|sst-2"]["setting"] == 1 and held["cells"]["PABEE|sst-2"]["values"]["acc"]["median"] == 0.6
    assert "Settings chosen on rows held out; cells scored on dev." in paper_table.markdown(held)
    peeked = paper_table.build_table({("pabee", "sst-2"): [dev]}, ["sst-2"], 0.01, methods=("PABEE",))
    assert peeked["cells"]["PABEE|sst-2"]["setting"] == 2 and "optimistic" in paper_table.markdown(peeked)


def test_reference_rows_beside_ours():
    seed = rows((0, 1.0, 0.921), criterion="patience")
    table = paper_table.build_table({("vanilla", "sst-2"): [seed], ("pabee", "sst-2"): [seed]}, ["sst-2"], 0.01,
                                    "bert-base-uncased")
    text = paper_table.markdown(table)
    assert "| paper: BERT-base | 92.1 (ours +0.0) | - |" in text
    assert "| paper: BERT-base + PABEE (1.62x) | 92.0 (ours +0.1) | - |" in text


def test_dry_run_lists_the_models_the_chosen_methods_need_and_what_they_cost(world, tmp_path, capsys):
    assert call(world, tmp_path / "out", "--dry_run", "--methods", "vanilla,pabee,fpabee-kl,berxit-lte",
                tasks=("SST-2",)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines[:-1]] == ["vanilla", "pabee", "alternate_lte"]
    total = lines[-1]
    assert total.startswith("3 runs, 180 optimizer steps in all; about ") and " h of training on one device (cpu" in total
    assert " s at batch 16 per step)" in total and not (tmp_path / "out").exists()


def test_cosee_is_trained_on_classification_tasks_only(world, tmp_path, capsys):
    assert call(world, tmp_path / "out", "--dry_run", "--methods", "pabee,cosee") == 0
    runs = [line.split()[1:3] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert runs == [["SST-2", "pabee"], ["SST-2", "cosee"], ["STS-B", "pabee"]]


def test_an_unknown_method_is_one_line(world, tmp_path, capsys):
    assert call(world, tmp_path / "out", "--methods", "pabee,fastbert") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--methods: unknown method 'fastbert'" in err and "cosee" in err


def test_later_methods_join_the_table_at_matched_speed_ups(world, tmp_path):
    out = tmp_path / "later"
    assert call(world, out, "--methods", "pabee,fpabee-js,pcee,berxit-lte,elasticbert,cosee", tasks=("SST-2",)) == 0
    table = json.loads((out / "paper_table.json").read_text())
    assert table["methods"][0] == "PABEE" and {"F-PABEE (JS)", "PCEE-BERT", "BERxiT-LTE",
                                               "ElasticBERT (patience)", "COSEE"} <= set(table["methods"])
    for method in table["methods"]:
        cell = table["cells"][f"{method}|sst-2"]
        (folder,) = table["runs"][f"{paper_table.ALL_METHODS[method][3]}|sst-2"]
        rows = json.loads((Path(folder) / "pabee_results.json").read_text())
        row = next(r for r in rows if r["checkpoint"] == "final" and r["criterion"] == cell["criterion"]
                   and r["setting"] == cell["setting"])
        assert cell["values"]["acc"]["median"] == row["acc"] and row["training"] == paper_table.ALL_METHODS[method][0]
        if method != "PABEE":  # the setting whose speed-up is closest to PABEE's, among its own rows
            speed_ups = [r["speed_up"] for r in rows if r["checkpoint"] == "final" and r["criterion"] == cell["criterion"]]
            target = table["pabee_choice"]["sst-2"]["speed_up"]
            assert abs(row["speed_up"] - target) == min(abs(v - target) for v in speed_ups)
    assert {p.name for p in (out / "submission").iterdir()} >= {"pabee", "berxit-lte", "pcee-bert"}
