"""SPiRL stage 1: learn a skill embedding and a state-conditioned skill prior from offline data.

Pertsch, Lee & Lim, "Accelerating Reinforcement Learning with Learned Skill Priors", CoRL 2020,
Sec. 3.2 and app. B.1. From random H-step windows (s_1..s_H+1, a_1..a_H) of the offline episodes we
train, jointly, with eq. 4:
  - a skill encoder q(z | a_1..a_H)        (LSTM over the actions -> diagonal Gaussian over Z),
  - a skill decoder p(a_1..a_H | z)        (LSTM unrolled H steps, z fed at every step; with --closed-loop
                                            the authors' later variant: an MLP on [s_t, z] for each a_t),
  - a skill prior   p_a(z | s_1)           (MLP with BatchNorm -> diagonal Gaussian over Z; with
                                            --image, 3 conv layers on two stacked top-down frames first),
where the prior is fit to the *detached* posterior, so it never shapes the skill space.

    python spirl_pretrain.py --env kitchen --dataset path/to/kitchen.hdf5
    python spirl_pretrain.py --env maze --image                       # the paper's maze prior
    python spirl_pretrain.py --resume runs/<run>/checkpoint.pt --num-steps 200000   # repeat its --env, --image
    python spirl_pretrain.py --resume runs/<run>/checkpoint.pt --prior-rollouts 20   # check a prior

The model classes live here, once; spirl_sac.py and the baselines import them from this file.
Details the paper leaves open follow the authors' code (clvrai/spirl), as noted where they appear.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from envs import SpirlError, WindowSampler, env_spec, make_env, runs, skill_windows


@dataclass
class Args:
    env: str = "kitchen"
    """task family whose state/action space the data and model use (kitchen, maze, block_stacking)"""
    dataset: str | None = None
    """Minari dataset id (e.g. D4RL/kitchen/mixed-v2, needs internet), local Minari directory, D4RL .hdf5 file, or
    spirl/kitchen-scripted-v0 (the kitchen default: scripted demos written by `python -m envs.kitchen_demos`)"""
    skill_horizon: int = 10
    """H: number of actions per skill (app. B.1: 10)"""
    latent_dim: int = 10
    """|Z|: dimension of the skill embedding space (app. B.1: 10)"""
    hidden_dim: int = 128
    """units of the encoder/decoder LSTMs and of each prior layer (app. B.1: 128)"""
    prior_layers: int = 6
    """hidden layers of the skill prior MLP (app. B.1: 6)"""
    prior_input_block: bool = False
    """the authors' prior layout: an input block (Linear -> LeakyReLU) before the BatchNorm blocks. Off: measured worse
    here (kitchen-complete-v0: prior NLL 5.8 vs 4.1 at 2k steps; scripted kitchen data: diverges at lr 1e-3)"""
    closed_loop: bool = False
    """the authors' closed-loop skill decoder (their SPiRL v2): an MLP decodes each action from [s_t, z] as the skill
    runs, and the encoder also sees the states; default: the paper's open-loop LSTM decoder"""
    conditioned_decoder: bool = False
    """app. D's state-conditioned decoder (Fig. 9), with the open-loop decoder: the first state s_1 (what the prior
    reads of it: the state, or the frames through their own conv layers) predicts the decoder LSTM's initial state
    and first input, and the encoder sees it beside each action, as the authors' cond_decode"""
    decoder_frames: bool = False
    """with --image --closed-loop (maze, block stacking): the closed-loop decoder and its encoder read the two stacked
    frames at every step through their own conv layers, as the authors' ImageClSPiRLMdl (their maze and block-stacking
    "hierarchical_cl" configs), instead of the state or --block-features (the frames of all H + 1 steps of each
    window are rendered per batch: several times slower)"""
    block_features: Literal["nearest_blocks", "local_blocks"] | None = None
    """block stacking: what the state prior and the closed-loop decoder read of a state (envs/block_stacking.py):
    the gripper and its 5 nearest blocks relative to it, or the same without the gripper's position along the table;
    default nearest_blocks, or the resumed run's"""
    image: bool = False
    """image skill prior (maze, block stacking): p_a(z | s) sees two stacked 32 x 32 frames (maze: top-down, block
    stacking: front view) through 3 conv layers instead of the state vector (app. B.1, C)"""
    beta: float | None = None
    """weight of KL(q || N(0, I)) in eq. 4, with the KL averaged over latent dims; default per env (app. B.1:
    kitchen 5e-4, maze and block stacking 1e-2), or the resumed run's"""
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
    """seed for torch (network init, posterior samples), the episode split and window sampling"""
    run_name: str | None = None
    """run folder runs/<run_name>/ (tensorboard logs and checkpoint.pt); default: derived from env, seed and time"""
    resume: str | None = None
    """checkpoint.pt to continue from; give its --env, --image and sizes again (a mismatch is a one-line error naming
    the flag to add); logs continue in its folder, or in runs/<run-name> when --run-name is given"""
    prior_rollouts: int = 0
    """after training, run this many downstream episodes executing skills sampled from the learned prior and report
    their progress (kitchen: subtasks completed; maze: success rate)"""
    tasks: tuple[str, ...] | None = None
    """kitchen subtasks (in order) for --prior-rollouts; default: microwave, kettle, bottom burner, light switch"""
    device: str | None = None
    """torch device of the model and its updates (default: cuda when available, else cpu)"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""
    fused_lstm: bool = True
    """speed (on by default): the encoder and decoder run as one fused torch.lstm call each (`forward_fused`: the
    same function and gradients as the plain `forward`, checked in the tests); --no-fused-lstm runs the plain one"""
    prefetch: bool = True
    """speed (on by default): the next batch is drawn and rendered in a background thread while the current
    gradient step runs (`BatchPrefetcher`: the same batches in the same order, resumes exactly); image data, whose
    frames are rendered per batch, gains most"""


# The authors clamp the encoder's log sigma to this range; the reference is silent on the prior's head,
# which here gets the same clamp as a numerical guard (inactive in practice: a prior trained on
# kitchen-complete-v0 outputs raw log sigma in [-2.7, 0]).
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -10.0, 2.0
# Image priors see two stacked RGB frames (previous, current) of 32 x 32 pixels (app. C), stored after
# the state vector in each observation, as the envs' image=True observations are laid out.
IMAGE_SHAPE = (6, 32, 32)
IMAGE_DIM = math.prod(IMAGE_SHAPE)
LOSS_TAGS = ("losses/reconstruction", "losses/kl", "losses/prior", "losses/total")  # skill_prior_loss's values


# ----------------------------------------------------------------------------- networks


def split_gaussian(params: torch.Tensor, straight_through: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Head output (..., 2|Z|) -> (mu, log_sigma) of a diagonal Gaussian, log_sigma clamped. `straight_through`:
    the clamped value with the unclamped gradient (spirl_sac.py --straight-through-clamps)."""
    mu, log_sigma = params.chunk(2, dim=-1)
    clamped = log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)
    return mu, (log_sigma + (clamped - log_sigma).detach()) if straight_through else clamped


def gaussian_kl(mu_q, log_sigma_q, mu_p, log_sigma_p) -> torch.Tensor:
    """Per-dimension KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)), analytic (app. B.1)."""
    var_ratio = torch.exp(2 * (log_sigma_q - log_sigma_p))
    mean_term = ((mu_q - mu_p) * torch.exp(-log_sigma_p)).pow(2)
    return 0.5 * (var_ratio + mean_term - 1) - (log_sigma_q - log_sigma_p)


def gaussian_nll(x, mu, log_sigma) -> torch.Tensor:
    """Per-dimension -log N(x; mu, sigma)."""
    return 0.5 * ((x - mu) * torch.exp(-log_sigma)).pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)


class SkillEncoder(nn.Module):
    """q(z | a_1..a_H): linear action embedding -> 1-layer LSTM -> Gaussian head at the last step. With the
    closed-loop decoder each step's input is [a_t, s_t], as in the authors' closed-loop model."""

    def __init__(self, input_dim: int, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.embed = nn.Linear(input_dim, hidden_dim)
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, batch_first=True)
        self.head = nn.Linear(hidden_dim, 2 * latent_dim)

    def forward(self, inputs: torch.Tensor):
        out, _ = self.lstm(self.embed(inputs))
        return split_gaussian(self.head(out[:, -1]))

    def forward_fused(self, inputs: torch.Tensor):
        """`forward`, faster (--fused-lstm): the embedding and the LSTM's input weights are two linear maps in a
        row, applied as their product (9 -> 4*128 instead of 9 -> 128 -> 4*128)."""
        lstm = self.lstm
        w_ih = lstm.weight_ih_l0 @ self.embed.weight
        b_ih = lstm.bias_ih_l0 + lstm.weight_ih_l0 @ self.embed.bias
        h0 = inputs.new_zeros(1, inputs.shape[0], lstm.hidden_size)
        weights = [w_ih, lstm.weight_hh_l0, b_ih, lstm.bias_hh_l0]
        out, _, _ = torch.lstm(inputs, (h0, h0), weights, True, 1, 0.0, self.training, False, True)
        return split_gaussian(self.head(out[:, -1]))


class SkillDecoder(nn.Module):
    """p(a_1..a_H | z): LSTM unrolled H steps with z an input at every step (app. B.1).

    As in the authors' code, each step also sees the previous predicted action (a learned vector at
    the first step); the output is the mean action (unit-variance Gaussian, eq. 4). With
    `learned_initial_state` the LSTM's initial (h, c) is learned too, as the authors' (else zeros).
    """

    closed_loop = False

    def __init__(self, action_dim, latent_dim, hidden_dim, skill_horizon, learned_initial_state=False):
        super().__init__()
        self.skill_horizon, self.latent_dim = skill_horizon, latent_dim
        self.first_action = nn.Parameter(torch.zeros(action_dim))
        if learned_initial_state:
            self.initial_state = nn.Parameter(torch.zeros(2, hidden_dim))
        else:  # zeros, not saved (models trained before the learned state existed load unchanged)
            self.register_buffer("initial_state", torch.zeros(2, hidden_dim), persistent=False)
        self.cell = nn.LSTMCell(latent_dim + action_dim, hidden_dim)  # input: [z, previous action]
        self.head = nn.Linear(hidden_dim, action_dim)

    def forward(self, z: torch.Tensor, start=None) -> torch.Tensor:
        """(B, |Z|) skills -> (B, H, A) actions. `start`: each skill's own (first input, h, c), as the state-conditioned
        decoder predicts them (ConditionedSkillDecoder); default: the learned ones."""
        if start is None:
            start = (self.first_action.expand(z.shape[0], -1), *self.initial_state[:, None].expand(-1, z.shape[0], -1))
        action, h, c = start
        actions = []
        for _ in range(self.skill_horizon):
            h, c = self.cell(torch.cat([z, action], dim=-1), (h, c))
            action = self.head(h)
            actions.append(action)
        return torch.stack(actions, dim=1)

    def forward_fused(self, z: torch.Tensor) -> torch.Tensor:
        """`forward` as one fused LSTM call, faster (--fused-lstm). The fed-back action a_{t-1} = W_out h_{t-1} + b_out
        is linear in h_{t-1}, so its input term W_a a_{t-1} folds into the recurrent weights: W_hh + W_a W_out, bias
        + W_a b_out. Only step 1 differs (it sees the learned first action, not W_out h_0 + b_out): a 0/1 input
        corrects it."""
        cell, head, H = self.cell, self.head, self.skill_horizon
        w_z, w_a = cell.weight_ih.split([self.latent_dim, head.out_features], dim=1)
        first_step = torch.eye(H, 1, dtype=z.dtype, device=z.device).expand(z.shape[0], -1, -1)  # 1 at step 1, else 0
        inputs = torch.cat([z[:, None].expand(-1, H, -1), first_step], dim=-1)
        h0, c0 = self.initial_state[:, None, None].expand(-1, 1, z.shape[0], -1)
        first_correction = w_a @ (self.first_action - head.bias) - w_a @ head.weight @ self.initial_state[0]
        w_ih = torch.cat([w_z, first_correction[:, None]], dim=1)
        weights = [w_ih, cell.weight_hh + w_a @ head.weight, cell.bias_ih + w_a @ head.bias, cell.bias_hh]
        out, _, _ = torch.lstm(inputs, (h0, c0), weights, True, 1, 0.0, self.training, False, True)
        return head(out)

    def plan(self, z: torch.Tensor, first_states: torch.Tensor) -> torch.Tensor:
        """The H actions of skills z (B, |Z|) started in `first_states` (B, S or O), which this decoder does not read
        (the RL scripts call every open-loop decoder so)."""
        return self(z)


def mlp_blocks(width: int, hidden_dim: int, layers: int, input_block: bool) -> list[nn.Module]:
    """`layers` x [Linear (no bias) -> BatchNorm -> LeakyReLU(0.2)], after an input block Linear -> LeakyReLU(0.2)
    without BatchNorm when `input_block` (the authors' BaseProcessingNet)."""
    blocks = [nn.Linear(width, hidden_dim), nn.LeakyReLU(0.2)] if input_block else []
    for _ in range(layers):
        width = hidden_dim if blocks else width
        blocks += [nn.Linear(width, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.LeakyReLU(0.2)]
    return blocks


def state_feature_map(name: str | None, state_dim: int):
    """(f, width): what a closed-loop decoder and its encoder read of a state (..., S) -> (..., width). None: the
    state itself. Block stacking: "nearest_blocks" (the gripper and its 5 nearest blocks, 23 values that exist in the
    5-block data and the 11-block task alike) or "local_blocks" (envs/block_stacking.py); "frames": an image
    observation's two frames through conv layers, as the authors' image model (FrameFeatures)."""
    if name is None:
        return (lambda states: states), state_dim
    if name == "frames":
        return FrameFeatures(), FrameFeatures.width
    from envs.block_stacking import STATE_FEATURES

    f, width = STATE_FEATURES[name]
    return (lambda states: f(states.flatten(0, -2)).unflatten(0, states.shape[:-1])), width


def conv_layers() -> nn.Sequential:
    """Two stacked 32 x 32 RGB frames (6 channels) -> 32 x 4 x 4 features, flattened: 3 conv layers (kernel 3,
    stride 2, 8/16/32 channels, BatchNorm, LeakyReLU) in the channels-last layout (PyTorch's CPU convolutions with so
    few channels run several times faster in it)."""
    convs, channels = [], IMAGE_SHAPE[0]
    for out in (8, 16, 32):
        convs += [nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
        channels = out
    return nn.Sequential(*convs, nn.Flatten()).to(memory_format=torch.channels_last)


class FrameFeatures(nn.Module):
    """What the closed-loop decoder and its encoder read of an image observation when they read the frames, as the
    authors' ImageClSPiRLMdl: the observation's two stacked frames (its last IMAGE_DIM values, in [0, 1]) through
    their own conv layers (trained by the reconstruction loss; the prior has its own), (..., O) -> (..., 512)."""

    width = 32 * (IMAGE_SHAPE[1] // 8) * (IMAGE_SHAPE[2] // 8)

    def __init__(self):
        super().__init__()
        self.conv = conv_layers()

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        frames = observations[..., -IMAGE_DIM:].reshape(-1, *IMAGE_SHAPE) * 2 - 1  # in [-1, 1], as the prior's
        return self.conv(frames.contiguous(memory_format=torch.channels_last)).unflatten(0, observations.shape[:-1])


def state_part(observations: torch.Tensor, state_dim: int) -> torch.Tensor:
    """The state of an observation (..., O): image observations put the frames (IMAGE_DIM values) after a state of
    any size up to `state_dim` (block stacking: 23 values in the 5-block scene, 41 in the task); other observations
    start with the state (the kitchen's 60 values: the 30 of the state first)."""
    return observations[..., :-IMAGE_DIM] if observations.shape[-1] > IMAGE_DIM else observations[..., :state_dim]


class ClosedLoopSkillDecoder(nn.Module):
    """p(a_t | s_t, z): the authors' closed-loop decoder (their SPiRL v2): an MLP on [s_t, z] gives each of the H
    actions from the state the skill has reached, so a skill can correct its course. Their kitchen config: an input
    block and 5 BatchNorm blocks of 128 units, then the mean action (unit-variance Gaussian, eq. 4). Trained on the
    data's states s_1..s_H; the RL scripts call it once per env step."""

    closed_loop = True

    def __init__(self, state_dim, action_dim, latent_dim, hidden_dim, skill_horizon, state_features=None):
        super().__init__()
        self.state_dim, self.latent_dim, self.skill_horizon = state_dim, latent_dim, skill_horizon
        self.features, self.feature_dim = state_feature_map(state_features, state_dim)
        self.reads_frames = state_features == "frames"
        self.net = nn.Sequential(
            *mlp_blocks(self.feature_dim + latent_dim, hidden_dim, 5, True), nn.Linear(hidden_dim, action_dim)
        )

    def read(self, states: torch.Tensor) -> torch.Tensor:
        """What the decoder (and the encoder) see of states or observations (..., S or O) -> (..., feature_dim)."""
        return self.features(states if self.reads_frames else state_part(states, self.state_dim))

    def forward(self, states: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, H, S) states and (B, |Z|) skills -> (B, H, A) actions; or one step: (B, S), (B, |Z|) -> (B, A)."""
        states = self.read(states)
        if states.dim() == 2:
            return self.net(torch.cat([states, z], dim=-1))
        z = z[:, None].expand(-1, states.shape[1], -1)
        return self.net(torch.cat([states, z], dim=-1).flatten(0, 1)).unflatten(0, states.shape[:2])


class ConditionedSkillDecoder(nn.Module):
    """App. D: the open-loop decoder conditioned on the skill's first state s_1, as the authors' cond_decode. What the
    prior reads of s_1 (the state, or an image observation's frames through this decoder's own conv layers) goes
    through an MLP the size of the prior to the LSTM's initial (h, c) and first input action; the H actions then
    follow from z as in SkillDecoder. The encoder sees the same features beside each action (`read`). The authors
    predict the initial state and the first input with two such MLPs; one MLP with both outputs here."""

    closed_loop = False

    def __init__(self, state_dim, action_dim, latent_dim, hidden_dim, skill_horizon, layers, image, state_features):
        super().__init__()
        self.state_dim, self.latent_dim = state_dim, latent_dim
        self.skill_horizon, self.hidden_dim, self.image = skill_horizon, hidden_dim, image
        if image:
            self.features, self.feature_dim = FrameFeatures(), FrameFeatures.width
        else:
            self.features, self.feature_dim = state_feature_map(state_features, state_dim)
        self.start = nn.Sequential(
            *mlp_blocks(self.feature_dim, hidden_dim, layers, False), nn.Linear(hidden_dim, action_dim + 2 * hidden_dim)
        )
        self.lstm = SkillDecoder(action_dim, latent_dim, hidden_dim, skill_horizon)

    def read(self, first_states: torch.Tensor) -> torch.Tensor:
        """(B, S or O) -> (B, feature_dim): the features of s_1 (an image model reads the observation's frames)."""
        return self.features(first_states if self.image else state_part(first_states, self.state_dim))

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(B, |Z|) skills and (B, feature_dim) features of their first states -> (B, H, A) actions."""
        sizes = [self.lstm.first_action.shape[0], self.hidden_dim, self.hidden_dim]
        return self.lstm(z, self.start(features).split(sizes, dim=-1))

    def plan(self, z: torch.Tensor, first_states: torch.Tensor) -> torch.Tensor:
        """The H actions of skills z (B, |Z|) started in `first_states` (B, S or O), as the RL scripts decode."""
        return self(z, self.read(first_states))


class SkillPrior(nn.Module):
    """p_a(z | s_1): `layers` x [Linear (no bias) -> BatchNorm -> LeakyReLU(0.2)] -> Gaussian head (app. B.1), after
    an input block without BatchNorm when `input_block` (the authors' layout: 7 hidden linear layers for 6 blocks).

    With `image`, the input is an image observation [state, 2 stacked frames] and the prior sees only
    the frames, through 3 conv layers (kernel 3, stride 2, 8/16/32 channels, BatchNorm, LeakyReLU)
    whose 32 x 4 x 4 output is flattened into the MLP (app. B.1; the stride and BatchNorm, which the
    paper leaves open, follow the authors' conv encoder). As in the authors' image prior, the
    state vector is not an input: the maze's coordinates differ between the small training layouts and
    the large downstream maze, while a local view of the walls transfers.
    spirl_sac.py initialises the high-level policy pi(z | s) as an exact copy of this network.
    """

    def __init__(
        self,
        state_dim,
        latent_dim,
        hidden_dim,
        layers,
        image=False,
        state_features=None,
        input_block=False,
        centred_frames=False,
    ):
        super().__init__()
        sizes = dict(state_dim=state_dim, latent_dim=latent_dim, hidden_dim=hidden_dim, layers=layers)
        extras = dict(
            image=image, state_features=state_features, input_block=input_block, centred_frames=centred_frames
        )
        self.config = sizes | extras
        # The frames enter the conv layers in [-1, 1] as the authors' (models trained before: in [0, 1]).
        self.centred_frames = centred_frames
        # "nearest_blocks" (block stacking without images): the MLP sees the gripper and the 5 blocks
        # nearest to it (envs/block_stacking.py), so the 5-block data and the 11-block task fit one net.
        self.features = None
        if state_features is not None:
            from envs.block_stacking import STATE_FEATURES

            self.features, state_dim = STATE_FEATURES[state_features]
        self.conv, width = None, state_dim
        if image:
            self.conv, width = conv_layers(), FrameFeatures.width
        blocks = mlp_blocks(width, hidden_dim, layers, input_block)
        self.net = nn.Sequential(*blocks, nn.Linear(hidden_dim if blocks else width, 2 * latent_dim))
        self.straight_through = False  # log sigma's clamp passes its gradient (set on an RL policy only)

    def forward(self, observation: torch.Tensor):
        if self.conv is None:
            params = self.net(observation if self.features is None else self.features(observation))
            return split_gaussian(params, self.straight_through)
        # The frames are the observation's last IMAGE_DIM values, whatever the state's size before them
        # (block stacking: 23 dims in the 5-block data, 41 in the 11-block task).
        frames = observation[:, -IMAGE_DIM:].reshape(-1, *IMAGE_SHAPE).contiguous(memory_format=torch.channels_last)
        frames = frames * 2 - 1 if self.centred_frames else frames  # observations hold them in [0, 1]
        return split_gaussian(self.net(self.conv(frames)), self.straight_through)


class SkillModel(nn.Module):
    """Encoder, decoder and prior of Fig. 2, built from a checkpoint's `config` dict (`rest`: the data and settings
    the model was trained with). `prior_input_block` and `learned_initial_state` are the authors' layout (models
    trained before it was matched have neither)."""

    def __init__(
        self,
        state_dim,
        action_dim,
        skill_horizon,
        latent_dim,
        hidden_dim,
        prior_layers,
        image=False,
        state_features=None,
        closed_loop=False,
        prior_input_block=False,
        learned_initial_state=False,
        decoder_state_features=None,
        centred_frames=False,
        conditioned_decoder=False,
        **rest,
    ):
        super().__init__()
        self.closed_loop, self.conditioned = closed_loop, conditioned_decoder
        if conditioned_decoder:  # app. D: the encoder also reads the features of s_1
            sizes = (state_dim, action_dim, latent_dim, hidden_dim, skill_horizon, prior_layers, image, state_features)
            decoder = ConditionedSkillDecoder(*sizes)
            width = decoder.feature_dim
        elif closed_loop:  # the encoder reads the states as the decoder does (with the frames: the same conv layers)
            sizes = (state_dim, action_dim, latent_dim, hidden_dim, skill_horizon, decoder_state_features)
            decoder = ClosedLoopSkillDecoder(*sizes)
            width = decoder.feature_dim
        else:
            decoder = SkillDecoder(action_dim, latent_dim, hidden_dim, skill_horizon, learned_initial_state)
            width = 0
        # Encoder first, then decoder: the order of the parameters, which a resumed optimizer's state follows.
        self.encoder = SkillEncoder(action_dim + width, latent_dim, hidden_dim)
        self.decoder = decoder
        prior = (
            state_dim,
            latent_dim,
            hidden_dim,
            prior_layers,
            image,
            state_features,
            prior_input_block,
            centred_frames,
        )
        self.skill_prior = SkillPrior(*prior)
        for m in self.modules():  # the authors' init: Xavier-normal weights, zero biases
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def encode(self, states: torch.Tensor, actions: torch.Tensor, observations=None):
        """q(z | a_1..a_H), or q(z | a_1..a_H, s_1..s_H) with the closed-loop decoder, or q(z | a_1..a_H, s_1) with
        the state-conditioned one (`observations`: the prior's input at s_1; default the state s_1): (mu, log sigma)."""
        if self.conditioned:
            features = self.decoder.read(states[:, 0] if observations is None else observations)
            return self.encoder(torch.cat([actions, features[:, None].expand(-1, actions.shape[1], -1)], dim=-1))
        if not self.closed_loop:
            return self.encoder(actions)
        return self.encoder(torch.cat([actions, self.decoder.read(states[:, :-1])], dim=-1))

    def decode(self, z: torch.Tensor, states: torch.Tensor, observations=None) -> torch.Tensor:
        """The H mean actions of skill z; the closed-loop decoder reads them off the data's states s_1..s_H, the
        state-conditioned one starts from s_1 (`observations`, as in encode)."""
        if self.conditioned:
            return self.decoder.plan(z, states[:, 0] if observations is None else observations)
        return self.decoder(states[:, : self.decoder.skill_horizon], z) if self.closed_loop else self.decoder(z)


# ----------------------------------------------------------------------------- loss (eq. 4) and evaluation


def skill_prior_loss(model: SkillModel, states, actions, beta: float, observations=None) -> torch.Tensor:
    """Eq. 4 on a batch of windows; returns [reconstruction, regularization, prior, total].
    `observations`: the prior's input at each window's first step (default: the state s_1).

    The paper writes eq. 4 with "- beta KL"; minimising needs "+ beta KL" (the ELBO of eq. 1, negated).
    Scales follow the authors' code, which is what their beta values were tuned for: reconstruction is
    0.5 * squared error averaged over all action elements (unit-variance Gaussian NLL up to a constant),
    and both KLs are averaged over the latent dims.
    """
    mu_q, log_sigma_q = model.encode(states, actions, observations)
    z = mu_q + torch.exp(log_sigma_q) * torch.randn_like(mu_q)  # reparameterised sample of q(z|a)
    reconstruction = 0.5 * (model.decode(z, states, observations) - actions).pow(2).mean()
    zeros = torch.zeros_like(mu_q)
    regularization = gaussian_kl(mu_q, log_sigma_q, zeros, zeros).mean()  # KL(q || N(0, I))
    # Prior training: KL(stopgrad(q) || p_a(z | s_1)); the detach keeps the prior out of the encoder.
    mu_p, log_sigma_p = model.skill_prior(states[:, 0] if observations is None else observations)
    prior = gaussian_kl(mu_q.detach(), log_sigma_q.detach(), mu_p, log_sigma_p).mean()
    total = reconstruction + beta * regularization + prior
    return torch.stack([reconstruction, regularization, prior, total])


@torch.no_grad()
def evaluate_windows(model: SkillModel, windows: WindowSampler, limit: int | None = None) -> dict:
    """Reconstruction MSE (decoding the posterior mean) and prior NLL of that mean (nats per skill)."""
    training, sq_err, nll, n = model.training, 0.0, 0.0, 0
    model.eval()
    device = next(model.parameters()).device
    for batch in windows.all_windows(batch_size=256 if windows.step_observations else 2048):
        states, actions, observations = (x.to(device) for x in batch)
        mu_q, _ = model.encode(states, actions, observations)
        sq_err += (model.decode(mu_q, states, observations) - actions).pow(2).mean(dim=(1, 2)).sum()
        nll += gaussian_nll(mu_q, *model.skill_prior(observations)).sum()
        n += len(actions)
        if limit is not None and n >= limit:
            break
    model.train(training)
    return {"reconstruction_mse": float(sq_err / n), "prior_nll": float(nll / n)}


def validate(model: SkillModel, train_windows: WindowSampler, val_windows: WindowSampler) -> dict:
    """The metrics of evaluate_windows on held-out episodes, and on (up to 4096) training windows. Where frames are
    rendered per batch the held-out windows are capped too (the first 4096 when every step's frames are rendered,
    else the first 16384): the maze's 850 held-out episodes hold 320k windows, minutes of rendering per pass."""
    val_limit = 4096 if val_windows.step_observations else (16384 if val_windows.observe is not None else None)
    return {
        "val": evaluate_windows(model, val_windows, limit=val_limit),
        "train": evaluate_windows(model, train_windows, limit=4096),
    }


@torch.no_grad()
def prior_rollouts(model: SkillModel, args: Args) -> dict:
    """Execute skills sampled from p_a(z | s) in the env (the authors' check of a learned prior). Every H steps:
    z ~ p_a(z | s) (as is, without spirl_sac.py's tanh squashing), decoded into H actions clipped to the action
    space: at once by the open-loop decoder, step by step from the current state by the closed-loop one. Returns
    the mean progress (kitchen: subtasks; maze: success) and, for the kitchen, how often each subtask was done."""
    model.eval()
    device = next(model.parameters()).device
    env = make_env(args.env, **rollout_env_kwargs(args))
    generator = torch.Generator().manual_seed(args.seed)
    metric, progress, per_task = env_spec(args.env)["progress_metric"], [], {}
    for episode in range(args.prior_rollouts):
        state, info = env.reset(seed=args.seed + episode)
        done = False
        while not done:
            first = torch.as_tensor(state, device=device)[None]
            mu, log_sigma = model.skill_prior(first)
            z = mu + torch.exp(log_sigma) * torch.randn(mu.shape, generator=generator).to(device)
            actions = None if model.closed_loop else model.decoder.plan(z, first)[0]
            for t in range(model.decoder.skill_horizon):
                now = torch.as_tensor(state, device=device)[None]
                action = actions[t] if actions is not None else model.decoder(now, z)[0]
                state, _, terminated, truncated, info = env.step(action.clamp(-1, 1).cpu().numpy())
                done = terminated or truncated
                if done:
                    break
        progress.append(float(info.get(metric, 0)))
        for task in info.get("completed_tasks", ()):
            per_task[task] = per_task.get(task, 0) + 1
    env.close()
    rates = {t: per_task.get(t, 0) / args.prior_rollouts for t in getattr(env, "tasks", ())}
    return {"metric": metric, "mean": float(np.mean(progress)), "per_episode": progress, "task_rates": rates}


# ----------------------------------------------------------------------------- training loop


def train(args: Args) -> dict:
    ckpt = runs.read_checkpoint(args.resume, "spirl_pretrain", "spirl_pretrain.py") if args.resume else None
    args = resolve_args(args, ckpt)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = (args.dataset, args.env, args.skill_horizon, args.val_fraction, args.seed, args.image, args.decoder_frames)
    train_windows, val_windows = skill_windows(*data)

    config = model_config(args)
    model = SkillModel(**config).to(args.device)
    if args.fused_lstm:  # speed, not part of SPiRL: the same function and gradients in one torch.lstm call each
        model.encoder.forward = model.encoder.forward_fused
        if not (args.closed_loop or args.conditioned_decoder):
            model.decoder.forward = model.decoder.forward_fused
    optimizer = torch.optim.RAdam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), foreach=True)  # app. B.1
    generator = torch.Generator().manual_seed(args.seed)  # draws the training windows
    if ckpt is not None:
        generator.set_state(ckpt["rng"]["sampler"])
    batches = None  # with --prefetch, a BatchPrefetcher once the loop starts (its thread is shut down at the end)
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        step = ckpt["step"]
    run_dir, ckpt_path = runs.run_folder(args, "spirl_pretrain")
    log = runs.PretrainLogger(run_dir, args, step, resumed=ckpt is not None, loss_tags=LOSS_TAGS)
    losses = []  # skill_prior_loss's values since the last log

    def checkpoint():  # the losses are checked first: a model with a NaN loss is never saved
        log.losses(losses, step)
        sampler = batches.sampler_state() if batches else generator.get_state()  # as before the unused batch
        rng = {"torch": torch.get_rng_state(), "sampler": sampler}
        state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": rng}
        runs.save_checkpoint(ckpt_path, {"config": config, **state}, kind="spirl_pretrain")

    # Validate where training starts, or a finished run resumed (e.g. for --prior-rollouts). Validation draws no
    # random numbers, so a resumed run continues exactly.
    validate_now = val_windows is not None and (step == 0 or step >= args.num_steps)
    metrics = log.validation(lambda: validate(model, train_windows, val_windows), step) if validate_now else None
    try:
        if args.prefetch:
            batches = BatchPrefetcher(train_windows, args.batch_size, generator)
        with runs.StopRequest() as stop:
            while step < args.num_steps and not stop.requested:
                # ALGO LOGIC: one gradient step of eq. 4 on a batch of random H-step windows.
                batch = batches.next() if batches else train_windows.sample(args.batch_size, generator)
                states, actions, observations = (x.to(args.device) for x in batch)
                loss = skill_prior_loss(model, states, actions, args.beta, observations)
                optimizer.zero_grad(set_to_none=True)
                loss[3].backward()
                optimizer.step()
                losses.append(loss.detach())
                step += 1

                # TRY NOT TO MODIFY: logging, validation and checkpoints.
                if len(losses) == args.log_every:
                    log.losses(losses, step)
                if val_windows is not None and (step % args.val_every == 0 or step == args.num_steps):
                    metrics = log.validation(lambda: validate(model, train_windows, val_windows), step)
                if step % args.checkpoint_every == 0 or step == args.num_steps:
                    checkpoint()
            if stop.requested and step < args.num_steps:
                checkpoint()
                print(f"stopped at step {step}; checkpoint saved: continue with --resume {ckpt_path}")
                return {"checkpoint": ckpt_path, "step": step, "stopped": True}
        if not os.path.exists(ckpt_path):  # --num-steps 0: nothing trained, nothing saved yet
            checkpoint()
        result = {"checkpoint": ckpt_path, **report(args, model, log, metrics, step)}
    finally:  # also on errors (e.g. a NaN loss), so nothing is left half-printed or unflushed
        log.close()
        if batches:
            batches.close()
    print(f"checkpoint: {ckpt_path}")
    return result


# ----------------------------------------------------------------------------- set-up, logging and checkpoints
# Apparatus, not part of SPiRL: settings, data loading, logging, saving and loading.


class BatchPrefetcher:
    """Speed, not part of SPiRL: windows.sample(batch_size, generator) for the next step runs in a background
    thread while the current step trains (numpy's rendering and torch's kernels release the GIL, so on two cores
    the frames of the maze's image data are drawn beside the network's step). Batches come in the same order as
    sampled one by one; sampler_state() is the generator's state before the batch drawn ahead, which a checkpoint
    keeps so that a resumed run draws that batch again."""

    def __init__(self, windows, batch_size: int, generator: torch.Generator):
        from concurrent.futures import ThreadPoolExecutor

        self.windows, self.batch_size, self.generator = windows, batch_size, generator
        self.pool = ThreadPoolExecutor(max_workers=1)
        self._draw()

    def _draw(self):  # only one draw is ever pending, so the generator is never used by two threads at once
        self.state = self.generator.get_state()
        self.pending = self.pool.submit(self.windows.sample, self.batch_size, self.generator)

    def next(self):
        batch = self.pending.result()
        self._draw()
        return batch

    def sampler_state(self) -> torch.Tensor:
        return self.state

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


# A resumed run keeps its model (env, sizes, H, |Z|, image) and its episode split (seed, validation fraction).
KEPT_ON_RESUME = ("env", "skill_horizon", "latent_dim", "hidden_dim", "prior_layers", "image", "closed_loop")
KEPT_ON_RESUME += ("prior_input_block", "seed", "val_fraction")


def resolve_args(args: Args, ckpt: dict | None) -> Args:
    """Check the flags (one-line errors) and fill the defaults: per env from envs/registry.py, or for a resumed run
    its own dataset, beta and total steps (and its KEPT_ON_RESUME must match)."""
    spec = env_spec(args.env)
    sizes = ("skill_horizon", "latent_dim", "hidden_dim", "prior_layers", "batch_size", "log_every", "val_every")
    runs.check_flags(args, at_least_one=sizes + ("checkpoint_every",), positive=("lr",))
    runs.check_flags(args, non_negative=("beta", "num_steps", "prior_rollouts"))
    if not 0 <= args.val_fraction < 1:
        raise SpirlError(f"--val-fraction must be in [0, 1) (got {args.val_fraction})")
    if args.tasks and args.env != "kitchen":
        raise SpirlError(f"--tasks chooses kitchen subtasks; drop it for --env {args.env}")
    if args.image and args.env not in ("maze", "block_stacking"):
        raise SpirlError(f"--image needs an env with image observations (maze, block_stacking), not --env {args.env}")
    if args.decoder_frames and not (args.image and args.closed_loop):
        raise SpirlError("--decoder-frames is for the closed-loop image model: add --image --closed-loop")
    if args.conditioned_decoder and args.closed_loop:
        raise SpirlError("--conditioned-decoder conditions the open-loop decoder on s_1: drop --closed-loop")
    if args.block_features and args.env != "block_stacking":
        raise SpirlError(f"--block-features chooses block-stacking state features; drop it for --env {args.env}")
    if args.prior_rollouts:  # fail now on a bad --tasks, not after hours of training
        make_env(args.env, **rollout_env_kwargs(args)).close()
    saved = {} if ckpt is None else ckpt["config"]
    if ckpt is not None:
        kept = {name: getattr(args, name) for name in KEPT_ON_RESUME}
        runs.check_compatible(saved, args.resume, resuming=True, **kept)
    if saved and args.conditioned_decoder and not saved.get("conditioned_decoder"):
        raise SpirlError(f"{args.resume} has the unconditioned decoder: drop --conditioned-decoder to continue it")
    conditioned = args.conditioned_decoder or bool(saved.get("conditioned_decoder"))  # a resumed run keeps its own
    dataset = args.dataset or saved.get("dataset") or spec["default_dataset"]
    if saved and saved["dataset"] != dataset:
        print(f"warning: resuming a model trained on {saved['dataset']} with data from {dataset}", file=sys.stderr)
    beta = saved.get("beta", spec["beta"]) if args.beta is None else args.beta
    trained_features = saved.get("decoder_state_features") or saved.get("state_features")
    decoder_frames = args.decoder_frames or trained_features == "frames"  # a resumed run keeps its decoder's input
    trained_features = None if trained_features == "frames" else trained_features
    if args.block_features and trained_features and args.block_features != trained_features:
        raise SpirlError(f"{args.resume} reads {trained_features}: drop --block-features {args.block_features}")
    block_features = args.block_features or trained_features or "nearest_blocks"
    num_steps = saved.get("num_steps", 100_000) if args.num_steps is None else args.num_steps
    device = runs.resolve_device(args.device)
    features = dict(block_features=block_features, decoder_frames=decoder_frames, conditioned_decoder=conditioned)
    return replace(args, dataset=dataset, beta=beta, num_steps=num_steps, device=device, **features)


def model_config(args: Args) -> dict:
    """A checkpoint's "config": what SkillModel(**config) builds, and the data and settings it was trained with."""
    spec = env_spec(args.env)
    # Block stacking's state prior sees features that fit both its 5-block data and the 11-block task.
    features = args.block_features if args.env == "block_stacking" and not args.image else None
    trained = {k: getattr(args, k) for k in KEPT_ON_RESUME + ("dataset", "beta", "num_steps", "lr", "batch_size")}
    # The open-loop decoder's initial LSTM state is learned, as the authors' (models trained before had zeros).
    sizes = dict(state_dim=spec["state_dim"], action_dim=spec["action_dim"])
    # A closed-loop decoder on block stacking reads the nearest-block features: data and task states differ in size.
    decoder_features = args.block_features if args.closed_loop and "data_state_dims" in spec else None
    decoder_features = "frames" if args.decoder_frames else decoder_features
    return dict(
        **sizes,
        state_features=features,
        decoder_state_features=decoder_features,
        centred_frames=args.image,
        learned_initial_state=not args.closed_loop,
        conditioned_decoder=args.conditioned_decoder,
        **({"view": "camera"} if args.env == "maze" and args.image else {}),  # the maze frames (envs/maze.py render)
        **trained,
    )


def rollout_env_kwargs(args: Args) -> dict:  # the downstream env of --prior-rollouts
    return ({"tasks": args.tasks} if args.tasks else {}) | ({"image": True} if args.image else {})


def report(args: Args, model: SkillModel, log: runs.PretrainLogger, metrics: dict | None, step: int) -> dict:
    """Final figures: reconstruction and prior NLL, then (optionally) prior rollouts in the env."""
    result = {"step": step, **(metrics or {})}
    for split, values in (metrics or {}).items():
        mse, nll = values["reconstruction_mse"], values["prior_nll"]
        print(f"step {step}, {split}: reconstruction MSE {mse:.5f}, prior NLL {nll:.3f} nats per skill")
    if args.prior_rollouts:
        result["prior_rollouts"] = rollouts = prior_rollouts(model, args)
        log.scalars({f"eval/prior_rollout_{rollouts['metric']}": rollouts["mean"]}, step)
        rates = "".join(f"; {task} {rate:.0%}" for task, rate in rollouts["task_rates"].items())
        print(f"prior rollouts ({args.prior_rollouts} episodes): {rollouts['mean']:.2f} {rollouts['metric']}{rates}")
    return result


def load_skill_model(path: str, **expected) -> tuple[SkillModel, dict]:
    """Rebuild a trained SkillModel (eval mode) and its config; `expected` fields are checked (one-line error),
    e.g. load_skill_model(path, env="kitchen", state_dim=30) in spirl_sac.py."""
    ckpt = runs.read_checkpoint(path, "spirl_pretrain", "spirl_pretrain.py")
    runs.check_compatible(ckpt["config"], path, **expected)
    model = SkillModel(**ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt["config"]


if __name__ == "__main__":
    runs.cli(train, Args, __doc__)
