from pathlib import Path

import pytest

from pabee.data import glue
from glue_fixtures import LABELS, LAYOUTS, write_task

REAL = Path(__file__).resolve().parents[2] / "shared" / "glue_data"


@pytest.mark.parametrize("folder", sorted(LAYOUTS))
def test_every_task_reader_on_files_shaped_like_the_real_ones(folder, tmp_path):
    path, written = write_task(tmp_path, folder, n_train=25, n_dev=7, n_test=5)
    task = glue.find_task(folder)
    train = glue.read_split(task, path / "train.tsv", "train")
    assert len(train["text_a"]) == 25
    expected = written["train.tsv"]
    if LABELS[folder] is None:
        assert all(abs(got - want) < 0.6 for got, want in zip(train["label"], expected, strict=True))
    else:
        assert train["label"] == expected
    keyword_side = [any(k in a.split() for k in ("awful", "great", "fine")) for a in train["text_a"]]
    assert all(keyword_side), "text_a must be the first sentence column"
    assert (train["text_b"][0] is None) == (folder in ("CoLA", "SST-2"))
    dev = glue.read_split(task, path / task.dev_file, "dev")
    assert len(dev["text_a"]) == 7
    test = glue.read_split(task, path / task.test_file, "test")
    assert test["index"] == [str(i) for i in range(5)] and test["label"] == [None] * 5
    assert all(a and "\t" not in a for a in test["text_a"])


def test_task_names_accept_glue_spellings():
    for spelling, name in [("SST-2", "sst-2"), ("sst-2", "sst-2"), ("sst2", "sst-2"), ("STS-B", "sts-b"),
                           ("stsb", "sts-b"), ("MNLI", "mnli"), ("CoLA", "cola"), ("qqp", "qqp"), ("RTE", "rte")]:
        assert glue.find_task(spelling).name == name
    with pytest.raises(glue.DataError, match="unknown task 'imdb'"):
        glue.find_task("imdb")


def test_original_quirks(tmp_path):
    # Quote characters are literal; MRPC's byte-order mark is not part of the header.
    sst = glue.find_task("sst-2")
    (tmp_path / "train.tsv").write_text('sentence\tlabel\n"it \'s a "great" film\t1\n', encoding="utf-8")
    assert glue.read_split(sst, tmp_path / "train.tsv", "train")["text_a"] == ['"it \'s a "great" film']
    # CoLA's train file has no header: its first line is an example.
    cola = glue.find_task("cola")
    (tmp_path / "cola.tsv").write_text("gj04\t1\t\tfirst one .\ngj04\t0\t*\tsecond .\n")
    assert glue.read_split(cola, tmp_path / "cola.tsv", "train")["text_a"] == ["first one .", "second ."]
    # QQP rows that lack columns are skipped, as the original did; other tasks refuse them.
    qqp = glue.find_task("qqp")
    (tmp_path / "qqp.tsv").write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                      "1\t1\t2\tq one\tq two\t0\n2\t3\t4\tbroken row\n3\t5\t6\tq\tr\t1\n")
    assert glue.read_split(qqp, tmp_path / "qqp.tsv", "train")["label"] == [0, 1]
    rte = glue.find_task("rte")
    (tmp_path / "rte.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(glue.DataError, match=r"rte.tsv:3: 2 tab-separated columns, RTE needs at least 4"):
        glue.read_split(rte, tmp_path / "rte.tsv", "train")


@pytest.mark.parametrize("score", ["NaN", "nan", "inf"])
def test_a_score_that_is_no_number_is_refused_not_trained_on(score, tmp_path):
    """float() reads NaN and inf; an STS-B row with either has no score to learn."""
    row = "\t".join(["0", "g", "2015", "x", "y", "z", "w", "a man plays", "a man sings"])
    (tmp_path / "train.tsv").write_text("\t".join(["h"] * 9 + ["score"]) + f"\n{row}\t3.2\n{row}\t{score}\n")
    with pytest.raises(glue.DataError, match=rf"train.tsv:3: score '{score}' is not a finite number"):
        glue.read_split(glue.find_task("sts-b"), tmp_path / "train.tsv", "train")


def test_metrics_by_task():
    m = glue.compute_metrics(glue.TASKS["mrpc"], [1, 0, 1, 1], [1, 0, 0, 1])
    assert m == {"acc": 0.75, "f1": pytest.approx(0.8), "acc_and_f1": pytest.approx(0.775)}
    assert glue.compute_metrics(glue.TASKS["cola"], [1, 0, 1, 0], [1, 0, 1, 0]) == {"mcc": 1.0}
    s = glue.compute_metrics(glue.TASKS["sts-b"], [1.0, 2.0, 3.0, 5.0], [1.0, 2.0, 3.0, 4.0])
    assert s["spearmanr"] == pytest.approx(1.0) and 0.9 < s["pearson"] < 1.0
    assert s["corr"] == pytest.approx((s["pearson"] + s["spearmanr"]) / 2)
    assert glue.submission_value(glue.TASKS["rte"], 1) == "not_entailment"
    assert glue.submission_value(glue.TASKS["mnli"], 0) == "contradiction"
    assert glue.submission_value(glue.TASKS["sts-b"], 3.14159) == "3.142"


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/glue_data is not here")
@pytest.mark.parametrize("folder,split,rows", [
    ("SST-2", "train", 67349), ("SST-2", "dev", 872), ("SST-2", "test", 1821),
    ("MRPC", "train", 3668), ("MRPC", "dev", 408), ("MRPC", "test", 1725),
])
def test_real_glue_files_row_counts(folder, split, rows):
    task = glue.find_task(folder)
    examples = glue.read_split(task, REAL / folder / task.file_for(split), split)
    assert len(examples["text_a"]) == rows
    if split != "test":
        assert set(examples["label"]) == {0, 1}
