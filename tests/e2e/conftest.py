from tests.support.daemon import daemon_factory
from tests.support.engine import engine_factory
from tests.support.sdk_caller import sdk_caller

__all__ = ["daemon_factory", "engine_factory", "sdk_caller"]
