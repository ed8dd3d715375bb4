"""Block stacking (paper Sec. 4.1, 4.3, app. C) in a MuJoCo 3 scene built in code.

A gripper-only robot moves in one vertical plane (the world's y-z plane) above a table with a barrier
at each end, and cubes stay in that plane. The authors' scene (clvrai/spirl, summarised in
../shared/reference/original-spirl.md) sets the sizes kept here: 8 cm cubes, a tabletop at z = 0.8,
a 1.2 m table with 5 blocks for the training data and a 2.4 m one with 11 blocks downstream, the
gripper starting 0.4 m above the table, 10 env steps per second.

- Action [dy, dz, grip] in [-1, 1] x [-1, 1] x [0, 1]: dy and dz move the gripper at up to
  `SPEED` = 0.5 m/s, i.e. 5 cm per env step at |a| = 1 (the authors' motors reach the same through
  their damping); grip is the fingers' opening, from closed (0) to fully open (1), continuous as in
  the paper (the authors' code thresholds it into open and closed).
- State, 8 + 3 * n_blocks values as the authors': the gripper's position (x, y, z), its velocity
  (x, y, z), its rotation angle (always 0: this gripper does not rotate; kept for the authors'
  layout) and its opening (the distance between the fingers, m), then each block's position (x, y, z).
  x is always 0. The gripper's position is its grip point, where a held block's centre sits.
- Blocks are free in the plane (slides along y and z, a hinge about x) and rest on the table or on
  each other; the barriers keep them on the table. The gripper is gravity-compensated.
- Reward (downstream, the authors' dense variant): every step, 1 per block that has been lifted
  while grasped and 2 instead per block that has been carried above another block (once earned, a
  block's bonus is paid every remaining step, as in the authors' code), plus 50 times the height of
  the highest supported tower in metres (4 per stacked block). A stack counts once: a block earns
  either its lift or its stacking bonus, and only the highest tower adds height. `sparse=True`
  rewards the tower height (m) only, as the authors' sparse variant. `info["blocks_stacked"]`: the
  blocks on top of the base block of the highest supported tower. Episodes never terminate.
- `image=True` appends two stacked 32 x 32 RGB front views (previous, current) centred on the
  gripper, drawn orthographically with numpy from the state vector alone (`render_view`), so a
  dataset's frames can be rendered from its stored states.
- `nearest_blocks(states)`: 23 features (the gripper and its 5 nearest blocks, relative to it) that
  fit both the 5-block data and the 11-block task, for state-based networks fit to the data.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

BLOCK_HALF = 0.04  # the authors' cubes: 8 cm
TABLE_TOP = 0.8
REST_Z = TABLE_TOP + BLOCK_HALF  # a block's centre when it rests on the table
TRAIN_BLOCKS, TRAIN_HALF_LENGTH, TRAIN_EPISODE_STEPS = 5, 0.6, 250
DOWNSTREAM_BLOCKS, DOWNSTREAM_HALF_LENGTH, DOWNSTREAM_EPISODE_STEPS = 11, 1.2, 1000
GRIPPER_START = (0.0, 1.2)  # (y, z)
GRIPPER_Z_RANGE = (REST_Z, 1.6)
SPEED = 0.5  # m/s at |action| = 1
MAX_OPENING = 0.14  # m between the fingers when fully open (a block is 0.08 wide)
# 10 env steps per second as the authors'; their physics step is MuJoCo's default 0.002 s (50 per env
# step). 0.005 s with the implicit integrator keeps stacks stable here at 2.5x less compute.
CONTROL_DT, TIMESTEP = 0.1, 0.005
SUBSTEPS = round(CONTROL_DT / TIMESTEP)

# Reward (the authors' constants).
HEIGHT_REWARD, LIFT_REWARD, ABOVE_REWARD = 50.0, 1.0, 2.0
LIFT_THRESHOLD = (np.sqrt(3) - 1) * BLOCK_HALF  # a block is lifted 2.9 cm above where it started
ABOVE_DZ = 2 * BLOCK_HALF - 0.005  # carried above another: within a half-width in y and at least this higher
ON_DZ = (BLOCK_HALF, 2 * BLOCK_HALF + 0.005)  # resting on another: within a width in y, dz in this range


# ----------------------------------------------------------------------------- the scene


def scene_xml(n_blocks: int, half_length: float) -> str:
    """The MJCF of a scene. Every position is a joint coordinate (bodies sit at the origin), so the
    state reads straight off qpos: the gripper's (y, z) and each block's (y, z, angle)."""
    s = BLOCK_HALF
    # contype/conaffinity: the fingers and palm (2/1) touch blocks, table and barriers (1/3), not each other.
    blocks = "".join(
        f"""
    <body name="block{i}">
      <joint name="block{i}_y" type="slide" axis="0 1 0" damping="0.2"/>
      <joint name="block{i}_z" type="slide" axis="0 0 1" damping="0.2"/>
      <joint name="block{i}_angle" type="hinge" axis="1 0 0" damping="0.001"/>
      <geom type="box" size="{s} {s} {s}" density="1000" contype="1" conaffinity="3" rgba="0.85 0.45 0.1 1"/>
      <!-- density: the authors' blocks draw one of 200-5000 kg/m^3 per block, unseeded; a fixed
           1000 (0.5 kg) keeps episodes reproducible from a seed. -->
    </body>"""
        for i in range(n_blocks)
    )
    wall_height = 0.5
    return f"""
<mujoco model="block_stacking">
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <default><geom friction="1 0.005 0.0001" solref="0.01 1"/></default>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1"/>
    <geom name="table" type="box" pos="0 0 {TABLE_TOP / 2}" size="0.3 {half_length} {TABLE_TOP / 2}"
          contype="1" conaffinity="3" rgba="0.5 0.5 0.5 1"/>
    <geom name="barrier_left" type="box" pos="0 {-half_length - 0.01} {TABLE_TOP + wall_height}"
          size="0.3 0.01 {wall_height}" contype="1" conaffinity="3" rgba="0.2 0.2 0.2 1"/>
    <geom name="barrier_right" type="box" pos="0 {half_length + 0.01} {TABLE_TOP + wall_height}"
          size="0.3 0.01 {wall_height}" contype="1" conaffinity="3" rgba="0.2 0.2 0.2 1"/>
    {blocks}
    <body name="gripper" gravcomp="1">
      <joint name="gripper_y" type="slide" axis="0 1 0" limited="true"
             range="{-half_length + 0.05} {half_length - 0.05}"/>
      <joint name="gripper_z" type="slide" axis="0 0 1" limited="true"
             range="{GRIPPER_Z_RANGE[0]} {GRIPPER_Z_RANGE[1]}"/>
      <geom name="palm" type="box" pos="0 0 {s + 0.015}" size="0.03 {MAX_OPENING / 2 + 0.02} 0.01" mass="0.3"
            contype="2" conaffinity="1" rgba="0.15 0.25 0.6 1"/>
      <body name="finger_left" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" limited="true" range="0 {MAX_OPENING / 2}" damping="2"/>
        <geom name="finger_left" type="box" pos="0 0.01 0.0025" size="0.025 0.01 {s - 0.0025}" mass="0.1"
              friction="1.5 0.005 0.0001" contype="2" conaffinity="1" rgba="0.15 0.25 0.6 1"/>
      </body>
      <body name="finger_right" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" limited="true" range="0 {MAX_OPENING / 2}" damping="2"/>
        <geom name="finger_right" type="box" pos="0 -0.01 0.0025" size="0.025 0.01 {s - 0.0025}" mass="0.1"
              friction="1.5 0.005 0.0001" contype="2" conaffinity="1" rgba="0.15 0.25 0.6 1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <velocity name="move_y" joint="gripper_y" kv="300" forcerange="-60 60"/>
    <velocity name="move_z" joint="gripper_z" kv="300" forcerange="-60 60"/>
    <position name="finger_left" joint="finger_left" kp="1000" forcerange="-40 40" ctrlrange="0 {MAX_OPENING / 2}"/>
    <position name="finger_right" joint="finger_right" kp="1000" forcerange="-40 40" ctrlrange="0 {MAX_OPENING / 2}"/>
  </actuator>
</mujoco>"""


# ----------------------------------------------------------------------------- reward terms


def supported_heights(block_yz: np.ndarray) -> np.ndarray:
    """Each block's height above the table (m) if it stands on the table or, through a chain of
    blocks resting on each other, on the table; NaN for a block in the air (held or falling)."""
    order = np.argsort(block_yz[:, 1])
    heights = np.full(len(block_yz), np.nan)
    for i in order:  # bottom-up: a block's supports are lower and already decided
        y, z = block_yz[i]
        if z - REST_Z < BLOCK_HALF / 2:
            heights[i] = z - REST_Z
            continue
        dy = np.abs(block_yz[:, 0] - y)
        dz = z - block_yz[:, 1]
        below = (dy < 2 * BLOCK_HALF) & (dz > ON_DZ[0]) & (dz < ON_DZ[1]) & ~np.isnan(heights)
        if below.any():
            heights[i] = z - REST_Z
    return heights


def tower_height(block_yz: np.ndarray) -> float:
    """Height (m) of the highest supported tower: 0 for blocks on the table, 0.08 per stacked block."""
    heights = supported_heights(block_yz)
    return float(max(0.0, np.nanmax(heights))) if not np.all(np.isnan(heights)) else 0.0


def blocks_stacked(block_yz: np.ndarray) -> int:
    """Blocks on top of the base block of the highest supported tower (the paper's "blocks stacked")."""
    return blocks_in_tower(tower_height(block_yz))


def blocks_in_tower(height: float) -> int:
    """Blocks stacked on a tower's base block, from the tower's height (m)."""
    return int(round(height / (2 * BLOCK_HALF)))


# ----------------------------------------------------------------------------- state features


NEAREST_BLOCKS = 5  # the training scene's block count
FEATURE_DIM = 8 + 3 * NEAREST_BLOCKS


def nearest_blocks(states):
    """(B, 8 + 3 n) torch states, any n >= NEAREST_BLOCKS -> (B, 23): the gripper's 8 values, then the
    5 blocks nearest to the gripper as (x, y, z) relative to it, nearest first.

    Why: networks trained on the offline data see 5-block states (23 dims) and must act in the
    11-block task (41 dims). These features are the same size in both scenes and describe what is
    around the gripper, wherever on the table it is (as the authors' image priors do with a view
    that follows the gripper). Used by state-based priors and policies fit to the data."""
    import torch  # envs needs torch only here and in DatasetViews

    gripper = states[:, :8]
    relative = states[:, 8:].reshape(len(states), -1, 3) - gripper[:, None, :3]
    order = relative.square().sum(-1).argsort(dim=1, stable=True)[:, :NEAREST_BLOCKS]
    nearest = torch.gather(relative, 1, order[..., None].expand(-1, -1, 3))
    return torch.cat([gripper, nearest.flatten(1)], dim=1)


LOCAL_FEATURE_DIM = 6 + 4 * NEAREST_BLOCKS


def local_blocks(states):
    """(B, 8 + 3 n) torch states -> (B, 26): the gripper's height, velocity, angle and opening, then its 5 nearest
    blocks as the view around the gripper (render_views) shows them: each as (x, y, z) relative to the gripper and 1,
    in order along the table (left to right, bottom to top within a column); a block out of view, or missing, as
    four zeros.

    Why: the authors' closed-loop decoder reads the frames, which show what is within about 0.3 m of the gripper
    and nothing of where along the table it is. A closed-loop decoder fit to the 5-block data on nearest_blocks
    reconstructed the data's windows (action MSE 0.015 in y) but not the scripted tower builder's in the 11-block
    task (0.195; bench/bench_skills.py `window_fit`): in the data the 5 nearest blocks are all the blocks, tower
    included, so the decoder learnt to read where to carry a block off the state; in the task's row of 11 the tower
    is often not among them. With these features it fits both (0.019 and 0.024 at 15k pretraining steps)."""
    import torch

    features = nearest_blocks(states)
    blocks = features[:, 8:].reshape(len(states), NEAREST_BLOCKS, 3)
    top, bottom = VIEW_SIZE / 2 - VIEW_BELOW, -VIEW_SIZE / 2 - VIEW_BELOW
    seen = (blocks[:, :, 1].abs() < VIEW_SIZE / 2) & (blocks[:, :, 2] < top) & (blocks[:, :, 2] > bottom)
    key = blocks[:, :, 1] + 0.25 * blocks[:, :, 2]  # columns >= 0.15 m apart; 4 stacked blocks rise 0.32 m
    order = torch.where(seen, key, torch.full_like(key, float("inf"))).argsort(dim=1)
    blocks = torch.cat([blocks, torch.ones_like(blocks[:, :, :1])], dim=2) * seen[..., None]
    along = torch.gather(blocks, 1, order[..., None].expand(-1, -1, 4))
    return torch.cat([features[:, 2:8], along.flatten(1)], dim=1)


# What state-based block-stacking networks fit to the data may read: name -> (function, width).
STATE_FEATURES = {"nearest_blocks": (nearest_blocks, FEATURE_DIM), "local_blocks": (local_blocks, LOCAL_FEATURE_DIM)}


# ----------------------------------------------------------------------------- rendering (numpy)


VIEW_PIXELS = 32
VIEW_SIZE = 0.64  # metres across the view: 2 cm per pixel, a block 4 x 4 pixels
# Each block is drawn with a dark rim this wide (m) inside its outline, so that stacked blocks stay apart in the
# image (the authors' lit camera shows their edges; without it a tower was one flat orange bar).
BLOCK_EDGE = 0.01
VIEW_BELOW = 0.1  # the view's centre is this far below the gripper (the authors' camera looks slightly down)
COLOURS = {  # RGB
    "background": (200, 215, 235),
    "table": (110, 110, 110),
    "barrier": (40, 40, 40),
    "block_edge": (110, 45, 10),
    "block": (220, 110, 30),
    "gripper": (40, 60, 160),
}


def _coverage(lo: np.ndarray, hi: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(B, K) intervals, (B, P + 1) pixel edges (increasing) -> (B, K, P): the share of each pixel
    that each interval covers."""
    overlap = np.minimum(hi[..., None], edges[:, None, 1:]) - np.maximum(lo[..., None], edges[:, None, :-1])
    return np.clip(overlap, 0, None) / (edges[:, None, 1:2] - edges[:, None, :1])


def render_views(states: np.ndarray, half_length: float) -> np.ndarray:
    """(B, 8 + 3 n) states -> (B, 3, 32, 32) uint8 front views (looking along -x: columns are y, rows
    are z, the top row up), centred on the gripper, drawn from the state alone: table, barriers,
    blocks (axis-aligned: the state has no block angles) and the gripper's palm and fingers at their
    opening. Shapes are anti-aliased by their pixel coverage, so the image moves smoothly."""
    states = np.asarray(states, dtype=np.float64)
    b = len(states)
    y_g, z_g, opening = states[:, 1:2], states[:, 2:3], states[:, 7:8]  # (B, 1) each
    blocks = states[:, 8:].reshape(b, -1, 3)
    steps = np.linspace(0, VIEW_SIZE, VIEW_PIXELS + 1)
    ys = y_g - VIEW_SIZE / 2 + steps  # (B, 33) column edges
    zs = z_g - VIEW_BELOW - VIEW_SIZE / 2 + steps  # (B, 33) row edges, bottom row first

    def boxes(y_lo, y_hi, z_lo, z_hi) -> np.ndarray:  # (B, K) each -> (B, 32, 32) coverage of their union
        cover_z = _coverage(*np.broadcast_arrays(z_lo, z_hi), zs)[:, :, ::-1]  # top row first
        cover_y = _coverage(*np.broadcast_arrays(y_lo, y_hi), ys)
        return np.clip(cover_z.transpose(0, 2, 1) @ cover_y, 0, 1)

    s, finger_w, finger_h = BLOCK_HALF, 0.02, 2 * BLOCK_HALF - 0.005
    e = BLOCK_EDGE
    ones = np.ones((b, 1))
    fingers_and_palm = (
        np.hstack([y_g - opening / 2 - finger_w, y_g + opening / 2, y_g - MAX_OPENING / 2 - 0.02]),
        np.hstack([y_g - opening / 2, y_g + opening / 2 + finger_w, y_g + MAX_OPENING / 2 + 0.02]),
        np.hstack([z_g - s, z_g - s, z_g + s + 0.005]),
        np.hstack([z_g - s + finger_h, z_g - s + finger_h, z_g + s + 0.025]),
    )
    barrier_y0 = np.array([[-half_length - 0.02, half_length]])  # left and right barrier: y0 to y1, 0.02 thick
    barrier_y1 = np.array([[-half_length, half_length + 0.02]])
    layers = [  # painter's order: later layers cover earlier ones
        ("table", boxes(-half_length * ones, half_length * ones, (TABLE_TOP - 1.0) * ones, TABLE_TOP * ones)),
        ("barrier", boxes(barrier_y0, barrier_y1, TABLE_TOP * np.ones((1, 2)), (TABLE_TOP + 1.0) * np.ones((1, 2)))),
        ("block_edge", boxes(blocks[:, :, 1] - s, blocks[:, :, 1] + s, blocks[:, :, 2] - s, blocks[:, :, 2] + s)),
        (
            "block",
            boxes(blocks[:, :, 1] - s + e, blocks[:, :, 1] + s - e, blocks[:, :, 2] - s + e, blocks[:, :, 2] + s - e),
        ),
        ("gripper", boxes(*fingers_and_palm)),
    ]
    image = np.empty((b, 3, VIEW_PIXELS, VIEW_PIXELS), np.float32)
    image[:] = np.array(COLOURS["background"], np.float32)[None, :, None, None]
    for name, cover in layers:  # image += (colour - image) * coverage, per channel
        cover = cover.astype(np.float32)
        for c, value in enumerate(COLOURS[name]):
            image[:, c] += (value - image[:, c]) * cover
    return np.rint(image).astype(np.uint8)


def render_view(state: np.ndarray, half_length: float) -> np.ndarray:
    """(3, 32, 32) uint8 front view of one state (see render_views)."""
    return render_views(np.asarray(state)[None], half_length)[0]


class DatasetViews:
    """The image observations of a block-stacking dataset's steps (recorded in the training scene),
    rendered on demand from the stored states. Called with episode indices (B,) (unused: the state
    alone fixes the view), the states one step earlier (B, S) and the states (B, S), it returns what
    BlockStackingEnv.training(image=True) observes there: the state, then the previous and the
    current frame scaled to [0, 1], (B, S + 6144) float32."""

    def __init__(self, half_length: float = TRAIN_HALF_LENGTH):
        self.half_length = half_length

    def __call__(self, episode, previous_states, states):
        import torch  # envs needs torch only here, for the data pipeline of spirl_pretrain.py

        views = [render_views(np.asarray(s), self.half_length) for s in (previous_states, states)]
        frames = np.concatenate(views, axis=1)
        frames = torch.from_numpy(frames.reshape(len(frames), -1)).float().div_(255.0)
        return torch.cat([torch.as_tensor(states, dtype=torch.float32), frames], dim=1)

    def sequence(self, episode, previous_states, states):
        """The observations at every step of windows: episode indices (B,) (unused), the states one step before each
        window (B, S) and the windows' states (B, T, S) -> (B, T, S + 6144), each state's view rendered once."""
        import torch

        states = torch.as_tensor(states, dtype=torch.float32)
        chain = torch.cat([torch.as_tensor(previous_states, dtype=torch.float32)[:, None], states], dim=1)
        b, t = states.shape[:2]
        views = render_views(chain.flatten(0, 1).numpy(), self.half_length).reshape(b, t + 1, -1)
        frames = torch.from_numpy(np.concatenate([views[:, :-1], views[:, 1:]], axis=2)).float().div_(255.0)
        return torch.cat([states, frames], dim=2)


# ----------------------------------------------------------------------------- the env


# Block centres on the training table at least this far apart: the open gripper (0.18 m wide) fits down beside
# every block. At a block width plus 4 cm (0.12 m), the fingers now and then landed on the neighbour of the block
# to grasp.
MIN_GAP = 0.15


class BlockStackingEnv(gym.Env):
    """The downstream scene by default (11 blocks in a row on a 2.4 m table, 1000 steps);
    `BlockStackingEnv.training()` is the 5-block scene of the data (one tower of 1 to 3 blocks, the rest on the table,
    250 steps). Observation: the state, or with `image=True` the state followed by two stacked
    front views (previous, current), flattened: 8 + 3 n + 2 * 3 * 32 * 32 values in [0, 1] for pixels."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        n_blocks: int = DOWNSTREAM_BLOCKS,
        half_length: float = DOWNSTREAM_HALF_LENGTH,
        max_episode_steps: int = DOWNSTREAM_EPISODE_STEPS,
        random_layout: bool = False,
        sparse: bool = False,
        image: bool = False,
    ):
        self.n_blocks, self.half_length = n_blocks, half_length
        self.max_episode_steps, self.random_layout = max_episode_steps, random_layout
        self.sparse, self.image = sparse, image
        self.model = mujoco.MjModel.from_xml_string(scene_xml(n_blocks, half_length))
        self.data = mujoco.MjData(self.model)

        def joint(name: str) -> int:  # a joint's address in qpos
            return self.model.joint(name).qposadr[0]

        self._gripper = [joint("gripper_y"), joint("gripper_z")]
        self._fingers = [joint("finger_left"), joint("finger_right")]
        self._blocks = np.array([[joint(f"block{i}_{axis}") for axis in ("y", "z", "angle")] for i in range(n_blocks)])
        state_dim = 8 + 3 * n_blocks
        obs_dim = state_dim + (2 * 3 * VIEW_PIXELS**2 if image else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(np.array([-1, -1, 0], np.float32), np.ones(3, np.float32))

    @classmethod
    def downstream(cls, **kwargs) -> "BlockStackingEnv":
        return cls(**kwargs)

    @classmethod
    def training(cls, **kwargs) -> "BlockStackingEnv":
        return cls(TRAIN_BLOCKS, TRAIN_HALF_LENGTH, TRAIN_EPISODE_STEPS, random_layout=True, **kwargs)

    # ---- layouts

    def _training_layout(self) -> np.ndarray:
        """(n, 2) block (y, z): one tower, a base block with 0 to 2 blocks already stacked on it, and the rest on
        the table, 12 cm from the barriers and MIN_GAP apart. As the authors' data (their
        FixedSizeSingleTowerBlockTaskGenerator): the episode then carries table blocks onto this tower."""
        rng, n = self.np_random, self.n_blocks
        n_stacked = int(rng.integers(0, 3))
        n_ground = n - n_stacked
        limit = self.half_length - 0.12  # the open gripper (0.18 m wide) can centre on every block
        # Uniform over the placements with all gaps >= MIN_GAP: sorted uniform draws on a line shortened by the
        # gaps, then the gaps put back.
        ys = np.sort(rng.uniform(-limit, limit - MIN_GAP * (n_ground - 1), n_ground)) + MIN_GAP * np.arange(n_ground)
        base = ys[rng.integers(n_ground)]
        tower = [[base, REST_Z + 2 * BLOCK_HALF * (k + 1)] for k in range(n_stacked)]
        yz = np.vstack([np.column_stack([ys, np.full(n_ground, REST_Z)]), np.reshape(tower, (-1, 2))])
        return yz[rng.permutation(n)]

    def _set_layout(self, block_yz: np.ndarray):
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._blocks[:, 0]] = block_yz[:, 0]
        self.data.qpos[self._blocks[:, 1]] = block_yz[:, 1] + 0.0005  # settles onto its support
        self.data.qpos[self._gripper] = GRIPPER_START
        self.data.qpos[self._fingers] = MAX_OPENING / 2
        self.data.ctrl[:] = [0.0, 0.0, MAX_OPENING / 2, MAX_OPENING / 2]
        mujoco.mj_forward(self.model, self.data)

    # ---- state, images, reward

    def block_yz(self) -> np.ndarray:
        return self.data.qpos[self._blocks[:, :2]].copy()

    def state(self) -> np.ndarray:
        q, v = self.data.qpos, self.data.qvel
        (y, z), (left, right) = self._gripper, self._fingers
        gripper = [0.0, q[y], q[z], 0.0, v[y], v[z], 0.0, q[left] + q[right]]
        blocks = np.column_stack([np.zeros(self.n_blocks), self.block_yz()]).ravel()
        return np.concatenate([gripper, blocks]).astype(np.float32)

    def grasped(self, state: np.ndarray) -> np.ndarray:
        """(n,) bool: blocks held between the closed fingers (centred on the grip point, fingers at
        most 1 cm wider than a block). The authors also ask for 5 consecutive grasped steps before a
        lift counts; with continuous fingers that close in one step, one step is used here."""
        blocks = state[8:].reshape(-1, 3)[:, 1:]
        near = (np.abs(blocks[:, 0] - state[1]) < BLOCK_HALF) & (np.abs(blocks[:, 1] - state[2]) < BLOCK_HALF)
        return near & (state[7] < 2 * BLOCK_HALF + 0.01)

    def _update_bonuses(self, state: np.ndarray):
        blocks = state[8:].reshape(-1, 3)[:, 1:]
        held = self.grasped(state)
        self.lifted |= held & (blocks[:, 1] > self.start_z + LIFT_THRESHOLD)
        dy = np.abs(blocks[:, None, 0] - blocks[None, :, 0])
        dz = blocks[:, None, 1] - blocks[None, :, 1]
        above_other = ((dy < BLOCK_HALF) & (dz > ABOVE_DZ)).any(1)  # block i above some block j (i != j: dz > 0)
        self.delivered |= held & above_other

    def reward(self, height: float) -> float:
        """Reward of the current step, given the highest tower's `height` (m) and the bonuses so far."""
        if self.sparse:
            return height
        bonus = np.where(self.delivered, ABOVE_REWARD, np.where(self.lifted, LIFT_REWARD, 0.0)).sum()
        return float(bonus + HEIGHT_REWARD * height)

    def _observation(self, state: np.ndarray) -> np.ndarray:
        if not self.image:
            return state
        frames = np.concatenate([self._previous_view, self._view]).astype(np.float32) / 255.0
        return np.concatenate([state, frames.ravel()])

    def _info(self, height: float) -> dict:
        return {
            "blocks_stacked": blocks_in_tower(height),
            "blocks_lifted": int(self.lifted.sum()),
            "blocks_delivered": int(self.delivered.sum()),
        }

    # ---- gym API

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if self.random_layout:
            layout = self._training_layout()
        else:
            # A row across the table, 0.2 m apart on the downstream table (the authors' fixed layout).
            layout = np.column_stack(
                [np.linspace(-1, 1, self.n_blocks) * (self.half_length - 0.2), np.full(self.n_blocks, REST_Z)]
            )
        self._set_layout(layout)
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)  # let stacks settle
        self.steps = 0
        self.start_z = self.block_yz()[:, 1]
        self.lifted = np.zeros(self.n_blocks, bool)
        self.delivered = np.zeros(self.n_blocks, bool)
        state = self.state()
        if self.image:
            self._view = render_view(state, self.half_length)
            self._previous_view = self._view
        return self._observation(state), self._info(tower_height(self.block_yz()))

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float64), self.action_space.low, self.action_space.high)
        self.data.ctrl[:2] = SPEED * action[:2]
        self.data.ctrl[2:] = action[2] * MAX_OPENING / 2
        mujoco.mj_step(self.model, self.data, nstep=SUBSTEPS)
        self.steps += 1
        state = self.state()
        self._update_bonuses(state)
        if self.image:
            self._previous_view, self._view = self._view, render_view(state, self.half_length)
        truncated = self.steps >= self.max_episode_steps
        height = tower_height(state[8:].reshape(-1, 3)[:, 1:])  # once per step, for reward and info
        return self._observation(state), self.reward(height), False, truncated, self._info(height)
