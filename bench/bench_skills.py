"""Quick proxies for a skill model, measured before spending RL env steps on it (kitchen and block stacking).

    python bench/bench_skills.py                               # shipped kitchen model, 10 episodes: ~1.5 min
    python bench/bench_skills.py --checkpoint runs/x/checkpoint.pt --episodes 20 --out /tmp/skills.json
    python bench/bench_skills.py --checkpoint checkpoints/block-stacking-image-skills.pt --episodes 20

Kitchen:

1. window_mse: reconstruction MSE of the held-out 10-step windows (the checkpoint's val split of the dataset:
   encode, decode the posterior mean).
2. replay: held-out episodes replayed open-loop from their own first state (the dataset stores each episode's
   env seed): every H-step window of the recorded actions is encoded, decoded and executed; distinct subtasks
   completed, against the recorded actions executed the same way.
3. oracle: the downstream task (microwave, kettle, bottom burner, light switch, ordered). Every H steps the
   scripted controllers run H steps on the live simulator, the state is put back, and their actions are encoded,
   decoded and executed: how far the skill space carries a perfect high-level policy. Also with the scripted
   actions executed directly (the ceiling). prior_gap_median: per subtask being worked on, how many nats less
   likely the oracle's skills are under p_a(z|s) than the prior's own samples (`prior_gap`): what following the
   oracle would cost in KL, against the target divergence delta. --oracle-only stops after 1 and 3 (~1 min for
   20 episodes).
4. prior: z ~ p_a(z|s) every H steps, decoded and executed; ordered subtasks and which subtask is done first.
   prior_as_executed: the same with each sample run as spirl_sac.py runs a policy's, z = 2 tanh(u / scale).
5. prior_next_subtask: the scripted controllers do the task's first k subtasks (k = 1, 2, 3), then prior samples
   run for 120 env steps: how often they do subtask k + 1 (the chain's next step, which the RL must find), and how
   often another subtask instead.
6. first_skill_logp: log p_a(z|s0) of the encoder mean of each subtask's first H scripted actions from the reset
   state, next to the log-density of the prior's own samples there (what a typical skill gets): a skill far
   below it is one that a policy initialised from the prior seldom samples.
7. random_skills: as 4, with z drawn uniformly from [-2, 2]^|Z|, the skills SSP (baselines/ssp.py) explores with.
Writes bench/results/skills.json; the shipped model's figures are in docs/kitchen.md.

Block stacking (writes bench/results/skills_block_stacking.json; docs/block_stacking.md):
1. probes: the prior in set situations of the 11-block task: holding a block 12-22 cm above a 1-, 2- or 3-block
   tower (placed on it after 20 and 40 steps?); open above a 2- or 3-block tower (its top block taken off within 40
   steps? the tower still whole after 20 and 40 steps?). A prior that stacks places and leaves towers alone.
2. prior_rollouts: whole episodes of prior skills; the highest tower at reset and at the end, in the 5-block
   scene of the data and in the 11-block task (there also as executed, z = 2 tanh(u / scale)).
3. in_distribution: held-out data episodes replayed in the 5-block scene from their own start states: the tower's
   gain with the recorded actions, with their windows encoded and decoded, and with the prior choosing the skills
   (sampled, mean): what the decoder loses and what the prior's choice loses (skipped when the dataset is absent).
4. oracle: the 11-block task with the data's scripted stacking policy building one tower (the block under the
   gripper at reset is the base; each stacking step carries the table block nearest to it onto the top, up to the
   data's tallest tower, 5 blocks). Every H steps it runs H steps on a copy of the env, and its actions are
   encoded, decoded and executed: blocks stacked at the end and the most during the episode, against the scripted
   actions themselves (the ceiling). Also log p_a(z|s) of the skills it asks for while building, next to the prior's
   own samples: can a policy that starts as the prior find them? And the decoded windows' action error and how far
   each skill ends from where the scripted actions would have taken the gripper. --oracle-refine-steps adds a run
   with each z refined by decoder inversion; --oracle-only skips 1 to 3 (~2 min for 8 episodes).
5. window_fit: teacher-forced reconstruction per action dimension of the data's scripted episodes (5-block scene)
   and of the tower builder's windows in the 11-block task: does what the decoder learnt carry over to the task?
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass

import mujoco
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import block_stacking_demos as block_demos  # noqa: E402
from envs.block_stacking import (  # noqa: E402
    BLOCK_HALF,
    DOWNSTREAM_HALF_LENGTH,
    REST_Z,
    TRAIN_HALF_LENGTH,
    BlockStackingEnv,
    DatasetViews,
    blocks_stacked,
    supported_heights,
)
from envs.datasets import WindowSampler, load_episodes, split_episodes  # noqa: E402
from envs.errors import SpirlError  # noqa: E402
from envs.kitchen import ALL_SUBTASKS, DEFAULT_TASKS, STATE_DIM, KitchenEnv, subtasks_complete  # noqa: E402
from envs.kitchen_demos import completion_order  # noqa: E402
from envs.kitchen_scripted import SubtaskController  # noqa: E402
from envs.registry import ENV_SPECS, LOCAL_DATASETS  # noqa: E402
from spirl_pretrain import evaluate_windows, gaussian_nll, load_skill_model  # noqa: E402
from spirl_sac import SKILL_RANGE, squash  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KITCHEN_RESULTS = os.path.join(RESULTS, "skills.json")
BLOCK_RESULTS = os.path.join(RESULTS, "skills_block_stacking.json")


@dataclass
class Args:
    checkpoint: str = ENV_SPECS["kitchen"]["default_prior"]
    """skill-model checkpoint written by spirl_pretrain.py (kitchen or block stacking)"""
    dataset: str | None = None
    """dataset of the held-out windows and replayed episodes (default: the checkpoint's own)"""
    episodes: int = 10
    """episodes for the oracle and the prior rollouts, env seeds seed .. seed + episodes - 1; also the most
    held-out episodes replayed (block stacking: tries per probe and episodes per scene)"""
    seed: int = 0
    """env seeds and prior samples"""
    squash_scales: tuple[float, ...] = (1.0, 2.0)
    """prior rollouts are also run with each sample executed as spirl_sac.py would: z = 2 tanh(u / scale) (the
    prior-initialised policy's skills at step 0; the authors' scale is 1)"""
    out: str | None = None
    """where to write the figures (default: bench/results/skills.json, block stacking skills_block_stacking.json)"""
    task_steps: int = 1000
    """block stacking: episode length of the 11-block task in the prior rollouts and the oracle (the task's 1000)"""
    oracle_min_carry: float = 0.0
    """block stacking: the oracle carries only table blocks at least this far (m) from the tower when there are any
    (0: the nearest first)"""
    oracle_refine_steps: int = 0
    """block stacking: also run the oracle with each window's z refined by this many Adam steps on the decoded
    actions' error (decoder inversion within |z| <= 2, the policy's range): what a high-level policy that picks z
    for the outcome, not as the encoder would, could get from the same decoder (0: skip)"""
    oracle_only: bool = False
    """the oracle alone, for quick comparisons of checkpoints (kitchen: with the held-out window MSE; block
    stacking: without the probes and prior rollouts)"""


class Snapshot:
    """Everything that decides the env's next steps, to try actions and put it all back: the simulator state,
    the last observed robot joints (FrankaKitchen-v1 adds the action to them, not to the true joints; without
    them the scripted actions replayed after a restore completed 3.0 of 4 subtasks instead of 4.0), the
    observation-noise generator and the episode counters."""

    def __init__(self, env: KitchenEnv):
        m, d, robot = env._sim.model, env._sim.data, env._sim.robot_env
        self.spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self.state = np.empty(mujoco.mj_stateSize(m, self.spec))
        mujoco.mj_getState(m, d, self.state, self.spec)
        self.last_qpos, self.noise = robot._last_robot_qpos.copy(), robot.np_random.bit_generator.state
        self.env, self.t, self.counted = env, env._t, env._counted.copy()

    def restore(self):
        m, d, robot = self.env._sim.model, self.env._sim.data, self.env._sim.robot_env
        mujoco.mj_setState(m, d, self.state, self.spec)
        mujoco.mj_forward(m, d)  # positions and Jacobians the controllers read
        robot._last_robot_qpos, robot.np_random.bit_generator.state = self.last_qpos.copy(), self.noise
        self.env._t, self.env._counted = self.t, self.counted.copy()


@torch.no_grad()
def encode(model, states, actions) -> torch.Tensor:
    """The encoder mean z of one window: H actions and the H + 1 states around them (the closed-loop model's
    encoder reads the states too)."""
    states = torch.as_tensor(np.asarray(states), dtype=torch.float32)[None]
    return model.encode(states, torch.as_tensor(np.asarray(actions), dtype=torch.float32)[None])[0][0]


@torch.no_grad()
def run_skill(env, model, z: torch.Tensor, observation, steps: int, skip: int = 0):
    """Execute skill z in the env from `observation` as spirl_sac.py does (open-loop: all actions decoded from z at
    once; closed-loop: each from z and the current observation), its actions skip..steps-1. Returns (noise-free
    states reached, done, info, last observation)."""
    actions = None if model.closed_loop else model.decoder.plan(z[None], torch.as_tensor(observation)[None])[0]
    reached, done, info = [], False, {}
    for t in range(skip, steps):
        now = torch.as_tensor(observation)[None]
        action = actions[t] if actions is not None else model.decoder(now, z[None])[0]
        observation, _, terminated, truncated, info = env.step(action.clamp(-1, 1).numpy())
        reached.append(env.qpos[:STATE_DIM].copy())
        done = terminated or truncated
        if done:
            break
    return reached, done, info, observation


def replay(model, episodes, H: int) -> dict:
    """Held-out episodes from their first state: recorded actions vs their skills (each H-step window encoded with
    its recorded states, then run by the decoder), H steps at a time."""
    env = KitchenEnv(max_episode_steps=10**6)
    recorded, decoded = [], []
    for episode in episodes:
        T = len(episode.actions)
        # H-step windows from the start; a last partial one is the end of the window ending at T
        windows = [(t, 0) for t in range(0, T - H + 1, H)] + ([(T - H, H - T % H)] if T % H else [])
        for result, as_skills in ((recorded, False), (decoded, True)):
            observation, _ = env.reset(seed=episode.seed)
            if not np.allclose(observation, episode.states[0], atol=1e-5):
                raise SpirlError(
                    "the dataset's episode seeds do not reproduce its first states: regenerate it "
                    "with `python -m envs.kitchen_demos --overwrite`"
                )
            states = [env.qpos[:STATE_DIM].copy()]
            for t, skip in windows:
                if as_skills:
                    z = encode(model, episode.states[t : t + H + 1], episode.actions[t : t + H])
                    reached, _, _, observation = run_skill(env, model, z, observation, H, skip)
                    states += reached
                    continue
                for action in episode.actions[t + skip : t + H]:
                    env.step(action)
                    states.append(env.qpos[:STATE_DIM].copy())
            result.append(len(completion_order(np.asarray(states))))
    return {
        "episodes": len(episodes),
        "recorded_actions": float(np.mean(recorded)),
        "decoded_skills": float(np.mean(decoded)),
        "per_episode": {"recorded": recorded, "decoded": decoded},
    }


class ScriptedPlanner:
    """The scripted controllers (without action noise) chained over the downstream task as the collector chains
    them: each runs to its end (release, back off), then the first incomplete subtask's controller starts (the
    same subtask again if it failed)."""

    def __init__(self, env: KitchenEnv, rng: np.random.Generator):
        self.env, self.rng, self.ctrl = env, rng, None

    def act(self) -> np.ndarray:
        if self.ctrl is None or self.ctrl.done:
            # the first subtask the env has not counted (one counted but since knocked out of place is not redone)
            left = [t for t in DEFAULT_TASKS if t not in self.env.completed_tasks]
            task = left[0] if left else DEFAULT_TASKS[-1]
            self.ctrl = SubtaskController(self.env, task, self.rng, action_noise=0.0)
        return self.ctrl.act()


@torch.no_grad()
def prior_gap(model, observation, z: torch.Tensor, generator, samples: int = 256) -> float:
    """How much less likely skill z is under p_a(z | s) than the prior's own samples: mean log p_a(sample | s) -
    log p_a(z | s), in nats. The least KL(pi || p_a) of a Gaussian policy with its mean at z is gap + |Z| / 2 (the
    prior's width, shifted), so gaps near or above the target divergence delta mark skills that SPiRL's policy,
    kept within about delta of the prior, can hardly choose."""
    mu_p, log_sigma_p = model.skill_prior(torch.as_tensor(observation)[None])
    typical = mu_p + torch.exp(log_sigma_p) * torch.randn((samples, mu_p.shape[1]), generator=generator)
    mean_logp = -gaussian_nll(typical, mu_p, log_sigma_p).sum(-1).mean()
    return float(mean_logp + gaussian_nll(z[None], mu_p, log_sigma_p).sum())


def oracle(model, episodes: int, seed: int, H: int, decode: bool) -> dict:
    """Closed loop at H: the scripted planner proposes H actions on the live state, the state is put back, the
    proposal is executed (as a skill: encoded with the states it visited and run by the decoder; or as is). With
    `decode`, also the prior's gap (`prior_gap`) for each chosen skill, by the subtask being worked on."""
    env, generator = KitchenEnv(), torch.Generator().manual_seed(seed)
    subtasks, gaps = [], {task: [] for task in DEFAULT_TASKS}
    for i in range(episodes):
        observation, _ = env.reset(seed=seed + i)
        planner, done, info = ScriptedPlanner(env, np.random.default_rng([seed, i])), False, {}
        while not done:
            snapshot, proposal, visited = Snapshot(env), [], [observation]
            for _ in range(H):
                proposal.append(planner.act())
                visited.append(env.step(proposal[-1])[0])
            snapshot.restore()
            if decode:
                z, task = (
                    encode(model, visited, proposal),
                    DEFAULT_TASKS[min(info.get("subtasks_completed", 0), len(DEFAULT_TASKS) - 1)],
                )
                gaps[task].append(prior_gap(model, observation, z, generator))
                _, done, info, observation = run_skill(env, model, z, observation, H)
                continue
            for action in proposal:
                observation, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if done:
                    break
        subtasks.append(info["subtasks_completed"])
    # The task is ordered: an episode that completed k subtasks stopped at the (k+1)-th (or finished all).
    stopped = Counter(DEFAULT_TASKS[k] if k < len(DEFAULT_TASKS) else "all done" for k in subtasks)
    figures = {"mean_subtasks": float(np.mean(subtasks)), "per_episode": subtasks, "stopped_at": dict(stopped)}
    if decode:
        figures["prior_gap_median"] = {task: float(np.median(g)) for task, g in gaps.items() if g}
    return figures


@torch.no_grad()
def sample_skill(model, observation, generator, squash_scale: float | None = None) -> torch.Tensor:
    """u ~ p_a(z | s), executed as z = u (squash_scale None: the prior's own skill) or as spirl_sac.py executes a
    policy's sample, z = 2 tanh(u / squash_scale)."""
    mu, log_sigma = model.skill_prior(torch.as_tensor(observation)[None])
    u = (mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator))[0]
    return u if squash_scale is None else squash(u, squash_scale)


def prior_rollouts(model, episodes: int, seed: int, squash_scale: float | None = None, uniform: bool = False) -> dict:
    """Whole kitchen episodes of skills sampled from the prior; `uniform`: skills drawn uniformly from [-2, 2]^|Z|
    instead, what SSP (skills without a prior, baselines/ssp.py) explores with in its warm-up."""
    env, generator = KitchenEnv(), torch.Generator().manual_seed(seed)
    subtasks, first = [], Counter()
    for i in range(episodes):
        observation, info = env.reset(seed=seed + i)
        states, done = [env.qpos[:STATE_DIM].copy()], False
        while not done:
            if uniform:
                z = SKILL_RANGE * (2 * torch.rand(model.decoder.latent_dim, generator=generator) - 1)
            else:
                z = sample_skill(model, observation, generator, squash_scale)
            reached, done, info, observation = run_skill(env, model, z, observation, model.decoder.skill_horizon)
            states += reached
        subtasks.append(info["subtasks_completed"])
        order = completion_order(np.asarray(states))
        first[order[0] if order else "none"] += 1
    return {
        "mean_subtasks": float(np.mean(subtasks)),
        "per_episode": subtasks,
        "first_subtask": {k: v / episodes for k, v in first.most_common()},
    }


@torch.no_grad()
def prior_next_subtask(model, episodes: int, seed: int, steps: int = 120) -> dict:
    """Does the prior carry on along the downstream chain? For k = 1, 2, 3: the scripted controllers (noise-free)
    do the task's first k subtasks, then skills sampled from p_a(z|s) run for `steps` env steps. Per k: the share of
    episodes in which subtask k + 1 got done (what a policy initialised from the prior must stumble on for the RL to
    learn it), and the share in which some other, not yet done subtask got done instead."""
    env, generator = KitchenEnv(max_episode_steps=10**6), torch.Generator().manual_seed(seed)
    H, figures = model.decoder.skill_horizon, {}
    for k in range(1, len(DEFAULT_TASKS)):
        nxt, other = [], []
        for i in range(episodes):
            observation, _ = env.reset(seed=seed + i)
            rng = np.random.default_rng([seed, i])
            for task in DEFAULT_TASKS[:k]:
                ctrl = SubtaskController(env, task, rng, action_noise=0.0)
                while not ctrl.done:
                    observation = env.step(ctrl.act())[0]
            before = subtasks_complete(env.qpos[:STATE_DIM], ALL_SUBTASKS)
            reached = []
            for _ in range(steps // H):
                mu, log_sigma = model.skill_prior(torch.as_tensor(observation)[None])
                z = (mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator))[0]
                states, _, _, observation = run_skill(env, model, z, observation, H)
                reached += states
            done = subtasks_complete(np.asarray(reached), ALL_SUBTASKS).any(0) & ~before
            nxt.append(bool(done[ALL_SUBTASKS.index(DEFAULT_TASKS[k])]))
            other.append(bool(np.delete(done, ALL_SUBTASKS.index(DEFAULT_TASKS[k])).any()))
        figures[f"after {DEFAULT_TASKS[k - 1]}"] = {
            f"next ({DEFAULT_TASKS[k]})": float(np.mean(nxt)),
            "another": float(np.mean(other)),
        }
    return figures


@torch.no_grad()
def first_skill_logp(model, episodes: int, seed: int, H: int) -> dict:
    """Per subtask: log p_a(mu_q | s0) for its first H scripted actions, mean / min / max over reset states."""
    env, generator = KitchenEnv(), torch.Generator().manual_seed(seed)
    logp = {task: [] for task in ALL_SUBTASKS}
    typical = []
    for i in range(episodes):
        for task in ALL_SUBTASKS:
            state, _ = env.reset(seed=seed + i)
            ctrl = SubtaskController(env, task, np.random.default_rng([seed, i]), action_noise=0.0)
            actions, visited = [], [state]
            for _ in range(H):
                actions.append(ctrl.act())
                visited.append(env.step(actions[-1])[0])
            mu_q = encode(model, visited, actions)[None]
            mu_p, log_sigma_p = model.skill_prior(torch.as_tensor(state)[None])
            logp[task].append(float(-gaussian_nll(mu_q, mu_p, log_sigma_p).sum()))
        z = mu_p + torch.exp(log_sigma_p) * torch.randn((256, mu_p.shape[1]), generator=generator)
        typical.append(float(-gaussian_nll(z, mu_p, log_sigma_p).sum(-1).mean()))

    def stats(values):
        return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}

    return {"prior_samples": stats(typical), **{t: stats(v) for t, v in logp.items()}}


# ----------------------------------------------------------------------------- block stacking


def column_size(block_yz: np.ndarray, y: float) -> int:
    """Supported blocks standing in the column at `y` (the tower there, its base included)."""
    heights = supported_heights(block_yz)
    return int(((np.abs(block_yz[:, 0] - y) < BLOCK_HALF) & ~np.isnan(heights)).sum())


def block_situation(env, rng: np.random.Generator, tower: int, holding: bool):
    """The 11-block task set to a probe's situation: a tower of `tower` blocks on one of the row's middle blocks,
    the gripper 12-22 cm above its top (up to 3 cm to the side), holding a block or open. Returns (observation,
    the tower's y). The tower's upper blocks and the held one are taken from the ends of the row."""
    yz = env.block_yz()
    y0 = yz[int(rng.integers(3, 8)), 0]
    for level in range(1, tower):
        yz[level - 1] = (y0, REST_Z + 2 * BLOCK_HALF * level)
    top_z = REST_Z + 2 * BLOCK_HALF * (tower - 1)
    grip = np.array([y0 + rng.uniform(-0.03, 0.03), top_z + rng.uniform(0.12, 0.22)])
    if holding:
        yz[-1] = grip
    env._set_layout(yz)
    env.data.qpos[env._gripper] = grip
    if holding:
        env.data.qpos[env._fingers] = BLOCK_HALF  # the fingers against the held block's sides
    mujoco.mj_forward(env.model, env.data)
    for _ in range(3):  # settle: fingers closed on the block, or open
        observation = env.step(np.array([0.0, 0.0, 0.0 if holding else 1.0]))[0]
    return observation, y0


@torch.no_grad()
def run_block_skill(env, model, z: torch.Tensor, observation, steps: int | None = None):
    """Execute skill z for `steps` env steps (default H) as spirl_sac.py does (open-loop: all actions decoded from z
    at once; closed-loop: each from z and the current observation). Returns the last observation."""
    steps = model.decoder.skill_horizon if steps is None else steps
    actions = None if model.closed_loop else model.decoder.plan(z[None], torch.as_tensor(observation)[None])[0]
    for k in range(steps):
        now = torch.as_tensor(observation)[None]
        action = actions[k] if actions is not None else model.decoder(now, z[None])[0]
        observation = env.step(action.clamp(-1, 1).numpy())[0]
    return observation


@torch.no_grad()
def run_block_skills(env, model, observation, steps: int, generator, squash_scale: float | None = None):
    """Skills sampled from the prior every H steps (see sample_skill), decoded and executed, for `steps` env steps."""
    H = model.decoder.skill_horizon
    for t in range(0, steps, H):
        z = sample_skill(model, observation, generator, squash_scale)
        observation = run_block_skill(env, model, z, observation, min(H, steps - t))
    return observation


def block_probes(model, image: bool, tries: int, seed: int) -> dict:
    """The prior in set situations of the 11-block task, `tries` each: holding a block above a 1-, 2- and 3-block
    tower (placed on it after 20 and 40 steps: the tower is one block taller); open above a 2- and 3-block tower
    (its top block taken off within 40 steps; the tower still standing whole after 20 and 40 steps)."""
    env, generator, figures = BlockStackingEnv.downstream(image=image), torch.Generator().manual_seed(seed), {}
    for tower in (1, 2, 3):
        placed = {20: 0, 40: 0}
        for i in range(tries):
            env.reset(seed=seed + i)
            observation, y0 = block_situation(env, np.random.default_rng([seed, tower, i]), tower, holding=True)
            for steps in (20, 40):
                observation = run_block_skills(env, model, observation, 20, generator)
                placed[steps] += column_size(env.block_yz(), y0) == tower + 1
        for steps in (20, 40):
            figures[f"holding a block above a {tower}-block tower: placed on it after {steps} steps"] = (
                placed[steps] / tries
            )
    for tower in (2, 3):
        taken, intact = 0, {20: 0, 40: 0}
        for i in range(tries):
            env.reset(seed=seed + i)
            observation, y0 = block_situation(env, np.random.default_rng([seed, 10 + tower, i]), tower, holding=False)
            top, start = tower - 2, env.block_yz()  # the tower's top block (block 0 or 1, see block_situation)
            off = False
            for steps in (20, 40):
                observation = run_block_skills(env, model, observation, 20, generator)
                intact[steps] += column_size(env.block_yz(), y0) >= tower
                off |= bool(np.abs(env.block_yz()[top] - start[top]).max() > 0.03)
            taken += off
        figures[f"open above a {tower}-block tower: top block taken off"] = taken / tries
        for steps in (20, 40):
            figures[f"open above a {tower}-block tower: tower intact after {steps} steps"] = intact[steps] / tries
    return figures


def block_rollouts(model, image: bool, episodes: int, seed: int, squash_scales=(), task_steps: int = 1000) -> dict:
    """Whole episodes of prior skills: in the 5-block training scene, the highest tower (blocks stacked on its
    base) at reset and at the end; in the 11-block task, at the end, also with the samples executed as
    z = 2 tanh(u / scale) for each of `squash_scales` (as the prior-initialised policy runs them)."""
    generator, figures = torch.Generator().manual_seed(seed), {}

    def task(image):
        return BlockStackingEnv.downstream(image=image, max_episode_steps=task_steps)

    runs = [("5-block scene", BlockStackingEnv.training, None), ("11-block task", task, None)]
    runs += [(f"11-block task, z = 2 tanh(u / {scale:g})", task, scale) for scale in squash_scales]
    for name, make, scale in runs:
        env, start, end = make(image=image), [], []
        for i in range(episodes):
            observation, _ = env.reset(seed=seed + i)
            start.append(blocks_stacked(env.block_yz()))
            run_block_skills(env, model, observation, env.max_episode_steps, generator, scale)
            end.append(blocks_stacked(env.block_yz()))
        figures[name] = {"highest tower at reset": float(np.mean(start)), "at the end": float(np.mean(end))}
    return figures


class TowerBuilder:
    """The data's scripted stacking policy (envs/block_stacking_demos.py: the same waypoints, subgoals and steering)
    building one tower in the 11-block task: the base is the block under the gripper at reset, each stacking step
    carries the table block nearest to the base onto the tower's top, until the tower holds `blocks` blocks (the
    data's tallest: 5); then it waits at the carry height. A failed step is followed by the next nearest block."""

    def __init__(self, env: BlockStackingEnv, rng: np.random.Generator, blocks: int = 5, min_carry: float = 0.0):
        self.rng, self.blocks, self.min_carry = rng, blocks, min_carry
        self.column = [int(np.argmin(np.abs(env.block_yz()[:, 0] - env.state()[1])))]
        self.plan, self.k, self.hold, self.source = [], 0, 0, None

    @property
    def building(self) -> bool:
        return len(self.column) < self.blocks

    def act(self, state: np.ndarray) -> np.ndarray:
        yz = state[8:].reshape(-1, 3)[:, 1:]
        if self.k == len(self.plan):  # the stacking step is over: check it, then plan the next one
            if self.plan and self.source is not None and block_demos.stacked_on(yz, self.source, self.column[-1]):
                self.column.append(self.source)
            if not self.building:
                self.plan, self.k, self.source = [np.array([state[1], block_demos.CARRY_Z, 1.0])], 0, None
                return block_demos.steer(state, self.plan[0])
            table = [i for i in range(len(yz)) if i not in self.column and abs(yz[i, 1] - REST_Z) < BLOCK_HALF / 2]
            distance = {i: abs(yz[i, 0] - yz[self.column[0], 0]) for i in table}
            far = [i for i in table if distance[i] >= self.min_carry] or table
            self.source = min(far, key=distance.get)
            self.plan, self.k, self.hold = block_demos.plan_stack(state, self.source, self.column[-1], self.rng), 0, 0
        return block_demos.steer(state, self.plan[self.k])

    def observe(self, state: np.ndarray):
        """Move on along the plan once the state after the action reached its waypoint (or held it long enough)."""
        waypoint = self.plan[self.k]
        if len(waypoint) == 4:
            self.hold += 1
            if self.hold >= waypoint[3]:
                self.k, self.hold = self.k + 1, 0
        elif self.source is not None and np.all(np.abs(state[1:3] - waypoint[:2]) < block_demos.REACHED):
            self.k += 1


def refine_skill(model, z: torch.Tensor, actions, steps: int, lr: float = 0.05, bound: float = 2.0) -> torch.Tensor:
    """Decoder inversion: starting from the encoder mean, the z whose decoded (and clipped, as executed) actions are
    closest to `actions`, kept within the policy's range |z| <= bound. The encoder mean is what the ELBO asks for,
    not the z whose execution is most precise; a high-level policy trained on outcomes may find the latter."""
    target = torch.as_tensor(np.asarray(actions), dtype=torch.float32)[None]
    z = z[None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            error = (model.decoder(z).clamp(-1, 1) - target).pow(2).mean()
            (grad,) = torch.autograd.grad(error, [z])
            z.grad = grad
            optimizer.step()
            with torch.no_grad():
                z.clamp_(-bound, bound)
    return z.detach()[0]


@torch.no_grad()
def block_oracle(
    model,
    image: bool,
    episodes: int,
    seed: int,
    decode: bool,
    task_steps: int = 1000,
    min_carry: float = 0.0,
    refine_steps: int = 0,
) -> dict:
    """Closed loop at H: every H steps the TowerBuilder proposes H actions on a copy of the env; they are executed
    as a skill (encoded with the observations they led to, decoded and run as spirl_sac.py runs skills; with
    refine_steps, z then refined by decoder inversion) or as they are. Returns blocks stacked at the end and at
    best, the decoded windows' action MSE, how far each skill ends from the plan (the gripper, cm), and with decode
    the prior log-densities."""
    env, H = BlockStackingEnv.downstream(image=image, max_episode_steps=task_steps), model.decoder.skill_horizon
    generator, end, best, skill_logp, sample_logp = torch.Generator().manual_seed(seed), [], [], [], []
    window_mse, offsets = [], []
    for i in range(episodes):
        observation, _ = env.reset(seed=seed + i)
        builder, most = TowerBuilder(env, np.random.default_rng([seed, i]), min_carry=min_carry), 0
        for _ in range(0, env.max_episode_steps, H):
            if not decode:
                for _ in range(H):
                    observation = env.step(builder.act(env.state()))[0]
                    builder.observe(env.state())
                most = max(most, blocks_stacked(env.block_yz()))
                continue
            trial, proposer = copy.deepcopy(env), copy.deepcopy(builder)
            visited, proposal = [observation], []
            for _ in range(H):
                proposal.append(proposer.act(trial.state()))
                visited.append(trial.step(proposal[-1])[0])
                proposer.observe(trial.state())
            z = encode(model, visited, proposal)
            if refine_steps and not model.closed_loop:
                z = refine_skill(model, z, proposal, refine_steps)
            if builder.building and not model.closed_loop:
                decoded = model.decoder(z[None])[0].clamp(-1, 1).numpy()
                window_mse.append(float(np.mean((decoded - np.asarray(proposal)) ** 2)))
            if builder.building:
                mu, log_sigma = model.skill_prior(torch.as_tensor(observation)[None])
                prior = torch.distributions.Normal(mu[0], log_sigma[0].exp())
                skill_logp.append(float(prior.log_prob(z).sum()))
                u = mu[0] + log_sigma[0].exp() * torch.randn(mu[0].shape, generator=generator)
                sample_logp.append(float(prior.log_prob(u).sum()))
            building = builder.building
            builder = proposer  # it goes on from where its proposal left it, as the kitchen oracle's planner
            observation = run_block_skill(env, model, z, observation)
            if building:  # how far the skill's execution ends from where the scripted actions took the copy
                offsets.append(np.linalg.norm(env.state()[1:3] - trial.state()[1:3]))
            most = max(most, blocks_stacked(env.block_yz()))
        end.append(blocks_stacked(env.block_yz()))
        best.append(most)
    figures = {"at the end": float(np.mean(end)), "best": float(np.mean(best)), "per_episode_end": end}
    if window_mse:
        figures["action MSE of the decoded windows while building"] = round(float(np.mean(window_mse)), 5)
    if offsets:
        figures["gripper offset from the plan at each skill's end while building, cm (50/90%)"] = (
            (100 * np.percentile(offsets, [50, 90])).round(2).tolist()
        )
    if decode:
        quantiles = np.percentile(skill_logp, [10, 50, 90]).round(1).tolist()
        figures["prior logp of its skills while building (10/50/90%)"] = quantiles
        figures["prior logp of the prior's samples (10/50/90%)"] = (
            np.percentile(sample_logp, [10, 50, 90]).round(1).tolist()
        )
    return figures


@torch.no_grad()
def block_replay(model, image: bool, episodes, seed: int) -> dict:
    """The skills in their own scene: held-out data episodes (5 blocks, each from its own start state, for its
    recorded length), the tower's gain (blocks stacked at the end minus at reset) with the recorded actions (the
    data's stacking steps), with the episode's own H-step windows encoded and decoded (open-loop, as spirl_sac.py
    executes skills; a last window shorter than H runs its recorded actions), and with skills chosen every H steps
    by the prior (sampled, and its mean). Recorded -> encoded is what the decoder loses; encoded -> prior is what
    the prior's choice of skill loses."""
    env, generator, H = (
        BlockStackingEnv.training(image=image),
        torch.Generator().manual_seed(seed),
        model.decoder.skill_horizon,
    )
    gains = {"recorded actions": [], "encoded windows": [], "prior samples": [], "prior mean": []}
    for episode in episodes:
        T, states = len(episode.actions), as_observed(model, episode.states, TRAIN_HALF_LENGTH)
        for mode, gain in gains.items():
            observation, _ = env.reset(seed=episode.seed)
            start = blocks_stacked(env.block_yz())
            for t in range(0, T, H):
                steps = min(H, T - t)
                if mode == "recorded actions" or (mode == "encoded windows" and steps < H):
                    for action in episode.actions[t : t + steps]:
                        observation = env.step(action)[0]
                    continue
                if mode == "encoded windows":
                    z = encode(model, states[t : t + H + 1], episode.actions[t : t + H])
                else:
                    mu, log_sigma = model.skill_prior(torch.as_tensor(observation)[None])
                    noise = torch.randn(mu.shape, generator=generator) if mode == "prior samples" else 0.0
                    z = (mu + torch.exp(log_sigma) * noise)[0]
                observation = run_block_skill(env, model, z, observation, steps)
            gain.append(blocks_stacked(env.block_yz()) - start)
    return {f"tower gain, {mode}": float(np.mean(gain)) for mode, gain in gains.items()}


def as_observed(model, states, half_length: float):
    """An episode's states (T, S) as the skill model's encoder and decoder read them: as they are, or, for a
    closed-loop decoder that reads the frames, as image observations (T, S + 6144) rendered in the scene with this
    half length (the first step's previous frame is its own, as in the data)."""
    if not getattr(model.decoder, "reads_frames", False):
        return states
    states = torch.as_tensor(np.asarray(states, np.float32))
    return DatasetViews(half_length).sequence(None, states[:1], states[None])[0]


@torch.no_grad()
def block_window_fit(model, episodes: int, seed: int) -> dict:
    """Teacher-forced reconstruction, per action dimension (y, z, grip): each H-step window encoded with its states
    and decoded along the same states (the closed-loop decoder reads them; the open-loop one does not), on episodes
    of the data's scripted policy in its 5-block scene and on the scripted tower builder's windows in the 11-block
    task while it builds (400 steps from each reset). A decoder that fits the data but not the task has learnt
    something of the data's scene that does not carry over."""
    H = model.decoder.skill_horizon

    def windows(states, actions) -> tuple[torch.Tensor, torch.Tensor]:  # (N, H + 1, S), (N, H, A)
        states, actions = torch.as_tensor(np.asarray(states)), torch.as_tensor(np.asarray(actions))
        starts = range(0, len(actions) - H + 1, H)
        return torch.stack([states[t : t + H + 1] for t in starts]), torch.stack([actions[t : t + H] for t in starts])

    def window_mse(states, actions) -> list:  # per window, each decoded from its encoder mean
        s, a = windows(states, actions)
        return list((model.decode(model.encode(s, a)[0], s) - a).pow(2).mean(dim=1).numpy())

    rng, scene, data_windows = np.random.default_rng(seed), BlockStackingEnv.training(), []
    for i in range(episodes):
        episode = block_demos.scripted_episode(scene, rng, seed + 1000 + i, stacks=2)
        data_windows.append(windows(as_observed(model, episode["states"], TRAIN_HALF_LENGTH), episode["actions"]))
    s, a = (torch.cat(x) for x in zip(*data_windows))
    encoded = model.encode(s, a)[0]
    data = list((model.decode(encoded, s) - a).pow(2).mean(dim=1).numpy())
    # How much of each action dimension comes from z: the same windows decoded with z = 0 (the prior's centre)
    # and with another window's z. An open-loop decoder needs z for everything; a closed-loop one may read some
    # dimensions off the state alone.
    other = encoded[torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed))]
    without_z = {
        name: [round(float(x), 4) for x in (model.decode(z, s) - a).pow(2).mean(dim=(0, 1))]
        for name, z in (("z = 0", torch.zeros_like(encoded)), ("another window's z", other))
    }
    task, builder_windows = BlockStackingEnv.downstream(max_episode_steps=400), []
    for i in range(max(1, episodes // 5)):
        task.reset(seed=seed + i)
        builder = TowerBuilder(task, np.random.default_rng([seed, i]))
        states, actions, building = [task.state().copy()], [], []
        for _ in range(task.max_episode_steps):
            building.append(builder.building)
            actions.append(builder.act(task.state()))
            task.step(actions[-1])
            builder.observe(task.state())
            states.append(task.state().copy())
        states = as_observed(model, np.asarray(states, np.float32), DOWNSTREAM_HALF_LENGTH)
        errors = window_mse(states, np.asarray(actions, np.float32))
        builder_windows += [w for k, w in enumerate(errors) if building[k * H + H - 1]]
    return {
        "action MSE (y, z, grip), the data's scripted episodes": [round(float(x), 4) for x in np.mean(data, 0)],
        **{f"action MSE (y, z, grip), the data's scripted episodes, {k}": v for k, v in without_z.items()},
        "action MSE (y, z, grip), the tower builder in the task": [
            round(float(x), 4) for x in np.mean(builder_windows, 0)
        ],
    }


def block_main(args: Args, model, config) -> dict:
    start, common = time.time(), (model, config["image"], args.episodes, args.seed)
    carry = args.oracle_min_carry
    figures = {
        "checkpoint": args.checkpoint,
        "dataset_info": describe(config["dataset"]),
        "tries": args.episodes,
        "seed": args.seed,
        "task_steps": args.task_steps,
        "oracle_min_carry": args.oracle_min_carry,
        "oracle": {
            "decoded_skills": block_oracle(*common, decode=True, task_steps=args.task_steps, min_carry=carry),
            "scripted_actions": block_oracle(*common, decode=False, task_steps=args.task_steps, min_carry=carry),
        },
    }
    figures["window_fit"] = block_window_fit(model, args.episodes, args.seed)
    if args.oracle_refine_steps:
        figures["oracle"]["refined_skills"] = block_oracle(
            *common, decode=True, task_steps=args.task_steps, min_carry=carry, refine_steps=args.oracle_refine_steps
        )
        figures["oracle_refine_steps"] = args.oracle_refine_steps
    if not args.oracle_only:
        dataset = args.dataset or config["dataset"]
        try:
            episodes = load_episodes(dataset, "block_stacking")
        except SpirlError as e:  # the rest of the bench needs no data
            figures["in_distribution"] = f"skipped: {e}"
        else:
            _, held_out = split_episodes(episodes, config["val_fraction"], config["seed"])
            if not held_out or any(e.seed is None for e in held_out):
                figures["in_distribution"] = (
                    f"skipped: {dataset} has no held-out episodes with env seeds; "
                    "`python -m envs.block_stacking_demos --overwrite` writes them"
                )
            else:
                figures["in_distribution"] = block_replay(model, config["image"], held_out[: args.episodes], args.seed)
        figures["probes"] = block_probes(*common)
        figures["prior_rollouts"] = block_rollouts(*common, args.squash_scales, args.task_steps)
    figures["seconds"] = round(time.time() - start, 1)
    return figures


def describe(dataset: str) -> dict:
    """When a local dataset was written and its description ("relay orders" or "uniform orders"; neither: the
    data of before the Relay sequences), to tell which data the held-out windows and episodes came from."""
    path = os.path.join(LOCAL_DATASETS.get(dataset, (dataset,))[0], "data", "metadata.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        description = json.load(f).get("description")
    written = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    return {"written": written, "description": description}


def main(argv: list[str] | None = None) -> dict:
    import tyro

    args = tyro.cli(Args, args=argv)
    if args.episodes < 1:
        sys.exit(f"error: --episodes must be at least 1 (got {args.episodes})")
    if args.oracle_refine_steps < 0:
        sys.exit(f"error: --oracle-refine-steps must be 0 or more (got {args.oracle_refine_steps})")
    torch.set_num_threads(1)
    try:
        model, config = load_skill_model(args.checkpoint)
        if config.get("conditioned_decoder"):  # its encoder and decoder also read s_1, which the probes do not pass
            raise SpirlError(
                f"{args.checkpoint} has the state-conditioned decoder (app. D), which this bench does not "
                "measure: bench a model trained without --conditioned-decoder"
            )
        if config["env"] == "block_stacking":
            return write(block_main(args, model, config), args.out or BLOCK_RESULTS)
        model, config = load_skill_model(args.checkpoint, env="kitchen", state_dim=STATE_DIM)
        dataset = args.dataset or config["dataset"]
        _, held_out = split_episodes(load_episodes(dataset, "kitchen"), config["val_fraction"], config["seed"])
        H, start = config["skill_horizon"], time.time()
        if any(e.seed is None for e in held_out):
            raise SpirlError(
                f"{dataset} stores no per-episode env seeds: regenerate it with "
                f"`python -m envs.kitchen_demos --overwrite`"
            )
    except SpirlError as e:
        sys.exit(f"error: {e}")
    torch.manual_seed(args.seed)
    window_mse = evaluate_windows(model, WindowSampler(held_out, H))  # in eval mode, as it found the model
    figures = {
        "checkpoint": args.checkpoint,
        "dataset": dataset,
        "dataset_info": describe(dataset),
        "held_out_episodes": len(held_out),
        "skill_horizon": H,
        "episodes": args.episodes,
        "seed": args.seed,
        "window_mse": window_mse,
        "oracle": {"decoded_skills": oracle(model, args.episodes, args.seed, H, decode=True)},
    }
    if args.oracle_only:
        figures["seconds"] = round(time.time() - start, 1)
        return write(figures, args.out or KITCHEN_RESULTS)
    figures["oracle"]["scripted_actions"] = oracle(model, args.episodes, args.seed, H, decode=False)
    figures |= {
        "replay": replay(model, held_out[: args.episodes], H),
        "prior": prior_rollouts(model, args.episodes, args.seed),
        "prior_as_executed": {
            f"z = 2 tanh(u / {scale:g})": prior_rollouts(model, args.episodes, args.seed, scale)["mean_subtasks"]
            for scale in args.squash_scales
        },
        "random_skills": prior_rollouts(model, args.episodes, args.seed, uniform=True),
        "prior_next_subtask": prior_next_subtask(model, args.episodes, args.seed),
        "first_skill_logp": first_skill_logp(model, args.episodes, args.seed, H),
    }
    figures["seconds"] = round(time.time() - start, 1)
    return write(figures, args.out or KITCHEN_RESULTS)


def write(figures: dict, out: str) -> dict:
    print(json.dumps(figures, indent=2))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
