"""SPiRL stage 1: learn a skill embedding and a state-conditioned skill prior from offline data.

Pertsch, Lee & Lim, "Accelerating Reinforcement Learning with Learned Skill Priors", CoRL 2020,
Sec. 3.2 and app. B.1. From random H-step windows (s_1..s_H+1, a_1..a_H) of the offline episodes we
train, jointly, with eq. 4:
  - a skill encoder q(z | a_1..a_H)        (LSTM over the actions -> diagonal Gaussian over Z),
  - a skill decoder p(a_1..a_H | z)        (LSTM unrolled H steps, z fed at every step),
  - a skill prior   p_a(z | s_1)           (MLP with BatchNorm -> diagonal Gaussian over Z; with
                                            --image, 3 conv layers on two stacked top-down frames first),
where the prior is fit to the *detached* posterior, so it never shapes the skill space.

    python spirl_pretrain.py --env kitchen --dataset path/to/kitchen.hdf5
    python spirl_pretrain.py --env maze --image                       # the paper's maze prior
    python spirl_pretrain.py --resume runs/<run>/checkpoint.pt --num-steps 200000
    python spirl_pretrain.py --resume runs/<run>/checkpoint.pt --prior-rollouts 20   # check a prior

The model classes live here, once; spirl_sac.py and the baselines import them from this file.
Details the paper leaves open follow the authors' code (clvrai/spirl), as noted where they appear.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import tyro

from envs import SpirlError, WindowSampler, env_spec, load_episodes, make_env, split_episodes

CHECKPOINT_FORMAT = 1


@dataclass
class Args:
    env: str = "kitchen"
    """task family whose state/action space the data and model use (kitchen, maze, block_stacking)"""
    dataset: str | None = None
    """Minari dataset id (e.g. D4RL/kitchen/mixed-v2, needs internet), local Minari directory, D4RL .hdf5 file, or spirl/kitchen-scripted-v0 (the kitchen default: scripted demos written by `python -m envs.kitchen_demos`)"""
    skill_horizon: int = 10
    """H: number of actions per skill (app. B.1: 10)"""
    latent_dim: int = 10
    """|Z|: dimension of the skill embedding space (app. B.1: 10)"""
    hidden_dim: int = 128
    """units of the encoder/decoder LSTMs and of each prior layer (app. B.1: 128)"""
    prior_layers: int = 6
    """hidden layers of the skill prior MLP (app. B.1: 6)"""
    image: bool = False
    """image skill prior (maze, block stacking): p_a(z | s) sees two stacked 32 x 32 frames (maze: top-down, block stacking: front view) through 3 conv layers instead of the state vector (app. B.1, C)"""
    beta: float | None = None
    """weight of KL(q || N(0, I)) in eq. 4, with the KL averaged over latent dims; default per env (kitchen 5e-4, maze and block stacking 1e-2), or the resumed run's"""
    lr: float = 1e-3
    """RAdam learning rate (app. B.1)"""
    batch_size: int = 128
    """windows per gradient step (the authors' code uses 128; the paper's text says 16)"""
    num_steps: int | None = None
    """total gradient steps; default 100000, or for --resume the resumed run's own total"""
    val_fraction: float = 0.01
    """fraction of episodes held out for validation (split by episode; at least one when there are two or more)"""
    val_every: int = 2_000
    """gradient steps between validation passes"""
    log_every: int = 100
    """gradient steps between logged loss means (and the NaN/inf check)"""
    checkpoint_every: int = 5_000
    """gradient steps between checkpoints (written atomically; also written at the end and on Ctrl-C)"""
    seed: int = 1
    """seed for torch, numpy, the episode split and window sampling"""
    run_name: str | None = None
    """name of the run folder runs/<run_name>/ (tensorboard logs and checkpoint.pt); default: derived from env, seed and time"""
    resume: str | None = None
    """checkpoint.pt to continue from (same env, sizes and H); logs continue in its folder"""
    prior_rollouts: int = 0
    """after training, run this many downstream episodes executing skills sampled from the learned prior and report their progress (kitchen: subtasks completed; maze: success rate)"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks (in order) for --prior-rollouts; default: microwave, kettle, bottom burner, light switch"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""


# Per-env weight of the embedding regulariser (app. B.1).
DEFAULT_BETA = {"kitchen": 5e-4, "maze": 1e-2, "block_stacking": 1e-2}
# The authors clamp the encoder's log sigma to this range; the reference is silent on the prior's head,
# which here gets the same clamp as a numerical guard (inactive in practice: a prior trained on
# kitchen-complete-v0 outputs raw log sigma in [-2.7, 0]).
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 2.0
# Image priors see two stacked RGB frames (previous, current) of 32 x 32 pixels (app. C), stored after
# the state vector in each observation, as the envs' image=True observations are laid out.
IMAGE_SHAPE = (6, 32, 32)
IMAGE_DIM = math.prod(IMAGE_SHAPE)
# The task-progress figure each env reports in `info` at an episode's end (as in spirl_sac.py).
PROGRESS_METRIC = {"kitchen": "subtasks_completed", "maze": "success", "block_stacking": "blocks_stacked"}


# ----------------------------------------------------------------------------- networks


def split_gaussian(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output (..., 2|Z|) -> (mu, log_sigma) of a diagonal Gaussian, log_sigma clamped."""
    mu, log_sigma = params.chunk(2, dim=-1)
    return mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p) -> torch.Tensor:
    """Per-dimension KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)), analytic (app. B.1)."""
    var_ratio = torch.exp(2 * (log_sigma_q - log_sigma_p))
    mean_term = ((mu_q - mu_p) * torch.exp(-log_sigma_p)).pow(2)
    return 0.5 * (var_ratio + mean_term - 1) - (log_sigma_q - log_sigma_p)


def gaussian_nll(x, mu, log_sigma) -> torch.Tensor:
    """Per-dimension -log N(x; mu, sigma)."""
    return 0.5 * ((x - mu) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)


class SkillEncoder(nn.Module):
    """q(z | a_1..a_H): linear action embedding -> 1-layer LSTM -> Gaussian head at the last step."""

    def __init__(self, action_dim: int, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.embed = nn.Linear(action_dim, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, batch_first=True)
        self.head = nn.Linear(hidden_dim, 2 * latent_dim)

    def forward_stepwise(self, actions: torch.Tensor):
        """The definition, written plainly (used by the tests as the reference for `forward`)."""
        out, _ = self.lstm(self.embed(actions))
        return split_gaussian(self.head(out[:, -1]))

    def forward(self, actions: torch.Tensor):
        """Same function and gradients as `forward_stepwise`, faster: the embedding and the LSTM's input
        weights are two linear maps in a row, applied as their product (9 -> 4*128 instead of 9 -> 128 -> 4*128)."""
        lstm = self.lstm
        w_ih = lstm.weight_ih_l0 @ self.embed.weight
        b_ih = lstm.bias_ih_l0 + lstm.weight_ih_l0 @ self.embed.bias
        h0 = actions.new_zeros(1, actions.shape[0], lstm.hidden_size)
        weights = [w_ih, lstm.weight_hh_l0, b_ih, lstm.bias_hh_l0]
        out, _, _ = torch.lstm(actions, (h0, h0), weights, True, 1, 0.0, self.training, False, True)
        return split_gaussian(self.head(out[:, -1]))


class SkillDecoder(nn.Module):
    """p(a_1..a_H | z): LSTM unrolled H steps with z an input at every step (app. B.1).

    As in the authors' code, each step also sees the previous predicted action (a learned vector at
    the first step); the output is the mean action (unit-variance Gaussian, eq. 4).
    """

    def __init__(self, action_dim: int, latent_dim: int, hidden_dim: int, skill_horizon: int):
        super().__init__()
        self.skill_horizon = skill_horizon
        self.latent_dim = latent_dim
        self.first_action = nn.Parameter(torch.zeros(action_dim))
        self.cell = nn.LSTMCell(latent_dim + action_dim, hidden_dim)  # input: [z, previous action]
        self.head = nn.Linear(hidden_dim, action_dim)
        # Constant inputs of the fused `forward`, made once (not saved in checkpoints).
        first_step = torch.zeros(skill_horizon, 1)
        first_step[0] = 1.0
        self.register_buffer("first_step", first_step, persistent=False)
        self.register_buffer("zero_bias", torch.zeros(4 * hidden_dim), persistent=False)

    def forward_stepwise(self, z: torch.Tensor) -> torch.Tensor:
        """The definition, written plainly (used by the tests as the reference for `forward`)."""
        action = self.first_action.expand(z.shape[0], -1)
        h = c = z.new_zeros(z.shape[0], self.cell.hidden_size)
        actions = []
        for _ in range(self.skill_horizon):
            h, c = self.cell(torch.cat([z, action], dim=-1), (h, c))
            action = self.head(h)
            actions.append(action)
        return torch.stack(actions, dim=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Same function and gradients as `forward_stepwise`, as one fused LSTM call (~1.3x faster on CPU).

        The fed-back action a_{t-1} = W_out h_{t-1} + b_out is linear in h_{t-1}, so its input term
        W_a a_{t-1} folds into the recurrent weights: W_hh + W_a W_out, bias + W_a b_out. Only step 1
        differs (it sees the learned first action and h_0 = 0): a 0/1 "first step" input corrects it.
        """
        cell, head, H, Z = self.cell, self.head, self.skill_horizon, self.latent_dim
        w_z, w_a = cell.weight_ih[:, :Z], cell.weight_ih[:, Z:]
        w_hh = cell.weight_hh + w_a @ head.weight
        bias = cell.bias_ih + cell.bias_hh + w_a @ head.bias
        w_ih = torch.cat([w_z, (w_a @ (self.first_action - head.bias))[:, None]], dim=1)
        inputs = torch.cat([z[:, None].expand(-1, H, -1), self.first_step.expand(z.shape[0], -1, -1)], dim=-1)
        h0 = z.new_zeros(1, z.shape[0], cell.hidden_size)
        weights = [w_ih, w_hh, bias, self.zero_bias]
        out, _, _ = torch.lstm(inputs, (h0, h0), weights, True, 1, 0.0, self.training, False, True)
        return head(out)


class SkillPrior(nn.Module):
    """p_a(z | s_1): `layers` x [Linear (no bias) -> BatchNorm -> LeakyReLU(0.2)] -> Gaussian head (app. B.1).

    With `image`, the input is an image observation [state, 2 stacked frames] and the prior sees only
    the frames, through 3 conv layers (kernel 3, stride 2, 8/16/32 channels, BatchNorm, LeakyReLU)
    whose 32 x 4 x 4 output is flattened into the MLP (app. B.1; the stride and BatchNorm, which the
    issue leaves open, follow the authors' conv encoder). As in the authors' image prior, the
    state vector is not an input: the maze's coordinates differ between the small training layouts and
    the large downstream maze, while a local view of the walls transfers.
    spirl_sac.py initialises the high-level policy pi(z | s) as an exact copy of this network.
    """

    def __init__(self, state_dim: int, latent_dim: int, hidden_dim: int, layers: int, image: bool = False,
                 state_features: str | None = None):  # fmt: skip
        super().__init__()
        self.config = dict(state_dim=state_dim, latent_dim=latent_dim, hidden_dim=hidden_dim, layers=layers, image=image,
                           state_features=state_features)  # fmt: skip
        self.state_dim = state_dim
        # "nearest_blocks" (block stacking without images): the MLP sees the gripper and the 5 blocks
        # nearest to it (envs/block_stacking.py), so the 5-block data and the 11-block task fit one net.
        self.features = None
        if state_features == "nearest_blocks":
            from envs.block_stacking import FEATURE_DIM, nearest_blocks

            self.features, state_dim = nearest_blocks, FEATURE_DIM
        self.conv, width = None, state_dim
        if image:
            convs, channels = [], IMAGE_SHAPE[0]
            for out in (8, 16, 32):
                convs += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
                channels = out
            # Channels-last layout: PyTorch's CPU convolutions with so few channels run several times faster in it.
            self.conv = nn.Sequential(*convs, nn.Flatten()).to(memory_format=torch.channels_last)
            width = 32 * (IMAGE_SHAPE[1] // 8) * (IMAGE_SHAPE[2] // 8)
        blocks = []
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.LeakyReLU(0.2)]
            width = hidden_dim
        self.net = nn.Sequential(*blocks, nn.Linear(width, 2 * latent_dim))

    def forward(self, observation: torch.Tensor):
        if self.conv is None:
            return split_gaussian(self.net(observation if self.features is None else self.features(observation)))
        # The frames are the observation's last IMAGE_DIM values, whatever the state's size before them
        # (block stacking: 23 dims in the 5-block data, 41 in the 11-block task).
        frames = observation[:, -IMAGE_DIM:].reshape(-1, *IMAGE_SHAPE).contiguous(memory_format=torch.channels_last)
        return split_gaussian(self.net(self.conv(frames)))


class SkillModel(nn.Module):
    """Encoder, decoder and prior of Fig. 2, built from a checkpoint's `config` dict."""

    def __init__(self, state_dim, action_dim, skill_horizon, latent_dim, hidden_dim, prior_layers, image=False,
                 state_features=None, **_):  # fmt: skip
        super().__init__()
        self.encoder = SkillEncoder(action_dim, latent_dim, hidden_dim)
        self.decoder = SkillDecoder(action_dim, latent_dim, hidden_dim, skill_horizon)
        self.skill_prior = SkillPrior(state_dim, latent_dim, hidden_dim, prior_layers, image, state_features)
        for m in self.modules():  # the authors' init: Xavier-normal weights, zero biases
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- losses


def skill_prior_loss(model: SkillModel, states: torch.Tensor, actions: torch.Tensor, beta: float,
                     observations: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 4 on a batch of windows; returns [reconstruction, regularization, prior, total].
    `observations`: the prior's input at each window's first step (default: the state s_1).

    The paper writes eq. 4 with "- beta KL"; minimising needs "+ beta KL" (the ELBO of eq. 1, negated).
    Scales follow the authors' code, which is what their beta values were tuned for: reconstruction is
    0.5 * squared error averaged over all action elements (unit-variance Gaussian NLL up to a constant),
    and both KLs are averaged over the latent dims.
    """
    mu_q, log_sigma_q = model.encoder(actions)
    z = mu_q + torch.exp(log_sigma_q) * torch.randn_like(mu_q)  # reparameterised sample of q(z|a)
    reconstruction = 0.5 * (model.decoder(z) - actions).pow(2).mean()
    zeros = torch.zeros_like(mu_q)
    regularization = gaussian_kl(mu_q, log_sigma_q, zeros, zeros).mean()  # KL(q || N(0, I))
    # Prior training: KL(stopgrad(q) || p_a(z | s_1)); the detach keeps the prior out of the encoder.
    mu_p, log_sigma_p = model.skill_prior(states[:, 0] if observations is None else observations)
    prior = gaussian_kl(mu_q.detach(), log_sigma_q.detach(), mu_p, log_sigma_p).mean()
    total = reconstruction + beta * regularization + prior
    return torch.stack([reconstruction, regularization, prior, total])


LOSS_TERMS = ("reconstruction", "kl", "prior", "total")


@torch.no_grad()
def evaluate_windows(model: SkillModel, windows: WindowSampler, limit: int | None = None) -> dict:
    """Reconstruction MSE (decoding the posterior mean) and prior NLL of that mean (nats per skill)."""
    model.eval()
    sq_err, nll, n = 0.0, 0.0, 0
    for _, actions, observations in windows.all_windows(batch_size=2048):
        mu_q, _ = model.encoder(actions)
        sq_err += (model.decoder(mu_q) - actions).pow(2).mean(dim=(1, 2)).sum()
        nll += gaussian_nll(mu_q, *model.skill_prior(observations)).sum()
        n += len(actions)
        if limit is not None and n >= limit:
            break
    model.train()
    return {"reconstruction_mse": float(sq_err / n), "prior_nll": float(nll / n)}


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str, model, optimizer, config: dict, step: int, generator: torch.Generator):
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "sampler": generator.get_state()},
    }
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        raise SpirlError(f"checkpoint {path} does not exist; pass the checkpoint.pt written by spirl_pretrain.py")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SpirlError(f"cannot read checkpoint {path} ({type(e).__name__}); it is corrupt or truncated, use another one") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "config" not in ckpt:
        raise SpirlError(f"{path} is not a spirl_pretrain.py checkpoint (format {CHECKPOINT_FORMAT})")
    ckpt["config"].setdefault("image", False)  # written before image priors existed
    return ckpt


def check_compatible(config: dict, path: str, **expected):
    """Raise a one-line error when the checkpoint was trained for another env, size or horizon."""
    names = {"env": "--env", "state_dim": "state dim", "action_dim": "action dim",
             "skill_horizon": "--skill-horizon (H)", "latent_dim": "--latent-dim (|Z|)",
             "hidden_dim": "--hidden-dim", "prior_layers": "--prior-layers", "seed": "--seed", "image": "--image",
             "val_fraction": "--val-fraction"}  # fmt: skip
    for key, want in expected.items():
        if want is not None and config.get(key) != want:
            raise SpirlError(
                f"checkpoint {path} has {names.get(key, key)} = {config.get(key)}, not {want}: "
                f"use a checkpoint trained with {names.get(key, key)} {want}, or match the checkpoint's settings"
            )


def load_skill_model(path: str, **expected) -> tuple[SkillModel, dict]:
    """Rebuild a trained SkillModel (eval mode) and its config; `expected` fields are checked.

    e.g. load_skill_model(path, env="kitchen", state_dim=30) in spirl_sac.py.
    """
    ckpt = read_checkpoint(path)
    check_compatible(ckpt["config"], path, **expected)
    model = SkillModel(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt["config"]


# ----------------------------------------------------------------------------- prior rollouts


@torch.no_grad()
def prior_rollouts(model: SkillModel, env_name: str, episodes: int, seed: int, env_kwargs: dict) -> dict:
    """Execute skills sampled from p_a(z | s) in the env (the authors' check of a learned prior).

    Every H steps: z ~ p_a(z | s), decoded once into H actions executed open-loop (clipped to the
    action space). z is sampled from the prior as is, without the tanh squashing of spirl_sac.py.
    Returns the mean of the env's progress metric (kitchen: subtasks; maze: success) and, for the
    kitchen, how often each subtask was completed.
    """
    model.eval()
    env = make_env(env_name, **env_kwargs)
    generator = torch.Generator().manual_seed(seed)
    metric, progress, per_task = PROGRESS_METRIC[env_name], [], {}
    for episode in range(episodes):
        state, info = env.reset(seed=seed + episode)
        done = False
        while not done:
            mu, log_sigma = model.skill_prior(torch.as_tensor(state)[None])
            z = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator)
            for action in model.decoder(z)[0].clamp(-1, 1).numpy():
                state, _, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                if done:
                    break
        progress.append(float(info.get(metric, 0)))
        for task in info.get("completed_tasks", ()):
            per_task[task] = per_task.get(task, 0) + 1
    env.close()
    return {
        "metric": metric,
        "mean": float(np.mean(progress)),
        "per_episode": progress,
        "task_rates": {t: per_task.get(t, 0) / episodes for t in getattr(env, "tasks", ())},
    }


# ----------------------------------------------------------------------------- training


def check_args(args: Args):
    env_spec(args.env)
    for name in ("skill_horizon", "latent_dim", "hidden_dim", "prior_layers", "batch_size", "log_every",
                 "val_every", "checkpoint_every"):  # fmt: skip
        if getattr(args, name) < 1:
            raise SpirlError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    if (args.num_steps or 0) < 0 or args.prior_rollouts < 0:
        raise SpirlError("--num-steps and --prior-rollouts must not be negative")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise SpirlError(f"--lr must be a positive number (got {args.lr})")
    if not 0 <= args.val_fraction < 1:
        raise SpirlError(f"--val-fraction must be in [0, 1) (got {args.val_fraction})")
    if args.beta is not None and not args.beta >= 0:
        raise SpirlError(f"--beta must be >= 0 (got {args.beta})")
    if args.tasks and args.env != "kitchen":
        raise SpirlError(f"--tasks chooses kitchen subtasks; drop it for --env {args.env}")
    if args.image and args.env not in ("maze", "block_stacking"):
        raise SpirlError(f"--image needs an env with image observations (maze, block_stacking); --env {args.env} has none")
    if args.prior_rollouts:  # fail now on a bad --tasks, not after hours of training
        make_env(args.env, **rollout_env_kwargs(args)).close()


def rollout_env_kwargs(args: Args) -> dict:
    return ({"tasks": args.tasks} if args.tasks else {}) | ({"image": True} if args.image else {})


def first_nonfinite(loss_log: torch.Tensor, n: int, first_step: int, ckpt_path: str):
    """Stop on NaN/inf: name the step and the loss term (checked once per log interval, no per-step sync)."""
    finite = torch.isfinite(loss_log[:n])
    if bool(finite.all()):
        return
    row, col = (~finite).nonzero()[0].tolist()
    kept = f"last good checkpoint kept at {ckpt_path}" if os.path.exists(ckpt_path) else "no checkpoint was written"
    raise SpirlError(
        f"{LOSS_TERMS[col]} loss became {loss_log[row, col].item()} at step {first_step + row}; "
        f"lower --lr or check the dataset's scale ({kept})"
    )


def resolve_config(args: Args, ckpt: dict | None) -> dict:
    """Everything that defines the model and its training data; stored in every checkpoint.

    A resumed run must match its checkpoint's env, sizes, H, |Z| and episode split (seed, validation
    fraction); the dataset, beta and total steps default to the checkpoint's own.
    """
    spec = env_spec(args.env)
    saved = ckpt["config"] if ckpt else {}
    if ckpt is not None:
        check_compatible(saved, args.resume, env=args.env, skill_horizon=args.skill_horizon,
                         latent_dim=args.latent_dim, hidden_dim=args.hidden_dim, prior_layers=args.prior_layers,
                         seed=args.seed, val_fraction=args.val_fraction, image=args.image)  # fmt: skip
    dataset = args.dataset or saved.get("dataset") or spec["default_dataset"]
    if saved and saved["dataset"] != dataset:
        print(f"warning: resuming a model trained on {saved['dataset']} with data from {dataset}", file=sys.stderr)
    return {
        "env": args.env, "state_dim": spec["state_dim"], "action_dim": spec["action_dim"],
        "skill_horizon": args.skill_horizon, "latent_dim": args.latent_dim, "hidden_dim": args.hidden_dim,
        "prior_layers": args.prior_layers, "image": args.image, "dataset": dataset, "seed": args.seed, "val_fraction": args.val_fraction,
        # Block stacking's state prior sees features that fit both its 5-block data and the 11-block task.
        "state_features": "nearest_blocks" if args.env == "block_stacking" and not args.image else None,
        "beta": args.beta if args.beta is not None else saved.get("beta", DEFAULT_BETA[args.env]),
        "num_steps": args.num_steps if args.num_steps is not None else saved.get("num_steps", 100_000),
        "lr": args.lr, "batch_size": args.batch_size,
    }  # fmt: skip


def load_windows(config: dict) -> tuple[WindowSampler, WindowSampler | None]:
    """Episodes -> split by episode -> H-step windows (never across an episode boundary)."""
    episodes = load_episodes(config["dataset"], config["env"])
    train_episodes, val_episodes = split_episodes(episodes, config["val_fraction"], config["seed"])
    observe = [None, None]
    if config["image"] and config["env"] == "block_stacking":  # frames rendered per batch from the states
        from envs.block_stacking import DatasetViews as BlockViews

        observe = [BlockViews(), BlockViews()]
    elif config["image"]:  # the maze's frames are rendered per batch from each episode's layout
        from envs.maze import DatasetViews

        if any(e.seed is None for e in episodes):
            raise SpirlError(f"{config['dataset']} stores no per-episode env seeds, so its maze layouts (and images) "
                             f"cannot be rebuilt: use data written by `python -m envs.maze_demos`")  # fmt: skip
        observe = [DatasetViews([e.seed for e in part]) for part in (train_episodes, val_episodes)]
    train_windows = WindowSampler(train_episodes, config["skill_horizon"], observe[0])
    val_windows = WindowSampler(val_episodes, config["skill_horizon"], observe[1]) if val_episodes else None
    print(f"{config['dataset']}: {len(train_episodes)} train / {len(val_episodes)} validation episodes, "
          f"{train_windows.num_windows} train windows of H={config['skill_horizon']}")  # fmt: skip
    return train_windows, val_windows


def log_validation(writer, model, train_windows, val_windows, step) -> dict:
    """Validation on held-out episodes, and the same metrics on (up to 4096) training windows."""
    metrics = {"val": evaluate_windows(model, val_windows), "train": evaluate_windows(model, train_windows, limit=4096)}
    for split, values in metrics.items():
        for name, value in values.items():
            writer.add_scalar(f"{split}/{name}", value, step)
    return metrics


def report(args: Args, config: dict, model, writer, metrics: dict | None, step: int) -> dict:
    """Final figures: reconstruction and prior NLL, then (optionally) prior rollouts in the env."""
    result = {"step": step, **(metrics or {})}
    if metrics:
        print(f"step {step}: reconstruction MSE train {metrics['train']['reconstruction_mse']:.5f} / "
              f"validation {metrics['val']['reconstruction_mse']:.5f}; prior NLL train "
              f"{metrics['train']['prior_nll']:.3f} / validation {metrics['val']['prior_nll']:.3f} nats per skill")  # fmt: skip
    if args.prior_rollouts:
        start = time.perf_counter()
        rollouts = prior_rollouts(model, config["env"], args.prior_rollouts, config["seed"], rollout_env_kwargs(args))
        writer.add_scalar(f"eval/prior_rollout_{rollouts['metric']}", rollouts["mean"], step)
        rates = ", ".join(f"{t} {r:.0%}" for t, r in rollouts["task_rates"].items())
        print(f"prior rollouts ({args.prior_rollouts} episodes, {time.perf_counter() - start:.0f}s): "
              f"{rollouts['mean']:.2f} {rollouts['metric'].replace('_', ' ')} on average"
              + (f"; per subtask: {rates}" if rates else ""))  # fmt: skip
        result["prior_rollouts"] = rollouts
    return result


def train(args: Args) -> dict:
    check_args(args)
    ckpt = read_checkpoint(args.resume) if args.resume else None
    config = resolve_config(args, ckpt)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    train_windows, val_windows = load_windows(config)

    model = SkillModel(**config)
    optimizer = torch.optim.RAdam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), foreach=True)
    generator = torch.Generator().manual_seed(config["seed"])  # draws the training windows
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        generator.set_state(ckpt["rng"]["sampler"])
        step = ckpt["step"]
        run_dir = os.path.dirname(os.path.abspath(args.resume))
    else:
        run_dir = os.path.join("runs", args.run_name or f"{args.env}__spirl_pretrain__{config['seed']}__{int(time.time())}")
    os.makedirs(run_dir, exist_ok=True)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    # A resumed run hides what was logged after its checkpoint (tensorboard purges those steps).
    writer = SummaryWriter(run_dir, purge_step=step + 1 if ckpt is not None else None)
    writer.add_text("config", "\n".join(f"{k}: {v}" for k, v in {**asdict(args), **config}.items()))
    num_steps, beta = config["num_steps"], config["beta"]
    loss_log = torch.zeros(args.log_every, len(LOSS_TERMS))  # per-step losses, checked and averaged per interval
    n_logged, interval_start, interval_step = 0, time.perf_counter(), step
    shown, metrics = {}, None
    # A terminal gets a live bar; a log file (nohup ... > log) gets a progress line every 30 s.
    bar = tqdm(total=num_steps, initial=step, desc="pretrain", dynamic_ncols=True,
               mininterval=1 if sys.stderr.isatty() else 30)  # fmt: skip
    if val_windows is not None and step == 0:  # where training starts (evaluation draws no random numbers)
        metrics = log_validation(writer, model, train_windows, val_windows, step)
    try:
        while step < num_steps:
            states, actions, observations = train_windows.sample(args.batch_size, generator)
            losses = skill_prior_loss(model, states, actions, beta, observations)
            optimizer.zero_grad(set_to_none=True)
            losses[3].backward()
            optimizer.step()
            loss_log[n_logged] = losses.detach()
            n_logged += 1
            step += 1
            bar.update(1)

            if n_logged == args.log_every or step == num_steps:
                first_nonfinite(loss_log, n_logged, step - n_logged + 1, ckpt_path)
                means = loss_log[:n_logged].mean(0).tolist()
                for name, value in zip(LOSS_TERMS, means):
                    writer.add_scalar(f"losses/{name}", value, step)
                samples_per_s = (step - interval_step) * args.batch_size / (time.perf_counter() - interval_start)
                writer.add_scalar("charts/samples_per_s", samples_per_s, step)
                shown.update(rec=f"{means[0]:.4g}", kl=f"{means[1]:.3g}", prior=f"{means[2]:.3g}",
                             samples_s=int(samples_per_s))  # fmt: skip
                bar.set_postfix(shown, refresh=False)
                n_logged, interval_start, interval_step = 0, time.perf_counter(), step
            if val_windows is not None and (step % args.val_every == 0 or step == num_steps):
                metrics = log_validation(writer, model, train_windows, val_windows, step)
                shown.update(val_rec=f"{metrics['val']['reconstruction_mse']:.4g}")
            if step % args.checkpoint_every == 0 or step == num_steps:
                first_nonfinite(loss_log, n_logged, step - n_logged + 1, ckpt_path)
                save_checkpoint(ckpt_path, model, optimizer, config, step, generator)
    except KeyboardInterrupt:
        first_nonfinite(loss_log, n_logged, step - n_logged + 1, ckpt_path)
        save_checkpoint(ckpt_path, model, optimizer, config, step, generator)
        print(f"\ninterrupted at step {step}; checkpoint saved: continue with --resume {ckpt_path}")
        return {"checkpoint": ckpt_path, "step": step}
    finally:  # also on errors (e.g. a NaN loss), so nothing is left half-printed or unflushed
        bar.close()
        writer.flush()
    if not os.path.exists(ckpt_path):  # --num-steps 0: nothing trained, nothing saved yet
        save_checkpoint(ckpt_path, model, optimizer, config, step, generator)
    if val_windows is not None and metrics is None:
        metrics = log_validation(writer, model, train_windows, val_windows, step)
    result = {"checkpoint": ckpt_path, **report(args, config, model, writer, metrics, step)}
    writer.close()
    print(f"checkpoint: {ckpt_path}")
    return result


def main(argv: list[str] | None = None):
    args = tyro.cli(Args, args=argv, description=__doc__.split("\n\n")[0])
    try:
        return train(args)
    except SpirlError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
