"""Launching one worker (SPEC §5, §7, §8): a config.yaml entry turned into a sandbox boot
(manifest, image and its ``USER``, network) or a host process for a binary worker. The
:class:`WorkerLauncher` is the ``launch`` function ``daemon.workers.supervision`` calls."""
