"""Keeping each worker in its desired state (SPEC §9): the state machine and its transition
table, the persisted desired state, the actual state, and one reconciler per worker that alone
launches, stops, restarts or backs off that worker; the :class:`Supervisor` finds a worker's
reconciler and forwards intent to it. Nothing here knows how a launch is done: it is handed a
``launch`` function (``daemon.workers.launching``)."""
