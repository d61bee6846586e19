import pytest


@pytest.fixture
def monitors():
    """Monitors a test builds (tests.unit.monitor_helpers.build); closed afterwards so no atexit or signal hook
    outlives the test."""
    built = []
    yield built
    for monitor in built:
        monitor.close()
