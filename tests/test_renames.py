"""One name, one thing (issue 27): where two modules used one name for two things, the second
was renamed; its old public name still reads the new object, with a DeprecationWarning naming
the new one."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import jaxlift

RENAMED = [  # (module, old name, new name, the other module whose meaning the old name keeps)
    ("jaxlift.concepts", "class_difference", "score_difference", "jaxlift.targets"),
    ("jaxlift.concepts", "class_difference_top", "score_difference_top", None),
    ("jaxlift.viz", "top_features", "magnitude_order", "jaxlift.concepts"),
    ("jaxlift.dataset", "completeness_gap", "float64_gap", "jaxlift.gaps"),
    ("jaxlift.cli", "check_target", "check_target_classes", "jaxlift.validation"),
    ("jaxlift.interpreter", "Pair", "SplitMultipliers", None),
]


@pytest.mark.parametrize("module,old,new,canonical", RENAMED, ids=[r[1] for r in RENAMED])
def test_an_old_name_reads_the_new_one_with_a_warning(module, old, new, canonical):
    mod = importlib.import_module(module)
    assert new in mod.__all__ and old not in mod.__all__ and old not in dir(mod)
    with pytest.warns(DeprecationWarning, match=f"{module}.{old} is now {module}.{new}"):
        assert getattr(mod, old) is getattr(mod, new)
    with pytest.raises(AttributeError):
        getattr(mod, old + "_no_such_name")
    if canonical is not None:  # the old name's other meaning is still there, and different
        assert getattr(importlib.import_module(canonical), old) is not getattr(mod, new)


def test_the_renamed_functions_do_what_they_did():
    from jaxlift import concepts, dataset, viz

    a, b = np.array([[3.0, 1.0, 0.0]]), np.array([[3.0, -1.0, 2.0]])
    np.testing.assert_array_equal(concepts.score_difference(a, b), [[0.0, 2.0, -2.0]])
    np.testing.assert_array_equal(viz.magnitude_order(np.array([0.5, -2.0, 1.0]), 2), [1, 2])
    scores, delta = np.ones((2, 3, 4), np.float32), np.array([12.0, 11.0], np.float32)
    np.testing.assert_array_equal(dataset.float64_gap(scores, delta), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(jaxlift.completeness_gap(scores, delta)), [0.0, 1.0])
