from __future__ import annotations

import types

import daemon.images


def test_public_surface_is_exactly_all() -> None:
    public = {name for name, value in vars(daemon.images).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)
              and name != "annotations"}
    assert public == set(daemon.images.__all__)
    for name in daemon.images.__all__:
        assert getattr(daemon.images, name).__doc__
