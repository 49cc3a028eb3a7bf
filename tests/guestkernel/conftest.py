"""Tests of what only the guest kernel can do: collected inside the test guest only.

tests/integration/test_guest_kernel.py boots the guest (image.py) that runs them; on this host
they would only meet the missing kernel features.
"""

import os

if os.environ.get("PINCUS_IN_TEST_GUEST") != "1":
    collect_ignore_glob = ["test_*.py"]
