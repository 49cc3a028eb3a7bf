"""pincusd driven by real clients nobody here wrote: Debian's LXD 5.0.2 `lxc` and pylxd."""
