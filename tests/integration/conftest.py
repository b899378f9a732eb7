from __future__ import annotations

import pytest
from loop_lag import LoopLag


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def loop_lag() -> LoopLag:
    return LoopLag()
