"""Name -> environment. One place that knows which task families exist and their state/action sizes."""

from __future__ import annotations

from envs.errors import SpirlError

# The facts about each task family that scripts and checkpoints need before building an env.
# `default_dataset` is what spirl_pretrain.py reads when --dataset is not given.
ENV_SPECS = {
    "kitchen": {
        "state_dim": 30,
        "action_dim": 9,
        "max_episode_steps": 280,
        "default_dataset": "D4RL/kitchen/mixed-v2",
    },
}
ENV_NAMES = tuple(ENV_SPECS)


def env_spec(name: str) -> dict:
    if name not in ENV_SPECS:
        raise SpirlError(f"unknown env '{name}': choose one of {', '.join(ENV_NAMES)} (--env)")
    return ENV_SPECS[name]


def make_env(name: str, **kwargs):
    """Build the downstream env `name`; kwargs go to its constructor (e.g. tasks=..., ordered=...)."""
    env_spec(name)
    if name == "kitchen":
        from envs.kitchen import KitchenEnv

        return KitchenEnv(**kwargs)
    raise AssertionError(name)  # unreachable: every name in ENV_SPECS is built above
