"""Markdown tables: the one place that writes their syntax.

Every report of the project (Table I, the benchmark, the deployment, the
port comparison, the GPU check, the elastic study) builds its tables from
these two functions and formats its own cells.
"""


def row(cells):
    """One table line: ``| a | b |`` (cells as ``str`` gives them)."""
    return '| ' + ' | '.join(str(c) for c in cells) + ' |'


def table(columns, rows=()):
    """The lines of a table: its header, the rule under it, then ``rows``
    (each a sequence of cells)."""
    return [row(columns), '|' + '---|' * len(columns)] + [row(r)
                                                        for r in rows]
