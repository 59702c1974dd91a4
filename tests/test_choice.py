"""Choosing an exit setting on rows the score does not use (pabee.choice) and the methods benchmark
built on it: a split cannot share rows, a choice only ever reads its choosing rows and its score
only the others, and the benchmark's table comes from such choices by default."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from pabee.choice import Split, best_at, choose_and_score, random_halves

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
    pabee = runs[1]["methods"]["PABEE"]
    assert [label for label, *_ in pabee["all_dev"]] == [1, 2, 3, 4, 5]
    for target in methods.TARGETS:
        points = pabee["held_out"][str(target)]
        assert len(points) == len(splits) and all(p is None or p[0] in (1, 2, 3, 4, 5) for p in points)
    assert len(runs[0]["full_depth_on_scoring_halves"]) == len(splits)
    table = methods.markdown(runs)
    assert table.index("Chosen on one half of dev") < table.index("Optimistic, for comparison only")
    assert "| SST-2 | PABEE |" in table and "| SST-2 (acc) | vanilla |" in table
    assert json.loads(json.dumps(runs)) == runs  # methods.json round trip
