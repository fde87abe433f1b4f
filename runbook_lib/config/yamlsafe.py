"""YAML read with bounds: what a parameters file may be, refused before it costs anything.

A parameters file comes from an operator's hand or a pipeline; a mistake (or a hostile file) must get one
line naming the problem, never a traceback, a hang or a silent choice. Bounded here: the file's size, the
nesting depth (PyYAML composes recursively), the number of aliases and the size of the document once
aliases are expanded (an alias bomb costs minutes in every walk of the data), and duplicate keys (PyYAML
keeps the last one silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 100
MAX_NODES = 200_000


class YamlLimit(ValueError):
    """A document refused by a bound or a duplicate key: `where` names the key (or is empty), `what` why."""

    def __init__(self, where: str, what: str) -> None:
        self.where, self.what = where, what
        super().__init__(f"{where}: {what}" if where else what)


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YamlLimit("", f"more than {MAX_ALIASES} aliases (*name); write the values out")
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlLimit("", f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlLimit(str(key), f"duplicate key (line {line}; first given on line {seen[key]}); "
                                          "keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: Node) -> int:
    """Nodes in the document once every alias is expanded (aliases share node objects: memoised by id).
    A node that contains itself (`a: &x [*x]`) expands without end: refused."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path from the root: meeting one again is a cycle
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if not children_done and id(node) in open_nodes:
            raise YamlLimit("", "an alias refers to a value that contains it (an endless document)")
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        if children_done or not children:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 0) for c in children)
            if sizes[id(node)] > MAX_NODES:
                return sizes[id(node)]
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load(text: str) -> Any:
    """One YAML document, bounded; raises YamlLimit or yaml.YAMLError."""
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_NODES:
            raise YamlLimit("", f"more than {MAX_NODES} values once aliases are expanded (an alias bomb?)")
        return loader.construct_document(root)
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """The file's text: a regular file, at most MAX_BYTES, UTF-8. Raises YamlLimit naming what is wrong."""
    if path.is_dir():
        raise YamlLimit("", f"{path} is a directory; expected a parameters file")
    if path.exists() and not path.is_file():
        raise YamlLimit("", f"{path} is not a regular file (a pipe or a device); expected a parameters file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise YamlLimit("", f"parameters file not found: {path}") from None
    except OSError as exc:
        raise YamlLimit("", f"cannot read the parameters file {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise YamlLimit("", f"{path} is larger than {MAX_BYTES // 1024} KiB; a parameters file is far smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlLimit("", f"{path} is not UTF-8 text (byte {exc.start})") from None
