from __future__ import annotations

import daemon.images


def test_public_surface_is_exactly_all() -> None:
    public = {n for n in vars(daemon.images) if not n.startswith("_")}
    modules = {"auth", "errors", "extract", "manifest", "models", "pull", "registry", "settings",
               "slug", "store", "annotations"}
    assert public - modules == set(daemon.images.__all__)
    for name in daemon.images.__all__:
        assert getattr(daemon.images, name).__doc__
