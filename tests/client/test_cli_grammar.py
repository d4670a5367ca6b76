"""The fast path's argv grammar (``client.cli_grammar``) is typer's: the same options, and for
every command line it answers, the same keyword arguments typer passes to the command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from client import actions
from client.cli import _dispatch_fast, fast_parse
from client.cli_grammar import COMMANDS, Grammar
from client.commands import app

ACTIONS = ("worker_list", "image_list", "worker_exec", "worker_export")


def click_command(path: tuple[str, ...]) -> Any:
    command = get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


def python_type(click_type: Any) -> type:
    """The Python type a click parameter type converts to (typer vendors click)."""
    from typer._click import types
    from typer.models import TyperPath

    for cls, python in ((types.BoolParamType, bool), (types.IntParamType, int),
                        (types.FloatParamType, float), (TyperPath, Path),
                        (types.StringParamType, str)):
        if isinstance(click_type, cls):
            return python
    raise AssertionError(f"unexpected click type {click_type!r}")


@pytest.mark.parametrize("grammar", COMMANDS, ids=lambda g: " ".join(g.path))
def test_the_fast_grammar_has_typer_s_options_and_arguments(grammar: Grammar) -> None:
    command = click_command(grammar.path)
    options = {p.name: p for p in command.params if p.param_type_name == "option"}
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    assert set(options) == {o.dest for o in grammar.options}
    for option in grammar.options:
        click_option = options[option.dest]
        on = [f for f, value in option.switches().items() if value] if option.value is None \
            else list(option.flags)
        off = [f for f, value in option.switches().items() if not value] \
            if option.value is None else []
        assert (click_option.opts, click_option.secondary_opts) == (on, off), option.dest
        assert click_option.is_flag == (option.value is None), option.dest
        assert click_option.multiple == option.multiple, option.dest
        assert python_type(click_option.type) is (option.value or bool), option.dest
        assert getattr(click_option.type, "min", None) == option.min, option.dest
        assert click_option.default == option.default, option.dest
    assert [(a.name, a.nargs, a.required) for a in arguments] == \
        [(a.dest, -1 if a.variadic else 1, True) for a in grammar.arguments]


# (argv, whether the fast path answers it); the others go to typer.
FORMS: list[tuple[tuple[str, ...], bool]] = [
    (("worker", "list"), True),
    (("worker", "list", "--json"), True),
    (("worker", "list", "--json", "--json"), True),
    (("worker", "list", "extra"), False),
    (("worker", "list", "--help"), False),
    (("worker", "list", "--json=1"), False),
    (("image", "list"), True),
    (("image", "list", "--json"), True),
    (("image", "list", "-j"), False),
    (("worker", "exec", "box", "--", "true"), True),
    (("worker", "exec", "box", "-e", "A=1", "--env", "B=2", "--env=C=3", "-w", "/tmp", "-t",
      "--", "sh", "-c", "x"), True),
    (("worker", "exec", "-e", "A=1", "box", "--workdir=/w", "--no-tty", "--timeout", "2.5",
      "--", "ls", "-l", "--"), True),
    (("worker", "exec", "--timeout=0.5", "box", "--tty", "ls", "--", "-a"), True),
    (("worker", "exec", "box", "ls"), True),
    (("worker", "exec", "box", "-w", "-x", "ls"), True),  # a value may start with a dash
    (("worker", "exec", "box", "--env=", "--timeout", "1e3", "true"), True),
    (("worker", "exec", "box", "--workdir", "a", "--workdir", "b", "true"), True),  # last wins
    (("worker", "exec", "box", "-", "true"), True),
    (("worker", "exec", "--help"), False),
    (("worker", "exec", "box", "--help"), False),
    (("worker", "exec", "box"), False),
    (("worker", "exec", "box", "-x", "--", "true"), False),
    (("worker", "exec", "box", "ls", "-l"), False),
    (("worker", "exec", "box", "--timeout", "0", "--", "true"), False),
    (("worker", "exec", "box", "--timeout", "soon", "--", "true"), False),
    (("worker", "exec", "box", "-eA=1", "--", "true"), False),
    (("worker", "exec", "box", "-te", "A=1", "true"), False),
    (("worker", "exec", "box", "--tty=yes", "--", "true"), False),
    (("worker", "exec", "box", "-e"), False),
    (("worker", "export", "w", "--to", "oci:out", "--json"), True),
    (("worker", "export", "w", "--json", "--to", "reg:5000/a/w:1"), True),
    (("worker", "export", "--to", "r/w:1", "w", "--json"), True),
    (("worker", "export", "w", "--to", "r/w:1"), True),
    (("worker", "export", "w", "--to", "oci:"), True),
    (("worker", "export", "w", "--to", "--json"), True),  # click: "--json" is --to's value
    (("worker", "export", "w", "--kubernetes", "--image", "r/w:1", "--namespace", "ns",
      "--engine-url", "ws://e:49134", "--runtime-class", "kata", "--replicas", "3", "-o",
      "k.yaml"), True),
    (("worker", "export", "w", "--kubernetes", "--replicas=0", "--output=o.yaml", "--json"),
     True),
    (("worker", "export", "w"), False),  # neither --to nor --kubernetes: a usage error
    (("worker", "export", "w", "--to", "r/w:1", "--kubernetes"), False),
    (("worker", "export", "w", "--kubernetes", "--replicas", "-1"), False),
    (("worker", "export", "w", "--kubernetes", "--replicas", "many"), False),
    (("worker", "export", "w", "--to"), False),
    (("worker", "export", "w", "--to", "x", "extra"), False),
    (("worker", "status", "w"), False),
    (("worker",), False),
]


@pytest.mark.parametrize("argv, fast", FORMS, ids=[" ".join(a) for a, _ in FORMS])
def test_the_fast_parser_passes_what_typer_passes(monkeypatch: pytest.MonkeyPatch,
                                                  argv: tuple[str, ...], fast: bool) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    for name in ACTIONS:
        monkeypatch.setattr(actions, name, lambda _n=name, **kw: calls.append((_n, kw)) or 0)
    via_typer = CliRunner().invoke(app, list(argv))
    parsed = fast_parse(argv)
    assert (parsed is not None) == fast
    if parsed is None:
        return
    action, kwargs = parsed
    assert via_typer.exit_code == 0, via_typer.output
    action(**kwargs)
    assert len(calls) == 2 and calls[0] == calls[1]
    assert calls[0][0] == "_".join(argv[:2])  # ("worker", "exec") → worker_exec


def test_an_oci_layout_destination_is_sent_absolute(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    sent: list[tuple[str, Any]] = []
    monkeypatch.setattr(actions, "print_result", lambda method, params: sent.append(
        (method, params)))
    monkeypatch.chdir(tmp_path)
    parsed = fast_parse(("worker", "export", "w", "--to", "oci:out", "--json"))
    assert parsed is not None
    parsed[0](**parsed[1])
    assert sent == [("worker.export", {"name": "w", "to": f"oci:{tmp_path / 'out'}"})]


def test_a_bad_env_pair_on_the_fast_path_is_reported_as_typer_does(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        _dispatch_fast(("worker", "exec", "box", "-e", "NOEQUALS", "--", "true"))
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("error: -e 'NOEQUALS': use KEY=VALUE")
    via_typer = CliRunner().invoke(app, ["worker", "exec", "box", "-e", "NOEQUALS", "--", "true"])
    assert via_typer.exit_code == 1
    assert via_typer.stderr.startswith("error: -e 'NOEQUALS': use KEY=VALUE")
