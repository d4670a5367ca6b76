from tests.support.daemon import daemon_factory
from tests.support.engine import engine_factory

__all__ = ["daemon_factory", "engine_factory"]
