"""Exit code 127 of a setup/install script names the missing command and the image."""

from __future__ import annotations

import pytest

from daemon.sandboxes.boot import _missing_command_hint


@pytest.mark.parametrize("line", ["/bin/sh: 1: bun: not found", "bash: bun: command not found",
                                  "sh: bun: not found"])
def test_shell_not_found_lines_name_the_command_and_image(line: str) -> None:
    hint = _missing_command_hint(127, ["some output", line], "docker.io/iiidev/python:latest")
    assert hint is not None
    assert hint.startswith("'bun' is not installed in image docker.io/iiidev/python:latest")


def test_other_exit_codes_or_output_give_no_hint() -> None:
    assert _missing_command_hint(1, ["/bin/sh: 1: bun: not found"], "img") is None
    assert _missing_command_hint(127, ["exec failed"], "img") is None
