"""What the tests and the benchmarks share: made-up bundles, photos, cameras, the import graph.

Imported as a package (``from tests.helpers.bundles import make_bundle``) by tests and ``bench/``
alike; nothing here imports pytest, so a benchmark needs none."""
