"""The exit engine's step compiled whole: one layer on a bucket of rows, its head and the rule's
update as one graph (torch.compile with fullgraph: a graph break is an error, not a slow path),
replayed as a CUDA graph on a GPU (mode "reduce-overhead"). Shapes are static: one graph per layer,
declared shape and rule, compiled on first use, so a set run again after a warm-up compiles nothing
(tests/test_compiled.py runs the second pass under dynamo's error_on_recompile).

`--engine_step auto` compiles on CUDA, where a layer call's time is the host's (422 us eager against
181 us replayed, on an H200), and stays eager on the CPU, where compiling costs more than it saves
(docs/engine.md gives the figures). Compiled calls want few shapes: `auto` buckets are the GPU's
fixed ones whenever the step is compiled.
"""

import functools

import torch

from pabee.early_exit.engine import layer_step


def compiles(step, device_type):
    """Whether --engine_step `step` compiles on this device."""
    return step == "compiled" or (step == "auto" and device_type == "cuda")


@functools.cache  # one compiled function per model depth, shapes and device: dynamo's cache lives on it
def compiled_step(layers, shapes, device_type, backend=None):
    """engine.layer_step compiled for a model of `layers` layers whose calls take `shapes`.
    backend None: inductor (with CUDA graphs on CUDA); tests pass "aot_eager", which captures the
    same graph without generating code."""
    # a graph per layer, shape, state before layer 1 or after, and exit setting (room for 16 of them)
    wanted = 2 * layers * shapes.declared * 16
    if torch._dynamo.config.recompile_limit < wanted:  # dynamo's default (8) would fall back to eager
        torch._dynamo.config.recompile_limit = wanted
        torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                               4 * wanted)
    graphs = device_type == "cuda" and backend is None
    step = torch.compile(layer_step, fullgraph=True, dynamic=False, backend=backend or "inductor",
                         mode="reduce-overhead" if graphs else None)
    return replayed(step) if graphs else step


def replayed(step):
    """The outputs of a replayed CUDA graph live in its memory pool and are overwritten by its next
    replay; the engine keeps rows waiting across calls, so they are copied out."""

    def run(*inputs):
        torch.compiler.cudagraph_mark_step_begin()
        return tuple(copied(out) for out in step(*inputs))

    return run


def copied(x):
    if isinstance(x, tuple):
        return tuple(copied(t) for t in x)
    return None if x is None else x.clone()
