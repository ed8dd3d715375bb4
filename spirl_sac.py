"""SPiRL stage 2: prior-regularised SAC over skills (Algorithm 1).

Pertsch, Lee & Lim, "Accelerating Reinforcement Learning with Learned Skill Priors", CoRL 2020,
Sec. 3.3, Algorithm 1, app. A, B.2 and F. A high-level policy pi(z | s) picks a skill z every H env
steps; the skill decoder of spirl_pretrain.py turns z into H actions that run open-loop, and the
high-level reward is the sum of the H env rewards. pi is trained with SAC in which the entropy bonus
is replaced by -alpha * KL(pi(z|s) || p_a(z|s)) towards the learned skill prior (eq. 3), and alpha is
tuned so that this divergence stays near a target delta (Alg. 1 line 12).

    python spirl_sac.py --env kitchen --delta 5 --prior-checkpoint runs/<pretrain run>/checkpoint.pt
    python spirl_sac.py --resume runs/<run>/checkpoint.pt      # continue a killed or finished run

Details the paper leaves open follow the authors' code (clvrai/spirl), as noted where they appear.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from envs import SpirlError, env_spec, make_env
from spirl_pretrain import IMAGE_DIM, SkillModel, SkillPrior, gaussian_kl, load_skill_model

CHECKPOINT_FORMAT = 1


@dataclass
class Args:
    env: str = "kitchen"
    """downstream task family (kitchen, maze, block_stacking)"""
    prior_checkpoint: str | None = None
    """checkpoint.pt written by spirl_pretrain.py for this env: gives the skill decoder and the skill prior; default: the one shipped in checkpoints/ (kitchen: trained on the scripted data)"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks, in the order they are rewarded; default: microwave, kettle, bottom burner, light switch"""
    delta: float | None = None
    """target divergence: alpha is tuned so that KL(pi || p_a) stays near it (app. B.2: kitchen 5, maze 1, block stacking 5)"""
    total_env_steps: int | None = None
    """env steps to train for (the authors' kitchen budget: 1.5M); with --resume, default: the run's own"""
    skill_prior: Literal["learned", "none"] = "learned"
    """'learned': regularise towards p_a (SPiRL); 'none': no prior, the usual SAC entropy bonus with target entropy -|Z| and a freshly initialised policy (the SSP ablation)"""
    prior_init: bool = True
    """initialise pi as an exact copy of the prior network (app. F); --no-prior-init starts from random weights (app. F ablation)"""
    critic_layers: int | None = None
    """hidden layers of each critic (default per env from the authors' code: kitchen 5, maze and block stacking 2)"""
    critic_hidden: int = 256
    """units per critic layer (authors: 256)"""
    critic_bf16: bool = False
    """run the critics' matmuls in bfloat16 (autocast; weights, losses and optimiser stay float32): 2x faster matmuls on CPUs with AVX512-BF16, Q-values rounded to ~3 digits inside the network"""
    gamma: float = 0.99
    """discount per high-level step (app. B.2)"""
    tau: float = 5e-3
    """target-network update rate (Alg. 1 line 13)"""
    batch_size: int = 256
    """high-level transitions per gradient step (app. B.2)"""
    buffer_size: int = 1_000_000
    """replay capacity in high-level transitions (app. B.2)"""
    warmup_transitions: int = 5_000
    """high-level transitions collected with the (prior-initialised) policy before the first update (app. B.2)"""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy (Alg. 1 lambda_pi)"""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (Alg. 1 lambda_Q)"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log alpha (Alg. 1 lambda_alpha)"""
    overlap_updates: bool = True
    """run each gradient step in a second thread while the env executes the next skill (updates see the replay one transition late); --no-overlap-updates keeps Algorithm 1's strict order"""
    eval_every: int = 50_000
    """env steps between evaluations (K episodes with the policy mean)"""
    eval_episodes: int = 10
    """K: episodes per evaluation"""
    log_every: int = 100
    """gradient steps between logged loss means (and the NaN/inf check)"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints (written at the next episode end, replay buffer included)"""
    seed: int = 1
    """seed for network init, skill sampling, replay sampling and the env"""
    run_name: str | None = None
    """run folder runs/<run_name>/ (tensorboard, checkpoint.pt, policy.pt); default: derived from env, seed and time"""
    resume: str | None = None
    """checkpoint.pt of a spirl_sac.py run to continue (its own settings are used; --total-env-steps may extend it)"""
    threads: int = 0
    """torch CPU threads (0: all cores but one with --overlap-updates, as the env runs on the remaining core; else torch's default)"""


# Per-env defaults from the paper (delta, app. B.2) and the authors' configs (critic depth).
DEFAULT_DELTA = {"kitchen": 5.0, "maze": 1.0, "block_stacking": 5.0}
# The task-progress figure each env reports in `info` (read at an episode's end), logged as
# charts/<name> and charts/eval_<name>: the y-axes of the paper's Fig. 4.
PROGRESS_METRIC = {"kitchen": "subtasks_completed", "maze": "success", "block_stacking": "blocks_stacked"}
DEFAULT_CRITIC_LAYERS = {"kitchen": 5, "maze": 2, "block_stacking": 2}
DEFAULT_TOTAL_ENV_STEPS = 1_500_000
MAX_KL = 100.0  # the authors clamp their divergence estimate to +-100 (the issue is silent on a clamp)
SKILL_RANGE = 2.0  # z = 2 * tanh(u): the policy's skills lie in [-2, 2]^|Z| (app. B.2)
LOSS_TERMS = ("qf1", "qf2", "actor", "alpha", "alpha_value", "kl_to_prior")


# ----------------------------------------------------------------------------- networks


class TwinCritic(nn.Module):
    """Q_1(s, z) and Q_2(s, z) (Alg. 1 line 2), evaluated together: each layer stores both critics'
    weights as one (2, in, out) tensor, so a forward pass is one batched matmul per layer.

    Plain MLPs with LeakyReLU(0.2), no normalisation, as the authors' MLPCritic; input [s, z]. They
    read the first `state_dim` entries of an observation: with image observations the critics see
    the state vector only, as the authors' maze critics (SplitObsMLPCritic) do.
    """

    def __init__(self, state_dim: int, latent_dim: int, hidden: int, layers: int, bf16: bool = False):
        super().__init__()
        self.bf16, self.state_dim = bf16, state_dim
        sizes = [state_dim + latent_dim] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            # Xavier-normal per critic, zero bias (the init the authors use for their networks).
            self.weights.append(nn.Parameter(torch.randn(2, n_in, n_out) * math.sqrt(2.0 / (n_in + n_out))))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, n_out)))

    def forward(self, state: torch.Tensor, skill: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(B, S), (B, Z) -> (2, B): both critics' Q-values (float32, also with bf16 matmuls). frozen:
        the weights enter detached, so a loss through this pass trains only what produced `skill` (the
        actor loss), without toggling requires_grad on the critics every step."""
        x = torch.cat([state[:, : self.state_dim], skill], dim=-1).expand(2, -1, -1)
        last = len(self.weights) - 1
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                x = torch.baddbmm(b.detach(), x, w.detach()) if frozen else torch.baddbmm(b, x, w)
                if i < last:
                    x = F.leaky_relu(x, 0.2)
        return x.squeeze(-1).float()


def make_policy(skill_model: SkillModel, prior_init: bool) -> SkillPrior:
    """pi(z | s): the prior's architecture; an exact copy of the trained prior (weights and BatchNorm
    statistics) when prior_init, so that pi = p_a before the first update (app. F)."""
    prior = skill_model.skill_prior
    policy = SkillPrior(**prior.config)
    if prior_init:
        policy.load_state_dict(prior.state_dict())
    else:
        for m in policy.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    # BatchNorm stays in eval mode during RL (the authors' choice): its statistics are the prior's
    # (or 0/1 from scratch) and pi(z | s) does not depend on the rest of the batch.
    return policy.eval()


# ----------------------------------------------------------------------------- losses


def squash(u: torch.Tensor) -> torch.Tensor:
    """Executed skill z = 2 tanh(u) (app. B.2)."""
    return SKILL_RANGE * torch.tanh(u)


def kl_to_prior(mu, log_sigma, prior_mu, prior_log_sigma) -> torch.Tensor:
    """KL(pi(.|s) || p_a(.|s)) between the pre-squash diagonal Gaussians, analytic (app. F: the more
    stable estimate), summed over the |Z| dims (eq. 3), clamped at MAX_KL as in the authors' code.

    Why the clamp matters: on states unlike the offline data the prior can be extremely narrow
    (measured on kitchen-complete-v0: log sigma down to -10 on states the RL agent reaches, -2.7 at
    most on the data), so a tiny policy change there gives a KL of 1e6+ that swamps the Q-targets
    (critic losses of 1e18 in an unclamped run). Beyond the clamp the KL still costs alpha * MAX_KL
    in the Q-target, which steers the agent back to where the prior is informed."""
    return gaussian_kl(mu, log_sigma, prior_mu, prior_log_sigma).sum(-1).clamp(max=MAX_KL)


def squashed_log_prob(u, mu, log_sigma) -> torch.Tensor:
    """log pi(z | s) of z = 2 tanh(u), u ~ N(mu, sigma): the sampled negative entropy of plain SAC,
    used with --skill-prior none (where it plays the role of KL(pi || uniform), Sec. 3.3)."""
    log_n = (-0.5 * ((u - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log |dz/du| = log 2 + log(1 - tanh(u)^2), written stably as log 2 + 2 (log 2 - u - softplus(-2u)).
    log_det = (math.log(SKILL_RANGE) + 2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
    return log_n - log_det


@dataclass
class Learner:
    """Everything Algorithm 1 updates, plus the frozen prior p_a it regularises towards."""

    policy: SkillPrior
    skill_prior: SkillPrior | None  # None with --skill-prior none
    critic: TwinCritic
    critic_target: TwinCritic
    log_alpha: torch.Tensor
    policy_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer
    target_divergence: float  # delta (or -target entropy = |Z| with --skill-prior none)
    gamma: float
    tau: float

    @torch.no_grad()
    def prior_of(self, states: torch.Tensor) -> torch.Tensor:
        """p_a(z | s) as [mu, log sigma] (B, 2|Z|); zeros with --skill-prior none (then unused). The
        prior is frozen, so this is computed once per state, when it is stored in the replay buffer."""
        if self.skill_prior is None:
            return torch.zeros(len(states), 2 * self.policy.config["latent_dim"])
        return torch.cat(self.skill_prior(states), dim=-1)

    def sample_skill(self, states: torch.Tensor, generator: torch.Generator | None = None, prior: torch.Tensor | None = None):
        """Reparameterised u ~ pi(. | s); returns (z = 2 tanh(u), divergence to the prior, per state).
        `prior`: p_a(z | s) of these states as prior_of gives it (computed here when None)."""
        mu, log_sigma = self.policy(states)
        u = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator)
        if self.skill_prior is None:
            return squash(u), squashed_log_prob(u, mu, log_sigma)
        prior_mu, prior_log_sigma = (self.prior_of(states) if prior is None else prior).chunk(2, dim=-1)
        return squash(u), kl_to_prior(mu, log_sigma, prior_mu, prior_log_sigma)


@torch.no_grad()
def compute_q_target(learner: Learner, rewards, next_states, terminals, alpha, generator, next_prior=None) -> torch.Tensor:
    """Alg. 1 line 9: r~ + gamma [min_i Q_target_i(s', z') - alpha KL(pi(.|s') || p_a(.|s'))], z' ~ pi(.|s').

    The prior divergence stands where SAC has the entropy. A true termination stops the bootstrap; a
    time-limit truncation does not (it was stored with terminal = 0)."""
    next_skills, next_divergence = learner.sample_skill(next_states, generator, next_prior)
    next_q = learner.critic_target(next_states, next_skills).min(0).values
    return rewards + learner.gamma * (1.0 - terminals) * (next_q - alpha * next_divergence)


def sac_update(learner: Learner, batch: tuple, generator: torch.Generator) -> torch.Tensor:
    """One gradient step of Algorithm 1 (lines 9-13); returns the losses as one tensor (no host sync).
    `batch`: (s, z, r~, s', terminal, p_a(.|s), p_a(.|s')) as ReplayBuffer.sample gives it; the two
    prior terms may be None (then computed here)."""
    states, skills, rewards, next_states, terminals, priors, next_priors = batch
    alpha = learner.log_alpha.exp().detach()
    q_target = compute_q_target(learner, rewards, next_states, terminals, alpha, generator, next_priors)

    # Line 11: critics regress to the target (both critics in one batched pass).
    q = learner.critic(states, skills)
    qf_losses = 0.5 * (q - q_target).pow(2).mean(1)
    learner.critic_opt.zero_grad(set_to_none=True)
    qf_losses.sum().backward()
    learner.critic_opt.step()

    # Line 10: policy maximises min Q - alpha * KL(pi || p_a). The critics enter frozen: no gradient to them.
    new_skills, divergence = learner.sample_skill(states, generator, priors)
    actor_loss = (alpha * divergence - learner.critic(states, new_skills, frozen=True).min(0).values).mean()

    # Line 12: alpha grows when KL exceeds delta and shrinks below it. The printed line reads
    # alpha * (KL - delta); the dual of app. A gives alpha * (delta - KL), which is what is minimised
    # here (as in the authors' code), with alpha = exp(log alpha) to keep it positive.
    divergence = divergence.detach()
    alpha_loss = (learner.log_alpha.exp() * (learner.target_divergence - divergence)).mean()
    # Lines 10 and 12 in one backward pass: their parameters are disjoint, so the gradients are those
    # of two separate passes.
    learner.policy_opt.zero_grad(set_to_none=True)
    learner.alpha_opt.zero_grad(set_to_none=True)
    (actor_loss + alpha_loss).backward()
    learner.policy_opt.step()
    learner.alpha_opt.step()

    # Line 13: Polyak averaging of the target critics.
    with torch.no_grad():
        torch._foreach_lerp_(list(learner.critic_target.parameters()), list(learner.critic.parameters()), learner.tau)
    return torch.stack([qf_losses[0], qf_losses[1], actor_loss.detach(), alpha_loss.detach(), alpha,
                        divergence.mean()])  # fmt: skip


# ----------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """Preallocated ring buffer of high-level transitions (s, z, r~, s', terminal) (Alg. 1 line 7),
    with the frozen prior's p_a(z | s) and p_a(z | s') of each (saves two prior passes per update).

    Observations are stored as their state vector (float) and, for image observations, their frames
    as uint8: as floats, 1e6 transitions of two 6144-pixel observations would take 50 GB. Memory is
    only committed as the buffer fills."""

    FIELDS = ("states", "frames", "skills", "rewards", "next_states", "next_frames", "terminals", "priors", "next_priors")

    def __init__(self, capacity: int, state_dim: int, latent_dim: int, image_dim: int = 0):
        self.capacity, self.size, self.next, self.state_dim = capacity, 0, 0, state_dim
        self.states = torch.empty(capacity, state_dim)
        self.frames = torch.empty(capacity, image_dim, dtype=torch.uint8)
        self.skills = torch.empty(capacity, latent_dim)
        self.rewards = torch.empty(capacity)
        self.next_states = torch.empty(capacity, state_dim)
        self.next_frames = torch.empty(capacity, image_dim, dtype=torch.uint8)
        self.terminals = torch.empty(capacity)
        self.priors = torch.empty(capacity, 2 * latent_dim)
        self.next_priors = torch.empty(capacity, 2 * latent_dim)

    def _store(self, states, frames, i: int, observation):
        observation = torch.as_tensor(observation)
        states[i] = observation[: self.state_dim]
        frames[i] = observation[self.state_dim :].mul(255).round_().to(torch.uint8)  # frames are k / 255

    def _observations(self, states, frames, idx) -> torch.Tensor:
        if frames.shape[1] == 0:
            return states[idx]
        rows = states[idx]
        observations = torch.empty(len(rows), self.state_dim + frames.shape[1])
        observations[:, : self.state_dim] = rows
        observations[:, self.state_dim :] = frames[idx]  # uint8 -> float in the copy
        observations[:, self.state_dim :].div_(255)
        return observations

    def add(self, state, skill, reward: float, next_state, terminal: bool, prior, next_prior):
        i = self.next
        self._store(self.states, self.frames, i, state)
        self.skills[i] = skill
        self.rewards[i] = reward
        self._store(self.next_states, self.next_frames, i, next_state)
        self.terminals[i] = float(terminal)
        self.priors[i], self.next_priors[i] = prior, next_prior
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple:
        idx = torch.randint(self.size, (batch_size,), generator=generator)
        return (self._observations(self.states, self.frames, idx), self.skills[idx], self.rewards[idx],
                self._observations(self.next_states, self.next_frames, idx), self.terminals[idx],
                self.priors[idx], self.next_priors[idx])  # fmt: skip

    def state_dict(self) -> dict:
        """Only the filled part (in storage order), so a checkpoint grows with the data, not the capacity."""
        n = self.size
        return {"next": self.next, "size": n} | {name: getattr(self, name)[:n].clone() for name in self.FIELDS}

    def load_state_dict(self, saved: dict, prior_of):
        n = saved["size"]
        for name in self.FIELDS:
            if name in saved:
                getattr(self, name)[:n] = saved[name]
        self.size, self.next = n, saved["next"]
        if "priors" not in saved:  # a run saved before the buffer kept p_a: compute it now
            for i in range(0, n, 4096):
                rows = slice(i, min(i + 4096, n))
                self.priors[rows] = prior_of(self._observations(self.states, self.frames, rows))
                self.next_priors[rows] = prior_of(self._observations(self.next_states, self.next_frames, rows))


# ----------------------------------------------------------------------------- acting


@torch.no_grad()
def choose_skill(learner: Learner, decoder, state: np.ndarray, generator, deterministic: bool = False):
    """Alg. 1 line 5: z ~ pi(z | s) (its mean when deterministic), decoded once into H actions."""
    mu, log_sigma = learner.policy(torch.as_tensor(state)[None])
    u = mu if deterministic else mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator)
    skill = squash(u)[0]
    actions = decoder(skill[None])[0].clamp(-1.0, 1.0)  # decoder mean; the env's action box is [-1, 1]
    return skill, actions.numpy()


def execute_skill(env, actions: np.ndarray):
    """Alg. 1 line 6: run the H decoded actions open-loop; the high-level reward is their summed reward.

    An episode that ends inside the skill returns the partial sum and where it ended."""
    reward_sum, steps = 0.0, 0
    for action in actions:
        state, reward, terminated, truncated, info = env.step(action)
        reward_sum += reward
        steps += 1
        if terminated or truncated:
            break
    return state, reward_sum, terminated, truncated, steps, info


def evaluate(learner: Learner, decoder, env_name: str, env_kwargs: dict, episodes: int, seed: int) -> dict:
    """K episodes with the policy mean, on fixed seeds (the same every evaluation)."""
    env = make_env(env_name, **env_kwargs)
    metric, returns, progress = PROGRESS_METRIC[env_name], [], []
    for episode in range(episodes):
        state, _ = env.reset(seed=10_000_000 + seed * 1000 + episode)
        episode_return, done = 0.0, False
        while not done:
            _, actions = choose_skill(learner, decoder, state, None, deterministic=True)
            state, reward, terminated, truncated, _, info = execute_skill(env, actions)
            episode_return += reward
            done = terminated or truncated
        returns.append(episode_return)
        progress.append(float(info.get(metric, 0)))
    env.close()
    return {"return": float(np.mean(returns)), metric: float(np.mean(progress))}


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str, payload: dict, kind: str = "spirl_sac"):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "kind": kind, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_run_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise SpirlError(f"checkpoint {path} does not exist; pass runs/<run>/checkpoint.pt of a spirl_sac.py run to --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or truncated, use another one") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != "spirl_sac" or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SpirlError(f"{path} is not a spirl_sac.py checkpoint; --resume takes runs/<run>/checkpoint.pt of a spirl_sac.py run")
    return ckpt


# ----------------------------------------------------------------------------- set-up


SCIENCE_FIELDS = ("env", "tasks", "delta", "skill_prior", "prior_init", "critic_layers", "critic_hidden", "critic_bf16", "gamma",
                  "tau", "batch_size", "buffer_size", "warmup_transitions", "policy_lr", "critic_lr", "alpha_lr",
                  "overlap_updates", "seed", "prior_checkpoint")  # fmt: skip


def check_args(args: Args):
    env_spec(args.env)
    if args.tasks and args.env != "kitchen":
        raise SpirlError(f"--tasks chooses kitchen subtasks; drop it for --env {args.env}")
    if args.delta is not None and not (args.delta > 0 and math.isfinite(args.delta)):
        raise SpirlError(f"--delta must be above 0 (got {args.delta}); the paper uses 5 for the kitchen, 1 for the maze")
    for name in ("critic_layers", "critic_hidden", "batch_size", "buffer_size", "eval_every", "eval_episodes",
                 "log_every", "checkpoint_every"):  # fmt: skip
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SpirlError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    if args.warmup_transitions < 0 or (args.total_env_steps or 0) < 0:
        raise SpirlError("--warmup-transitions and --total-env-steps must not be negative")
    for name in ("policy_lr", "critic_lr", "alpha_lr", "tau"):
        if not (getattr(args, name) > 0 and math.isfinite(getattr(args, name))):
            raise SpirlError(f"--{name.replace('_', '-')} must be a positive number (got {getattr(args, name)})")
    if not 0 <= args.gamma <= 1:
        raise SpirlError(f"--gamma must be in [0, 1] (got {args.gamma})")


def resolve_config(args: Args, ckpt: dict | None) -> dict:
    """The run's settings. A resumed run keeps its own; a flag set to something else is an error."""
    if ckpt is not None:
        saved, defaults = ckpt["config"], Args()
        for name in SCIENCE_FIELDS:
            given = getattr(args, name)
            if given != getattr(defaults, name) and given != saved[name]:
                raise SpirlError(f"--{name.replace('_', '-')} {given} differs from the resumed run's {saved[name]}; "
                                 f"drop the flag (a resumed run keeps its settings) or start a new run")  # fmt: skip
        return {**saved, "total_env_steps": args.total_env_steps or saved["total_env_steps"]}
    config = {f.name: getattr(args, f.name) for f in fields(Args) if f.name in SCIENCE_FIELDS}
    config["delta"] = args.delta if args.delta is not None else DEFAULT_DELTA[args.env]
    config["critic_layers"] = args.critic_layers or DEFAULT_CRITIC_LAYERS[args.env]
    config["total_env_steps"] = args.total_env_steps if args.total_env_steps is not None else DEFAULT_TOTAL_ENV_STEPS
    if config["prior_checkpoint"] is None:  # the skill model shipped in the repo for this env
        config["prior_checkpoint"] = env_spec(args.env).get("default_prior")
        if config["prior_checkpoint"] is None or not os.path.isfile(config["prior_checkpoint"]):
            raise SpirlError(f"no shipped skill model for --env {args.env}: pass --prior-checkpoint "
                             f"runs/<pretrain run>/checkpoint.pt (from spirl_pretrain.py --env {args.env})")  # fmt: skip
    return config


def load_skills(config: dict, ckpt: dict | None) -> tuple[SkillModel, dict]:
    """The pretrained skill model: from the prior checkpoint, or as saved inside the resumed run."""
    spec = env_spec(config["env"])
    if ckpt is not None:
        ckpt["skill_config"].setdefault("image", False)  # runs saved before image priors existed
        model = SkillModel(**ckpt["skill_config"])
        model.load_state_dict(ckpt["skill_model"])
        return model.eval().requires_grad_(False), ckpt["skill_config"]
    model, skill_config = load_skill_model(config["prior_checkpoint"], env=config["env"],
                                           state_dim=spec["state_dim"], action_dim=spec["action_dim"])  # fmt: skip
    return model.requires_grad_(False), skill_config


def build_learner(config: dict, skill_model: SkillModel, skill_config: dict) -> Learner:
    latent_dim, state_dim = skill_config["latent_dim"], skill_config["state_dim"]
    use_prior = config["skill_prior"] == "learned"
    policy = make_policy(skill_model, prior_init=use_prior and config["prior_init"])
    sizes = (state_dim, latent_dim, config["critic_hidden"], config["critic_layers"], config["critic_bf16"])
    critic, critic_target = TwinCritic(*sizes), TwinCritic(*sizes)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)  # alpha starts at 1 (the authors' choice)
    adam = dict(betas=(0.9, 0.999), fused=True)  # app. B.2
    return Learner(
        policy=policy,
        skill_prior=skill_model.skill_prior if use_prior else None,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        policy_opt=torch.optim.Adam(policy.parameters(), lr=config["policy_lr"], **adam),
        critic_opt=torch.optim.Adam(critic.parameters(), lr=config["critic_lr"], **adam),
        alpha_opt=torch.optim.Adam([log_alpha], lr=config["alpha_lr"], **adam),
        # With no prior, the SAC entropy target -|Z| becomes a bound of |Z| on log pi (Sec. 3.3).
        target_divergence=config["delta"] if use_prior else float(latent_dim),
        gamma=config["gamma"],
        tau=config["tau"],
    )


def learner_state(learner: Learner) -> dict:
    return {name: getattr(learner, name).state_dict() for name in
            ("policy", "critic", "critic_target", "policy_opt", "critic_opt", "alpha_opt")} | {
        "log_alpha": learner.log_alpha.detach().clone()}  # fmt: skip


def load_learner_state(learner: Learner, saved: dict):
    for name in ("policy", "critic", "critic_target", "policy_opt", "critic_opt", "alpha_opt"):
        getattr(learner, name).load_state_dict(saved[name])
    with torch.no_grad():
        learner.log_alpha.copy_(saved["log_alpha"])


def check_losses(loss_log: torch.Tensor, n: int, first_update: int, ckpt_path: str):
    """Stop on NaN/inf: name the gradient step and the term (checked once per log interval, no per-step sync)."""
    finite = torch.isfinite(loss_log[:n])
    if bool(finite.all()):
        return
    row, col = (~finite).nonzero()[0].tolist()
    kept = f"last good checkpoint kept at {ckpt_path}" if os.path.exists(ckpt_path) else "no checkpoint was written"
    raise SpirlError(f"{LOSS_TERMS[col]} became {loss_log[row, col].item()} at gradient step {first_update + row}; "
                     f"lower the learning rates or check the reward scale ({kept})")  # fmt: skip


class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop finishes the episode, saves a checkpoint and exits."""

    def __init__(self):
        self.requested = False
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping at the end of this episode (a checkpoint will be saved); Ctrl-C again to abort", file=sys.stderr)

    def restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


# ----------------------------------------------------------------------------- training loop


def train(args: Args) -> dict:
    check_args(args)
    ckpt = read_run_checkpoint(args.resume) if args.resume else None
    config = resolve_config(args, ckpt)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif config["overlap_updates"]:  # measured on 2 cores: 1 learner thread beside the env beats 2 (oversubscribed)
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    torch.manual_seed(config["seed"])
    skill_model, skill_config = load_skills(config, ckpt)
    learner = build_learner(config, skill_model, skill_config)
    decoder, skill_horizon = skill_model.decoder, skill_config["skill_horizon"]
    # An image prior (and so the policy, its copy) needs the env's image observations.
    env_kwargs = ({"tasks": config["tasks"]} if config["tasks"] else {}) | ({"image": True} if skill_config["image"] else {})
    metric = PROGRESS_METRIC[config["env"]]
    env = make_env(config["env"], **env_kwargs)
    buffer = ReplayBuffer(config["buffer_size"], skill_config["state_dim"], skill_config["latent_dim"],
                          IMAGE_DIM if skill_config["image"] else 0)  # fmt: skip
    act_gen = torch.Generator().manual_seed(config["seed"])  # skills chosen in the env
    learn_gen = torch.Generator().manual_seed(config["seed"] + 1)  # replay batches and policy samples in updates
    counters = {"env_steps": 0, "updates": 0, "episodes": 0, "next_eval": 0, "next_checkpoint": args.checkpoint_every}
    if ckpt is not None:
        load_learner_state(learner, ckpt["learner"])
        buffer.load_state_dict(ckpt["replay"], learner.prior_of)
        act_gen.set_state(ckpt["rng"]["act"])
        learn_gen.set_state(ckpt["rng"]["learn"])
        counters = dict(ckpt["counters"], next_checkpoint=ckpt["counters"]["env_steps"] + args.checkpoint_every)
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        run_dir = os.path.join("runs", args.run_name or f"{config['env']}__spirl_sac__{config['seed']}__{int(time.time())}")
    os.makedirs(run_dir, exist_ok=True)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "config": config, "skill_config": skill_config, "skill_model": skill_model.state_dict(),
            "learner": learner_state(learner), "replay": buffer.state_dict(), "counters": counters,
            "rng": {"act": act_gen.get_state(), "learn": learn_gen.get_state()}})  # fmt: skip

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    # A resumed run hides what was logged after its checkpoint (tensorboard purges those steps).
    writer = SummaryWriter(run_dir, purge_step=counters["env_steps"] + 1 if ckpt is not None else None)
    writer.add_text("config", "\n".join(f"{k}: {v}" for k, v in {**asdict(args), **config}.items()))
    total = config["total_env_steps"]
    bar = tqdm(total=total, initial=counters["env_steps"], desc="spirl_sac", unit="step", dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30)  # fmt: skip
    loss_log = torch.zeros(args.log_every, len(LOSS_TERMS))
    n_logged, shown, last_eval = 0, {}, None
    pool = ThreadPoolExecutor(max_workers=1) if config["overlap_updates"] else None
    stop = StopRequest()
    sps_time, sps_steps = time.perf_counter(), counters["env_steps"]
    timing = {"eval_s": 0.0, "start": None, "start_steps": 0}  # for the learning phase's env steps/s

    def update():
        nonlocal n_logged
        batch = buffer.sample(config["batch_size"], learn_gen)
        loss_log[n_logged] = sac_update(learner, batch, learn_gen)
        n_logged += 1
        counters["updates"] += 1

    try:
        while counters["env_steps"] < total and not stop.requested:
            # ---- one episode (checkpoints and evaluations happen only between episodes)
            if counters["env_steps"] >= counters["next_eval"]:
                eval_start = time.perf_counter()
                last_eval = evaluate(learner, decoder, config["env"], env_kwargs, args.eval_episodes, config["seed"])
                writer.add_scalar(f"charts/eval_{metric}", last_eval[metric], counters["env_steps"])
                writer.add_scalar("charts/eval_return", last_eval["return"], counters["env_steps"])
                shown["eval"] = f"{last_eval[metric]:.2f}"
                counters["next_eval"] = counters["env_steps"] + args.eval_every
                timing["eval_s"] += time.perf_counter() - eval_start
            # Each training episode has its own seed, so a resumed run sees the same episodes.
            state, _ = env.reset(seed=config["seed"] * 1_000_003 + counters["episodes"])
            state_prior = learner.prior_of(torch.as_tensor(state)[None])[0]
            episode_return, done = 0.0, False
            while not done:
                skill, actions = choose_skill(learner, decoder, state, act_gen)
                ready = buffer.size >= max(config["warmup_transitions"], 1)
                if ready and timing["start"] is None:
                    timing.update(start=time.perf_counter(), start_steps=counters["env_steps"], eval_s=0.0)
                pending = pool.submit(update) if ready and pool else None  # learns while the env runs
                next_state, reward, terminated, truncated, steps, info = execute_skill(env, actions)
                next_prior = learner.prior_of(torch.as_tensor(next_state)[None])[0]
                if pending is not None:
                    pending.result()
                buffer.add(state, skill, reward, next_state, terminated, state_prior, next_prior)  # truncation is not terminal
                if ready and pool is None:
                    update()
                state, state_prior, done = next_state, next_prior, terminated or truncated
                episode_return += reward
                counters["env_steps"] += steps
                bar.update(steps)
                if n_logged == args.log_every:
                    check_losses(loss_log, n_logged, counters["updates"] - n_logged + 1, ckpt_path)
                    means = loss_log.mean(0).tolist()
                    for name, value in zip(LOSS_TERMS, means):
                        tag = {"alpha_value": "charts/alpha", "kl_to_prior": "charts/kl_to_prior"}.get(name, f"losses/{name}")
                        writer.add_scalar(tag, value, counters["env_steps"])
                    shown.update(alpha=f"{means[4]:.3g}", kl=f"{means[5]:.2f}")
                    n_logged = 0
            counters["episodes"] += 1
            writer.add_scalar("charts/episodic_return", episode_return, counters["env_steps"])
            writer.add_scalar(f"charts/{metric}", float(info.get(metric, 0)), counters["env_steps"])
            now = time.perf_counter()
            if now - sps_time > 10:
                sps = (counters["env_steps"] - sps_steps) / (now - sps_time)
                writer.add_scalar("charts/SPS", sps, counters["env_steps"])
                shown["SPS"] = int(sps)
                sps_time, sps_steps = now, counters["env_steps"]
            shown["return"] = f"{episode_return:g}"
            bar.set_postfix(shown, refresh=False)
            if counters["env_steps"] >= counters["next_checkpoint"] or counters["env_steps"] >= total or stop.requested:
                check_losses(loss_log, n_logged, counters["updates"] - n_logged + 1, ckpt_path)
                checkpoint()
                counters["next_checkpoint"] = counters["env_steps"] + args.checkpoint_every
    finally:  # also on errors (e.g. a NaN loss), so nothing is left half-printed or unflushed
        stop.restore()
        if pool is not None:
            pool.shutdown()
        bar.close()
        writer.flush()
        env.close()
    learning_sps = None
    if timing["start"] is not None:  # env steps/s while learning, evaluations excluded
        elapsed = time.perf_counter() - timing["start"] - timing["eval_s"]
        learning_sps = (counters["env_steps"] - timing["start_steps"]) / max(elapsed, 1e-9)
    if stop.requested:
        print(f"stopped at env step {counters['env_steps']}; continue with --resume {ckpt_path}")
        return {"checkpoint": ckpt_path, "env_steps": counters["env_steps"], "stopped": True}

    last_eval = evaluate(learner, decoder, config["env"], env_kwargs, args.eval_episodes, config["seed"])
    writer.add_scalar(f"charts/eval_{metric}", last_eval[metric], counters["env_steps"])
    writer.add_scalar("charts/eval_return", last_eval["return"], counters["env_steps"])
    writer.close()
    policy_path = os.path.join(run_dir, "policy.pt")
    save_checkpoint(policy_path, {"config": config, "skill_config": skill_config, "policy": learner.policy.state_dict()},
                    kind="spirl_sac_policy")
    print(f"env step {counters['env_steps']}: evaluation over {args.eval_episodes} episodes: "
          f"{last_eval[metric]:.2f} {metric.replace('_', ' ')}, return {last_eval['return']:.2f}")  # fmt: skip
    print(f"checkpoint: {ckpt_path}\nfinal policy: {policy_path}")
    return {"checkpoint": ckpt_path, "policy": policy_path, "env_steps": counters["env_steps"],
            "updates": counters["updates"], "eval": last_eval, "learning_sps": learning_sps}  # fmt: skip


def main(argv: list[str] | None = None):
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    try:
        return train(args)
    except SpirlError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
