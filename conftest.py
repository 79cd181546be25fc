"""Root conftest: registers the project's pytest plugin (fixtures and ordering) for all tests.

The fixtures live in tests/plugin.py; test modules never import a conftest.
"""

pytest_plugins = ["tests.plugin", "tests.cpureport"]
