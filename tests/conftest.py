"""Shared test options: ``--run-slow`` enables tests marked ``slow``."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def shared_data(name: str) -> Path:
    """Path to a folder of ../shared/data, or skip the test with a clear message."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"dataset {path} not present (tests that need ../shared/data are skipped)")
    return path
