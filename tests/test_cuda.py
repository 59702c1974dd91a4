"""The CPU suite's claims on a GPU, for every backbone. These run only where CUDA is present and
PABEE_TEST_DEVICE=cuda lets the suite see it (benchmarks/gpu_check.sh sets it); elsewhere they
are skipped. Bitwise claims (resume, batch against one example) are made on the CPU; on CUDA the
answers must be the same and the numbers equal within float32 rounding."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import KINDS, varied_batch
from test_backbones import run
from test_modeling import agreement_threshold, configure, original_exit_at_batch_size_1

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: PABEE_TEST_DEVICE=cuda on a GPU")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("num_labels", [3, 1])
def test_batch_exit_equals_one_example_at_a_time_on_cuda(kind, num_labels):
    model = configure(kind, num_labels).to(CUDA)
    ids, mask = (t.to(CUDA) for t in varied_batch(32, seed=3))
    threshold = agreement_threshold(model, ids, mask) if num_labels == 1 else 0.5
    for patience in range(model.config.num_hidden_layers + 1):
        model.set_patience(patience, regression_threshold=threshold)
        with torch.no_grad():
            batch = model(input_ids=ids, attention_mask=mask)
        for j in range(len(ids)):
            n = int(mask[j].sum())
            layer, logits = original_exit_at_batch_size_1(model, ids[j:j + 1, :n], mask[j:j + 1, :n], patience, threshold)
            assert int(batch.exit_layers[j]) == layer, (patience, j)
            torch.testing.assert_close(batch.logits[j], logits, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_exits_on_cuda_equal_exits_on_cpu(kind):
    model = configure(kind, 3)
    model.set_patience(2)
    ids, mask = varied_batch(32, seed=4)
    with torch.no_grad():
        cpu = model(input_ids=ids, attention_mask=mask)
        gpu = model.to(CUDA)(input_ids=ids.to(CUDA), attention_mask=mask.to(CUDA))
    assert gpu.exit_layers.cpu().tolist() == cpu.exit_layers.tolist()
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kind", ["bert", "deberta-v2"])  # one training loop for all; DeBERTa failed here once
def test_run_glue_trains_and_resumes_on_cuda(kind, world, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(world, kind, world / kind, full) == 0
    rows = json.loads((full / "eval_results.json").read_text())
    assert [r["patience"] for r in rows] == [0, 1, 2] and rows[0]["acc"] >= 0.8, rows
    assert run(world, kind, full / "checkpoint-25", part) == 0
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
