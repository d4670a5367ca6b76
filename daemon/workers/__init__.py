"""Workers: what the ``worker.*`` commands do (``commands``), how one worker is launched
(``launching``), how each is kept in its desired state (``supervision``), and what the daemon
does on its own (``autopilot``: engine session, config.yaml edits, log rotation;
``hot_reload``: project edits)."""
