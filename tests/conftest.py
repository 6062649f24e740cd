import jax
import pytest


@pytest.fixture
def getkey():
    """A fresh, pinned key per call: getkey() -> key(0), key(1), ..."""
    counter = iter(range(10**6))

    def _getkey():
        return jax.random.key(next(counter))

    return _getkey
