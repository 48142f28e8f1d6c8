"""The one strict YAML loader for every file a user writes (bastion.yaml, prompt files, the prompt lock,
eval suites), and the block-style dumper for the files Bastion writes back.

Loading rejects duplicate keys (PyYAML silently keeps the last one, which hides mistakes: a second
``server:`` block would win without a word), reporting every duplicate with both lines, and returns an
index from key path to line so that validation errors can say where. ``suggest`` words an unknown key
with the close matches among the known ones. Dumping writes multi-line strings as literal blocks (``|``)
so message templates read, and diff, as the text they are.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import yaml

Lines = dict[tuple[str, ...], int]
_MERGE = "tag:yaml.org,2002:merge"


class YamlError(ValueError):
    """The text is not valid YAML or repeats a key; ``problems`` are ``source:line: message`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _duplicates(loader: yaml.SafeLoader, root: yaml.Node, source: str) -> list[str]:
    """Every repeated key of every mapping, with both lines.

    Run on the composed tree before construction, which rewrites mappings that use merge keys
    (``<<: *base``): a key written beside a merge overrides the merged one on purpose and is not a duplicate.
    """
    found: list[tuple[int, str]] = []
    stack, visited = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                stack.append(value_node)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                    continue
                key, line = loader.construct_object(key_node), key_node.start_mark.line + 1
                if key in seen:
                    found.append((line, f"{source}:{line}: duplicate key {key!r} (first on line {seen[key]})"))
                else:
                    seen[key] = line
    return [msg for _, msg in sorted(found)]


def _index(node: yaml.Node, path: tuple[str, ...], out: Lines, seen: set[int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if id(node) in seen:  # an alias (*name) of a node already indexed: its lines are the anchor's
        return
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            _index(value_node, path + (key,), out, seen)
            out[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (str(i),), out, seen)


def load(text: str, source: str) -> tuple[Any, Lines]:
    """Parse one YAML document into (data, key path -> line); raise YamlError on bad YAML or repeated keys.

    Key paths are tuples of strings (list indexes as "0", "1", ...); ``()`` is the document itself.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicates(loader, node, source) if node is not None else []
        data = loader.construct_document(node) if node is not None and not duplicates else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        at = f"{source}:{mark.line + 1}" if mark else source
        raise YamlError([f"{at}: not valid YAML: {getattr(e, 'problem', None) or e}"]) from None
    except (ValueError, OverflowError) as e:  # a scalar PyYAML resolves but cannot build, e.g. 2024-13-01
        raise YamlError([f"{source}: not valid YAML: {e}"]) from None
    finally:
        loader.dispose()
    if duplicates:
        raise YamlError(duplicates)
    lines: Lines = {}
    if node is not None:
        _index(node, (), lines, set())
    return data, lines


def line_of(lines: Lines, *path: str | int) -> int | None:
    """The line of the closest key path (the path itself, else its nearest parent) we know a line for."""
    probe = tuple(str(p) for p in path)
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return lines.get(())


def where(source: str, lines: Lines, *path: str | int) -> str:
    """``source:line`` for the closest key path we know a line for."""
    line = line_of(lines, *path)
    return f"{source}:{line}" if line else source


def suggest(key: str, known: Iterable[str]) -> str:
    """``unknown key; did you mean 'port'?`` (or the known keys when none is close)."""
    known = sorted(set(known))
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {', '.join(known)}" if known else "unknown key"


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def dump(data: Any) -> str:
    """Block-style YAML, keys in the order given, multi-line strings as literal blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=10_000,
                     default_flow_style=False)
