import os
import random
import subprocess
import sys
from pathlib import Path

from transformers import BertModel, BertTokenizer

import demo
from conftest import tiny_bert_config

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_reviews_follow_their_rules():
    rng = random.Random(1)
    for _ in range(300):
        text, label = demo.review(rng)
        words = text.split()
        decisive = words[words.index("but") + 1:] if "but" in words else words
        polar = [w for w in decisive if w in demo.POSITIVE + demo.NEGATIVE]
        positive = polar[-1] in demo.POSITIVE
        assert label == (positive != ("not" in words)), text


def test_demo_pipeline_at_reduced_size_offline(tmp_path):
    model = tmp_path / "tiny-bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + demo.WORDS
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(model)
    BertModel(tiny_bert_config(vocab_size=len(vocab), layers=6)).save_pretrained(model)
    env = {k: v for k, v in os.environ.items() if k not in ("GLUE_DIR", "TASK")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--model_dir", str(model), "--output_dir", str(out),
                           "--train_size", "640", "--dev_size", "64", "--max_steps", "80", "--learning_rate", "2e-3"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "synthetic-sentiment-NOT-GLUE" / "SST-2" / "train.tsv").is_file()
    table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    assert table[0] == ("| patience | acc | mean exit layer | examples exiting at layers 1-6 | layer speed-up | "
                        "wall-clock speed-up (min-max) |")
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [r[0] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert rows[0][2] == "6.00" and rows[0][3] == "0 0 0 0 0 64"
    for r in rows:  # the counts are the exits the mean says
        counts = [int(c) for c in r[3].split()]
        assert len(counts) == 6 and sum(counts) == 64 and abs(sum(k * c for k, c in enumerate(counts, 1)) / 64
                                                              - float(r[2])) < 0.006, r
        assert float(r[5].split("x")[0]) > 0, r
    assert rows[5][5].startswith("1.00x") and rows[5][2] == "6.00"  # patience 5 of 6 layers is full depth: not timed
    assert float(rows[0][1]) > 0.6, rows  # learns the synthetic task; chance is about 0.5
    saved = (out / "demo_results.md").read_text()
    assert "synthetic data, not GLUE" in saved and "\n".join(table) in saved


def test_demo_help_describes_itself_in_whole_sentences():
    proc = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    description = " ".join(proc.stdout.split("\n\n")[1].split())
    assert description.startswith("The demo: fine-tune a real pretrained BERT") and description.endswith(".")
    assert all(f"--{name}" in proc.stdout for name in ("model_dir", "exit_pooling", "patience"))
