"""The exit engine's compiled step (pabee/early_exit/compiled_step.py), captured here with aot_eager (the same graph
as inductor, without generating code): whole (fullgraph), the same answers as eager for every exit
criterion on BERT and ALBERT, no recompile when a set runs again after warm-up, and graphs bounded
by layers x declared shapes."""

import pytest
import torch
import torch._dynamo

from conftest import varied_batch
from test_engine import every_criterion, examples_of
from test_modeling import heads_of, make, use_attention
from pabee.early_exit.compiled_step import compiled_step, compiles
from pabee.early_exit.engine import Shapes, layer_step, stream
from pabee.early_exit.rules import RULES


class CountingBackend:
    """aot_eager, counting the graphs it is given (one per compile)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, graph, example_inputs):
        self.graphs += 1
        return torch._dynamo.backends.registry.lookup_backend("aot_eager")(graph, example_inputs)


def run(model, rule, examples, shapes, step):
    chunks = [examples[i:i + shapes.batch_size] for i in range(0, len(examples), shapes.batch_size)]
    with torch.inference_mode():
        answered = list(stream(model, rule, chunks, shapes, 0, step))
    launches = [launch for a in answered for launch in a.launches]
    return torch.cat([a.logits for a in answered]), torch.cat([a.exit_layers for a in answered]), launches


@pytest.mark.parametrize("kind", ["bert", "albert"])
def test_compiled_step_matches_eager_for_every_criterion_and_never_recompiles_after_warm_up(kind):
    torch._dynamo.reset()
    model = make(kind, num_labels=3, layers=3, exit_pooling="mean", exit_training="alternate_lte")  # 3 layers: few graphs
    use_attention(model, "sdpa")
    for head in heads_of(model) + [model.lte]:  # spread opinions: exits vary
        torch.nn.init.normal_(head.weight, std=2.0)
    ids, mask = varied_batch(40, seed=41)
    examples = examples_of(ids, mask)
    shapes = Shapes.of(16, 20, rows=(4, 16), lengths=(20,))  # few shapes: each compiles once per layer and rule
    backend = CountingBackend()
    step = compiled_step(model.num_layers, shapes, "cpu", backend)
    distinct = set()
    rules = {rule.name: rule for rule in every_criterion(model, ids, mask)}.values()  # one of each criterion
    for rule in rules:
        expected_logits, expected_exits, _ = run(model, rule, examples, shapes, layer_step)
        logits, exits, launches = run(model, rule, examples, shapes, step)  # compiles what it meets
        assert torch.equal(exits, expected_exits), rule.name
        torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)
        compiled_so_far = backend.graphs
        with torch._dynamo.config.patch(error_on_recompile=True):
            again, again_exits, _ = run(model, rule, examples, shapes, step)
        assert backend.graphs == compiled_so_far and torch.equal(again_exits, exits)
        distinct |= {(launch.layer, launch.padded, launch.length) for launch in launches}
    # a graph per layer, shape, and the rule's state before its first layer (None) or after
    assert {rule.name for rule in rules} == set(RULES) and backend.graphs <= 2 * len(distinct) * len(rules)


def test_the_step_compiles_only_where_asked_or_on_cuda():
    assert compiles("compiled", "cpu") and compiles("auto", "cuda") and compiles("compiled", "cuda")
    assert not compiles("auto", "cpu") and not compiles("eager", "cuda")
    assert Shapes.of(32, 128, fixed=True).rows == (1, 8, 16, 32)  # a compiled step takes fixed shapes
