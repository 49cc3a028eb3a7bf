"""Tests of what only the guest kernel can do: collected inside the test guest only.

tests/integration/test_guest_kernel.py boots the guest (image.py) that runs them; on this host
they would only meet the missing kernel features. The OVN test needs the OVN daemons, which the
guest has when the host that built it has them (image.ovn_installed).
"""

import os
import shutil

if os.environ.get("PINCUS_IN_TEST_GUEST") != "1":
    collect_ignore_glob = ["test_*.py"]
elif shutil.which("ovn-northd") is None:
    collect_ignore = ["test_ovn_kernel.py"]
