"""Baseline "SAC" of the paper's Fig. 4: flat Soft Actor-Critic on primitive actions, from scratch.

Pertsch, Lee & Lim, CoRL 2020, Sec. 4.1 and app. B.2; Haarnoja et al. 2018 (SAC, with automatic
entropy tuning). No offline data, no skills: a Gaussian policy pi(a | s) squashed by tanh into the
env's action box, twin critics with target networks, one gradient step per env step, and the
temperature alpha tuned so that the policy's entropy stays near -|A|. This tests what prior
experience buys (SPiRL's claim): on the paper's tasks it learns next to nothing.

    python baselines/sac.py --env kitchen
    python baselines/sac.py --env Hopper-v5 --total-env-steps 300000   # any gymnasium task with a Box action space
    python baselines/sac.py --resume runs/<run>/checkpoint.pt     # continue a killed or finished run

Flags, logged metrics, checkpoints and the layout of the code follow spirl_sac.py; the update is
baselines/ssp.py's SAC, on primitive actions instead of skills.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError, env_spec, make_env, runs  # noqa: E402
from envs.video import VideoRecorder  # noqa: E402
from spirl_pretrain import IMAGE_DIM, IMAGE_SHAPE, LOG_SIGMA_MAX, LOG_SIGMA_MIN  # noqa: E402


@dataclass
class Args:
    env: str = "kitchen"
    """downstream task family (kitchen, maze, block_stacking), or any gymnasium id with a Box action space (e.g.
    Hopper-v5: checks this SAC against published results)"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks, in the order they are rewarded; default: microwave, kettle, bottom burner, light switch"""
    sparse_reward: bool = False
    """block stacking: reward the highest tower's height only (the authors' SparseHighStack11StackEnvV0, the
    variant of their closed-loop curves) instead of Fig. 4's dense reward with its lift and carry bonuses"""
    target_entropy: float | None = None
    """entropy of pi(a | s) that alpha is tuned towards (default: SAC's heuristic -|A|)"""
    total_env_steps: int | None = None
    """env steps to train for (default 1.5M, the authors' kitchen budget); with --resume, default: the run's own"""
    hidden: int = 256
    """units per policy layer (the authors' flat SAC, clvrai/spirl spirl/configs/rl/<env>/base_conf.py: MLPPolicy
    nz_mid 256)"""
    layers: int | None = None
    """hidden linear layers of the policy; default per env (ENV_DEFAULTS: the authors' MLPPolicy n_layers, which their
    BaseProcessingNet builds as an input block + n_layers blocks: kitchen and block stacking 5 -> 6, maze 2 -> 3)"""
    critic_hidden: int = 256
    """units per layer of each critic (the authors' MLPCritic nz_mid 256, every env)"""
    bootstrap_at_time_limit: bool | None = None
    """let the Q-target bootstrap through the episode's time limit (a truncation is not a termination). Default per
    env (envs/registry.py): off for the paper's tasks, as in the authors' sampler and spirl_sac.py; on for any other
    gymnasium task, as CleanRL"""
    critic_layers: int | None = None
    """hidden linear layers of each critic; default per env (ENV_DEFAULTS: the authors' MLPCritic n_layers 2 -> 3 in
    the paper's envs)"""
    gamma: float = 0.99
    """discount per env step (app. B.2)"""
    tau: float = 5e-3
    """target-network update rate (Alg. 1 line 13)"""
    batch_size: int = 256
    """transitions per gradient step (app. B.2; the authors' batch_size 256)"""
    buffer_size: int | None = None
    """replay capacity in transitions; default per env (ENV_DEFAULTS: the authors' capacity, kitchen and block
    stacking 1e5, maze 1e6)"""
    warmup_steps: int = 5_000
    """env steps with uniform random actions before the first update (app. B.2; the authors' n_warmup_steps 5e3)"""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy (Alg. 1 lambda_pi)"""
    critic_lr: float | None = None
    """Adam learning rate of the critics (Alg. 1 lambda_Q); default per env (ENV_DEFAULTS: the authors' 3e-4 in the
    paper's envs, CleanRL's q_lr 1e-3 on any other gymnasium task)"""
    alpha_lr: float | None = None
    """Adam learning rate of log alpha (Alg. 1 lambda_alpha); default per env, as --critic-lr (CleanRL tunes alpha
    with its q_lr)"""
    seed: int = 1
    """seed for network init, action sampling, replay sampling and the env"""
    eval_every: int = 50_000
    """env steps between evaluations (K episodes with the policy mean)"""
    eval_episodes: int | None = None
    """K: episodes per evaluation (default per env, envs/registry.py: kitchen 10; maze and block stacking 1, whose
    evaluation episodes are all the same: a fixed start, a deterministic env and the policy mean)"""
    log_every: int = 1_000
    """gradient steps between logged loss means (and the NaN/inf check)"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints (written at the next episode end, replay buffer included)"""
    run_name: str | None = None
    """run folder runs/<run_name>/ (tensorboard, checkpoint.pt, policy.pt); default: derived from env, seed and time"""
    resume: str | None = None
    """checkpoint.pt of a baselines/sac.py run to continue (its settings are kept; --total-env-steps may extend it; with
    --run-name the continuation is written to that folder)"""
    capture_video: bool = False
    """record each evaluation's first episode as runs/<run>/videos/eval_<env step>.gif (the kitchen needs OpenGL:
    EGL or OSMesa; the maze and block stacking draw their own frames)"""
    device: str | None = None
    """torch device of the networks, the replay buffer and the updates (default: cuda when available, else cpu); the
    env always runs on the CPU"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""


# Per-env defaults (flags left at None), from the authors' flat SAC configs (clvrai/spirl
# spirl/configs/rl/{kitchen,maze,block_stacking}/base_conf.py): MLPPolicy n_layers 5 in the kitchen and block
# stacking, 2 in the maze (hidden linear layers: n_layers + 1, see `layers`); critics n_layers 2 (3 hidden layers);
# replay capacity 1e5 in the kitchen and block stacking, 1e6 in the maze; Adam 3e-4 everywhere. Any other gymnasium
# task: the sizes and learning rates of CleanRL's sac_continuous_action.py (2 hidden layers of 256 for the policy and
# each critic, replay 1e6, 1e-3 for the critics and alpha), so that a run there checks this SAC against CleanRL's.
PAPER = dict(critic_lr=3e-4, alpha_lr=3e-4)
ENV_DEFAULTS = {
    "kitchen": dict(layers=6, critic_layers=3, buffer_size=100_000, **PAPER),
    "maze": dict(layers=3, critic_layers=3, buffer_size=1_000_000, **PAPER),
    "block_stacking": dict(layers=6, critic_layers=3, buffer_size=100_000, **PAPER),
    "gymnasium": dict(layers=2, critic_layers=2, buffer_size=1_000_000, critic_lr=1e-3, alpha_lr=1e-3),
}

# The values sac_update returns, and where each is logged.
LOSS_TAGS = ("losses/qf1", "losses/qf2", "losses/actor", "losses/alpha", "charts/alpha", "charts/entropy")


# ----------------------------------------------------------------------------- networks


class TwinCritic(nn.Module):
    """Q_1(s, a) and Q_2(s, a), evaluated together: each layer stores both critics' weights as one
    (2, in, out) tensor, so a forward pass is one batched matmul per layer (as in spirl_sac.py).

    Plain MLPs with LeakyReLU(0.2), no normalisation; input [s, a]."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, layers: int):
        super().__init__()
        self.state_dim = state_dim
        sizes = [state_dim + action_dim] + [hidden] * layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            # Xavier-normal per critic, zero bias (the init the authors use for their networks).
            self.weights.append(nn.Parameter(torch.randn(2, n_in, n_out) * math.sqrt(2.0 / (n_in + n_out))))
            self.biases.append(nn.Parameter(torch.zeros(2, 1, n_out)))

    def forward(self, state: torch.Tensor, action: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """(B, S), (B, A) -> (2, B): both critics' Q-values. frozen: the weights enter detached, so a loss
        through this pass trains only what produced `action` (the actor loss), without toggling
        requires_grad on the critics every step."""
        x = torch.cat([state[:, : self.state_dim], action], dim=-1).expand(2, -1, -1)
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


def squashed_log_prob(u, mu, log_sigma) -> torch.Tensor:
    """log pi(a | s) of a = tanh(u), u ~ N(mu, sigma), with the tanh's change of variables (SAC app. C):
    log N(u) - sum log(1 - tanh(u)^2). Its negative is the sampled entropy of SAC's bonus."""
    log_n = (-0.5 * ((u - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
    log_det = (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
    return log_n - log_det


@dataclass
class Learner:
    """Everything SAC updates."""

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

    def sample_action(self, states: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised u ~ pi(. | s); returns (a = tanh(u), log pi(a | s) per state)."""
        mu, log_sigma = self.policy(states)
        u = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(mu.device)
        return torch.tanh(u), squashed_log_prob(u, mu, log_sigma)


@torch.no_grad()
def compute_q_target(learner: Learner, rewards, next_states, terminals, alpha, generator):
    """r + gamma [min_i Q_target_i(s', a') - alpha log pi(a' | s')], a' ~ pi(.|s'): SAC's soft target (eq. 2).

    A termination stops the bootstrap; so does the time limit unless --bootstrap-at-time-limit (then it was
    stored with terminal = 0)."""
    next_actions, next_log_prob = learner.sample_action(next_states, generator)
    next_q = learner.critic_target(next_states, next_actions).min(0).values
    return rewards + learner.gamma * (1.0 - terminals) * (next_q - alpha * next_log_prob)


def sac_update(learner: Learner, batch: tuple, generator: torch.Generator) -> torch.Tensor:
    """One SAC gradient step; returns the LOSS_TAGS values as one tensor (no host sync).
    `batch`: (s, a, r, s', terminal) as ReplayBuffer.sample gives it."""
    states, actions, rewards, next_states, terminals = batch
    alpha = learner.log_alpha.exp().detach()
    q_target = compute_q_target(learner, rewards, next_states, terminals, alpha, generator)

    # Critics regress to the target (both critics in one batched pass).
    q = learner.critic(states, actions)
    qf_losses = 0.5 * (q - q_target).pow(2).mean(1)
    learner.critic_opt.zero_grad(set_to_none=True)
    qf_losses.sum().backward()
    learner.critic_opt.step()

    # Policy maximises min Q - alpha * log pi. The critics enter frozen: no gradient to them.
    new_actions, log_prob = learner.sample_action(states, generator)
    actor_loss = (alpha * log_prob - learner.critic(states, new_actions, frozen=True).min(0).values).mean()

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


def build_learner(args: Args) -> Learner:
    """A fresh policy, two critics and their targets, alpha = 1."""
    spec = env_spec(args.env, any_gymnasium=True)
    state_dim, action_dim = spec["state_dim"], spec["action_dim"]
    policy = GaussianPolicy(state_dim, action_dim, args.hidden, args.layers).to(args.device)
    critic = TwinCritic(state_dim, action_dim, args.critic_hidden, args.critic_layers).to(args.device)
    critic_target = TwinCritic(state_dim, action_dim, args.critic_hidden, args.critic_layers).to(args.device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    log_alpha = torch.zeros((), device=args.device, requires_grad=True)  # alpha starts at 1 (the authors' choice)
    adam = dict(betas=(0.9, 0.999), fused=True)  # app. B.2
    return Learner(
        policy=policy,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        policy_opt=torch.optim.Adam(policy.parameters(), lr=args.policy_lr, **adam),
        critic_opt=torch.optim.Adam(critic.parameters(), lr=args.critic_lr, **adam),
        alpha_opt=torch.optim.Adam([log_alpha], lr=args.alpha_lr, **adam),
        target_entropy=args.target_entropy,
        gamma=args.gamma,
        tau=args.tau,
    )


# ----------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """Preallocated ring buffer of transitions (s, a, r, s', terminal). Observations are stored as their state
    vector (float) and, for image observations, their frames as uint8 (as floats, 1e5 transitions of two 6144-pixel
    observations would take 5 GB). Memory is only committed as it fills."""

    FIELDS = "states frames actions rewards next_states next_frames terminals".split()

    def __init__(self, capacity: int, state_dim: int, action_dim: int, image_dim: int = 0, device="cpu"):
        self.capacity, self.size, self.next, self.state_dim = capacity, 0, 0, state_dim
        self.states = torch.empty(capacity, state_dim, device=device)
        self.frames = torch.empty(capacity, image_dim, dtype=torch.uint8, device=device)
        self.actions = torch.empty(capacity, action_dim, device=device)
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

    def add(self, state, action, reward: float, next_state, terminal: bool):
        i = self.next
        self._store(self.states, self.frames, i, state)
        self.actions[i] = torch.as_tensor(action)
        self.rewards[i] = reward
        self._store(self.next_states, self.next_frames, i, next_state)
        self.terminals[i] = float(terminal)
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple:
        idx = torch.randint(self.size, (batch_size,), generator=generator).to(self.states.device)
        states = self._observations(self.states, self.frames, idx)
        next_states = self._observations(self.next_states, self.next_frames, idx)
        return states, self.actions[idx], self.rewards[idx], next_states, self.terminals[idx]


# ----------------------------------------------------------------------------- acting


@torch.no_grad()
def choose_action(policy: GaussianPolicy, state: np.ndarray, generator, deterministic: bool = False) -> np.ndarray:
    """a = tanh(u), u ~ pi(. | s) (its mean when deterministic): an action in [-1, 1], which `to_env` maps
    onto the env's box."""
    mu, log_sigma = policy(torch.as_tensor(state, device=next(policy.parameters()).device)[None])
    u = mu if deterministic else mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(mu.device)
    return torch.tanh(u)[0].cpu().numpy()


def to_env(action: np.ndarray, space) -> np.ndarray:
    """[-1, 1] -> the env's action box, linearly. Easy to overlook: the policy, the critics and the replay all
    work in [-1, 1], and only the env sees the rescaled action (Pendulum-v1's box is [-2, 2]: without this the
    policy has half its torque; block stacking's grip is [0, 1]: half of tanh's range would be a closed grip)."""
    low, high = space.low, space.high
    if np.all(low == -1.0) and np.all(high == 1.0):
        return action  # the paper's kitchen and maze: nothing to rescale (and no rounding)
    return (low + (action + 1.0) * 0.5 * (high - low)).astype(space.dtype)


def evaluate(policy: GaussianPolicy, args: Args, env_kwargs: dict, video: str | None = None) -> dict:
    """K episodes with the policy mean, on fixed seeds (the same every evaluation); `video`: a GIF of the first."""
    env = make_env(args.env, **env_kwargs) if video is None else VideoRecorder(make_env(args.env, **env_kwargs), video)
    metric, returns, progress = env_spec(args.env, any_gymnasium=True)["progress_metric"], [], []
    for episode in range(args.eval_episodes):
        state, _ = env.reset(seed=10_000_000 + args.seed * 1000 + episode)
        episode_return, done = 0.0, False
        while not done:
            action = choose_action(policy, state, None, deterministic=True)
            state, reward, terminated, truncated, info = env.step(to_env(action, env.action_space))
            episode_return += reward
            done = terminated or truncated
        returns.append(episode_return)
        progress.append(float(info.get(metric, 0)))
    env.close()
    return {"return": float(np.mean(returns))} | ({metric: float(np.mean(progress))} if metric else {})


# ----------------------------------------------------------------------------- training loop


def train(args: Args) -> dict:
    ckpt = runs.read_checkpoint(args.resume, "sac", "baselines/sac.py") if args.resume else None
    args = resolve_args(runs.resumed_args(args, ckpt))
    run_dir, ckpt_path = runs.run_folder(args, "sac")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    # Replay buffer, policy, critics, alpha.
    learner = build_learner(args)
    spec = env_spec(args.env, any_gymnasium=True)
    buffer = ReplayBuffer(args.buffer_size, spec["state_dim"], spec["action_dim"], device=args.device)
    act_gen = torch.Generator().manual_seed(args.seed)  # actions chosen in the env
    learn_gen = torch.Generator().manual_seed(args.seed + 1)  # replay batches and policy samples in updates
    warmup_rng = np.random.default_rng(args.seed)  # uniform random warm-up actions
    env_steps = updates = episodes = 0
    if ckpt is not None:
        runs.load_learner_state(learner, ckpt["learner"])
        runs.load_replay_state(buffer, ckpt["replay"])
        act_gen.set_state(ckpt["rng"]["act"])
        learn_gen.set_state(ckpt["rng"]["learn"])
        warmup_rng.bit_generator.state = ckpt["rng"]["warmup"]
        env_steps, updates, episodes = ckpt["env_steps"], ckpt["updates"], ckpt["episodes"]
    env_kwargs = {"tasks": args.tasks} if args.tasks else {}
    env_kwargs |= {"sparse": True} if args.sparse_reward else {}
    env = make_env(args.env, **env_kwargs)
    logged = spec["episode_info"]  # info entries logged at each episode's end; none for a gymnasium task
    losses = []  # sac_update's outputs since the last log

    def learn():  # one gradient step on a batch from the replay
        losses.append(sac_update(learner, buffer.sample(args.batch_size, learn_gen), learn_gen))

    def videos(step: int) -> str | None:  # --capture-video: where the evaluation at `step` writes its GIF
        return os.path.join(run_dir, "videos", f"eval_{step}.gif") if args.capture_video else None

    def checkpoint():
        run = dict(env_steps=env_steps, updates=updates, episodes=episodes, replay=runs.replay_state(buffer))
        rng = {"act": act_gen.get_state(), "learn": learn_gen.get_state(), "warmup": warmup_rng.bit_generator.state}
        state = dict(args=asdict(args), rng=rng, learner=runs.learner_state(learner), **run)
        runs.save_checkpoint(ckpt_path, state, kind="sac")

    log = runs.RunLogger(run_dir, args, env_steps, resumed=ckpt is not None, loss_tags=LOSS_TAGS)
    next_eval = 0 if ckpt is None else (env_steps // args.eval_every + 1) * args.eval_every
    try:
        with runs.StopRequest() as stop:
            while env_steps < args.total_env_steps and not stop.requested:
                if env_steps >= next_eval:
                    log.evaluation(lambda: evaluate(learner.policy, args, env_kwargs, videos(env_steps)), env_steps)
                    next_eval = (env_steps // args.eval_every + 1) * args.eval_every

                # ALGO LOGIC: one episode of SAC (act, step the env, store, update).
                # Each training episode has its own seed, so a resumed run sees the same episodes.
                state, _ = env.reset(seed=args.seed * 1_000_003 + episodes)
                episode_start, episode_return, done = env_steps, 0.0, False
                while not done:
                    learning = buffer.size >= max(args.warmup_steps, 1)  # warm-up first (app. B.2)
                    if learning:
                        action = choose_action(learner.policy, state, act_gen)
                    else:  # the warm-up acts uniformly at random (over the env's box, once rescaled)
                        action = warmup_rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
                    next_state, reward, terminated, truncated, info = env.step(to_env(action, env.action_space))
                    # Easy to overlook: whether the time limit ends the bootstrap (see Args).
                    end = terminated or (truncated and not args.bootstrap_at_time_limit)
                    buffer.add(state, action, reward, next_state, end)
                    if learning:
                        learn()
                    updates += learning
                    state, done = next_state, terminated or truncated
                    episode_return += reward
                    env_steps += 1

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
            final = log.evaluation(lambda: evaluate(learner.policy, args, env_kwargs, videos(env_steps)), env_steps)
    finally:  # also on errors (e.g. a NaN loss), so nothing is left half-printed or unflushed
        env.close()
        log.close()
    policy_path = os.path.join(run_dir, "policy.pt")
    policy = dict(args=asdict(args), policy=learner.policy.state_dict())
    runs.save_checkpoint(policy_path, policy, kind="sac_policy")
    print(f"env step {env_steps}: evaluation over {args.eval_episodes} episodes: {final}")
    print(f"checkpoint: {ckpt_path}\nfinal policy: {policy_path}")
    result = dict(checkpoint=ckpt_path, policy=policy_path, env_steps=env_steps, updates=updates, eval=final)
    return result | {"learning_sps": log.learning_sps}


# ----------------------------------------------------------------------------- set-up and checkpoints
# Apparatus, not part of SAC: settings, saving.


def resolve_args(args: Args) -> Args:
    """Check the flags (one-line errors) and fill the per-env defaults from envs/registry.py."""
    spec = env_spec(args.env, any_gymnasium=True)
    if args.tasks and args.env != "kitchen":
        raise SpirlError(f"--tasks chooses kitchen subtasks; drop it for --env {args.env}")
    if args.sparse_reward and args.env != "block_stacking":
        raise SpirlError(f"--sparse-reward is a block-stacking reward; drop it for --env {args.env}")
    sizes = ("hidden", "layers", "critic_hidden", "critic_layers", "batch_size", "buffer_size")
    sizes += ("eval_every", "eval_episodes", "log_every")
    runs.check_flags(args, at_least_one=sizes, positive=("policy_lr", "critic_lr", "alpha_lr", "tau"))
    runs.check_flags(args, at_least_one=("checkpoint_every",), non_negative=("warmup_steps", "total_env_steps"))
    if not 0 <= args.gamma <= 1:
        raise SpirlError(f"--gamma must be in [0, 1] (got {args.gamma})")
    total = 1_500_000 if args.total_env_steps is None else args.total_env_steps
    device = runs.resolve_device(args.device)
    target_entropy = -float(spec["action_dim"]) if args.target_entropy is None else args.target_entropy  # -|A|
    defaults = ENV_DEFAULTS.get(args.env, ENV_DEFAULTS["gymnasium"])
    env_defaults = {name: value for name, value in defaults.items() if getattr(args, name) is None}
    env_defaults |= dict(eval_episodes=args.eval_episodes or spec["eval_episodes"])
    bootstrap = (
        spec["bootstrap_at_time_limit"] if args.bootstrap_at_time_limit is None else args.bootstrap_at_time_limit
    )
    return replace(
        args,
        target_entropy=target_entropy,
        total_env_steps=total,
        bootstrap_at_time_limit=bootstrap,
        **env_defaults,
        device=device,
    )


if __name__ == "__main__":
    runs.cli(train, Args, __doc__)
