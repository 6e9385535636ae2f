"""Test-wide setup: a hermetic TFDS data directory, shared by subprocesses."""

import os
import tempfile

import pytest


def pytest_configure(config):
    """Points TFDS (and so every offline builder) at one data dir per test session."""
    del config
    os.environ.setdefault("TFDS_DATA_DIR", os.path.join(tempfile.gettempdir(), "genjax_tfds_tests"))


@pytest.fixture
def tiny_vae_config():
    """configs/vae.py:tiny, a fresh copy per test."""
    from configs import vae

    return vae.get_config("tiny")
