"""The perf pytest files reuse the integration fixtures (throwaway namespaces, guard, sweep)."""

from tests.integration.conftest import (  # noqa: F401  (fixtures are found by name)
    _integration_guard,
    netns,
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
)
