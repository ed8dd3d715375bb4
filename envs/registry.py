"""Name -> environment. One place that knows which task families exist and their state/action sizes."""

from __future__ import annotations

import functools
import os

import numpy as np

from envs.errors import SpirlError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Datasets this repo generates itself, by name -> (local directory, the command that writes it). They
# need no internet: the name resolves to the directory, and a missing directory names its command.
LOCAL_DATASETS = {
    "spirl/kitchen-scripted-v0": (
        os.path.join(REPO_ROOT, "data", "kitchen-scripted-v0"),
        "python -m envs.kitchen_demos",
    ),
    "spirl/maze-planner-v2": (os.path.join(REPO_ROOT, "data", "maze-planner-v2"), "python -m envs.maze_demos"),
    "spirl/block-stacking-scripted-v0": (
        os.path.join(REPO_ROOT, "data", "block-stacking-scripted-v0"),
        "python -m envs.block_stacking_demos",
    ),
}
# The facts about each task family that the scripts need, kept here once:
# - state_dim, action_dim, max_episode_steps: the env's spaces and episode limit;
# - progress_metric: the task progress each env reports in `info` (read at an episode's end), logged as
#   charts/<name> and charts/eval_<name>: the y-axes of the paper's Fig. 4;
# - episode_info: the `info` entries logged as charts/<name> at each training episode's end: the progress
#   metric and, on block stacking, where the dense reward's bonuses come from (blocks lifted, blocks carried
#   above another), which tell a policy that builds from one that only collects bonuses;
# - delta: the target divergence of SPiRL's alpha tuning (app. B.2: kitchen 5, maze 1, block stacking 5);
# - beta: the weight of the embedding regulariser in eq. 4 (app. B.1: kitchen 5e-4, maze and block stacking 1e-2);
# - critic_layers: hidden linear layers of the skill-space critics. The authors' kitchen config has n_layers = 5,
#   which their BaseProcessingNet builds as an input block + 5 blocks: 6 hidden layers; block stacking's n_layers = 2:
#   3. The maze keeps 2 (its n_layers = 2 would be 3 by the same count) until its results are rerun;
# - squash_scale: spirl_sac.py executes z = 2 tanh(u / squash_scale). The authors' code has 1, which makes the
#   prior-initialised policy execute skills about twice as far out as the prior's (spirl_sac.squash); 2 keeps them.
#   Kitchen 2 (measured there: 0.34 subtasks per episode before any update against 0.02); the maze keeps the
#   authors' 1 (measured there: prior samples squashed either way reach the goal as often, 2 and 1 episodes of
#   200, docs/maze.md); block stacking keeps 1 until its results are rerun;
# - bootstrap_at_time_limit: whether a Q-target bootstraps through an episode's time limit (the textbook choice: a
#   truncation is not a termination) or stops there as at a true end (the authors' sampler stores the time limit as
#   done). The paper's three families stop there: in the kitchen, bootstrapping let the 6-layer critics climb
#   unanchored (only 0.4-1.5% of transitions are true ends): mean Q 12 and 4e4 against Monte-Carlo returns below 2
#   in 2 of 3 seeds, whose success then collapsed (3.7 -> 0 subtasks); stopping there anchors 1 transition in 28.
#   Any other gymnasium task (flat SAC) bootstraps, as CleanRL's SAC;
# - eval_episodes: episodes per evaluation with the policy mean. The maze and block stacking start every episode in
#   the same state and step deterministically, so their evaluation episodes are identical (checked in the tests) and
#   one is enough; the kitchen's starts vary;
# - default_dataset: what spirl_pretrain.py reads when --dataset is not given;
# - default_prior: the skill-model checkpoint shipped in the repo, used when --prior-checkpoint is not given.
ENV_SPECS = {
    "kitchen": {
        "state_dim": 30,
        "action_dim": 9,
        "max_episode_steps": 280,
        "progress_metric": "subtasks_completed",
        "episode_info": ("subtasks_completed",),
        "delta": 5.0,
        "beta": 5e-4,
        "critic_layers": 6,
        "squash_scale": 2.0,
        "bootstrap_at_time_limit": False,
        "eval_episodes": 10,
        # Scripted demonstrations in the spirit of D4RL "mixed", generated offline; the
        # paper's own data stays available as --dataset D4RL/kitchen/mixed-v2 (needs internet).
        "default_dataset": "spirl/kitchen-scripted-v0",
        "default_prior": os.path.join(REPO_ROOT, "checkpoints", "kitchen-scripted-skills.pt"),
    },
    # Point-mass maze: the state is (x, y, vx, vy) (image priors also see two top-down frames); the
    # downstream task is the fixed 40 x 40 maze of envs/maze.py; the data comes from
    # `python -m envs.maze_demos`; the shipped model has the paper's image prior.
    "maze": {
        "state_dim": 4,
        "action_dim": 2,
        "max_episode_steps": 2000,
        "progress_metric": "success",
        "episode_info": ("success",),
        "delta": 1.0,
        "beta": 1e-2,
        "critic_layers": 2,
        "squash_scale": 1.0,
        "bootstrap_at_time_limit": False,
        "eval_episodes": 1,
        "default_dataset": "spirl/maze-planner-v2",
        "default_prior": os.path.join(REPO_ROOT, "checkpoints", "maze-image-skills.pt"),
    },
    # Block stacking (envs/block_stacking.py): the downstream scene has 11 blocks, so its state is
    # 8 + 3 * 11 = 41 dims; the training data is recorded in the 5-block scene (23 dims). Image priors
    # bridge the two through the frames (as the authors'), state-based networks through the 23
    # nearest-block features of envs.block_stacking.nearest_blocks. The data comes from
    # `python -m envs.block_stacking_demos`; the shipped model has the paper's image prior.
    "block_stacking": {
        "state_dim": 41,
        "data_state_dims": (23, 41),
        "action_dim": 3,
        "max_episode_steps": 1000,
        "progress_metric": "blocks_stacked",
        "episode_info": ("blocks_stacked", "blocks_lifted", "blocks_delivered"),
        "delta": 5.0,
        "beta": 1e-2,
        "critic_layers": 3,
        "squash_scale": 1.0,
        "bootstrap_at_time_limit": False,
        "eval_episodes": 1,
        "default_dataset": "spirl/block-stacking-scripted-v0",
        "default_prior": os.path.join(REPO_ROOT, "checkpoints", "block-stacking-image-skills.pt"),
    },
}
ENV_NAMES = tuple(ENV_SPECS)


def env_spec(name: str, any_gymnasium: bool = False) -> dict:
    """The facts of task family `name` (ENV_SPECS). With any_gymnasium (flat SAC, baselines/sac.py), any other
    name registered with gymnasium is accepted too, as CleanRL's scripts do: its sizes come from its spaces and
    it reports no task progress."""
    if name in ENV_SPECS:
        return ENV_SPECS[name]
    if any_gymnasium and name in _gymnasium_ids():
        return gymnasium_spec(name)
    extra = " or a gymnasium id with a Box action space, e.g. Hopper-v5" if any_gymnasium else ""
    raise SpirlError(f"unknown env '{name}': choose one of {', '.join(ENV_NAMES)}{extra} (--env)")


def _gymnasium_ids():
    import gymnasium

    return gymnasium.registry


@functools.cache
def gymnasium_spec(name: str) -> dict:
    """state_dim and action_dim of a gymnasium env with 1-D Box spaces and a bounded action box (one-line error
    otherwise); progress_metric None."""
    env = _make_gymnasium(name)
    observations, actions = env.observation_space, env.action_space
    env.close()
    box = type(actions).__name__ == "Box" and len(actions.shape) == 1
    if not (box and np.isfinite(actions.low).all() and np.isfinite(actions.high).all()):
        raise SpirlError(f"--env {name}: flat SAC needs a bounded 1-D Box action space (it has {actions})")
    if not (type(observations).__name__ == "Box" and len(observations.shape) == 1):
        raise SpirlError(f"--env {name}: flat SAC needs a 1-D Box observation space (it has {observations})")
    return {
        "state_dim": observations.shape[0],
        "action_dim": actions.shape[0],
        "progress_metric": None,
        "episode_info": (),
        "bootstrap_at_time_limit": True,
        "eval_episodes": 10,
    }


def _make_gymnasium(name: str, **kwargs):
    """gymnasium.make(name), observations as float32 (the networks' dtype; MuJoCo tasks give float64)."""
    import gymnasium

    try:
        env = gymnasium.make(name, **kwargs)
    except Exception as e:  # e.g. a missing extra (gymnasium[box2d]): say what gymnasium said, in one line
        raise SpirlError(f"--env {name}: gymnasium.make failed: {str(e).splitlines()[0] if str(e) else e!r}") from e
    return gymnasium.wrappers.DtypeObservation(env, np.float32)


def make_env(name: str, **kwargs):
    """Build the downstream env `name`; kwargs go to its constructor (e.g. tasks=..., ordered=...). A name that is
    not one of the paper's task families but a gymnasium id gives that env (flat SAC's any-task mode)."""
    if name not in ENV_SPECS and name in _gymnasium_ids():
        return _make_gymnasium(name, **kwargs)
    env_spec(name)
    if name == "kitchen":
        from envs.kitchen import KitchenEnv

        return KitchenEnv(**kwargs)
    if name == "maze":
        from envs.maze import MazeEnv

        return MazeEnv.downstream(**kwargs)
    if name == "block_stacking":
        from envs.block_stacking import BlockStackingEnv

        return BlockStackingEnv.downstream(**kwargs)
    raise AssertionError(name)  # unreachable: every name in ENV_SPECS is built above
