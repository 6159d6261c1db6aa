"""The test suites, and (in ``tests.helpers``) what tests and benchmarks share."""
