from tests.unit.fakehost import fakehost

__all__ = ["fakehost"]
