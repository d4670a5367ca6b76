"""Real services the tests start (registry, engine stand-in, daemon) and the libkrun test double."""
