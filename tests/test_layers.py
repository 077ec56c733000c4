"""The house's floors hold: no import cycle in medfit/, and loading a model imports no training.

import-linter (`lint-imports` in scripts/test.sh, contracts in pyproject.toml) enforces the layer
order; these two tests give a readable pytest failure for the two promises a user feels most.
"""

from __future__ import annotations

import subprocess
import sys

import grimp
import networkx as nx  # torch's own dependency


def test_no_import_cycle_in_the_package() -> None:
    """Strongly connected components of the module graph, lazy (in-function) imports included."""
    graph = grimp.build_graph("medfit", include_external_packages=False)
    edges = nx.DiGraph()
    for module in graph.modules:
        edges.add_edges_from((module, m) for m in graph.find_modules_directly_imported_by(module))
    cycles = [sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_loading_a_model_imports_no_training_code() -> None:
    code = (
        "import sys, medfit\n"
        "medfit.load, medfit.Classifier\n"
        "print(sorted(m for m in sys.modules if m.startswith('medfit.training')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "[]"
