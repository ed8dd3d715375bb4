"""The paper's task families and their offline data, shared by every algorithm script.

    from envs import make_env, load_episodes, WindowSampler, SpirlError

`make_env(name)` builds a downstream environment whose observation is the paper's state vector;
`load_episodes(source, env)` reads offline (state, action) episodes in that same state space from a
Minari dataset id, a local Minari directory or a D4RL hdf5 file.
"""

from envs.datasets import Episode, WindowSampler, load_episodes, skill_windows, split_episodes
from envs.errors import SpirlError
from envs.registry import ENV_NAMES, env_spec, make_env

__all__ = [
    "ENV_NAMES",
    "Episode",
    "SpirlError",
    "WindowSampler",
    "env_spec",
    "load_episodes",
    "make_env",
    "skill_windows",
    "split_episodes",
]
