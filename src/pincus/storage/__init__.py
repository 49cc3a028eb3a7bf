"""Storage pools and their volumes: one driver interface (base.py), the dir and btrfs drivers."""
