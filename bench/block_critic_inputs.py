"""A diagnostic, not the paper's method: spirl_sac.py on block stacking with critics that also see what the dense
reward depends on beyond the state, the 11 blocks' lifted and delivered flags (each block's bonus, once earned, is
paid every remaining step) and the fraction of the episode gone (the time limit ends the bootstrap). The policy and
the prior are unchanged: they see the frames. If the critics' missing inputs were what held SPiRL back on this task,
this run would stack clearly more than the plain one with the same flags (docs/block_stacking.md has both).

    python bench/block_critic_inputs.py --seed 1 --threads 1 --overlap-updates --total-env-steps 300000 \
        --run-name block_priv/block_stacking__spirl__s1

Takes spirl_sac.py's flags (--env is block stacking); --resume continues a run of this script.
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import spirl_sac  # noqa: E402
from spirl_pretrain import IMAGE_DIM  # noqa: E402

N_BLOCKS = 11
EXTRA_DIM = 2 * N_BLOCKS + 1  # lifted flags, delivered flags, time gone


class RewardInputs(gym.Wrapper):
    """Inserts the flags and the time between the state vector and the frames of the image observation, where the
    critics (which read the first state_dim values) see them and the image policy (the last IMAGE_DIM) does not."""

    def _observation(self, observation):
        env = self.env.unwrapped
        extra = np.concatenate([env.lifted, env.delivered, [env.steps / env.max_episode_steps]]).astype(np.float32)
        return np.concatenate([observation[:-IMAGE_DIM], extra, observation[-IMAGE_DIM:]])

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        return self._observation(observation), info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return self._observation(observation), reward, terminated, truncated, info


PLAIN_MAKE_ENV, PLAIN_LOAD_SKILL_MODEL = spirl_sac.make_env, spirl_sac.load_skill_model


def make_env(name, **kwargs):
    if name != "block_stacking" or not kwargs.get("image"):
        raise spirl_sac.SpirlError("bench/block_critic_inputs.py is for --env block_stacking with an image prior")
    return RewardInputs(PLAIN_MAKE_ENV(name, **kwargs))


def load_skill_model(path, **expected):
    """The prior as spirl_sac.py loads it; the critics and the replay get the wider state."""
    model, config = PLAIN_LOAD_SKILL_MODEL(path, **expected)
    return model, dict(config, state_dim=config["state_dim"] + EXTRA_DIM)


if __name__ == "__main__":
    spirl_sac.make_env, spirl_sac.load_skill_model = make_env, load_skill_model  # what spirl_sac.train calls
    sys.argv[1:1] = ["--env", "block_stacking"]
    spirl_sac.runs.cli(spirl_sac.train, spirl_sac.Args, __doc__)
