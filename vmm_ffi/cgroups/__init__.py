"""A sandbox's resource limits (memory, cpus, pids) in cgroups.

``limits`` (apply them: v2 when delegated, else v1 as root; OOM kills), ``v1`` (a root
launcher's leaf per v1 controller), ``leaf`` (the leaf cgroups of either version: the plan, the
files, removal).
"""
