"""`make scale`: a local multi-replica stack on loopback, an HPA emulator and its report."""
