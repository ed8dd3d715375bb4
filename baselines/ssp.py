"""Baseline "SSP w/o Prior" of the paper's Fig. 4: SAC over the learned skill space, without a skill prior.

Pertsch, Lee & Lim, CoRL 2020, Sec. 4.1 (representative of hierarchical skill-space policies). The
skill decoder of spirl_pretrain.py is used as in spirl_sac.py: a high-level policy pi(z | s) picks a
skill every H env steps, decoded into H actions (open-loop, or step by step from the state with a closed-loop
decoder), with the H rewards summed. But
the policy is trained with plain SAC: a fresh MLP on the state vector, the entropy bonus of SAC, alpha
tuned towards a target entropy, and a warm-up of uniformly random skills. This tests what the learned
skill prior buys on top of the learned skills. The paper gives no details of this baseline; they follow the
authors' configs (clvrai/spirl configs/hrl/<env>/no_prior): the policy is their MLPPolicy (kitchen: 6 hidden
layers of 256; maze and block stacking: 4 of 64, on the state vector, not the frames), the warm-up samples
z uniformly from [-2, 2]^|Z|, and the target entropy is the one their code enforces (see `Args`).

    python baselines/ssp.py --env kitchen
    python baselines/ssp.py --resume runs/<run>/checkpoint.pt     # continue a killed or finished run
    python baselines/ssp.py --env maze --prior-init                # Fig. 10: "SSP PriorInit + SAC" (app. E)

The code is spirl_sac.py's with the prior taken out; flags, logged metrics and checkpoints follow it.
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError, env_spec, make_env, runs  # noqa: E402
from envs.video import VideoRecorder  # noqa: E402
from spirl_pretrain import (  # noqa: E402
    IMAGE_DIM,
    IMAGE_SHAPE,
    LOG_SIGMA_MAX,
    LOG_SIGMA_MIN,
    SkillModel,
    SkillPrior,
    load_skill_model,
)


@dataclass
class Args:
    env: str = "kitchen"
    """downstream task family (kitchen, maze, block_stacking)"""
    prior_checkpoint: str | None = None
    """spirl_pretrain.py's checkpoint.pt for this env (its decoder; the prior only with --prior-init); default in
    checkpoints/"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks, in the order they are rewarded; default: microwave, kettle, bottom burner, light switch"""
    sparse_reward: bool = False
    """block stacking: reward the highest tower's height only (the authors' SparseHighStack11StackEnvV0, the
    variant of their closed-loop curves) instead of Fig. 4's dense reward with its lift and carry bonuses"""
    prior_init: bool = False
    """Fig. 10's "SSP PriorInit + SAC" (app. E): pi starts as an exact copy of the checkpoint's skill prior (its
    network and inputs, frames included for an image prior, as spirl_sac.py's), collects the warm-up itself, and then
    trains with plain SAC as below: the prior initialises pi but does not regularise it. Skills are executed as here,
    z = 2 tanh(u) (spirl_sac.py's kitchen default is 2 tanh(u / 2)), so run it where the two agree: the maze"""
    target_entropy: float | None = None
    """entropy of pi(z | s) that alpha is tuned towards. Default: -|Z| + (|Z| - 1) log 2 (-3.76 for |Z| = 10), what the
    authors' code enforces: its target is SAC's -|Z|, but its log-probability of z = 2 tanh(u) subtracts the log 2 of
    the scaling once instead of once per dimension, so the true entropy it holds is (|Z| - 1) log 2 higher"""
    hidden: int | None = None
    """units per hidden layer of the policy MLP (default per env: kitchen 256, maze and block stacking 64)"""
    layers: int | None = None
    """hidden linear layers of the policy MLP (default per env: kitchen 6, maze and block stacking 4; the authors'
    n_layers 5 and 3, their BaseProcessingNet adding an input layer)"""
    total_env_steps: int | None = None
    """env steps to train for (default 1.5M, the authors' kitchen budget); with --resume, default: the run's own"""
    bootstrap_at_time_limit: bool | None = None
    """let the Q-target bootstrap through the episode's time limit (a truncation is not a termination). Default per
    env (envs/registry.py): off for the paper's tasks, as in the authors' sampler and spirl_sac.py"""
    critic_layers: int | None = None
    """hidden layers of each critic (default per env, envs/registry.py: kitchen 6, blocks 3 as the authors; maze 2)"""
    critic_hidden: int = 256
    """units per critic layer (authors: 256)"""
    gamma: float = 0.99
    """discount per high-level step (app. B.2)"""
    tau: float = 5e-3
    """target-network update rate (Alg. 1 line 13)"""
    batch_size: int = 256
    """high-level transitions per gradient step (app. B.2)"""
    buffer_size: int = 1_000_000
    """replay capacity in high-level transitions (app. B.2)"""
    warmup_transitions: int = 5_000
    """high-level transitions of uniformly random skills in [-2, 2]^|Z| before the first update (app. B.2; the
    authors' random-action warm-up)"""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy (Alg. 1 lambda_pi)"""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (Alg. 1 lambda_Q)"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log alpha (Alg. 1 lambda_alpha)"""
    seed: int = 1
    """seed for network init, skill sampling, replay sampling and the env"""
    overlap_updates: bool = False
    """speed: each gradient step runs in a thread while the env executes the next skill (one transition late)"""
    critic_bf16: bool = False
    """speed: the critics' matmuls in bfloat16 (2x faster with AVX512-BF16; Q-values rounded to ~3 digits)"""
    eval_every: int = 50_000
    """env steps between evaluations (K episodes with the policy mean)"""
    eval_episodes: int | None = None
    """K: episodes per evaluation (default per env, envs/registry.py: kitchen 10; maze and block stacking 1, whose
    evaluation episodes are all the same: a fixed start, a deterministic env and the policy mean)"""
    log_every: int = 100
    """gradient steps between logged loss means (and the NaN/inf check)"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints (written at the next episode end, replay buffer included)"""
    run_name: str | None = None
    """run folder runs/<run_name>/ (tensorboard, checkpoint.pt, policy.pt); default: derived from env, seed and time"""
    resume: str | None = None
    """checkpoint.pt of a baselines/ssp.py run to continue (its settings are kept; --total-env-steps may extend it; with
    --run-name the continuation is written to that folder)"""
    capture_video: bool = False
    """record each evaluation's first episode as runs/<run>/videos/eval_<env step>.gif (the kitchen needs OpenGL:
    EGL or OSMesa; the maze and block stacking draw their own frames)"""
    device: str | None = None
    """torch device of the networks, the replay buffer and the updates (default: cuda when available, else cpu); the
    env always runs on the CPU"""
    threads: int = 0
    """torch CPU threads (0: torch's default; with --overlap-updates all cores but one, the env runs on the last)"""


SKILL_RANGE = 2.0  # z = 2 * tanh(u): the policy's skills lie in [-2, 2]^|Z| (app. B.2)
# The authors' high-level policy of this baseline (MLPPolicy): kitchen nz_mid 256, n_layers 5; maze and block stacking
# keep MLPPolicy's defaults, nz_mid 64, n_layers 3 (hidden linear layers: n_layers + 1).
POLICY_SIZES = {"kitchen": dict(hidden=256, layers=6), "maze": dict(hidden=64, layers=4)}
POLICY_SIZES["block_stacking"] = POLICY_SIZES["maze"]
# The values sac_update returns, and where each is logged.
LOSS_TAGS = ("losses/qf1", "losses/qf2", "losses/actor", "losses/alpha", "charts/alpha", "charts/entropy")


# ----------------------------------------------------------------------------- networks


class TwinCritic(nn.Module):
    """Q_1(s, z) and Q_2(s, z) (Alg. 1 line 2), evaluated together: each layer stores both critics' weights as
    one (2, in, out) tensor, so a forward pass is one batched matmul per layer. Plain MLPs with LeakyReLU(0.2), no
    normalisation, as the authors' MLPCritic; input [s, z]. They read the first `state_dim` entries of an
    observation: with image observations they see the state vector only, as the authors' maze critics do."""

    def __init__(self, state_dim: int, latent_dim: int, hidden: int, layers: int):
        super().__init__()
        self.state_dim = state_dim
        sizes = [state_dim + latent_dim] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            # Xavier-normal per critic, zero bias (the init the authors use for their networks).
            self.weights.append(nn.Parameter(torch.randn(2, n_in, n_out) * math.sqrt(2.0 / (n_in + n_out))))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, n_out)))

    def forward(self, state: torch.Tensor, skill: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(B, S), (B, Z) -> (2, B): both critics' Q-values. frozen: the weights enter detached, so a loss
        through this pass trains only what produced `skill` (the actor loss), without toggling
        requires_grad on the critics every step."""
        x = torch.cat([state[:, : self.state_dim], skill], dim=-1).expand(2, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b.detach(), x, w.detach()) if frozen else torch.baddbmm(b, x, w)
            if i < last:
                x = F.leaky_relu(x, 0.2)
        return x.squeeze(-1).float()


class GaussianPolicy(nn.Module):
    """pi(a | s) before squashing: MLP with LeakyReLU(0.2) -> (mu, log sigma) of a diagonal Gaussian, `layers`
    hidden linear layers of `hidden` units. With batch_norm, the layout of the authors' BC model (BCMdl, their
    BaseProcessingNet): an input block Linear -> LeakyReLU, then `layers` - 1 blocks Linear (no bias) -> BatchNorm
    -> LeakyReLU. Its statistics come from the data fit; in RL the policy is in eval mode, so they stay as fit (as
    the authors' no_batchnorm_update) and pi(a | s) does not depend on the rest of the batch.
    On block stacking, networks fit to the offline data (5 blocks, 23-dim states) act in the 11-block
    task (41 dims): they see the gripper and its 5 nearest blocks (envs.block_stacking.nearest_blocks), or, with
    `image`, the two stacked frames of an image observation through spirl_pretrain.py's conv encoder (3 conv layers
    with BatchNorm, 512 features), in [-1, 1], as the authors' ImageBCMdl."""

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden: int,
        layers: int,
        nearest_blocks=False,
        batch_norm=False,
        image=False,
    ):
        super().__init__()
        self.features, self.conv = None, None
        if nearest_blocks and not image:
            from envs.block_stacking import FEATURE_DIM
            from envs.block_stacking import nearest_blocks as features

            self.features, state_dim = features, FEATURE_DIM
        if image:
            convs, channels = [], IMAGE_SHAPE[0]
            for out in (8, 16, 32):
                convs += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out)]
                convs += [nn.LeakyReLU(0.2)]
                channels = out
            self.conv = nn.Sequential(*convs, nn.Flatten()).to(memory_format=torch.channels_last)
            state_dim = 32 * (IMAGE_SHAPE[1] // 8) * (IMAGE_SHAPE[2] // 8)
        blocks, width = [], state_dim
        for i in range(layers):
            if batch_norm and i > 0:  # BCMdl's blocks after its input block
                blocks += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2)]
            else:
                blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2 * action_dim))
        for m in self.modules():  # Xavier-normal weights, zero biases (the authors' init)
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, state: torch.Tensor):
        if self.conv is not None:  # the frames are the observation's last IMAGE_DIM values, stored in [0, 1]
            frames = state[:, -IMAGE_DIM:].reshape(-1, *IMAGE_SHAPE).contiguous(memory_format=torch.channels_last)
            x = self.conv(frames * 2 - 1)
        else:
            x = state if self.features is None else self.features(state)
        mu, log_sigma = self.net(x).chunk(2, dim=-1)
        return mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


# ----------------------------------------------------------------------------- losses


def squash(u: torch.Tensor) -> torch.Tensor:
    """Executed skill z = 2 tanh(u) (app. B.2), the authors' squash. spirl_sac.py's --squash-scale exists to keep a
    prior-initialised policy on the prior's skills; SSP's policy starts from random weights, so it keeps this one."""
    return SKILL_RANGE * torch.tanh(u)


def squashed_log_prob(u, mu, log_sigma) -> torch.Tensor:
    """log pi(z | s) of z = 2 tanh(u), u ~ N(mu, sigma): the sampled negative entropy of plain SAC."""
    log_n = (-0.5 * ((u - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log |dz/du| = log 2 + log(1 - tanh(u)^2), written stably as log 2 + 2 (log 2 - u - softplus(-2u)).
    log_det = (math.log(SKILL_RANGE) + 2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
    return log_n - log_det


@dataclass
class Learner:
    """Everything SAC over skills updates."""

    policy: GaussianPolicy
    critic: TwinCritic
    critic_target: TwinCritic
    log_alpha: torch.Tensor
    policy_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer
    target_entropy: float
    gamma: float
    tau: float
    state_dim: int
    sees_observation: bool = False  # --prior-init: pi, a copy of the prior, reads what the prior reads

    def sample_skill(self, states: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised u ~ pi(. | s); returns (z = 2 tanh(u), log pi(z | s) per state)."""
        # Image observations: the state before the frames, unless pi is the copy of an image prior.
        mu, log_sigma = self.policy(states if self.sees_observation else states[:, : self.state_dim])
        u = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(mu.device)
        return squash(u), squashed_log_prob(u, mu, log_sigma)


@torch.no_grad()
def compute_q_target(learner: Learner, rewards, next_states, terminals, alpha, generator):
    """r~ + gamma [min_i Q_target_i(s', z') - alpha log pi(z' | s')], z' ~ pi(.|s'): SAC's soft target (eq. 2).

    A termination stops the bootstrap; so does the time limit unless --bootstrap-at-time-limit (then it was
    stored with terminal = 0)."""
    next_skills, next_log_prob = learner.sample_skill(next_states, generator)
    next_q = learner.critic_target(next_states, next_skills).min(0).values
    return rewards + learner.gamma * (1.0 - terminals) * (next_q - alpha * next_log_prob)


def sac_update(learner: Learner, batch: tuple, generator: torch.Generator) -> torch.Tensor:
    """One SAC gradient step over skills; returns the LOSS_TAGS values as one tensor (no host sync).
    `batch`: (s, z, r~, s', terminal) as ReplayBuffer.sample gives it."""
    states, skills, rewards, next_states, terminals = batch
    alpha = learner.log_alpha.exp().detach()
    q_target = compute_q_target(learner, rewards, next_states, terminals, alpha, generator)

    # Critics regress to the target (both critics in one batched pass).
    q = learner.critic(states, skills)
    qf_losses = 0.5 * (q - q_target).pow(2).mean(1)
    learner.critic_opt.zero_grad(set_to_none=True)
    qf_losses.sum().backward()
    learner.critic_opt.step()

    # Policy maximises min Q - alpha * log pi. The critics enter frozen: no gradient to them.
    new_skills, log_prob = learner.sample_skill(states, generator)
    actor_loss = (alpha * log_prob - learner.critic(states, new_skills, frozen=True).min(0).values).mean()

    # alpha grows when the entropy -log pi falls below its target, and shrinks above it.
    log_prob = log_prob.detach()
    alpha_loss = (learner.log_alpha.exp() * (-learner.target_entropy - log_prob)).mean()
    # Actor and alpha in one backward pass: their parameters are disjoint, so the gradients are those
    # of two separate passes.
    learner.policy_opt.zero_grad(set_to_none=True)
    learner.alpha_opt.zero_grad(set_to_none=True)
    (actor_loss + alpha_loss).backward()
    learner.policy_opt.step()
    learner.alpha_opt.step()

    # Polyak averaging of the target critics.
    with torch.no_grad():
        torch._foreach_lerp_(list(learner.critic_target.parameters()), list(learner.critic.parameters()), learner.tau)
    losses = (qf_losses[0], qf_losses[1], actor_loss.detach(), alpha_loss.detach(), alpha, -log_prob.mean())
    return torch.stack(losses)


def authors_target_entropy(latent_dim: int) -> float:
    """The entropy of pi(z | s) that the authors' SAC holds (see Args.target_entropy): -|Z| + (|Z| - 1) log 2."""
    return -latent_dim + (latent_dim - 1) * math.log(SKILL_RANGE)


def build_learner(args: Args, skill_model: SkillModel, skill_config: dict) -> Learner:
    """pi a fresh MLP on the state (or with --prior-init a copy of the prior), two critics and their targets, alpha = 1
    (on skill_model's device)."""
    latent_dim, state_dim = skill_config["latent_dim"], skill_config["state_dim"]
    device = next(skill_model.parameters()).device
    policy = GaussianPolicy(state_dim, latent_dim, args.hidden, args.layers).to(device)
    if args.prior_init:  # weights and BatchNorm statistics; BatchNorm stays in eval mode, as in spirl_sac.py
        policy = SkillPrior(**skill_model.skill_prior.config).to(device).eval()
        policy.load_state_dict(skill_model.skill_prior.state_dict())
    critic = TwinCritic(state_dim, latent_dim, args.critic_hidden, args.critic_layers).to(device)
    critic_target = TwinCritic(state_dim, latent_dim, args.critic_hidden, args.critic_layers).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    log_alpha = torch.zeros((), device=device, requires_grad=True)  # alpha starts at 1 (the authors' choice)
    adam = dict(betas=(0.9, 0.999), fused=True)  # app. B.2
    return Learner(
        policy=policy,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        policy_opt=torch.optim.Adam(policy.parameters(), lr=args.policy_lr, **adam),
        critic_opt=torch.optim.Adam(critic.parameters(), lr=args.critic_lr, **adam),
        alpha_opt=torch.optim.Adam([log_alpha], lr=args.alpha_lr, **adam),
        target_entropy=authors_target_entropy(latent_dim) if args.target_entropy is None else args.target_entropy,
        gamma=args.gamma,
        tau=args.tau,
        state_dim=state_dim,
        sees_observation=args.prior_init,
    )


# ----------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """Preallocated ring buffer of high-level transitions (s, z, r~, s', terminal).

    Observations are stored as their state vector (float) and, for image observations, their frames
    as uint8: as floats, 1e6 transitions of two 6144-pixel observations would take 50 GB. Memory is
    only committed as the buffer fills."""

    FIELDS = "states frames skills rewards next_states next_frames terminals".split()

    def __init__(self, capacity: int, state_dim: int, latent_dim: int, image_dim: int = 0, device="cpu"):
        self.capacity, self.size, self.next, self.state_dim = capacity, 0, 0, state_dim
        self.states = torch.empty(capacity, state_dim, device=device)
        self.frames = torch.empty(capacity, image_dim, dtype=torch.uint8, device=device)
        self.skills = torch.empty(capacity, latent_dim, device=device)
        self.rewards = torch.empty(capacity, device=device)
        self.next_states = torch.empty(capacity, state_dim, device=device)
        self.next_frames = torch.empty(capacity, image_dim, dtype=torch.uint8, device=device)
        self.terminals = torch.empty(capacity, device=device)

    def _store(self, states, frames, i: int, observation):
        observation = torch.as_tensor(observation)
        states[i] = observation[: self.state_dim]
        if frames.shape[1]:  # frames are k / 255; a buffer without frames keeps the state of an image observation
            frames[i] = observation[self.state_dim :].mul(255).round_().to(torch.uint8)

    def _observations(self, states, frames, idx) -> torch.Tensor:
        if frames.shape[1] == 0:
            return states[idx]
        return torch.cat([states[idx], frames[idx].float().div_(255)], dim=1)

    def add(self, state, skill, reward: float, next_state, terminal: bool):
        i = self.next
        self._store(self.states, self.frames, i, state)
        self.skills[i] = skill
        self.rewards[i] = reward
        self._store(self.next_states, self.next_frames, i, next_state)
        self.terminals[i] = float(terminal)
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple:
        idx = torch.randint(self.size, (batch_size,), generator=generator).to(self.states.device)
        states = self._observations(self.states, self.frames, idx)
        next_states = self._observations(self.next_states, self.next_frames, idx)
        return states, self.skills[idx], self.rewards[idx], next_states, self.terminals[idx]


# ----------------------------------------------------------------------------- acting


@torch.no_grad()
def choose_skill(policy: GaussianPolicy, state: np.ndarray, generator, deterministic: bool = False) -> torch.Tensor:
    """Alg. 1 line 5: z ~ pi(z | s), or its mean when deterministic; `state`: the state vector (not the frames)."""
    mu, log_sigma = policy(torch.as_tensor(state, device=next(policy.parameters()).device)[None])
    u = mu if deterministic else mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(mu.device)
    return squash(u)[0]


@torch.no_grad()
def execute_skill(env, decoder, skill: torch.Tensor, state: np.ndarray):
    """Alg. 1 line 6: run skill z for H env steps; the high-level reward is the sum of their rewards. The paper's
    open-loop decoder gives all H actions from z at once (app. D's state-conditioned one from z and the first state),
    the closed-loop one (the authors' SPiRL v2) each action from z and the current state; the decoder's mean action
    is clipped to the env's box [-1, 1]. An episode that ends inside the skill returns the partial sum and where it
    ended."""
    first = torch.as_tensor(state, device=skill.device)[None]
    actions = None if decoder.closed_loop else decoder.plan(skill[None], first)[0]
    reward_sum, steps = 0.0, 0
    for t in range(decoder.skill_horizon):
        now = torch.as_tensor(state, device=skill.device)[None]
        action = actions[t] if actions is not None else decoder(now, skill[None])[0]
        state, reward, terminated, truncated, info = env.step(action.clamp(-1.0, 1.0).cpu().numpy())
        reward_sum += reward
        steps += 1
        if terminated or truncated:
            break
    return state, reward_sum, terminated, truncated, steps, info


def evaluate(policy: GaussianPolicy, decoder, args: Args, env_kwargs: dict, video: str | None = None) -> dict:
    """K episodes with the policy mean, on fixed seeds (the same every evaluation); `video`: a GIF of the first."""
    env = make_env(args.env, **env_kwargs) if video is None else VideoRecorder(make_env(args.env, **env_kwargs), video)
    spec, returns, progress = env_spec(args.env), [], []
    metric, state_dim = spec["progress_metric"], spec["state_dim"]
    for episode in range(args.eval_episodes):
        state, _ = env.reset(seed=10_000_000 + args.seed * 1000 + episode)
        episode_return, done = 0.0, False
        while not done:
            skill = choose_skill(policy, state if args.prior_init else state[:state_dim], None, deterministic=True)
            state, reward, terminated, truncated, _, info = execute_skill(env, decoder, skill, state)
            episode_return += reward
            done = terminated or truncated
        returns.append(episode_return)
        progress.append(float(info.get(metric, 0)))
    env.close()
    return {"return": float(np.mean(returns)), metric: float(np.mean(progress))}


# ----------------------------------------------------------------------------- speed flags (opt-in)
# Not part of Algorithm 1 and off by default: each only changes how fast the computation runs
# (--critic-bf16 also rounds it, --overlap-updates reorders it). Kept in this one block.


def use_bf16(critic: TwinCritic):
    """--critic-bf16: the critic's forward pass under bfloat16 autocast, its Q-values returned as float32."""
    forward = critic.forward

    def bf16_forward(*inputs, **kwargs):
        with torch.autocast(critic.weights[0].device.type, dtype=torch.bfloat16):
            return forward(*inputs, **kwargs).float()

    critic.forward = bf16_forward


class OverlappedUpdates:
    """--overlap-updates: the gradient step (lines 8-13) runs in a second thread while the env executes the
    next skill (line 6), on the replay as it was before that skill's transition is stored. Measured on 2
    cores: one learner thread beside the env beats two (oversubscribed)."""

    def __init__(self, learn, enabled: bool):
        self.learn, self.pool = learn, ThreadPoolExecutor(max_workers=1) if enabled else None

    @contextmanager
    def during_env_step(self, learning: bool):
        pending = self.pool.submit(self.learn) if self.pool is not None and learning else None
        try:
            yield
        finally:
            if pending is not None:
                pending.result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()


# ----------------------------------------------------------------------------- training loop


def train(args: Args) -> dict:
    ckpt = runs.read_checkpoint(args.resume, "ssp", "baselines/ssp.py") if args.resume else None
    if ckpt is not None and "layers" not in ckpt["args"]:
        raise SpirlError(
            f"{args.resume} was written by an older baselines/ssp.py (its policy had the prior's "
            "architecture, not the authors' MLP); start a new run"
        )
    args = resolve_args(runs.resumed_args(args, ckpt))
    run_dir, ckpt_path = runs.run_folder(args, "ssp")
    if args.threads or args.overlap_updates:
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    torch.manual_seed(args.seed)
    if ckpt is None:  # the pretrained skill model, checked against the env's sizes
        sizes = {key: env_spec(args.env)[key] for key in ("state_dim", "action_dim")}
        skill_model, skill_config = load_skill_model(args.prior_checkpoint, env=args.env, **sizes)
    else:
        skill_config = ckpt["skill_config"]
        skill_model = SkillModel(**skill_config)
        skill_model.load_state_dict(ckpt["skill_model"])
    device = torch.device(args.device)  # networks, replay and updates; the env stays on the CPU
    skill_model.to(device).eval().requires_grad_(False)
    decoder = skill_model.decoder

    # Replay buffer, policy (freshly initialised), critics, alpha. Policy and critics see the state vector only, so the
    # env gives frames only to a decoder that reads them (--decoder-frames, the authors' ImageClSPiRLMdl) or, with
    # --prior-init, to the policy copied from an image prior; otherwise the skill model's prior is not used here.
    learner = build_learner(args, skill_model, skill_config)
    image_dim = IMAGE_DIM if args.prior_init and skill_config["image"] else 0  # an image prior's copy reads frames
    buffer = ReplayBuffer(args.buffer_size, skill_config["state_dim"], skill_config["latent_dim"], image_dim, device)
    act_gen = torch.Generator().manual_seed(args.seed)  # skills chosen in the env
    learn_gen = torch.Generator().manual_seed(args.seed + 1)  # replay batches and policy samples in updates
    env_steps = updates = episodes = 0
    if ckpt is not None:
        runs.load_learner_state(learner, ckpt["learner"])
        runs.load_replay_state(buffer, ckpt["replay"])
        act_gen.set_state(ckpt["rng"]["act"])
        learn_gen.set_state(ckpt["rng"]["learn"])
        env_steps, updates, episodes = ckpt["env_steps"], ckpt["updates"], ckpt["episodes"]
    env_kwargs = {"tasks": args.tasks} if args.tasks else {}
    env_kwargs |= {"sparse": True} if args.sparse_reward else {}
    env_kwargs |= {"image": True} if skill_config.get("decoder_state_features") == "frames" or image_dim else {}
    env_kwargs |= {"view": skill_config["view"]} if image_dim and skill_config.get("view") else {}
    env = make_env(args.env, **env_kwargs)
    logged = env_spec(args.env)["episode_info"]  # info entries logged at each episode's end (charts/<name>)
    losses = []  # sac_update's outputs since the last log

    def learn():  # one gradient step on a batch from the replay
        losses.append(sac_update(learner, buffer.sample(args.batch_size, learn_gen), learn_gen))

    def videos(step: int) -> str | None:  # --capture-video: where the evaluation at `step` writes its GIF
        return os.path.join(run_dir, "videos", f"eval_{step}.gif") if args.capture_video else None

    def checkpoint():
        run = dict(env_steps=env_steps, updates=updates, episodes=episodes, replay=runs.replay_state(buffer))
        rng = {"act": act_gen.get_state(), "learn": learn_gen.get_state()}
        models = dict(skill_model=skill_model.state_dict(), learner=runs.learner_state(learner))
        state = dict(args=asdict(args), skill_config=skill_config, rng=rng, **models, **run)
        runs.save_checkpoint(ckpt_path, state, kind="ssp")

    if args.critic_bf16:
        use_bf16(learner.critic)
        use_bf16(learner.critic_target)
    overlap = OverlappedUpdates(learn, args.overlap_updates)
    log = runs.RunLogger(run_dir, args, env_steps, resumed=ckpt is not None, loss_tags=LOSS_TAGS)
    next_eval = 0 if ckpt is None else (env_steps // args.eval_every + 1) * args.eval_every
    try:
        with runs.StopRequest() as stop:
            while env_steps < args.total_env_steps and not stop.requested:
                if env_steps >= next_eval:
                    log.evaluation(
                        lambda: evaluate(learner.policy, decoder, args, env_kwargs, videos(env_steps)), env_steps
                    )
                    next_eval = (env_steps // args.eval_every + 1) * args.eval_every

                # ALGO LOGIC: one episode of SAC over skills.
                # Each training episode has its own seed, so a resumed run sees the same episodes.
                state, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
                episode_start, episode_return, done = env_steps, 0.0, False
                while not done:
                    learning = buffer.size >= max(args.warmup_transitions, 1)  # warm-up first (app. B.2)
                    if learning or args.prior_init:  # --prior-init: the prior's copy collects the warm-up too
                        seen = state if args.prior_init else state[: learner.state_dim]
                        skill = choose_skill(learner.policy, seen, act_gen)
                    else:  # the warm-up: uniformly random skills, as the authors' random-action warm-up
                        skill = SKILL_RANGE * (2 * torch.rand(skill_config["latent_dim"], generator=act_gen) - 1)
                        skill = skill.to(device)
                    with overlap.during_env_step(learning):  # a no-op without --overlap-updates
                        outcome = execute_skill(env, decoder, skill, state)
                    next_state, reward, terminated, truncated, steps, info = outcome
                    # Easy to overlook: whether the time limit ends the bootstrap (see Args).
                    end = terminated or (truncated and not args.bootstrap_at_time_limit)
                    buffer.add(state, skill, reward, next_state, end)
                    if learning and not args.overlap_updates:
                        learn()
                    updates += learning
                    state, done = next_state, terminated or truncated
                    episode_return += reward
                    env_steps += steps

                    if len(losses) == args.log_every:
                        log.losses(losses, updates, env_steps)
                episodes += 1

                # TRY NOT TO MODIFY: logging and checkpoints happen only between episodes.
                progress = {k: float(info.get(k, 0)) for k in logged}
                log.episode(episode_return, progress, env_steps, env_steps - episode_start)
                crossed = env_steps // args.checkpoint_every > episode_start // args.checkpoint_every
                if crossed or env_steps >= args.total_env_steps or stop.requested:
                    log.losses(losses, updates, env_steps)  # the NaN check comes before the checkpoint
                    checkpoint()
            if stop.requested:
                print(f"stopped at env step {env_steps}; continue with --resume {ckpt_path}")
                return {"checkpoint": ckpt_path, "env_steps": env_steps, "stopped": True}
            final = log.evaluation(
                lambda: evaluate(learner.policy, decoder, args, env_kwargs, videos(env_steps)), env_steps
            )
    finally:  # also on errors (e.g. a NaN loss), so nothing is left half-printed or unflushed
        overlap.close()
        env.close()
        log.close()
    policy_path = os.path.join(run_dir, "policy.pt")
    policy = dict(args=asdict(args), skill_config=skill_config, policy=learner.policy.state_dict())
    runs.save_checkpoint(policy_path, policy, kind="ssp_policy")
    print(f"env step {env_steps}: evaluation over {args.eval_episodes} episodes: {final}")
    print(f"checkpoint: {ckpt_path}\nfinal policy: {policy_path}")
    result = dict(checkpoint=ckpt_path, policy=policy_path, env_steps=env_steps, updates=updates, eval=final)
    return result | {"learning_sps": log.learning_sps}


# ----------------------------------------------------------------------------- set-up and checkpoints
# Apparatus, not part of SPiRL: settings, loading, saving.


def resolve_args(args: Args) -> Args:
    """Check the flags (one-line errors) and fill the per-env defaults from envs/registry.py."""
    spec = env_spec(args.env)
    if args.tasks and args.env != "kitchen":
        raise SpirlError(f"--tasks chooses kitchen subtasks; drop it for --env {args.env}")
    if args.sparse_reward and args.env != "block_stacking":
        raise SpirlError(f"--sparse-reward is a block-stacking reward; drop it for --env {args.env}")
    sizes = ("critic_layers", "critic_hidden", "batch_size", "buffer_size", "eval_every", "eval_episodes", "log_every")
    runs.check_flags(
        args, at_least_one=sizes + ("hidden", "layers"), positive=("policy_lr", "critic_lr", "alpha_lr", "tau")
    )
    runs.check_flags(args, at_least_one=("checkpoint_every",), non_negative=("warmup_transitions", "total_env_steps"))
    if not 0 <= args.gamma <= 1:
        raise SpirlError(f"--gamma must be in [0, 1] (got {args.gamma})")
    if args.prior_checkpoint is None and not os.path.isfile(spec["default_prior"]):
        raise SpirlError(
            f"no shipped skill model for --env {args.env}: pass --prior-checkpoint runs/<run>/checkpoint.pt"
        )
    total = 1_500_000 if args.total_env_steps is None else args.total_env_steps
    device = runs.resolve_device(args.device)
    defaults = dict(critic_layers=args.critic_layers or spec["critic_layers"])
    defaults |= dict(eval_episodes=args.eval_episodes or spec["eval_episodes"])
    defaults |= {name: getattr(args, name) or size for name, size in POLICY_SIZES[args.env].items()}
    bootstrap = (
        spec["bootstrap_at_time_limit"] if args.bootstrap_at_time_limit is None else args.bootstrap_at_time_limit
    )
    return replace(
        args,
        bootstrap_at_time_limit=bootstrap,
        prior_checkpoint=args.prior_checkpoint or spec["default_prior"],
        total_env_steps=total,
        device=device,
        **defaults,
    )


if __name__ == "__main__":
    runs.cli(train, Args, __doc__)
