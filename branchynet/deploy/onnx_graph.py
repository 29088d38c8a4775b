"""What ONNX's IR spec asks of a graph that ``onnx.checker`` does not check.

Runtimes other than ONNX Runtime hold exported graphs to two rules of the
spec that the checker lets pass:

- node names are unique (tract refuses ``Duplicate node name``, onnx2torch
  collides): Chainer's exporter names a ``Reshape``'s shape ``Constant``
  as the ``Reshape`` itself; :func:`unique_node_names` renames;
- a node inside a subgraph (an ``If`` branch) reads only values produced
  earlier in that subgraph or in an enclosing scope.

:func:`spec_problems` lists every breach of either; the export tests assert
that none is left in any graph this project writes.
"""


def _subgraphs(node):
    for attribute in node.attribute:
        if attribute.HasField('g'):
            yield attribute.g
        yield from attribute.graphs


def nodes(graph):
    """Every node of ``graph`` and of its subgraphs, depth first."""
    for node in graph.node:
        yield node
        for sub in _subgraphs(node):
            yield from nodes(sub)


def unique_node_names(model):
    """Give every node of ``model`` (subgraphs included) a name of its own:
    an empty or repeated name becomes ``<name or op>_<k>``. In place;
    returns ``model``."""
    taken = set()
    for node in nodes(model.graph):
        name, k = node.name or node.op_type, 1
        while name in taken:
            name = '{}_{}'.format(node.name or node.op_type, k)
            k += 1
        node.name = name
        taken.add(name)
    return model


def spec_problems(model):
    """Breaches of the two rules above, as sentences (empty: none)."""
    problems = []
    seen = set()
    for node in nodes(model.graph):
        if not node.name:
            problems.append('a {} node has no name'.format(node.op_type))
        elif node.name in seen:
            problems.append('node name {!r} is used twice'.format(node.name))
        seen.add(node.name)
    _scope_problems(model.graph, set(), problems)
    return problems


def _scope_problems(graph, outer, problems):
    known = set(outer)
    known.update(i.name for i in graph.input)
    known.update(i.name for i in graph.initializer)
    for node in graph.node:
        for name in node.input:
            if name and name not in known:
                problems.append('node {!r} reads {!r}, produced neither '
                                'before it in its graph nor in an enclosing '
                                'one'.format(node.name, name))
        for sub in _subgraphs(node):
            _scope_problems(sub, known, problems)
        known.update(node.output)
