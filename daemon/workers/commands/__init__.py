"""What the ``worker.*`` commands do (SPEC §5, §7, §9, §14): the lifecycle service behind them
and its helpers for add, export, exec, logs, inspect's isolation detail and progress to the
client. They write intent for ``daemon.workers.supervision`` and never launch themselves."""
