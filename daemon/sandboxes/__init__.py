"""Per-worker sandboxes: layout on disk, provisioning, project sync, env, boot, launcher tasks."""
