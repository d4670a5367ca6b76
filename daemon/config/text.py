"""Edit the ``workers:`` list of config.yaml as text, so nothing outside it changes by a byte.

A full ruamel round-trip re-indents other mappings and moves comments that sit between list items
(ruamel attaches them to the previous item's last key). So an edit is spliced into the original
lines: a removed entry takes its own leading comment lines with it, an added entry is rendered
with the file's indentation and inserted after the last entry, a replaced entry is round-tripped
on its own lines only (its inner comments survive).

:func:`edit_workers` checks every result by parsing it again and comparing the entries with the
expected ones; when splicing cannot be trusted (flow-style lists, odd layouts) it falls back to a
full ruamel round-trip of the document, checked the same way.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from daemon.config.entries import ParsedConfig, WorkerEntry, new_yaml, parse_config
from daemon.errors import ConfigError, Internal

#: Applied to an entry's round-trip mapping (force re-add): set or delete keys in place.
MappingEdit = Callable[[CommentedMap], None]

# `workers:` + spaces + optional `[]` + spaces + optional comment.
_KEY_LINE = re.compile(
    r"^(\s*[\"']?workers[\"']?\s*:)([ \t]*)(\[[ \t]*\])?([ \t]*)(#.*)?[ \t\r]*$")
_EMPTY_VALUE_KEY = re.compile(r"^(\s*)[^\s#\-][^:#]*:\s*(#.*)?$")


@dataclass(frozen=True)
class _Item:
    lead_start: int  # first of the comment lines directly above the dash
    dash_line: int
    end: int  # one past its last line (next item's lead_start, or end of the list)


@dataclass(frozen=True)
class _Layout:
    key_line: int | None  # line of `workers:` (None when absent)
    dash_col: int
    item_col: int  # column where an entry's keys start (dash_col + 2 in most files)
    items: list[_Item]
    insert_at: int  # where a new entry goes


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _layout(lines: list[str], parsed: ParsedConfig) -> _Layout | None:
    doc = parsed.document
    if doc is None or "workers" not in doc:
        return _Layout(None, 2, 4, [], len(lines))
    key_line, key_col = doc.lc.key("workers")
    seq = doc["workers"]
    if seq is None or (isinstance(seq, CommentedSeq) and len(seq) == 0):
        if not _KEY_LINE.match(lines[key_line].rstrip("\n")):
            return None
        return _Layout(key_line, key_col + 2, key_col + 4, [], key_line + 1)
    if seq.fa.flow_style():
        return None
    dashes: list[int] = []
    dash_col = item_col = -1
    for index in range(len(seq)):
        line_no, col = seq.lc.item(index)
        line = lines[line_no]
        head = line[:col].rstrip()
        if not head.endswith("-") or head[:-1].strip():
            return None  # `-` alone on its line, or something before it
        col_of_dash = len(head) - 1
        if dash_col not in (-1, col_of_dash) or item_col not in (-1, col):
            return None
        dash_col, item_col = col_of_dash, col
        dashes.append(line_no)
    end = dashes[-1] + 1
    for j in range(dashes[-1] + 1, len(lines)):
        if not lines[j].strip():
            continue
        if _indent(lines[j]) <= dash_col:
            break
        end = j + 1
    items: list[_Item] = []
    floor = key_line
    for dash_line in dashes:
        start = dash_line
        while start - 1 > floor and _is_comment(lines[start - 1]) and \
                _indent(lines[start - 1]) >= dash_col:
            start -= 1
        items.append(_Item(start, dash_line, end))
        floor = dash_line
    fixed = [_Item(it.lead_start, it.dash_line, items[i + 1].lead_start)
             for i, it in enumerate(items[:-1])]
    fixed.append(items[-1])
    return _Layout(key_line, dash_col, item_col, fixed, end)


def guess_mapping_indent(lines: list[str]) -> int:
    """The file's mapping indent (the indent of a nested mapping under a key); 2 if none."""
    for i, line in enumerate(lines):
        if not _EMPTY_VALUE_KEY.match(line.rstrip("\n")):
            continue
        for nxt in lines[i + 1:]:
            if not nxt.strip() or _is_comment(nxt):
                continue
            step = _indent(nxt) - _indent(line)
            if step > 0 and not nxt.lstrip().startswith("-"):
                return step
            break
    return 2


def _dump(value: Any, map_indent: int) -> list[str]:
    yaml = new_yaml()
    yaml.indent(mapping=map_indent, sequence=map_indent + 2, offset=map_indent)
    out = io.StringIO()
    yaml.dump(value, out)
    return out.getvalue().splitlines(keepends=True)


def _as_item(body: list[str], layout: _Layout) -> list[str]:
    pad = " " * layout.item_col
    out = [" " * layout.dash_col + "-".ljust(layout.item_col - layout.dash_col) + body[0]]
    out.extend(pad + line if line.strip() else line for line in body[1:])
    return out


def _ensure_newline(lines: list[str]) -> None:
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"


def _splice_add(lines: list[str], layout: _Layout, entry: WorkerEntry, indent: int) -> list[str]:
    new = list(lines)
    _ensure_newline(new)
    item = _as_item(_dump(entry.to_yaml(), indent), layout)
    if layout.key_line is None:
        return new + ["workers:\n"] + item
    if not layout.items:  # `workers:` / `workers: []` → block list
        match = _KEY_LINE.match(new[layout.key_line].rstrip("\n"))
        if match is None:
            raise ValueError("unexpected `workers:` line")
        key, lead, _, gap, comment = match.groups()
        new[layout.key_line] = key + ((gap or lead) + comment if comment else "") + "\n"
    return new[:layout.insert_at] + item + new[layout.insert_at:]


def _splice_remove(lines: list[str], layout: _Layout, index: int) -> list[str]:
    item = layout.items[index]
    new = lines[:item.lead_start] + lines[item.end:]
    if len(layout.items) == 1 and layout.key_line is not None:
        match = _KEY_LINE.match(new[layout.key_line].rstrip("\n"))
        if match is None:
            raise ValueError("unexpected `workers:` line")
        key, lead, _, gap, comment = match.groups()
        spacing = gap or lead or " "
        new[layout.key_line] = key + " []" + (spacing + comment if comment else "") + "\n"
    return new


def _splice_replace(lines: list[str], layout: _Layout, index: int, edit: MappingEdit,
                    indent: int) -> list[str]:
    item = layout.items[index]
    end = item.end
    while end > item.dash_line + 1 and not lines[end - 1].strip():
        end -= 1
    segment = lines[item.dash_line:end]
    cut = layout.item_col
    first = segment[0]
    body = [first[cut:]]
    for line in segment[1:]:
        if line.strip() and _indent(line) < cut:
            raise ValueError("entry lines less indented than the entry")
        body.append(line[cut:] if line.strip() else line)
    mapping = new_yaml().load("".join(body))
    if not isinstance(mapping, CommentedMap):
        raise TypeError("entry is not a mapping")
    edit(mapping)
    rendered = _as_item(_dump(mapping, indent), layout)
    _ensure_newline(rendered)
    return lines[:item.dash_line] + rendered + lines[end:]


def _rewrite(parsed: ParsedConfig, text: str, mutate: Callable[[CommentedSeq], None],
             indent: int) -> str:
    """Fallback: a full ruamel round-trip of the document (re-parsed, so ``parsed`` stays intact)."""
    yaml = new_yaml()
    doc = yaml.load(text) if parsed.document is not None else None
    if doc is None:
        doc = CommentedMap()
    seq = doc.get("workers")
    if not isinstance(seq, CommentedSeq):
        seq = CommentedSeq()
        doc["workers"] = seq
    seq.fa.set_block_style()
    mutate(seq)
    yaml.indent(mapping=indent, sequence=indent + 2, offset=indent)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def edit_workers(text: str, parsed: ParsedConfig, file: str, expected: list[WorkerEntry], *,
                 add: WorkerEntry | None = None, remove: int | None = None,
                 replace: tuple[int, MappingEdit] | None = None) -> str:
    """Return config.yaml text with one edit applied inside ``workers:``; checked to parse back to
    ``expected``. Raises :class:`~daemon.errors.Internal` if no rendering gives ``expected``."""
    crlf = "\r\n" in text
    if crlf:  # edit as LF, give the file its CRLF back at the end
        text = text.replace("\r\n", "\n")
    lines = text.splitlines(keepends=True)
    indent = guess_mapping_indent(lines)
    candidates: list[Callable[[], str]] = []
    layout = _layout(lines, parsed)
    if layout is not None:
        if add is not None:
            candidates.append(lambda: "".join(_splice_add(lines, layout, add, indent)))
        elif remove is not None:
            candidates.append(lambda: "".join(_splice_remove(lines, layout, remove)))
        elif replace is not None:
            candidates.append(lambda: "".join(
                _splice_replace(lines, layout, replace[0], replace[1], indent)))

    def mutate(seq: CommentedSeq) -> None:
        if add is not None:
            seq.append(CommentedMap(add.to_yaml()))
        elif remove is not None:
            del seq[remove]
        elif replace is not None:
            replace[1](seq[replace[0]])

    candidates.append(lambda: _rewrite(parsed, text, mutate, indent))
    for render in candidates:
        try:
            result = render()
            if parse_config(result, file).entries == expected:
                return result.replace("\n", "\r\n") if crlf else result
        except (ConfigError, YAMLError, ValueError, TypeError, KeyError, IndexError,
                AttributeError):
            continue
    raise Internal(f"{file}: could not write the workers list without changing other content")
