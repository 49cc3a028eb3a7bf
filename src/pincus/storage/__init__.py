"""Storage pools and volumes (stand-in until the storage branch merges: only paths.py)."""
