"""Assertions shared by test modules across folders (imported as `from tests import checks`)."""

import hashlib
import os

import jax
import numpy as np


def tree_files(root: str) -> dict[str, str]:
    """{relative path: sha256} of every file under root: compare before and after to prove
    that nothing on disk changed."""
    digests = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def assert_trees_equal(a, b) -> None:
    """Two pytrees have the same structure and bitwise equal leaves."""
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
