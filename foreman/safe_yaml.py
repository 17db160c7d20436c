"""YAML from anyone, read without letting a small file crash or hang the reader.

Three ways a YAML file of a few kilobytes stops a process, each checked on the content before
a value is built: nesting so deep that libyaml's C parser overflows its stack (a segfault, not
an exception) or Python recurses out; aliases and merge keys (`<<: [*a, *a]`) that expand a
1 KB file into billions of nodes; and both at once. `check_yaml` raises `YamlRefused` with the
reason; callers skip the file (the index, the tables) or refuse it (a workflow file).
"""

from __future__ import annotations

import yaml

MAX_DEPTH = 100  # nesting levels a person's file plausibly has
MAX_NODES = 5_000_000  # nodes after every alias and merge is expanded (a 30,000-step file has ~210,000)
MAX_INDENT = 400  # columns of leading space on one line


_LOADER: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlRefused(ValueError):
    """The YAML is nested too deeply or expands too far to be read safely."""


def check_yaml(text: str) -> None:
    """Raise `YamlRefused` when `text` would crash or hang a YAML reader; else return."""
    _flow_depth(text)
    for line in text.splitlines():
        if len(line) - len(line.lstrip(" \t")) > MAX_INDENT:
            raise YamlRefused(f"a line is indented more than {MAX_INDENT} columns (nesting too deep to read safely)")
    try:  # the depth is bounded now, so libyaml's parser is safe, and ~40x faster than PyYAML's own
        documents = list(yaml.compose_all(text, Loader=_LOADER))
    except RecursionError:
        raise YamlRefused("nested too deeply to read safely") from None
    memo: dict[int, int] = {}
    for document in documents:
        if document is not None and _expanded(document, memo, 0) > MAX_NODES:
            raise YamlRefused(f"it expands to more than {MAX_NODES} nodes once its aliases and merge keys are "
                              "copied out (an alias bomb)")


def _flow_depth(text: str) -> None:
    depth, quote = 0, ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlRefused(f"brackets nested more than {MAX_DEPTH} deep (too deep to read safely)")
        elif char in "]}":
            depth = max(0, depth - 1)
        elif char == "\n":
            quote = ""  # a quote never spans a line in the files this guards; do not let one hide brackets


def _expanded(node: yaml.Node, memo: dict[int, int], depth: int) -> int:
    """How many nodes `node` stands for once every alias is copied out (a shared node counts
    each time it is used); memoised, so computing it costs one visit per distinct node."""
    if id(node) in memo:
        return memo[id(node)]
    if depth > MAX_DEPTH:
        raise YamlRefused(f"nested more than {MAX_DEPTH} deep (too deep to read safely)")
    memo[id(node)] = MAX_NODES + 1  # a cycle (an alias inside itself) counts as too big
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded(child, memo, depth + 1) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded(k, memo, depth + 1) + _expanded(v, memo, depth + 1) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]
