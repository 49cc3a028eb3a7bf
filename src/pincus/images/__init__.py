"""Incus image formats without the host: metadata.yaml, fingerprints, names of the store's files."""
