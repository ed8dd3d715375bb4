"""Shared test fixtures. Tests run from the repository root: `python -m pytest tests`."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DOCS = os.path.join(ROOT, "docs")
BENCH = os.path.join(ROOT, "bench")


def docs_script(name: str):
    """docs/<name>.py as a module, imported as when it runs as a script (docs/ on the path: plot_pretrain imports
    plot_sac)."""
    import importlib

    sys.path.insert(0, DOCS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(DOCS)


def bench_script(name: str):
    """bench/<name>.py as a module."""
    import importlib

    sys.path.insert(0, BENCH)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(BENCH)


# The real D4RL file lives in ../shared beside the checkout on the developers' machines and in CI;
# a user's clone has no ../shared, so tests that need it skip with this reason.
KITCHEN_COMPLETE = os.path.join(os.path.dirname(ROOT), "shared", "data", "d4rl", "kitchen-complete-v0.hdf5")


@pytest.fixture
def kitchen_complete_path():
    if not os.path.isfile(KITCHEN_COMPLETE):
        pytest.skip(f"real D4RL file not found at {KITCHEN_COMPLETE} (only the developers' machines have ../shared)")
    return KITCHEN_COMPLETE


def pytest_configure(config):
    # Tiny models train fastest on one thread, and one thread per test process avoids OpenMP
    # oversubscription (x10 slowdowns) when the machine is busy with other work.
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def short_kitchen(monkeypatch):
    """patch(*modules, steps=100): those scripts' `make_env` builds kitchen episodes of `steps` steps (280 in the
    task), so end-to-end runs finish episodes, evaluate and resume in a third of the time."""

    def patch(*modules, steps=100):
        from envs.kitchen import KitchenEnv

        def make_env(name, **kwargs):
            assert name == "kitchen", name
            return KitchenEnv(max_episode_steps=steps, **kwargs)

        for module in modules:
            monkeypatch.setattr(module, "make_env", make_env)

    return patch
