"""PABEE's exit for one example inside one ONNX graph: the cuts (pabee/deploy/onnx_cuts.py) joined by ONNX
control flow, so that one session call embeds an example, runs layer after layer with its head, counts
the agreements of the patience rule (Zhou et al., 2020, Section 3.1) and stops at its exit layer. At
batch 1, the paper's latency setting, the host then pays one call an example instead of one a layer
(on the CPU a layer of a small model costs about as much as the host's work around its call).

Each layer after the first ends in an If: at the exit its branch gives that layer's logits and the
exit layer, otherwise the branch holds the layers that follow. The counter is the rule's own:
PatienceRule.step (argmax equal, or |difference| < threshold for regression), exit when it equals the
patience (fed as an input, so one graph serves every setting); patience 0 runs full depth with the
last head, a graph of its own without the rule or the heads below the last, which answers a batch of
any size (every row leaves at the last layer)."""

import hashlib
import os

import onnx
from onnx import TensorProto, helper

OUTPUTS = ("logits", "exit_layer")
ONE = "rule/one"


def patience_graph(embed, layers, num_labels, full_depth=False):
    """The model (onnx.ModelProto) answering one example under PatienceRule, from the loaded cut graphs
    `embed` and `layers` (ModelProtos of pabee/deploy/onnx_cuts.py's cuts: fp32 or int8). Inputs: the
    embedding's, the padding mask, and the rule's setting: `patience` [1] (int64, >= 1) and
    `regression_threshold` [1] (float); outputs: the logits [1, labels] and the exit layer [1]. One
    graph serves every setting; `full_depth`: patience 0's, the layers one after the other, no rule,
    no head below the last and no setting to feed: logits [rows, labels] of a batch of any size, the
    exit layer [1] (the last, every row's)."""
    shared, hidden = Shared(), "embed/hidden"
    nodes = inlined(embed.graph, "embed/", {}, {"hidden": hidden}, shared)
    if not full_depth:
        nodes.append(constant("", ONE, [1]))  # every layer's counter adds it
    nodes += stages(layers, 0, hidden, None if full_depth else Counter(num_labels), None, shared)
    inputs = list(embed.graph.input)  # and the padding mask the layers read (an embedding may not)
    inputs += [i for i in layers[0].graph.input if i.name == "attention_mask" and i.name not in {j.name for j in inputs}]
    if not full_depth:
        inputs += [helper.make_tensor_value_info("patience", TensorProto.INT64, [1]),
                   helper.make_tensor_value_info("regression_threshold", TensorProto.FLOAT, [1])]
    graph = helper.make_graph(shared.nodes + nodes, "pabee_patience", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("exit_layer", TensorProto.INT64, None)],
                              [])
    place_weights(graph, shared.tensors)
    opsets = {}
    for model in (embed, *layers):
        for entry in model.opset_import:
            opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = max(m.ir_version for m in (embed, *layers))
    return model


class Counter:
    """PatienceRule as graph nodes: the prediction of a layer, the counter after it, the exit test
    against the graph's `patience` input."""

    def __init__(self, num_labels):
        self.regression = num_labels == 1

    def prediction(self, logits, prefix):
        if self.regression:
            return [constant(prefix, "flat", [-1]),
                    helper.make_node("Reshape", [logits, prefix + "flat"], [prefix + "prediction"])], prefix + "prediction"
        return [helper.make_node("ArgMax", [logits], [prefix + "prediction"], axis=-1, keepdims=0)], prefix + "prediction"

    def update(self, prediction, previous, counter, prefix):
        """Nodes giving `prefix`counter: (counter + 1) x agree, and `prefix`exits: counter == patience."""
        if self.regression:
            agree = [helper.make_node("Sub", [prediction, previous], [prefix + "difference"]),
                     helper.make_node("Abs", [prefix + "difference"], [prefix + "distance"]),
                     helper.make_node("Less", [prefix + "distance", "regression_threshold"], [prefix + "agree"])]
        else:
            agree = [helper.make_node("Equal", [prediction, previous], [prefix + "agree"])]
        return agree + [
            helper.make_node("Cast", [prefix + "agree"], [prefix + "agreed"], to=TensorProto.INT64),
            helper.make_node("Add", [counter, ONE], [prefix + "next"]),
            helper.make_node("Mul", [prefix + "next", prefix + "agreed"], [prefix + "counter"]),
            helper.make_node("Equal", [prefix + "counter", "patience"], [prefix + "exits"])]


def stages(layers, i, hidden, rule, previous, shared, out=OUTPUTS):
    """The nodes of layer i (0-based) and, after it, the exit test and the layers that follow (in the
    If's other branch), making the values named `out` (logits, exit layer); `previous`: (prediction,
    counter) of layer i - 1, None at the first layer."""
    prefix = f"layer{i}/"
    last = i == len(layers) - 1
    wanted = ("next_hidden",) if rule is None and not last else None  # full depth reads no head below the last
    nodes = inlined(layers[i].graph, prefix, {"hidden": hidden}, {}, shared, wanted)
    logits, following = prefix + "logits", prefix + "next_hidden"
    if last:
        return nodes + answer(logits, len(layers), *out)
    if rule is None:  # full depth: no layer below the last can answer
        return nodes + stages(layers, i + 1, following, rule, previous, shared, out)
    made, prediction = rule.prediction(logits, prefix)
    nodes += made
    if previous is None:
        nodes.append(constant(prefix, "counter", [0]))
        return nodes + stages(layers, i + 1, following, rule, (prediction, prefix + "counter"), shared, out)
    nodes += rule.update(prediction, *previous, prefix)
    here = (prefix + "exit_logits", prefix + "exit_layer")
    later = (prefix + "later_logits", prefix + "later_exit_layer")
    rest = stages(layers, i + 1, following, rule, (prediction, prefix + "counter"), shared, later)
    return nodes + [helper.make_node("If", [prefix + "exits"], list(out),
                                     then_branch=branch(f"exit_at_{i + 1}", answer(logits, i + 1, *here), here),
                                     else_branch=branch(f"after_{i + 1}", rest, later))]


def answer(logits, layer, logits_name, exit_name):
    return [helper.make_node("Identity", [logits], [logits_name]),
            helper.make_node("Constant", [], [exit_name], value=helper.make_tensor("v", TensorProto.INT64, [1], [layer]))]


def branch(name, nodes, out):
    """A subgraph of `nodes` with the outputs `out` (logits, exit layer)."""
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, None),
                                               helper.make_tensor_value_info(out[1], TensorProto.INT64, None)])


def inlined(graph, prefix, inputs, outputs, shared, wanted=None):
    """`graph`'s nodes with every name prefixed, its inputs read from `inputs` (graph input -> name)
    and its outputs renamed by `outputs`; its weights kept in `shared` (Shared), and so are its nodes
    over its other inputs alone (`lifted`: the padding mask's arithmetic), made once for every layer.
    `wanted`: the graph outputs to make (None: all); nodes that feed none of them are left out, with
    their weights."""
    kept = needed(graph, wanted or [o.name for o in graph.output])
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in kept for a in n.attribute):
        raise ValueError(f"{graph.name}: control flow inside a cut is not joined")
    used = {n for node in kept for n in node.input}
    names = {i.name: inputs.get(i.name, i.name) for i in graph.input}
    names |= {t.name: shared.add(t, prefix + t.name) for t in graph.initializer if t.name in used}
    ends = {o.name: outputs.get(o.name, prefix + o.name) for o in graph.output}
    hoisted, made = lifted(kept, set(inputs), {i.name for i in graph.input} - set(inputs), ends), []
    for k, node in enumerate(kept):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + node.name if node.name else ""  # unnamed stays unnamed: no two alike
        copy.input[:] = [names.get(n, n) if n else n for n in node.input]
        copy.output[:] = [ends.get(n, prefix + n) if n else n for n in node.output]  # "": an output not asked
        if k in hoisted:
            names.update(zip(node.output, shared.hoist(copy), strict=True))
        else:
            made.append(copy)
            names.update(zip(node.output, copy.output, strict=True))
    return made


def lifted(nodes, states, others, ends):
    """The indices of `nodes` over the inputs `others` alone (and what such nodes make), with the
    constants they read: none reads `states` (the layer's inputs that vary), what is made from them,
    or makes a graph output. A node over weights alone that no lifted node reads stays in its layer
    (lifted, its weight would be handed through every If above it)."""
    varying, derived, chosen = set(states), set(others), set()
    for k, node in enumerate(nodes):
        if varying.intersection(node.input) or ends.keys() & set(node.output):
            varying.update(node.output)
        elif derived.intersection(node.input):
            derived.update(node.output)
            chosen.add(k)
    read = {n for k in chosen for n in nodes[k].input}
    for k in reversed(range(len(nodes))):
        if k not in chosen and varying.isdisjoint(nodes[k].output) and read.intersection(nodes[k].output):
            chosen.add(k)
            read.update(nodes[k].input)
    return chosen


def place_weights(graph, tensors):
    """Each weight kept in the innermost branch that holds every node reading it. ONNX Runtime hands
    each outer value a branch reads to it at every If it runs: a layer's weights kept in the main
    graph passed through each If above that layer (2-3% of an example's time at batch 1, MiniLM)."""
    branches = dict(nested(graph))
    readers = {}
    for path, branch in branches.items():
        for node in branch.node:
            for name in node.input:
                readers.setdefault(name, []).append(path)
    for tensor in tensors:
        branches[os.path.commonprefix(readers.get(tensor.name, [()]))].initializer.append(tensor)


def nested(graph, path=()):
    """(path, graph) of `graph` and of every branch inside it; a path names the If nodes and branches
    leading to it."""
    yield path, graph
    for k, node in enumerate(graph.node):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from nested(attribute.g, path + ((k, attribute.name),))


def needed(graph, outputs):
    """The nodes of `graph` (no control flow) that `outputs` depend on, in graph order."""
    wanted, kept = set(outputs), []
    for node in reversed(graph.node):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(node.input)
    return kept[::-1]


class Shared:
    """What the joined graph computes or keeps once: each weight (the shared pooler, and any tensor
    equal in every cut, is read from one copy at every layer, so an example streams it from memory
    once), and each node over the inputs and weights alone (every layer's padding-mask arithmetic:
    made once in the main graph, not once a layer inside the branches)."""

    def __init__(self):
        self.tensors, self.seen, self.nodes, self.made = [], {}, [], {}

    def add(self, tensor, name):
        """The name under which `tensor` is kept (an equal one's, if kept before)."""
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = ""
        key = hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()
        if key not in self.seen:
            copy.name = name
            self.tensors.append(copy)
            self.seen[key] = name
        return self.seen[key]

    def hoist(self, node):
        """The output names of `node` (an equal one's, if made before)."""
        bare = onnx.NodeProto()
        bare.CopyFrom(node)
        bare.name, bare.output[:] = "", ["" if not o else "made" for o in node.output]  # how many, which asked
        key = bare.SerializeToString(deterministic=True)
        if key not in self.made:
            self.nodes.append(node)
            self.made[key] = list(node.output)
        return self.made[key]


def constant(prefix, name, values, kind=TensorProto.INT64):
    return helper.make_node("Constant", [], [prefix + name], value=helper.make_tensor(name, kind, [len(values)], values))
