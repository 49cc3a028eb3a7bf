from tests.host.test_pci import fake
from tests.unit.fakehost import fakehost

__all__ = ["fake", "fakehost"]
