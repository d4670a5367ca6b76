"""A namespace sandbox's own network: what it may reach and what connects it.

``policy`` (the network policy, parsed and turned into rules), ``helper`` (a pasta or
slirp4netns process per sandbox), ``bridge`` + ``bridge_leases`` (a root daemon's bridge, a veth
pair and a lease per sandbox), ``sandbox`` (one sandbox's network from plan to stop, as the
launcher drives it).
"""
