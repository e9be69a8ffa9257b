"""Who owns a lease, a sandbox or an endpoint in a peer's store.

The image and network services keep what a client service asked for
under that client's name (the volume service's leases are the container
service's only), and sweep it against the list only that client can give
after a crash (see docs/design.md, "Reconcile after a crash"). The names
are the client services' own.
"""

CONTAINER = "container"
CRI = "cri"
BUILD = "build"
