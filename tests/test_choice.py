"""Choosing an exit setting on rows the score does not use (pabee.scoring.split_choice) and the methods benchmark
built on it: a split cannot share rows, a choice only ever reads its choosing rows and its score
only the others, and the benchmark's table comes from such choices by default."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pabee.scoring.split_choice import Split, best_at, choose_and_score, random_halves

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import methods  # noqa: E402


def test_a_split_refuses_to_choose_and_score_on_the_same_rows():
    with pytest.raises(ValueError, match="same 1 rows"):
        Split((0, 1, 2), (2, 3))
    with pytest.raises(ValueError, match="rows to score on"):
        Split((0, 1), ())


def test_random_halves_are_disjoint_cover_every_row_and_differ():
    splits = random_halves(101, count=8, seed=3)
    for split in splits:
        assert sorted(split.choose + split.score) == list(range(101))
        assert len(split.choose) == 50 and len(split.score) == 51
    assert len({split.choose for split in splits}) == 8
    assert random_halves(101, count=8, seed=3) == splits and random_halves(101, count=8, seed=4) != splits


def test_the_choice_reads_only_its_choosing_rows_and_the_score_only_the_others():
    """Setting "lucky" is best on the choosing half and worst on the other: it is chosen, and its
    reported score is the poor one of the scoring half, not the one it was chosen for."""
    split = Split((0, 1, 2), (3, 4, 5))
    metric = {"lucky": {0: 1.0, 3: 0.0}, "steady": {0: 0.6, 3: 0.6}, "slow": {0: 0.9, 3: 0.9}}
    speed = {"lucky": 2.0, "steady": 2.0, "slow": 1.1}
    reads = []

    def measure(setting, rows):
        reads.append((setting, rows))
        return metric[setting][rows[0]], speed[setting]

    assert choose_and_score(["steady", "lucky", "slow"], measure, 1.5, split) == ("lucky", 0.0, 2.0)
    assert [rows for _, rows in reads[:3]] == [split.choose] * 3 and reads[3:] == [("lucky", split.score)]
    assert choose_and_score(["slow"], measure, 1.5, split) is None  # nothing fast enough on the choosing rows
    assert best_at([("a", 0.5, 1.2), ("b", 0.7, 1.29), ("c", 0.6, 1.3)], 1.3) == ("c", 0.6, 1.3)


def test_the_benchmark_chooses_on_one_half_and_scores_on_the_other(world, monkeypatch):
    """Its evaluation, on a tiny model and synthetic SST-2 (60 dev rows): every measure reads all
    of dev (the optimistic points, each layer) or one half of a split, every held-out point is a
    setting of the method, and the table leads with the held-out choices, the optimistic ones
    after, labelled."""
    measured, real = [], methods.measure
    monkeypatch.setattr(methods, "measure", lambda *a: measured.append(a[-1]) or real(*a))
    args = SimpleNamespace(glue_dir=str(world / "glue"))
    runs = [methods.evaluate(args, "SST-2", model, 1, world / "bert", 10, 1.0) for model in ("last", "pabee")]
    splits = random_halves(60)
    halves = {split.choose for split in splits} | {split.score for split in splits}
    assert set(measured) == halves | {tuple(range(60))}
    assert [label for label, *_ in runs[1]["methods"]["PABEE"]["all_dev"]] == [1, 2, 3, 4, 5]
    made = 0
    for method in runs[1]["methods"].values():
        labels = [label for label, *_ in method["all_dev"]]
        for target in methods.TARGETS:
            points = method["held_out"][str(target)]
            assert len(points) == len(splits) and all(p is None or p[0] in labels for p in points)
            made += len(points) - points.count(None)
    assert made > 0  # choices were made and scored
    assert len(runs[0]["full_depth_on_scoring_halves"]) == len(splits)
    table = methods.markdown(runs)
    assert table.index("Chosen on one half of dev") < table.index("Optimistic, for comparison only")
    assert "| SST-2 | PABEE |" in table and "| SST-2 (acc) | vanilla |" in table
    assert json.loads(json.dumps(runs)) == runs  # methods.json round trip


def test_the_benchmark_keeps_each_evaluation_and_reuses_it_instead_of_training(world, tmp_path, monkeypatch, capsys):
    """A model's evaluation is kept as JSON; the next run takes it as is (nothing trained or
    evaluated) and builds the same table, and refuses, in one line with exit code 2, one kept for
    other steps, another backbone or with what it was made from not recorded, rather than mix it in."""
    trained = []
    monkeypatch.setattr(methods, "models_for", lambda task: ["last", "pabee"])
    monkeypatch.setattr(methods, "train", lambda args, task, model, seed, steps: trained.append(model) or (world / "bert", 1.0))
    argv = ["--glue_dir", str(world / "glue"), "--output_dir", str(tmp_path / "out"), "--results_dir",
            str(tmp_path / "kept"), "--tasks", "SST-2", "--seeds", "1", "--model_dir", str(world / "bert"),
            "--launcher", "local"]  # in this process: train is patched
    assert methods.main([*argv, "--steps_scale", "0.01"]) == 0 and trained == ["last", "pabee"]
    kept_file = tmp_path / "kept" / "SST-2" / "pabee-seed1.json"
    kept = json.loads(kept_file.read_text())
    assert (kept["steps"], kept["learning_rate"], kept["model"]) == (6, 1e-4, "pabee")
    assert kept["backbone"] == methods.backbone_identity(world / "bert") != methods.backbone_identity(world / "roberta")
    table = (tmp_path / "out" / "methods.md").read_text()

    monkeypatch.setattr(methods, "evaluate", lambda *a: pytest.fail("a kept evaluation was evaluated again"))
    assert methods.main([*argv, "--steps_scale", "0.01"]) == 0 and trained == ["last", "pabee"]
    assert (tmp_path / "out" / "methods.md").read_text() == table

    def refusal(*extra):
        capsys.readouterr()
        assert methods.main([*argv, *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "last-seed1.json was made with" in error
        return error

    assert "steps 6 where this run asks 12" in refusal("--steps_scale", "0.02")
    assert "backbone " + kept["backbone"] in refusal("--steps_scale", "0.01", "--model_dir", str(world / "roberta"))
    last = tmp_path / "kept" / "SST-2" / "last-seed1.json"
    last.write_text(json.dumps({key: value for key, value in json.loads(last.read_text()).items() if key != "learning_rate"}))
    assert "learning_rate not recorded" in refusal("--steps_scale", "0.01")
    assert json.loads(kept_file.read_text()) == kept and trained == ["last", "pabee"]  # left as it was, nothing trained


@pytest.mark.parametrize("task, rows", [("MRPC", 11), ("STS-B", 4)])
def test_the_docs_table_is_the_one_its_kept_evaluations_give(task, rows):
    """docs/methods.md's held-out table of the task, rebuilt from benchmarks/results/methods: every
    seed and model of the plan is kept, and each row of the table stands in the docs as it is built."""
    root = Path(__file__).resolve().parents[1]
    kept = root / "benchmarks" / "results" / "methods" / task
    results = [json.loads((kept / f"{model}-seed{seed}.json").read_text())
               for seed in range(1, methods.PLAN[task][1] + 1) for model in methods.models_for(task)]
    held_out = methods.markdown(results).split("Optimistic")[0]
    built = [line for line in held_out.splitlines() if line.startswith(f"| {task}")]
    docs = (root / "docs" / "methods.md").read_text()
    assert len(built) == rows and all(row in docs for row in built), [row for row in built if row not in docs]


# --- run_glue --choose_exit_on: the rows predict.py's exit is chosen on ------------------------

STEPS = ["--do_train", "--do_eval", "--max_steps", "40", "--per_gpu_train_batch_size", "16", "--learning_rate", "3e-3",
         "--logging_steps", "1000", "--save_steps", "1000", "--seed", "13", "--patience", "0,1,2,3",
         "--exit_pooling", "mean"]


def glue(world, out, *extra, model=None):
    import run_glue

    return run_glue.main(["--model_type", "bert", "--model_name_or_path", str(model or world / "bert"), "--task_name",
                          "SST-2", "--data_dir", str(world / "glue" / "SST-2"), "--output_dir", str(out), *extra])


def test_a_held_out_training_slice_is_never_trained_on_and_is_seeded(world, tmp_path):
    from pabee.data.data_settings import DataSettings, ExitChoice
    from pabee.data.sources import open_source

    def opened(seed, where=None):
        where = ExitChoice("train", 20) if where is None else where
        data = DataSettings(task_name="SST-2", data_dir=str(world / "glue" / "SST-2"), choose_exit_on=where)
        source = open_source(data, ("train", "dev", "calibration"), seed)
        return source.examples(source.task, "train"), source.examples(source.task, "calibration"), source

    kept, held, source = opened(1)
    everything = source.inner.examples(source.task, "train")
    assert len(held["index"]) == 80 and len(kept["index"]) == 320
    assert sorted(kept["index"] + held["index"], key=int) == everything["index"]  # a partition of the rows
    assert opened(1)[1] == held and opened(2)[1] != held
    assert source.cache_key(source.task, "train") != source.inner.cache_key(source.task, "train")
    plain = open_source(DataSettings(task_name="SST-2", data_dir=str(world / "glue" / "SST-2")), ("train", "dev"), 1)
    assert plain.examples(plain.task, "train") == everything  # by default training reads every row


def test_the_exit_is_chosen_on_the_held_out_slice_and_says_so(world, tmp_path):
    from pabee.scoring.default_exit import chosen_exit

    out = tmp_path / "out"
    assert glue(world, out, *STEPS, "--choose_exit_on", "train:20") == 0
    saved = json.loads((out / "calibration_results.json").read_text())
    assert saved["chosen_on"] == "20% of the training rows held out of training (80 rows, seed 13)"
    assert {r["n"] for r in saved["rows"]} == {80} and {"layer", "patience"} == {r["criterion"] for r in saved["rows"]}
    assert max(r["acc"] for r in saved["rows"] if r["criterion"] == "layer") >= 0.8  # it learned: a real choice
    assert {r["n"] for r in json.loads((out / "eval_results.json").read_text())} == {60}  # dev untouched
    exits, why = chosen_exit(out)
    assert why.startswith("chosen on 20% of the training rows held out of training (80 rows, seed 13): the fastest")
    assert "optimistic" not in why
    best = max((r for r in saved["rows"] if r["criterion"] == "patience" and r["acc"] >= max(
        (r for r in saved["rows"] if r["criterion"] == "layer"), key=lambda r: r["setting"])["acc"] - 0.01),
        key=lambda r: r["speed_up"])
    assert exits.settings == (best["setting"],)  # the calibration rows decide, not dev's
    again = tmp_path / "again"  # evaluated again: the same slice, as the model was trained holding it out
    assert glue(world, again, "--do_eval", "--patience", "0,1,2,3", "--seed", "13", "--choose_exit_on", "train:20",
                model=out) == 0
    assert json.loads((again / "calibration_results.json").read_text()) == saved
    assert glue(world, tmp_path / "other", "--do_eval", "--seed", "13", "--choose_exit_on", "train:30", model=out) == 2
    assert glue(world, tmp_path / "seed", "--do_eval", "--seed", "14", "--choose_exit_on", "train:20", model=out) == 2
    assert glue(world, out, *STEPS, "--overwrite_output_dir") == 0  # retrained, choosing on dev: the old rows go
    assert not (out / "calibration_results.json").exists() and chosen_exit(out)[1].startswith("chosen on dev: ")


def test_the_exit_is_chosen_on_a_file_for_an_evaluated_model(world, tmp_path):
    from pabee.scoring.default_exit import chosen_exit

    out = tmp_path / "out"
    assert glue(world, out, *STEPS) == 0
    _, why = chosen_exit(out)
    assert why.startswith("chosen on dev: ") and "dev figures at this setting are optimistic" in why
    rows = (world / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()
    calibration = tmp_path / "calibration.tsv"
    calibration.write_text("\n".join(rows[:31]) + "\n")  # the header and 30 rows
    again = tmp_path / "again"
    assert glue(world, again, "--do_eval", "--patience", "0,1,2,3", "--choose_exit_on", str(calibration), model=out) == 0
    saved = json.loads((again / "calibration_results.json").read_text())
    assert saved["chosen_on"] == f"{calibration} (30 rows)" and {r["n"] for r in saved["rows"]} == {30}
    assert chosen_exit(again)[1].startswith(f"chosen on {calibration} (30 rows): ")


def test_own_data_takes_a_calibration_file_in_its_own_format(world, tmp_path):
    from test_own_data import records, write

    train, dev = write(tmp_path / "t.csv", records(200)), write(tmp_path / "d.csv", records(40, seed=1))
    calibration = write(tmp_path / "c.jsonl", records(25, seed=2))
    out = tmp_path / "out"
    assert glue(world, out, "--train_file", str(train), "--validation_file", str(dev), *STEPS,
                "--choose_exit_on", str(calibration)) == 2  # --task_name SST-2 with own files: refused
    import run_glue

    assert run_glue.main(["--model_type", "bert", "--model_name_or_path", str(world / "bert"), "--output_dir",
                          str(out), "--train_file", str(train), "--validation_file", str(dev), *STEPS,
                          "--choose_exit_on", str(calibration)]) == 0
    saved = json.loads((out / "calibration_results.json").read_text())
    assert {r["n"] for r in saved["rows"]} == {25} and saved["chosen_on"] == f"{calibration} (25 rows)"


@pytest.mark.parametrize("where,extra,message", [
    ("train:0", [], "give train:P with a percentage 0 < P < 100"),
    ("train:100", [], "give train:P with a percentage 0 < P < 100"),
    ("train:ten", [], "give train:P with a percentage 0 < P < 100"),
    ("train:10", ["--do_eval"], "was not trained holding out that slice of this data with --seed 42: use it"),
    ("missing.tsv", [], "--choose_exit_on missing.tsv does not exist"),
])
def test_a_bad_choose_exit_on_is_one_line(where, extra, message, world, tmp_path, capsys):
    argv = extra or STEPS
    assert glue(world, tmp_path / "out", *argv, "--choose_exit_on", where) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
