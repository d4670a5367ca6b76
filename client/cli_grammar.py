"""The argv grammar of the commands the CLI answers without typer (``worker list``, ``image
list``, ``worker export``, ``worker exec``): one definition of their arguments and options, read
by both typer (``client.commands.common.typer_option`` / ``typer_argument`` build the
``typer.Option`` / ``typer.Argument`` of each parameter from it) and by :func:`parse`, the
typer-free parser of ``client.cli``'s fast path. So the two cannot disagree; a test walks typer's
click commands and checks they match these tables.

:func:`parse` reads the usual forms exactly as click does and returns the keyword arguments
typer would pass to the command; anything else (``--help``, an unknown or malformed option, a
bad value, a missing argument, ``-eK=V``) gives None, and typer then parses it and prints its
own usage error. Standard library only, and plain classes (a dataclass imports ``inspect``, a
NamedTuple costs ~1 ms to create): this is on the fast path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "IMAGE_LIST", "JSON", "WORKER_EXEC", "WORKER_EXPORT", "WORKER_LIST",
           "Argument", "Grammar", "Option", "parse"]


class Option:
    """One option: ``flags`` are typer's param_decls (``"--env", "-e"``; a switch pair is
    ``"--tty/--no-tty"``); ``value`` is the type of its value, None for a flag (True when
    given)."""

    __slots__ = ("default", "dest", "flags", "help", "min", "multiple", "value")

    def __init__(self, dest: str, flags: tuple[str, ...], value: type | None = None, *,
                 default: Any = None, multiple: bool = False, min: float | None = None,
                 help: str | None = None) -> None:
        self.dest = dest  # the command function's parameter
        self.flags = flags
        self.value = value  # str, int, float or Path
        self.default = default
        self.multiple = multiple
        self.min = min
        self.help = help

    def switches(self) -> dict[str, bool]:
        """A flag's spellings → the value each sets (``--no-tty`` → False)."""
        out: dict[str, bool] = {}
        for decl in self.flags:
            on, _, off = decl.partition("/")
            out[on] = True
            if off:
                out[off] = False
        return out


class Argument:
    __slots__ = ("dest", "help", "variadic")

    def __init__(self, dest: str, help: str, *, variadic: bool = False) -> None:
        self.dest = dest
        self.help = help
        self.variadic = variadic  # the rest of the positional arguments (at least one)


class Grammar:
    __slots__ = ("arguments", "options", "path")

    def __init__(self, path: tuple[str, ...], arguments: tuple[Argument, ...],
                 options: tuple[Option, ...]) -> None:
        self.path = path  # ("worker", "exec")
        self.arguments = arguments
        self.options = options

    def option(self, dest: str) -> Option:
        return next(o for o in self.options if o.dest == dest)

    def argument(self, dest: str) -> Argument:
        return next(a for a in self.arguments if a.dest == dest)


JSON = Option("as_json", ("--json",), default=False,
              help="Print the daemon's JSON result verbatim.")
NAME = Argument("name", "Worker name.")

WORKER_LIST = Grammar(("worker", "list"), (), (JSON,))
IMAGE_LIST = Grammar(("image", "list"), (), (JSON,))
WORKER_EXEC = Grammar(("worker", "exec"), (
    Argument("name", "A running worker."),
    Argument("command", "The command and its arguments (after --).", variadic=True),
), (
    Option("env", ("--env", "-e"), str, default=[], multiple=True,
           help="K=V for the command (repeatable)."),
    Option("workdir", ("--workdir", "-w"), str,
           help="In-sandbox directory (default: the worker's)."),
    Option("use_tty", ("--tty/--no-tty", "-t"),
           help="A pty for the command (default: when stdin is one)."),
    Option("timeout", ("--timeout",), float, min=0.001,
           help="Seconds; then the command is stopped, exit 124."),
))
WORKER_EXPORT = Grammar(("worker", "export"), (NAME,), (
    Option("to", ("--to",), str, help="oci:DIR[:TAG] (an OCI image layout on disk) or "
           "REGISTRY/REPO:TAG to push."),
    Option("kubernetes", ("--kubernetes",), default=False,
           help="Print Kubernetes YAML (Deployment + Secret)."),
    Option("image", ("--image",), str, help="With --kubernetes: REPO@sha256:..., or REPO:TAG to "
           "use the digest the registry gives for the tag now (default: the worker's last "
           "push)."),
    Option("namespace", ("--namespace",), str, default="default"),
    Option("engine_url", ("--engine-url",), str, help="The engine as pods reach it."),
    Option("runtime_class", ("--runtime-class",), str, help="e.g. kata or krun: microVM pods."),
    Option("replicas", ("--replicas",), int, default=1, min=0),
    Option("output", ("--output", "-o"), Path,
           help="Write the YAML here instead of printing it."),
    JSON,
))
COMMANDS = (WORKER_LIST, IMAGE_LIST, WORKER_EXEC, WORKER_EXPORT)


def _convert(option: Option, text: str) -> Any:
    """``text`` as click converts it for ``option``; raises ValueError where click would
    refuse it (not a number, below ``min``)."""
    if option.value is int or option.value is float:
        number = option.value(text)
        if option.min is not None and number < option.min:
            raise ValueError(text)
        return number
    return text if option.value is str else Path(text)


def _spellings(grammar: Grammar) -> dict[str, tuple[Option, bool | None]]:
    """Every flag spelling → (its option, the value a switch sets; None for a valued option)."""
    out: dict[str, tuple[Option, bool | None]] = {}
    for option in grammar.options:
        if option.value is None:
            out.update((flag, (option, on)) for flag, on in option.switches().items())
        else:
            out.update((flag, (option, None)) for flag in option.flags)
    return out


def _bind(grammar: Grammar, positional: list[str], values: dict[str, Any]) -> bool:
    """Positional arguments onto ``values``; False when click would refuse their number."""
    rest = list(positional)
    for argument in grammar.arguments:
        if argument.variadic:
            values[argument.dest], rest = rest, []
            if not values[argument.dest]:
                return False
        elif rest:
            values[argument.dest] = rest.pop(0)
        else:
            return False
    return not rest


def parse(grammar: Grammar, args: list[str]) -> dict[str, Any] | None:
    """``args`` (after ``grammar.path``) → the command's keyword arguments, as typer passes
    them; None for a form the fast path leaves to typer."""
    spellings = _spellings(grammar)
    values: dict[str, Any] = {o.dest: list(o.default) if o.multiple else o.default
                              for o in grammar.options}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        flag, eq, attached = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag not in spellings:
            return None  # --help, unknown options, -eK=V, bundled short flags: typer's
        option, switch = spellings[flag]
        if option.value is None:
            if eq:
                return None  # a flag given a value: click's usage error
            values[option.dest] = switch
            continue
        if not eq:
            if i >= len(args):
                return None
            attached, i = args[i], i + 1
        try:
            value = _convert(option, attached)
        except ValueError:
            return None
        if option.multiple:
            values[option.dest].append(value)
        else:
            values[option.dest] = value
    return values if _bind(grammar, positional, values) else None
