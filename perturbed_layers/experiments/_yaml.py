"""Reading YAML configs as data, with bounds: a file cannot hang or exhaust the machine.

`yaml.safe_load` builds only plain data, but it still follows aliases: a 700-byte
"billion laughs" file (each level a list of ten aliases to the previous one) stands for
10⁹ strings. PyYAML shares the aliased nodes, so loading is cheap; what explodes is
everything after it that walks the data (validation, copies, an error message that
prints the value). `BoundedLoader` is a `yaml.SafeLoader` that refuses, before anything
walks the data:

- files over `MAX_BYTES`, and bytes that are not UTF-8 (with the byte offset);
- nesting deeper than `MAX_DEPTH` (PyYAML's composer would hit a `RecursionError`);
- documents whose *expanded* size, every alias counted as a full copy of what it
  names, passes `MAX_NODES` nodes or `MAX_CHARS` characters of scalars (counted on the
  shared node graph, each node once, so the count itself is cheap);
- a key given twice in one mapping (`epochs: 4` then `epochs: 1`; a second
  `training:` group): YAML says keys are unique, PyYAML silently keeps the last.

Numbers: PyYAML implements YAML 1.1, where a float needs a dot and a signed exponent
(`1.5e+3`); `1e-2` and `1.5e3` are strings. The loader resolves every YAML 1.2
float (`1e-2`, `1.5e3`, `.5`) as a float, and float options also accept any string
that Python's `float()` reads (see `_options.py`).

Errors are `YAMLLimitError` (a `ValueError`) with the line and column of the node at
fault; values shown in messages go through `short()`, which bounds their length.
"""

import re
import reprlib
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1 << 20  # 1 MiB: the shipped configs are under 2 KiB
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_CHARS = 1 << 20

_MERGE = "tag:yaml.org,2002:merge"
# YAML 1.2's core-schema floats (which also match what YAML 1.1 calls a float).
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 5
_repr.maxlevel = 3


def short(value: Any) -> str:
    """`repr(value)`, cut to a bounded length (strings at 80 characters, containers
    at 5 items and 3 levels): safe to put in an error message whatever the value."""
    return _repr.repr(value)


class YAMLLimitError(ValueError):
    """A YAML document that breaks a bound or a rule (duplicate key, encoding)."""


def _where(node: Node) -> str:
    mark = node.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}"


class BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with bounded depth and expanded size, unique keys and YAML
    1.2 floats. Use through `load_yaml`."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:  # pyright: ignore[reportIncompatibleMethodOverride]
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(
                    f"nesting deeper than {MAX_DEPTH} levels at line {mark.line + 1}, "
                    f"column {mark.column + 1}"
                )
            return super().compose_node(parent, index)  # pyright: ignore[reportArgumentType]
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:  # pyright: ignore[reportIncompatibleMethodOverride]
        seen: dict[Any, Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first is not key_node:
                raise YAMLLimitError(
                    f"duplicate key {short(key)} at {_where(key_node)} (first at "
                    f"{_where(first)}): YAML keys are unique; keep one"
                )
        return super().construct_mapping(node, deep=deep)


BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789.")
)


def _check_size(root: Node) -> None:
    """Refuse a node graph whose expanded tree (aliases copied) is too large."""
    sizes: dict[int, tuple[int, int]] = {}
    # Post-order over the shared graph, each node once (iterative: no recursion).
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if id(node) in sizes:
            continue
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        if not ready:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        nodes, chars = 1, len(node.value) if isinstance(node, ScalarNode) else 0
        for child in children:
            child_nodes, child_chars = sizes[id(child)]
            nodes, chars = nodes + child_nodes, chars + child_chars
        if nodes > MAX_NODES or chars > MAX_CHARS:
            raise YAMLLimitError(
                f"the document expands to more than {MAX_NODES:,} values or "
                f"{MAX_CHARS:,} characters (aliases counted as copies), at the "
                f"node at {_where(node)}: a config is far smaller"
            )
        sizes[id(node)] = (nodes, chars)


def load_yaml(text: str) -> Any:
    """Parse one YAML document into plain data, within the bounds above.

    **Raises:** `YAMLLimitError` for a bound or a duplicate key, `yaml.YAMLError` for
    a syntax error.
    """
    if len(text) > MAX_BYTES:
        raise YAMLLimitError(
            f"{len(text):,} characters; a config may have {MAX_BYTES:,}"
        )
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_size(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def decode(data: bytes) -> str:
    """UTF-8 text of a config file (a BOM is dropped).

    **Raises:** `YAMLLimitError` naming the first bad byte's offset.
    """
    if len(data) > MAX_BYTES:
        raise YAMLLimitError(
            f"{len(data):,} bytes or more; a config may have {MAX_BYTES:,}"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise YAMLLimitError(
            f"not UTF-8 text: byte {data[error.start]:#04x} at offset {error.start} "
            "(save the file as UTF-8)"
        ) from None
