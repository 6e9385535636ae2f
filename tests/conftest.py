"""Test-wide setup: a hermetic TFDS data directory, a per-session compilation cache and
XLA's fast-compiling CPU code generation, all shared by subprocesses."""

import os
import shutil
import tempfile

import pytest

_COMPILATION_CACHE_PREFIX = "genjax_jax_cache_"
# The tests' programs are small and each runs a few times, so compiling them is most of the
# suite's time. Without LLVM's optimization passes (-O0; XLA's default is -O3) XLA compiles a
# CPU program up to 5x faster (random-number kernels above all). The few long trainings run
# slower, but the whole default suite took 8:44 against 11:46 at the default, on 2 cores
# (-O1 and -O2 compile almost as fast but gained little over the whole suite). Tolerances
# compare against independent references, so they hold for either; runs compared with each
# other share it.
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a test's subprocess: the session's flags and `flags`."""
    return " ".join((os.environ.get("XLA_FLAGS", ""), *flags)).strip()


def pytest_configure(config):
    """Points TFDS (and so every offline builder) at one data dir per test session, and JAX
    at a fresh persistent compilation cache for this session.

    Many tests compile the same programs (a tiny config's train step, say) in new objects or in
    subprocesses; the cache compiles each once per session. It starts empty, so no test sees a
    program compiled by another session or another version of the code.
    """
    os.environ.setdefault("TFDS_DATA_DIR", os.path.join(tempfile.gettempdir(), "genjax_tfds_tests"))
    if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = xla_flags(FAST_COMPILE_FLAG)  # before JAX starts its backend
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        config.genjax_cache_dir = tempfile.mkdtemp(prefix=_COMPILATION_CACHE_PREFIX)
        # Environment variables reach the subprocesses; jax.config the tests' own process.
        os.environ["JAX_COMPILATION_CACHE_DIR"] = config.genjax_cache_dir
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
        import jax

        jax.config.update("jax_compilation_cache_dir", config.genjax_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    """Removes this session's compilation cache."""
    directory = getattr(config, "genjax_cache_dir", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tiny_vae_config():
    """configs/vae.py:tiny, a fresh copy per test."""
    from configs import vae

    return vae.get_config("tiny")
