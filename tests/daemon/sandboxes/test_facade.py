from __future__ import annotations

from daemon import sandboxes


def test_public_surface_is_exactly_all() -> None:
    public = {n for n in vars(sandboxes) if not n.startswith("_")} - {
        "backend", "boot", "env", "fingerprint", "layout", "provision", "sync", "task",
        "beneath", "procinfo", "processes", "subids", "netpolicy"}  # submodules
    assert public == set(sandboxes.__all__)
    for name in sandboxes.__all__:
        assert getattr(sandboxes, name) is not None
