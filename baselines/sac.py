"""Baseline "SAC" of the paper's Fig. 4: flat Soft Actor-Critic on primitive actions, from scratch.

Pertsch, Lee & Lim, CoRL 2020, Sec. 4.1 and app. B.2; Haarnoja et al. 2018 (SAC, with automatic
entropy tuning). No offline data, no skills: a Gaussian policy pi(a | s) squashed by tanh into the
env's action box, twin critics with target networks, one gradient step per env step, and the
temperature alpha tuned so that the policy's entropy stays near -|A|. This tests what prior
experience buys (SPiRL's claim): on the paper's tasks it learns next to nothing.

    python baselines/sac.py --env kitchen
    python baselines/sac.py --resume runs/<run>/checkpoint.pt     # continue a killed or finished run

Flags, logged metrics and checkpoints follow spirl_sac.py.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from envs import SpirlError, env_spec, make_env  # noqa: E402

CHECKPOINT_FORMAT = 1
KIND = "sac"


@dataclass
class Args:
    env: str = "kitchen"
    """downstream task family (kitchen, maze, block_stacking)"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks, in the order they are rewarded; default: microwave, kettle, bottom burner, light switch"""
    total_env_steps: int | None = None
    """env steps to train for (default 1.5M); with --resume, default: the run's own"""
    target_entropy: float | None = None
    """entropy the temperature alpha is tuned towards (SAC's default: -|A|)"""
    hidden: int = 128
    """units per layer of the policy and of each critic (app. B.2: they mirror the skill prior, 128)"""
    layers: int = 6
    """hidden layers of the policy and of each critic (app. B.2: as the skill prior, 6)"""
    gamma: float = 0.99
    """discount per env step (app. B.2)"""
    tau: float = 5e-3
    """target-network update rate"""
    batch_size: int = 256
    """transitions per gradient step (app. B.2)"""
    buffer_size: int = 1_000_000
    """replay capacity in transitions (app. B.2)"""
    warmup_steps: int = 5_000
    """env steps with uniform random actions before the first update (app. B.2: 5e3)"""
    policy_lr: float = 3e-4
    """Adam learning rate of the policy"""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics"""
    alpha_lr: float = 3e-4
    """Adam learning rate of log alpha"""
    eval_every: int = 50_000
    """env steps between evaluations (K episodes with the policy mean)"""
    eval_episodes: int = 10
    """K: episodes per evaluation"""
    log_every: int = 1_000
    """gradient steps between logged loss means (and the NaN/inf check)"""
    checkpoint_every: int = 50_000
    """env steps between checkpoints (written at the next episode end, replay buffer included)"""
    seed: int = 1
    """seed for network init, action sampling, replay sampling and the env"""
    run_name: str | None = None
    """run folder runs/<run_name>/ (tensorboard, checkpoint.pt, policy.pt); default: derived from env, seed and time"""
    resume: str | None = None
    """checkpoint.pt of a baselines/sac.py run to continue (its own settings are used; --total-env-steps may extend it)"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""


# The task-progress figure each env reports in `info` at an episode's end (as in spirl_sac.py).
PROGRESS_METRIC = {"kitchen": "subtasks_completed", "maze": "success", "block_stacking": "blocks_stacked"}
DEFAULT_TOTAL_ENV_STEPS = 1_500_000
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 2.0  # as spirl_pretrain.py's Gaussian heads
LOSS_TERMS = ("qf1", "qf2", "actor", "alpha", "alpha_value", "entropy")


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
        return x.squeeze(-1)


class GaussianPolicy(nn.Module):
    """pi(a | s) before squashing: MLP with LeakyReLU(0.2) -> (mu, log sigma) of a diagonal Gaussian.
    On block stacking, networks fit to the offline data (5 blocks, 23-dim states) act in the 11-block
    task (41 dims): they see the gripper and its 5 nearest blocks (envs.block_stacking.nearest_blocks)."""

    def __init__(self, state_dim: int, action_dim: int, hidden: int, layers: int, nearest_blocks: bool = False):
        super().__init__()
        self.features = None
        if nearest_blocks:
            from envs.block_stacking import FEATURE_DIM, nearest_blocks as features

            self.features, state_dim = features, FEATURE_DIM
        blocks, width = [], state_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2 * action_dim))
        for m in self.modules():  # Xavier-normal weights, zero biases (the authors' init)
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, state: torch.Tensor):
        mu, log_sigma = self.net(state if self.features is None else self.features(state)).chunk(2, dim=-1)
        return mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


# ----------------------------------------------------------------------------- losses


def squashed_sample(mu, log_sigma, generator=None):
    """a = tanh(u), u ~ N(mu, sigma) reparameterised; returns (a, log pi(a | s)) with the tanh's
    change of variables (SAC app. C): log pi(a) = log N(u) - sum log(1 - tanh(u)^2)."""
    u = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator)
    log_n = (-0.5 * ((u - mu) * torch.exp(-log_sigma)).pow(2) - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
    log_det = (2 * (math.log(2.0) - u - F.softplus(-2 * u))).sum(-1)
    return torch.tanh(u), log_n - log_det


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


def sac_update(learner: Learner, batch: tuple, generator: torch.Generator) -> torch.Tensor:
    """One SAC gradient step; returns the losses as one tensor (no host sync)."""
    states, actions, rewards, next_states, terminals = batch
    alpha = learner.log_alpha.exp().detach()
    with torch.no_grad():  # r + gamma (1 - d) [min_i Q_target_i(s', a') - alpha log pi(a' | s')], a' ~ pi(. | s')
        next_actions, next_log_prob = squashed_sample(*learner.policy(next_states), generator)
        next_q = learner.critic_target(next_states, next_actions).min(0).values
        q_target = rewards + learner.gamma * (1.0 - terminals) * (next_q - alpha * next_log_prob)

    q = learner.critic(states, actions)  # both critics in one batched pass
    qf_losses = 0.5 * (q - q_target).pow(2).mean(1)
    learner.critic_opt.zero_grad(set_to_none=True)
    qf_losses.sum().backward()
    learner.critic_opt.step()

    # Actor and temperature in one backward pass (their parameters are disjoint, so the gradients are
    # those of two separate passes). The critics enter frozen: the actor loss trains only the policy.
    new_actions, log_prob = squashed_sample(*learner.policy(states), generator)
    actor_loss = (alpha * log_prob - learner.critic(states, new_actions, frozen=True).min(0).values).mean()
    # alpha grows when the entropy -log pi falls below its target, and shrinks above it.
    log_prob = log_prob.detach()
    alpha_loss = (learner.log_alpha.exp() * (-learner.target_entropy - log_prob)).mean()
    learner.policy_opt.zero_grad(set_to_none=True)
    learner.alpha_opt.zero_grad(set_to_none=True)
    (actor_loss + alpha_loss).backward()
    learner.policy_opt.step()
    learner.alpha_opt.step()

    with torch.no_grad():
        torch._foreach_lerp_(list(learner.critic_target.parameters()), list(learner.critic.parameters()), learner.tau)
    return torch.stack([qf_losses[0], qf_losses[1], actor_loss.detach(), alpha_loss.detach(), alpha, -log_prob.mean()])


# ----------------------------------------------------------------------------- replay buffer


class ReplayBuffer:
    """Preallocated ring buffer of transitions (s, a, r, s', terminal)."""

    FIELDS = ("states", "actions", "rewards", "next_states", "terminals")

    def __init__(self, capacity: int, state_dim: int, action_dim: int):
        self.capacity, self.size, self.next = capacity, 0, 0
        self.states = torch.empty(capacity, state_dim)
        self.actions = torch.empty(capacity, action_dim)
        self.rewards = torch.empty(capacity)
        self.next_states = torch.empty(capacity, state_dim)
        self.terminals = torch.empty(capacity)

    def add(self, state, action, reward: float, next_state, terminal: bool):
        i = self.next
        self.states[i] = torch.as_tensor(state)
        self.actions[i] = torch.as_tensor(action)
        self.rewards[i] = reward
        self.next_states[i] = torch.as_tensor(next_state)
        self.terminals[i] = float(terminal)
        self.next = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple:
        idx = torch.randint(self.size, (batch_size,), generator=generator)
        return tuple(getattr(self, name)[idx] for name in self.FIELDS)

    def state_dict(self) -> dict:
        """Only the filled part (in storage order), so a checkpoint grows with the data, not the capacity."""
        n = self.size
        return {"next": self.next, "size": n} | {name: getattr(self, name)[:n].clone() for name in self.FIELDS}

    def load_state_dict(self, saved: dict):
        n = saved["size"]
        for name in self.FIELDS:
            getattr(self, name)[:n] = saved[name]
        self.size, self.next = n, saved["next"]


# ----------------------------------------------------------------------------- acting


@torch.no_grad()
def choose_action(learner: Learner, state: np.ndarray, generator, deterministic: bool = False) -> np.ndarray:
    mu, log_sigma = learner.policy(torch.as_tensor(state)[None])
    action = torch.tanh(mu) if deterministic else squashed_sample(mu, log_sigma, generator)[0]
    return action[0].numpy()


def evaluate(learner: Learner, env_name: str, env_kwargs: dict, episodes: int, seed: int) -> dict:
    """K episodes with the policy mean, on fixed seeds (the same every evaluation, as spirl_sac.py)."""
    env = make_env(env_name, **env_kwargs)
    metric, returns, progress = PROGRESS_METRIC[env_name], [], []
    for episode in range(episodes):
        state, _ = env.reset(seed=10_000_000 + seed * 1000 + episode)
        episode_return, done = 0.0, False
        while not done:
            state, reward, terminated, truncated, info = env.step(choose_action(learner, state, None, deterministic=True))
            episode_return += reward
            done = terminated or truncated
        returns.append(episode_return)
        progress.append(float(info.get(metric, 0)))
    env.close()
    return {"return": float(np.mean(returns)), metric: float(np.mean(progress))}


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str, payload: dict, kind: str = KIND):
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
        raise SpirlError(f"checkpoint {path} does not exist; pass runs/<run>/checkpoint.pt of a baselines/{KIND}.py run to --resume")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or truncated, use another one") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SpirlError(f"{path} is not a baselines/{KIND}.py checkpoint; --resume takes runs/<run>/checkpoint.pt of such a run")
    return ckpt


# ----------------------------------------------------------------------------- set-up


SCIENCE_FIELDS = ("env", "tasks", "target_entropy", "hidden", "layers", "gamma", "tau", "batch_size", "buffer_size",
                  "warmup_steps", "policy_lr", "critic_lr", "alpha_lr", "seed")  # fmt: skip


def check_args(args: Args):
    env_spec(args.env)
    if args.tasks and args.env != "kitchen":
        raise SpirlError(f"--tasks chooses kitchen subtasks; drop it for --env {args.env}")
    for name in ("hidden", "layers", "batch_size", "buffer_size", "eval_every", "eval_episodes", "log_every",
                 "checkpoint_every"):  # fmt: skip
        if getattr(args, name) < 1:
            raise SpirlError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if args.warmup_steps < 0 or (args.total_env_steps or 0) < 0:
        raise SpirlError("--warmup-steps and --total-env-steps must not be negative")
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
    if config["target_entropy"] is None:
        config["target_entropy"] = -float(env_spec(args.env)["action_dim"])  # SAC's heuristic: -|A|
    config["total_env_steps"] = args.total_env_steps if args.total_env_steps is not None else DEFAULT_TOTAL_ENV_STEPS
    return config


def build_learner(config: dict) -> Learner:
    spec = env_spec(config["env"])
    state_dim, action_dim = spec["state_dim"], spec["action_dim"]
    policy = GaussianPolicy(state_dim, action_dim, config["hidden"], config["layers"])
    critic = TwinCritic(state_dim, action_dim, config["hidden"], config["layers"])
    critic_target = TwinCritic(state_dim, action_dim, config["hidden"], config["layers"])
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    log_alpha = torch.zeros((), requires_grad=True)  # alpha starts at 1
    adam = dict(betas=(0.9, 0.999), fused=True)  # app. B.2
    return Learner(
        policy=policy,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        policy_opt=torch.optim.Adam(policy.parameters(), lr=config["policy_lr"], **adam),
        critic_opt=torch.optim.Adam(critic.parameters(), lr=config["critic_lr"], **adam),
        alpha_opt=torch.optim.Adam([log_alpha], lr=config["alpha_lr"], **adam),
        target_entropy=config["target_entropy"],
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
    torch.manual_seed(config["seed"])
    learner = build_learner(config)
    spec = env_spec(config["env"])
    env_kwargs = {"tasks": config["tasks"]} if config["tasks"] else {}
    metric = PROGRESS_METRIC[config["env"]]
    env = make_env(config["env"], **env_kwargs)
    buffer = ReplayBuffer(config["buffer_size"], spec["state_dim"], spec["action_dim"])
    act_gen = torch.Generator().manual_seed(config["seed"])  # actions chosen in the env
    learn_gen = torch.Generator().manual_seed(config["seed"] + 1)  # replay batches and policy samples in updates
    warmup_rng = np.random.default_rng(config["seed"])  # uniform random warm-up actions
    counters = {"env_steps": 0, "updates": 0, "episodes": 0, "next_eval": 0, "next_checkpoint": args.checkpoint_every}
    if ckpt is not None:
        load_learner_state(learner, ckpt["learner"])
        buffer.load_state_dict(ckpt["replay"])
        act_gen.set_state(ckpt["rng"]["act"])
        learn_gen.set_state(ckpt["rng"]["learn"])
        warmup_rng.bit_generator.state = ckpt["rng"]["warmup"]
        counters = dict(ckpt["counters"], next_checkpoint=ckpt["counters"]["env_steps"] + args.checkpoint_every)
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        run_dir = os.path.join("runs", args.run_name or f"{config['env']}__{KIND}__{config['seed']}__{int(time.time())}")
    os.makedirs(run_dir, exist_ok=True)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "config": config, "learner": learner_state(learner), "replay": buffer.state_dict(), "counters": counters,
            "rng": {"act": act_gen.get_state(), "learn": learn_gen.get_state(), "warmup": warmup_rng.bit_generator.state}})  # fmt: skip

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    # A resumed run hides what was logged after its checkpoint (tensorboard purges those steps).
    writer = SummaryWriter(run_dir, purge_step=counters["env_steps"] + 1 if ckpt is not None else None)
    writer.add_text("config", "\n".join(f"{k}: {v}" for k, v in {**asdict(args), **config}.items()))
    total = config["total_env_steps"]
    bar = tqdm(total=total, initial=counters["env_steps"], desc=KIND, unit="step", dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30)  # fmt: skip
    loss_log = torch.zeros(args.log_every, len(LOSS_TERMS))
    n_logged, shown, last_eval = 0, {}, None
    stop = StopRequest()
    sps_time, sps_steps = time.perf_counter(), counters["env_steps"]
    timing = {"eval_s": 0.0, "start": None, "start_steps": 0}  # for the learning phase's env steps/s
    try:
        while counters["env_steps"] < total and not stop.requested:
            # ---- one episode (checkpoints and evaluations happen only between episodes)
            if counters["env_steps"] >= counters["next_eval"]:
                eval_start = time.perf_counter()
                last_eval = evaluate(learner, config["env"], env_kwargs, args.eval_episodes, config["seed"])
                writer.add_scalar(f"charts/eval_{metric}", last_eval[metric], counters["env_steps"])
                writer.add_scalar("charts/eval_return", last_eval["return"], counters["env_steps"])
                shown["eval"] = f"{last_eval[metric]:.2f}"
                counters["next_eval"] = counters["env_steps"] + args.eval_every
                timing["eval_s"] += time.perf_counter() - eval_start
            # Each training episode has its own seed, so a resumed run sees the same episodes.
            state, _ = env.reset(seed=config["seed"] * 1_000_003 + counters["episodes"])
            episode_return, done = 0.0, False
            while not done:
                if counters["env_steps"] < config["warmup_steps"]:
                    action = warmup_rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
                else:
                    action = choose_action(learner, state, act_gen)
                next_state, reward, terminated, truncated, info = env.step(action)
                buffer.add(state, action, reward, next_state, terminated)  # truncation is not terminal
                state, done = next_state, terminated or truncated
                episode_return += reward
                counters["env_steps"] += 1
                if counters["env_steps"] >= config["warmup_steps"] and buffer.size >= 1:
                    if timing["start"] is None:
                        timing.update(start=time.perf_counter(), start_steps=counters["env_steps"], eval_s=0.0)
                    loss_log[n_logged] = sac_update(learner, buffer.sample(config["batch_size"], learn_gen), learn_gen)
                    n_logged += 1
                    counters["updates"] += 1
                if n_logged == args.log_every:
                    check_losses(loss_log, n_logged, counters["updates"] - n_logged + 1, ckpt_path)
                    means = loss_log.mean(0).tolist()
                    for name, value in zip(LOSS_TERMS, means):
                        tag = {"alpha_value": "charts/alpha", "entropy": "charts/entropy"}.get(name, f"losses/{name}")
                        writer.add_scalar(tag, value, counters["env_steps"])
                    shown.update(alpha=f"{means[4]:.3g}", entropy=f"{means[5]:.2f}")
                    n_logged = 0
            bar.update(counters["env_steps"] - bar.n)
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

    last_eval = evaluate(learner, config["env"], env_kwargs, args.eval_episodes, config["seed"])
    writer.add_scalar(f"charts/eval_{metric}", last_eval[metric], counters["env_steps"])
    writer.add_scalar("charts/eval_return", last_eval["return"], counters["env_steps"])
    writer.close()
    policy_path = os.path.join(run_dir, "policy.pt")
    save_checkpoint(policy_path, {"config": config, "policy": learner.policy.state_dict()}, kind=f"{KIND}_policy")
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
