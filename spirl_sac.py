"""SPiRL stage 2: prior-regularised SAC over skills (Algorithm 1).

Pertsch, Lee & Lim, "Accelerating Reinforcement Learning with Learned Skill Priors", CoRL 2020,
Sec. 3.3, Algorithm 1, app. A, B.2 and F. A high-level policy pi(z | s) picks a skill z every H env
steps; the skill decoder of spirl_pretrain.py turns z into H actions, planned at once and run open-loop (the
paper) or, with the authors' later closed-loop decoder (the kitchen and block-stacking default), each decoded from z
and the state it acts in. The high-level reward is the sum of the H env rewards. pi is trained with SAC in which
the entropy bonus is replaced by -alpha * KL(pi(z|s) || p_a(z|s)) towards the learned skill prior (eq. 3), and
alpha is tuned so that this divergence stays near a target delta (Alg. 1 line 12).

    python spirl_sac.py --env kitchen --delta 5            # the shipped skill model of checkpoints/
    python spirl_sac.py --env kitchen --prior-checkpoint runs/<pretrain run>/checkpoint.pt
    python spirl_sac.py --resume runs/<run>/checkpoint.pt  # continue a killed or finished run

The SSP ablation (the same skills, SAC's entropy bonus instead of the prior) is baselines/ssp.py.
Details the paper leaves open follow the authors' code (clvrai/spirl), as noted where they appear.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from envs import SpirlError, env_spec, make_env, runs
from envs.video import VideoRecorder
from spirl_pretrain import IMAGE_DIM, SkillModel, SkillPrior, gaussian_kl, load_skill_model


@dataclass
class Args:
    env: str = "kitchen"
    """downstream task family (kitchen, maze, block_stacking)"""
    prior_checkpoint: str | None = None
    """spirl_pretrain.py's checkpoint.pt for this env (skill decoder and prior); default: the one in checkpoints/"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks, in the order they are rewarded; default: microwave, kettle, bottom burner, light switch"""
    sparse_reward: bool = False
    """block stacking: reward the highest tower's height only (the authors' SparseHighStack11StackEnvV0, the
    variant of their closed-loop curves) instead of Fig. 4's dense reward with its lift and carry bonuses"""
    delta: float | None = None
    """target divergence: alpha keeps KL(pi || p_a) near it (default per env, app. B.2: kitchen 5, maze 1, blocks 5)"""
    total_env_steps: int | None = None
    """env steps to train for (default 1.5M, the authors' kitchen budget); with --resume, default: the run's own"""
    prior_init: bool = True
    """initialise pi as an exact copy of the prior network (app. F); --no-prior-init starts from random weights"""
    omega_schedule: tuple[int, int] | None = None
    """app. F's omega, for runs without prior initialisation: a fraction omega of the skills executed while collecting
    is drawn from the prior p_a instead of pi; omega = 1 up to the first env step count, then falls linearly to 0 at
    the second (the paper's "w/o Init" runs: 500000 1000000). Default: never (omega = 0)"""
    goal: tuple[int, int] | None = None
    """maze: the downstream maze's goal cell (row, col), border included (default: the authors' (18, 8)); app. H
    reuses one prior for several goals"""
    squash_scale: float | None = None
    """executed skill z = 2 tanh(u / squash_scale), u ~ pi (app. B.2: [-2, 2] by a tanh). 1: the authors' code; 2:
    z = u near 0, so that a policy copied from the prior executes the prior's skills (see `squash`). Default per
    env (envs/registry.py: kitchen 2, maze and block stacking 1)"""
    bootstrap_at_time_limit: bool | None = None
    """let the Q-target bootstrap through the episode's time limit (a truncation is not a termination). Default per
    env (envs/registry.py): off for the paper's tasks, where the limit ends the bootstrap as in the authors' sampler:
    bootstrapping there let the kitchen critics drift to Q 12 against returns below 2 and the policy collapse"""
    straight_through_clamps: bool = False
    """clamp KL(pi || p_a) at MAX_KL and pi's log sigma at [-10, 2] in value only, their gradients passing. The
    authors' clamps (the default) give no gradient beyond them, so a policy that has gone past both on every state
    cannot come back: one open-loop kitchen seed did so while alpha sank without reward (docs/kitchen.md). A resumed
    run may switch it on (with a new --run-name: the continuation gets its own folder)"""
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
    """high-level transitions collected with the (prior-initialised) policy before the first update (app. B.2)"""
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
    """checkpoint.pt of a spirl_sac.py run to continue (its settings are kept; --total-env-steps may extend it; with
    --run-name the continuation is written to that folder)"""
    capture_video: bool = False
    """record each evaluation's first episode as runs/<run>/videos/eval_<env step>.gif (the kitchen needs OpenGL:
    EGL or OSMesa; the maze and block stacking draw their own frames)"""
    device: str | None = None
    """torch device of the networks, the replay buffer and the updates (default: cuda when available, else cpu); the
    env always runs on the CPU"""
    threads: int = 0
    """torch CPU threads (0: torch's default; with --overlap-updates all cores but one, the env runs on the last)"""


MAX_KL = 100.0  # the authors clamp their divergence estimate to +-100 (the paper is silent on a clamp)
SKILL_RANGE = 2.0  # z = 2 * tanh(u): the policy's skills lie in [-2, 2]^|Z| (app. B.2)
# The values sac_update returns, and where each is logged.
LOSS_TAGS = ("losses/qf1", "losses/qf2", "losses/actor", "losses/alpha", "charts/alpha", "charts/kl_to_prior")


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


def make_policy(skill_prior: SkillPrior, prior_init: bool) -> SkillPrior:
    """pi(z | s): the prior's architecture; an exact copy of the trained prior (weights and BatchNorm
    statistics) when prior_init, so that pi = p_a before the first update (app. F)."""
    policy = SkillPrior(**skill_prior.config)
    if prior_init:
        policy.load_state_dict(skill_prior.state_dict())
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


def squash(u: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Executed skill z = 2 tanh(u / scale), in [-2, 2] (app. B.2). Easy to overlook: with the authors' scale 1, z is
    about 2u near 0, so the prior-initialised policy does not execute the prior's skills but ones twice as far out
    (measured on the shipped kitchen model, 40 episodes: prior samples run as z = u complete 0.3 subtasks, as
    2 tanh(u/2) 0.23, as 2 tanh(u) 0.1 of 20; the first 50k env steps of SPiRL, before any update: 0.34 subtasks
    per episode with scale 2, 0.02 with scale 1). The KL to the prior is taken on u either way."""
    return SKILL_RANGE * torch.tanh(u / scale)


def omega(env_steps: int, schedule: tuple[int, int] | None) -> float:
    """App. F: the share of skills drawn from the prior instead of pi at `env_steps`: 1 until schedule[0], then
    linear to 0 at schedule[1]; 0 without a schedule."""
    if schedule is None:
        return 0.0
    hold, zero = schedule
    return float(min(1.0, max(0.0, (zero - env_steps) / max(zero - hold, 1))))


def kl_to_prior(mu, log_sigma, prior_mu, prior_log_sigma, straight_through: bool = False) -> torch.Tensor:
    """KL(pi(.|s) || p_a(.|s)) between the pre-squash diagonal Gaussians, analytic (app. F: the more
    stable estimate), summed over the |Z| dims (eq. 3), clamped at MAX_KL as in the authors' code.

    Why the clamp matters: on states unlike the offline data the prior can be extremely narrow
    (measured on kitchen-complete-v0: log sigma down to -10 on states the RL agent reaches, -2.7 at
    most on the data), so a tiny policy change there gives a KL of 1e6+ that swamps the Q-targets
    (critic losses of 1e18 in an unclamped run). Beyond the clamp the KL still costs alpha * MAX_KL
    in the Q-target, which steers the agent back to where the prior is informed.

    Easy to overlook: beyond the clamp the KL gives the policy no gradient. Where pi has left p_a past MAX_KL on
    every state (log sigma at its floor, mu far out), nothing pulls it back, however large alpha grows.
    `straight_through` keeps the clamped value (in the Q-target and alpha's loss alike) with the unclamped KL's
    gradient."""
    kl = gaussian_kl(mu, log_sigma, prior_mu, prior_log_sigma).sum(-1)
    return kl + (kl.clamp(max=MAX_KL) - kl).detach() if straight_through else kl.clamp(max=MAX_KL)


@dataclass
class Learner:
    """Everything Algorithm 1 updates, plus the frozen prior p_a it regularises towards."""

    policy: SkillPrior
    skill_prior: SkillPrior
    critic: TwinCritic
    critic_target: TwinCritic
    log_alpha: torch.Tensor
    policy_opt: torch.optim.Optimizer
    critic_opt: torch.optim.Optimizer
    alpha_opt: torch.optim.Optimizer
    target_divergence: float  # delta
    gamma: float
    tau: float
    squash_scale: float
    straight_through: bool = False  # --straight-through-clamps

    @torch.no_grad()
    def prior_of(self, states: torch.Tensor) -> torch.Tensor:
        """p_a(z | s) as [mu, log sigma] (B, 2|Z|). The prior is frozen, so this is computed once per
        state, when the transition is stored in the replay buffer (it saves two prior passes per update)."""
        return torch.cat(self.skill_prior(states), dim=-1)

    def sample_skill(self, states: torch.Tensor, generator: torch.Generator | None = None, prior=None):
        """Reparameterised u ~ pi(. | s); returns (z = 2 tanh(u / scale), KL(pi(.|s) || p_a(.|s)) per state).
        `prior`: p_a(z | s) of these states as prior_of gives it (computed here when None)."""
        mu, log_sigma = self.policy(states)
        u = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(mu.device)
        prior_mu, prior_log_sigma = (self.prior_of(states) if prior is None else prior).chunk(2, dim=-1)
        divergence = kl_to_prior(mu, log_sigma, prior_mu, prior_log_sigma, self.straight_through)
        return squash(u, self.squash_scale), divergence


@torch.no_grad()
def compute_q_target(learner: Learner, rewards, next_states, terminals, alpha, generator, next_prior=None):
    """Alg. 1 line 9: r~ + gamma [min_i Q_target_i(s', z') - alpha KL(pi(.|s') || p_a(.|s'))], z' ~ pi(.|s').

    The prior divergence stands where SAC has the entropy. A termination stops the bootstrap; so does the time limit
    unless --bootstrap-at-time-limit (then it was stored with terminal = 0)."""
    next_skills, next_divergence = learner.sample_skill(next_states, generator, next_prior)
    next_q = learner.critic_target(next_states, next_skills).min(0).values
    return rewards + learner.gamma * (1.0 - terminals) * (next_q - alpha * next_divergence)


def sac_update(learner: Learner, batch: tuple, generator: torch.Generator) -> torch.Tensor:
    """One gradient step of Algorithm 1 (lines 9-13); returns the LOSS_TAGS values as one tensor (no host
    sync). `batch`: (s, z, r~, s', terminal, p_a(.|s), p_a(.|s')) as ReplayBuffer.sample gives it; the two
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
    losses = (qf_losses[0], qf_losses[1], actor_loss.detach(), alpha_loss.detach(), alpha, divergence.mean())
    return torch.stack(losses)


def build_learner(args: Args, skill_model: SkillModel, skill_config: dict) -> Learner:
    """Alg. 1 lines 1-2: pi initialised from p_a, two critics and their targets, alpha = 1 (on skill_model's device)."""
    latent_dim, state_dim = skill_config["latent_dim"], skill_config["state_dim"]
    device = next(skill_model.parameters()).device
    policy = make_policy(skill_model.skill_prior, args.prior_init).to(device)
    policy.straight_through = args.straight_through_clamps  # pi's log sigma clamp; p_a's needs no gradient
    critic = TwinCritic(state_dim, latent_dim, args.critic_hidden, args.critic_layers).to(device)
    critic_target = TwinCritic(state_dim, latent_dim, args.critic_hidden, args.critic_layers).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    log_alpha = torch.zeros((), device=device, requires_grad=True)  # alpha starts at 1 (the authors' choice)
    adam = dict(betas=(0.9, 0.999), fused=True)  # app. B.2
    return Learner(
        policy=policy,
        skill_prior=skill_model.skill_prior,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        policy_opt=torch.optim.Adam(policy.parameters(), lr=args.policy_lr, **adam),
        critic_opt=torch.optim.Adam(critic.parameters(), lr=args.critic_lr, **adam),
        alpha_opt=torch.optim.Adam([log_alpha], lr=args.alpha_lr, **adam),
        target_divergence=args.delta,
        gamma=args.gamma,
        tau=args.tau,
        squash_scale=args.squash_scale,
        straight_through=args.straight_through_clamps,
    )


# ----------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """Preallocated ring buffer of high-level transitions (s, z, r~, s', terminal) (Alg. 1 line 7),
    with the frozen prior's p_a(z | s) and p_a(z | s') of each.

    Observations are stored as their state vector (float) and, for image observations, their frames
    as uint8: as floats, 1e6 transitions of two 6144-pixel observations would take 50 GB. Memory is
    only committed as the buffer fills."""

    FIELDS = "states frames skills rewards next_states next_frames terminals priors next_priors".split()

    def __init__(self, capacity: int, state_dim: int, latent_dim: int, image_dim: int = 0, device="cpu"):
        self.capacity, self.size, self.next, self.state_dim = capacity, 0, 0, state_dim
        self.states = torch.empty(capacity, state_dim, device=device)
        self.frames = torch.empty(capacity, image_dim, dtype=torch.uint8, device=device)
        self.skills = torch.empty(capacity, latent_dim, device=device)
        self.rewards = torch.empty(capacity, device=device)
        self.next_states = torch.empty(capacity, state_dim, device=device)
        self.next_frames = torch.empty(capacity, image_dim, dtype=torch.uint8, device=device)
        self.terminals = torch.empty(capacity, device=device)
        self.priors = torch.empty(capacity, 2 * latent_dim, device=device)
        self.next_priors = torch.empty(capacity, 2 * latent_dim, device=device)

    def _store(self, states, frames, i: int, observation):
        observation = torch.as_tensor(observation)
        states[i] = observation[: self.state_dim]
        if frames.shape[1]:  # frames are k / 255; a buffer without frames keeps the state of an image observation
            frames[i] = observation[self.state_dim :].mul(255).round_().to(torch.uint8)

    def _observations(self, states, frames, idx) -> torch.Tensor:
        if frames.shape[1] == 0:
            return states[idx]
        return torch.cat([states[idx], frames[idx].float().div_(255)], dim=1)

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
        idx = torch.randint(self.size, (batch_size,), generator=generator).to(self.states.device)
        states = self._observations(self.states, self.frames, idx)
        next_states = self._observations(self.next_states, self.next_frames, idx)
        priors, next_priors = self.priors[idx], self.next_priors[idx]
        return states, self.skills[idx], self.rewards[idx], next_states, self.terminals[idx], priors, next_priors


# ----------------------------------------------------------------------------- acting


@torch.no_grad()
def choose_skill(policy: SkillPrior, state: np.ndarray, generator, deterministic=False, scale=1.0) -> torch.Tensor:
    """Alg. 1 line 5: z ~ pi(z | s), or its mean when deterministic (on the policy's device)."""
    mu, log_sigma = policy(torch.as_tensor(state, device=next(policy.parameters()).device)[None])
    u = mu if deterministic else mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(mu.device)
    return squash(u, scale)[0]


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


def evaluate(policy: SkillPrior, decoder, args: Args, env_kwargs: dict, video: str | None = None) -> dict:
    """K episodes with the policy mean, on fixed seeds (the same every evaluation); `video`: a GIF of the first."""
    env = make_env(args.env, **env_kwargs) if video is None else VideoRecorder(make_env(args.env, **env_kwargs), video)
    metric, returns, progress = env_spec(args.env)["progress_metric"], [], []
    for episode in range(args.eval_episodes):
        state, _ = env.reset(seed=10_000_000 + args.seed * 1000 + episode)
        episode_return, done = 0.0, False
        while not done:
            skill = choose_skill(policy, state, None, deterministic=True, scale=args.squash_scale)
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
    ckpt = runs.read_checkpoint(args.resume, "spirl_sac", "spirl_sac.py") if args.resume else None
    args = resolve_args(runs.resumed_args(args, ckpt))
    run_dir, ckpt_path = runs.run_folder(args, "spirl_sac")
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

    # Alg. 1 lines 1-2: replay buffer, policy (a copy of the prior), critics, alpha.
    learner = build_learner(args, skill_model, skill_config)
    image_dim = IMAGE_DIM if skill_config["image"] else 0
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
    # An image prior (and so the policy, its copy) needs the env's image observations.
    env_kwargs = ({"tasks": args.tasks} if args.tasks else {}) | ({"image": True} if skill_config["image"] else {})
    # A maze prior's checkpoint names the frames it was trained on (envs/maze.py render).
    env_kwargs |= {"view": skill_config["view"]} if skill_config.get("view") else {}
    env_kwargs |= {"sparse": True} if args.sparse_reward else {}
    env_kwargs |= {"goal": tuple(args.goal)} if args.goal else {}
    env = make_env(args.env, **env_kwargs)
    logged = env_spec(args.env)["episode_info"]  # info entries logged at each episode's end (charts/<name>)
    losses = []  # sac_update's outputs since the last log

    def learn():  # Alg. 1 lines 8-13: one gradient step on a batch from the replay
        losses.append(sac_update(learner, buffer.sample(args.batch_size, learn_gen), learn_gen))

    def videos(step: int) -> str | None:  # --capture-video: where the evaluation at `step` writes its GIF
        return os.path.join(run_dir, "videos", f"eval_{step}.gif") if args.capture_video else None

    def checkpoint():
        run = dict(env_steps=env_steps, updates=updates, episodes=episodes, replay=runs.replay_state(buffer))
        rng = {"act": act_gen.get_state(), "learn": learn_gen.get_state()}
        models = dict(skill_model=skill_model.state_dict(), learner=runs.learner_state(learner))
        state = dict(args=asdict(args), skill_config=skill_config, rng=rng, **models, **run)
        runs.save_checkpoint(ckpt_path, state, kind="spirl_sac")

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

                # ALGO LOGIC: one episode of Algorithm 1 (lines 3-13).
                # Each training episode has its own seed, so a resumed run sees the same episodes.
                state, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
                state_prior = learner.prior_of(torch.as_tensor(state, device=device)[None])[0]
                episode_start, episode_return, done = env_steps, 0.0, False
                while not done:
                    learning = buffer.size >= max(args.warmup_transitions, 1)  # warm-up first (app. B.2)
                    actor, share = learner.policy, omega(env_steps, args.omega_schedule)
                    # App. F (opt-in): with probability omega the prior, not pi, chooses the skill. It is executed as
                    # pi's are (z = squash(u), u ~ p_a), so with omega = 1 the rollouts are a prior copy's.
                    if share and torch.rand((), generator=act_gen) < share:
                        actor = skill_model.skill_prior
                    skill = choose_skill(actor, state, act_gen, scale=args.squash_scale)  # line 5
                    with overlap.during_env_step(learning):  # a no-op without --overlap-updates
                        outcome = execute_skill(env, decoder, skill, state)  # line 6
                    next_state, reward, terminated, truncated, steps, info = outcome
                    next_prior = learner.prior_of(torch.as_tensor(next_state, device=device)[None])[0]
                    # Line 7. Easy to overlook: whether the time limit ends the bootstrap (see Args).
                    end = terminated or (truncated and not args.bootstrap_at_time_limit)
                    buffer.add(state, skill, reward, next_state, end, state_prior, next_prior)
                    if learning and not args.overlap_updates:
                        learn()  # lines 8-13
                    updates += learning
                    state, state_prior, done = next_state, next_prior, terminated or truncated
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
    runs.save_checkpoint(policy_path, policy, kind="spirl_sac_policy")
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
    if args.goal and args.env != "maze":
        raise SpirlError(f"--goal chooses the maze's goal cell; drop it for --env {args.env}")
    if args.omega_schedule and not 0 <= args.omega_schedule[0] <= args.omega_schedule[1]:
        raise SpirlError(
            f"--omega-schedule takes two env step counts, 0 <= first <= second (got {args.omega_schedule})"
        )
    sizes = ("critic_layers", "critic_hidden", "batch_size", "buffer_size", "eval_every", "eval_episodes", "log_every")
    positive = ("delta", "policy_lr", "critic_lr", "alpha_lr", "tau", "squash_scale")
    runs.check_flags(args, at_least_one=sizes, positive=positive)
    runs.check_flags(args, at_least_one=("checkpoint_every",), non_negative=("warmup_transitions", "total_env_steps"))
    if not 0 <= args.gamma <= 1:
        raise SpirlError(f"--gamma must be in [0, 1] (got {args.gamma})")
    if args.prior_checkpoint is None and not os.path.isfile(spec["default_prior"]):
        raise SpirlError(
            f"no shipped skill model for --env {args.env}: pass --prior-checkpoint runs/<run>/checkpoint.pt"
        )
    if args.goal:  # fail now on a wall or an unreachable cell, before the run folder exists
        make_env(args.env, goal=tuple(args.goal)).close()
    total = 1_500_000 if args.total_env_steps is None else args.total_env_steps
    device = runs.resolve_device(args.device)
    per_env = ("delta", "critic_layers", "squash_scale", "eval_episodes")
    defaults = {name: getattr(args, name) or spec[name] for name in per_env}
    if args.bootstrap_at_time_limit is None:
        defaults["bootstrap_at_time_limit"] = spec["bootstrap_at_time_limit"]
    return replace(
        args,
        prior_checkpoint=args.prior_checkpoint or spec["default_prior"],
        total_env_steps=total,
        device=device,
        **defaults,
    )


if __name__ == "__main__":
    runs.cli(train, Args, __doc__)
