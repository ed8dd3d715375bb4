"""Point-mass maze navigation (paper Sec. 4.2, app. C) on gymnasium-robotics PointMaze.

The layouts, shortest paths, the downstream maze, the tasks, the env and its image observations (the
authors' agent-centred camera view, drawn with numpy) are here; the planner's data is written by
envs/maze_demos.py.

- Layouts are boolean wall grids with a wall border. Training layouts are random, made as the
  authors' (kpertsch/d4rl): straight walls of 30-50% of the side, each with one doorway at a random
  position, spread out, until a quarter of the 20 x 20 interior is wall; a pocket that walls close
  off is filled, so every free cell is reachable. The random draws are the authors' own, in their order, so
  a seed gives their layout: the downstream maze is theirs (maze2d-randMaze0S40: seed 0, 40 x 40, four
  times the area), with their start cell (10, 24) and goal cell (18, 8), 34 cells apart along the
  shortest path.
- Reward (the authors' set-up): 1 for every step within `GOAL_THRESHOLD` = 2 cells of the goal,
  episodes never terminate, 2000 steps downstream. A random policy diffuses a few cells in that
  time (bench/bench_maze.py); the goal is 34 cells away along the grid, about 680 steps at the top speed.
- The physics is PointMaze's: a point mass with 2-dim actions in [-1, 1] driving its x and y joints
  (the "(x, y) velocity actions" of D4RL maze2d are likewise actuator inputs), velocity clipped to 5;
  the state is (x, y, vx, vy), in PointMaze's coordinates (1 unit per cell). Starts and goals are
  placed as the authors' envs place them (draw_training_task; downstream: at rest on the given cells).
- One PointMaze model serves every layout: it is built once with a wall box on every interior cell,
  and a new layout switches boxes on and off (collision and colour) instead of recompiling the model
  (72 ms a build, measured; a new layout comes with every training episode).
"""

from __future__ import annotations

import contextlib
import io
from collections import deque
from typing import NamedTuple

import gymnasium as gym
import numpy as np

with contextlib.redirect_stderr(io.StringIO()):  # silence an import-time notice about Adroit envs
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv

from envs.errors import SpirlError

TRAIN_SIZE = 20  # interior cells per side of a training layout
DOWNSTREAM_SIZE = 40  # four times the training area
DOWNSTREAM_SEED = 0
DOWNSTREAM_START, DOWNSTREAM_GOAL = (10, 24), (18, 8)  # (row, col) cells, border included
GOAL_THRESHOLD = 2.0  # cells (= PointMaze units)
DOWNSTREAM_EPISODE_STEPS = 2000
TRAIN_EPISODE_STEPS = 500
STATE_DIM, ACTION_DIM = 4, 2
MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))
# Random layouts as the authors' (kpertsch/d4rl maze_layouts.py, values from there): straight walls,
# each WALL_LENGTH of the side long and with one doorway, are added until WALL_COVERAGE of the
# interior is wall; each wall goes preferentially where walls are sparse (WALL_SPREAD).
WALL_COVERAGE = 0.25
WALL_LENGTH = (0.3, 0.5)  # fraction of the maze side
WALL_SPREAD = 20.0  # position weight exp(-WALL_SPREAD * wall density of the band around the new wall)


def place_wall(interior: np.ndarray, rng: np.random.Generator):
    """Add one straight wall with a doorway to the (size, size) bool grid `interior`, in place.

    The random draws are the authors', in their order (kpertsch/d4rl maze_layouts.py place_wall): orientation,
    length, doorway, then the position, drawn over the candidate positions in the order of their layout's rows.
    So a seed gives the authors' layout cell for cell: checked for seeds 0-199 at sizes 20 and 40, and the
    downstream maze is their maze2d-randMaze0S40 (tests/test_maze.py holds its fingerprint)."""
    size = interior.shape[0]
    vertical = rng.random() < 0.5
    length = int(max((WALL_LENGTH[1] - WALL_LENGTH[0]) * size * rng.random() + WALL_LENGTH[0] * size, 3))
    door = int(rng.integers(1, length - 1))
    grid = interior if vertical else interior.T  # a view: a horizontal wall is a vertical one of the transpose
    # Wall density of the (length x 5) band centred on every possible wall position, from an integral image.
    integral = np.pad(grid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    band = integral[length:, 5:] - integral[:-length, 5:] - integral[length:, :-5] + integral[:-length, :-5]
    weights = np.exp(-WALL_SPREAD * band / (5 * length))  # (top, col) of the wall in `grid`
    if not vertical:  # the candidates in the order of the layout's rows: (row, leftmost column) of the wall
        weights = weights.T
    k = int(rng.choice(weights.size, p=(weights / weights.sum()).ravel()))
    top, col = divmod(k, size - 4) if vertical else divmod(k, size - length + 1)[::-1]
    col += 2  # the band's centre column
    grid[top : top + length, col] = True
    grid[top + door, col] = False
    # The cells diagonal to the doorway become wall too (as the authors do): a framed one-cell passage.
    grid[[top + door - 1, top + door + 1], col - 1] = grid[[top + door - 1, top + door + 1], col + 1] = True


def random_layout(size: int, rng: np.random.Generator, keep=None) -> np.ndarray:
    """(size + 2, size + 2) bool wall grid: a border, and random walls with doorways (place_wall). Walls
    can close off a pocket; its cells are filled, so the free cells form one connected region: the
    largest one, or the one holding the cell `keep` (the downstream start)."""
    interior = np.zeros((size, size), dtype=bool)
    while interior.mean() < WALL_COVERAGE:
        place_wall(interior, rng)
    walls = np.pad(interior, 1, constant_values=True)
    if keep is not None:
        walls[tuple(keep)] = False
        walls[distances_from(walls, keep) < 0] = True
    else:
        walls[~largest_region(walls)] = True
    return walls


def largest_region(walls: np.ndarray) -> np.ndarray:
    """Bool mask of the largest 4-connected region of free cells (found at the first search nearly always)."""
    remaining, free, best = ~walls, (~walls).sum(), None
    while remaining.any():
        region = distances_from(walls, np.argwhere(remaining)[0]) >= 0
        if best is None or region.sum() > best.sum():
            best = region
        if best.sum() * 2 > free:
            break
        remaining &= ~region
    return best


def distances_from(walls: np.ndarray, start) -> np.ndarray:
    """Steps (4-connected) from `start` to every cell; -1 where unreachable or a wall (BFS)."""
    dist = np.full(walls.shape, -1, dtype=np.int64)
    dist[tuple(start)] = 0
    queue = deque([tuple(start)])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES:
            n = (r + dr, c + dc)
            if not walls[n] and dist[n] < 0:
                dist[n] = dist[r, c] + 1
                queue.append(n)
    return dist


def shortest_path(walls: np.ndarray, start, goal) -> list[tuple[int, int]] | None:
    """Cells from `start` to `goal` along a shortest 4-connected path, or None if unreachable."""
    dist = distances_from(walls, goal)
    if dist[tuple(start)] < 0:
        return None
    path = [tuple(start)]
    while path[-1] != tuple(goal):
        r, c = path[-1]
        path.append(min(((r + dr, c + dc) for dr, dc in MOVES if dist[r + dr, c + dc] >= 0), key=lambda n: dist[n]))
    return path


def downstream_layout() -> np.ndarray:
    """The fixed 40 x 40 downstream maze (42 x 42 with the border); its start and goal cells are free
    and connected (the start's region is kept; for DOWNSTREAM_SEED it holds the goal)."""
    walls = random_layout(DOWNSTREAM_SIZE, np.random.default_rng(DOWNSTREAM_SEED), keep=DOWNSTREAM_START)
    assert not walls[DOWNSTREAM_GOAL], "DOWNSTREAM_SEED must give a maze whose goal cell is reachable"
    return walls


# ----------------------------------------------------------------------------- tasks


def cell_to_xy(walls: np.ndarray, cell) -> np.ndarray:
    """Centre of (row, col) in PointMaze coordinates (x right, y up, origin at the maze centre)."""
    rows, cols = walls.shape
    return np.array([cell[1] + 0.5 - cols / 2, rows / 2 - cell[0] - 0.5])


def xy_to_cell(walls: np.ndarray, xy) -> tuple[int, int]:
    rows, cols = walls.shape
    return int(np.floor(rows / 2 - xy[1])), int(np.floor(xy[0] + cols / 2))


# Easy to overlook in the authors' maze: its particle body sits at (1.2, 1.2) while the wall of cell (i, j) is
# centred at (i + 1, j + 1), so a position they give as a cell (a start, a goal, a planner waypoint) lies 0.2 off
# that cell's centre: down and to the right in this map (their x runs down the rows, their y along the columns).
CELL_ANCHOR = np.array([0.2, -0.2])


def cell_anchor(walls: np.ndarray, cell) -> np.ndarray:
    """Where the authors put the agent for "cell (row, col)": its centre + CELL_ANCHOR."""
    return cell_to_xy(walls, cell) + CELL_ANCHOR


class MazeTask(NamedTuple):
    walls: np.ndarray
    start_cell: tuple[int, int]
    goal_cell: tuple[int, int]
    start: np.ndarray  # (x, y)
    goal: np.ndarray  # (x, y)
    velocity: np.ndarray  # (vx, vy) at the start


def draw_training_task(rng: np.random.Generator) -> MazeTask:
    """A training episode's task as in the authors' data (kpertsch/d4rl maze_model.py): a new random layout, start
    and goal cells uniform over its free cells, each position jittered by U(-0.1, 0.1), a start velocity N(0, 0.1)."""
    walls = random_layout(TRAIN_SIZE, rng)
    free = np.argwhere(~walls)
    start_cell, goal_cell = (tuple(int(i) for i in free[k]) for k in rng.integers(len(free), size=2))
    start = cell_anchor(walls, start_cell) + rng.uniform(-0.1, 0.1, 2)
    goal = cell_anchor(walls, goal_cell) + rng.uniform(-0.1, 0.1, 2)
    return MazeTask(walls, start_cell, goal_cell, start, goal, rng.normal(0.0, 0.1, 2))


def training_task(seed: int) -> MazeTask:
    """The task that `MazeEnv().reset(seed=seed)` sets (drawn first from the generator gymnasium seeds), rebuilt
    without the simulator: the data stores each episode's seed."""
    return draw_training_task(gym.utils.seeding.np_random(seed)[0])


# ----------------------------------------------------------------------------- top-down view

# The authors' frames (kpertsch/d4rl maze_model.py, rendered by mujoco-py at 32 x 32 pixels) show what a camera
# 5 units above the agent, looking straight down (field of view 45 degrees), sees under a headlight (ambient 0.4,
# diffuse 0.8): orange wall boxes 0.4 high (top at z = 0.2) whose sides show where they are not straight below,
# a dark-blue checkered floor (z = -0.1; squares two cells wide whose edges run through cell centres), the agent
# as a green sphere of radius 0.2 and the goal as a red one. That is about 4 x 4 cells, 7.6 pixels per cell on the
# floor. The camera tracks the agent with MuJoCo's smoothing, lookat += 0.2 (agent - lookat) at every rendered
# frame, so a moving agent sits off centre, ahead of the camera. Together with the floor pattern this is what
# shows heading and speed in two stacked frames.
# This is the same picture drawn with numpy, no OpenGL: each pixel gets the exact share of every half-cell it
# covers (walls, floor squares and wall sides all lie on a half-cell grid), so moving a fraction of a pixel changes
# the frame, and the markers are anti-aliased disks. The camera sits at the steady state of MuJoCo's filter:
# CAMERA_LAG seconds of motion behind the agent (4 frames of travel at dt = 0.01), so a frame depends on the state
# (x, y, vx, vy) alone and a dataset's frames can be rendered from its states.
VIEW_PIXELS = 32
CAMERA_HEIGHT, FIELD_OF_VIEW = 5.0, 45.0  # above the agent (z = 0), degrees
FLOOR_Z, WALL_TOP_Z, MARKER_RADIUS = -0.1, 0.2, 0.2
CAMERA_LAG = 0.04  # s: lookat - agent = -(1 - 0.2) / 0.2 * dt * velocity, the filter's steady state at dt 0.01


def lit(rgb, light: float) -> np.ndarray:  # a material's colour under the headlight (ambient + diffuse * cos)
    return np.minimum(np.asarray(rgb) * light, 1.0)


WALL_RGB, FLOOR_RGB, AGENT_RGB, GOAL_RGB = (
    (0.7, 0.5, 0.3),
    ((0.2, 0.3, 0.4), (0.1, 0.2, 0.3)),
    (0.3, 0.6, 0.3),
    (0.6, 0.3, 0.3),
)
WALL_TOP, AGENT, GOAL = lit(WALL_RGB, 1.2), lit(AGENT_RGB, 1.2), lit(GOAL_RGB, 1.2)  # faces the light: 0.4 + 0.8
WALL_SIDE = lit(WALL_RGB, 0.64)  # a side seen at a slant: 0.4 + 0.8 * 0.3
FLOOR = np.stack([lit(rgb, 1.2) for rgb in FLOOR_RGB])


def pixels_per_cell(z: float) -> float:
    """Image scale of the plane at height z (cells are PointMaze units)."""
    return VIEW_PIXELS / (2 * (CAMERA_HEIGHT - z) * np.tan(np.radians(FIELD_OF_VIEW / 2)))


def _coverage(edges: np.ndarray, window: int):
    """Pixel edges (B, P + 1) on a half-cell axis -> (first half-cell (B,), (B, P, window) share of each pixel in
    half-cells first .. first + window - 1)."""
    first = np.floor(edges[:, 0]).astype(np.int64)
    k = first[:, None, None] + np.arange(window)
    overlap = np.minimum(edges[:, 1:, None], k + 1) - np.maximum(edges[:, :-1, None], k)
    return first, np.clip(overlap, 0.0, None) / (edges[:, 1:] - edges[:, :-1])[..., None]


def _layer(walls: np.ndarray, centre: np.ndarray, z: float):
    """The grid seen at height z around `centre` (B, 2): (coverage over rows (B, P, K), over columns (B, P, K),
    wall mask of the K x K half-cells (B, K, K), their checker parity (B, K, K))."""
    batch, rows, cols = walls.shape
    half_width = VIEW_PIXELS / 2 / pixels_per_cell(z)
    steps = np.linspace(-half_width, half_width, VIEW_PIXELS + 1)
    u = 2 * (centre[:, 0, None] + steps + cols / 2)  # column axis in half-cells, 0 at the grid's left edge
    v = 2 * (rows / 2 - centre[:, 1, None] + steps)  # row axis in half-cells, 0 at the top edge (image row 0)
    window = int(np.ceil(4 * half_width)) + 2
    c0, cover_u = _coverage(u, window)
    r0, cover_v = _coverage(v, window)
    ku, kv = c0[:, None] + np.arange(window), r0[:, None] + np.arange(window)  # (B, K) half-cell indices
    r, c = kv[:, :, None] // 2, ku[:, None, :] // 2
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)  # outside the grid lies floor, as in the authors' scene
    wall = inside & walls[np.arange(batch)[:, None, None], np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)]
    parity = ((kv[:, :, None] - 1) // 4 + (ku[:, None, :] - 1) // 4) % 2  # square edges at even cells' centres
    return cover_v, cover_u, wall, parity


def _disk(centre: np.ndarray, point: np.ndarray) -> np.ndarray:
    """(B, P, P) anti-aliased coverage of a MARKER_RADIUS disk at `point` (B, 2), at z = 0 around `centre`."""
    scale = pixels_per_cell(0.0)
    offsets = (np.arange(VIEW_PIXELS) + 0.5 - VIEW_PIXELS / 2) / scale
    dx = centre[:, 0, None, None] + offsets[None, None, :] - point[:, 0, None, None]
    dy = centre[:, 1, None, None] - offsets[None, :, None] - point[:, 1, None, None]
    return np.clip(MARKER_RADIUS * scale - np.hypot(dx, dy) * scale + 0.5, 0.0, 1.0)


def render_views(walls: np.ndarray, states: np.ndarray, goals: np.ndarray) -> np.ndarray:
    """(B, 3, 32, 32) uint8 top-down views (module notes above) of B states (B, >= 4) (x, y, vx, vy) in the layouts
    `walls` (B, rows, cols), the goals (B, 2) marked. Row 0 is the top (+y) edge."""
    states = np.asarray(states, dtype=np.float64)
    centre = states[:, :2] - CAMERA_LAG * states[:, 2:4]
    # The floor plane, where wall boxes stand on it seen as their sides (their tops cover the rest).
    cover_v, cover_u, wall, parity = _layer(walls, centre, FLOOR_Z)
    colours = np.where(wall[:, None], WALL_SIDE[:, None, None], FLOOR.T[:, parity].swapaxes(0, 1))  # (B, 3, K, K)
    image = cover_v[:, None] @ colours @ cover_u.transpose(0, 2, 1)[:, None]  # (B, 3, P, P)
    # The wall tops, nearer the camera and so larger.
    cover_v, cover_u, wall, _ = _layer(walls, centre, WALL_TOP_Z)
    top = (cover_v @ wall.astype(np.float64) @ cover_u.transpose(0, 2, 1))[:, None]
    image = top * WALL_TOP[:, None, None] + (1 - top) * image
    for point, colour in ((goals, GOAL), (states[:, :2], AGENT)):
        disk = _disk(centre, np.asarray(point, dtype=np.float64))[:, None]
        image = disk * colour[:, None, None] + (1 - disk) * image
    return (image * 255 + 0.5).astype(np.uint8)


RASTER_CELLS = 8.0  # the raster view spans this many cells, centred on the agent
RASTER_FLOOR, RASTER_WALL, RASTER_AGENT = (
    np.array(c, dtype=np.uint8) for c in ((230, 230, 230), (60, 60, 160), (220, 40, 40))
)
RASTER_AGENT_RADIUS = 0.5  # cells


def render_raster_views(walls: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """view="raster", the frames of the maze models trained before the camera view: (B, 3, 32, 32) uint8 flat
    top-down views of the RASTER_CELLS x RASTER_CELLS cells around each of the B positions `xy` (B, 2) in the
    layouts `walls` (B, rows, cols): floor, walls (outside the maze counts as wall) and the agent as a disk at the
    centre, one colour each, no goal."""
    batch, rows, cols = walls.shape
    offsets = (np.arange(VIEW_PIXELS) + 0.5) / VIEW_PIXELS * RASTER_CELLS - RASTER_CELLS / 2
    x = xy[:, 0, None, None] + offsets[None, None, :]  # (B, 1, W)
    y = xy[:, 1, None, None] - offsets[None, :, None]  # (B, H, 1)
    r = np.floor(rows / 2 - y).astype(np.int64)
    c = np.floor(x + cols / 2).astype(np.int64)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    cell_is_wall = walls[np.arange(batch)[:, None, None], np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)]
    is_wall = np.where(inside, cell_is_wall, True)
    image = np.where(is_wall[..., None], RASTER_WALL, RASTER_FLOOR)
    image[:, (offsets[None, :] ** 2 + offsets[:, None] ** 2) <= RASTER_AGENT_RADIUS**2] = RASTER_AGENT
    return np.ascontiguousarray(image.transpose(0, 3, 1, 2))


VIEWS = ("camera", "raster")


def render(walls: np.ndarray, states: np.ndarray, goals: np.ndarray, view: str = "camera") -> np.ndarray:
    """(B, 3, 32, 32) uint8 frames of B states in the layouts `walls` (B, rows, cols), goals (B, 2): the camera
    view (render_views) or, for models trained on it, the raster view (render_raster_views)."""
    if view == "raster":
        return render_raster_views(walls, np.asarray(states, dtype=np.float64)[:, :2])
    return render_views(walls, states, goals)


class DatasetViews:
    """The image observations of a maze dataset's steps, rendered on demand (85k episodes of frames
    would take 130 GB; their layouts take 41 MB). `seeds`: each episode's env seed, which rebuilds its
    layout and goal (training_task).

    Called with episode indices (B,), the states one step earlier (B, 4) and the states (B, 4), it
    returns what MazeEnv(image=True) observes there: the state, then the previous and the current
    frame scaled to [0, 1], (B, 4 + 6144) float32. At an episode's first step pass the state as its
    own previous one, as the env's reset does."""

    def __init__(self, seeds, view: str = "camera"):
        tasks = [training_task(int(s)) for s in seeds]
        self.layouts = np.stack([t.walls for t in tasks])
        self.goals = np.stack([t.goal for t in tasks])
        self.view = view

    def __call__(self, episode, previous_states, states):
        import torch  # envs needs torch only here, for the data pipeline of spirl_pretrain.py

        episode = np.asarray(episode)
        layouts, goals = self.layouts[episode], self.goals[episode]
        views = [render(layouts, np.asarray(s), goals, self.view) for s in (previous_states, states)]
        frames = np.concatenate(views, axis=1)
        frames = torch.from_numpy(frames.reshape(len(frames), -1)).float().div_(255.0)
        return torch.cat([torch.as_tensor(states, dtype=torch.float32), frames], dim=1)

    def sequence(self, episode, previous_states, states):
        """The observations at every step of windows, for a closed-loop decoder that reads the frames: episode
        indices (B,), the states one step before each window (B, 4) and the windows' states (B, T, 4) ->
        (B, T, 4 + 6144), each state's view rendered once (a step's previous frame is the step before's current)."""
        import torch

        episode = np.asarray(episode)
        states = torch.as_tensor(states, dtype=torch.float32)
        chain = torch.cat([torch.as_tensor(previous_states, dtype=torch.float32)[:, None], states], dim=1)
        b, t = states.shape[:2]
        layouts, goals = (np.repeat(x[episode], t + 1, axis=0) for x in (self.layouts, self.goals))
        views = render(layouts, chain.flatten(0, 1).numpy(), goals, self.view).reshape(b, t + 1, -1)
        frames = torch.from_numpy(np.concatenate([views[:, :-1], views[:, 1:]], axis=2)).float().div_(255.0)
        return torch.cat([states, frames], dim=2)


# ----------------------------------------------------------------------------- the env


class MazeEnv(gym.Env):
    """Point-mass maze. `layout=None`: a new training task every episode (draw_training_task: layout, start, goal);
    otherwise that layout with fixed `start` and `goal` cells (the downstream task by default:
    `MazeEnv.downstream()`), where the agent starts at rest, as the authors' downstream env. Observation: the 4-dim
    state, or with `image=True` the state followed by two stacked top-down frames (previous, current), flattened:
    4 + 2 * 3 * 32 * 32 values in [0, 1]; `view` chooses the frames (render)."""

    def __init__(
        self,
        layout: np.ndarray | None = None,
        start=None,
        goal=None,
        image: bool = False,
        max_episode_steps: int | None = None,
        goal_threshold: float = GOAL_THRESHOLD,
        view: str = "camera",
    ):
        if view not in VIEWS:
            raise SpirlError(f"unknown maze view '{view}': choose one of {', '.join(VIEWS)}")
        self.training = layout is None
        self.size = TRAIN_SIZE if self.training else layout.shape[0] - 2
        self.walls = layout if layout is not None else random_layout(TRAIN_SIZE, np.random.default_rng(0))
        self.start, self.goal_cell = start, goal
        self.image, self.goal_threshold, self.view = image, goal_threshold, view
        default_steps = TRAIN_EPISODE_STEPS if self.training else DOWNSTREAM_EPISODE_STEPS
        self.max_episode_steps = max_episode_steps or default_steps
        full = np.ones((self.size + 2, self.size + 2), dtype=int)  # a wall box on every cell, switched per layout
        full[1, 1] = 0  # PointMaze needs one free cell at build time
        with contextlib.redirect_stderr(io.StringIO()):
            self._maze = PointMazeEnv(maze_map=full.tolist(), continuing_task=True)
        model = self._maze.point_env.model
        cells = range(self.size + 2)
        self._boxes = np.array([[model.geom(f"block_{i}_{j}").id if full[i, j] else -1 for j in cells] for i in cells])
        self._rgba = model.geom_rgba[self._boxes[0, 0]].copy()
        self._ground = model.geom("ground").id
        obs_dim = STATE_DIM + (2 * 3 * VIEW_PIXELS**2 if image else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._set_layout(self.walls)

    @classmethod
    def downstream(cls, goal=DOWNSTREAM_GOAL, **kwargs) -> "MazeEnv":
        """The authors' downstream task; `goal`: another goal cell (row, col) of the same maze (app. H)."""
        walls = downstream_layout()
        goal = tuple(int(i) for i in goal)
        inside = len(goal) == 2 and all(0 <= i < n for i, n in zip(goal, walls.shape))
        if not inside or walls[goal] or distances_from(walls, DOWNSTREAM_START)[goal] < 0:
            raise SpirlError(
                f"maze goal cell {goal} is a wall, outside the maze or cut off from the start: choose a "
                f"free cell (row, col) reachable from {DOWNSTREAM_START}, e.g. {DOWNSTREAM_GOAL}"
            )
        return cls(walls, DOWNSTREAM_START, goal, **kwargs)

    def _set_layout(self, walls: np.ndarray):
        model = self._maze.point_env.model
        ids = self._boxes[self._boxes >= 0]
        on = walls[self._boxes >= 0]
        model.geom_contype[ids] = model.geom_conaffinity[ids] = on.astype(np.int32)
        model.geom_rgba[ids] = np.where(on[:, None], self._rgba, 0.0)
        self._maze.maze._maze_map = walls.astype(int).tolist()  # PointMaze checks reset/goal cells on it
        self.walls = walls

    def touching_wall(self) -> bool:
        """Whether the agent touches a wall now: a MuJoCo contact not with the floor (the walls of other layouts
        are switched off)."""
        contact, ground = self._maze.point_env.data.contact, self._ground
        return bool(np.any((contact.geom1 != ground) & (contact.geom2 != ground)))

    def view_at(self, state: np.ndarray) -> np.ndarray:
        """(3, 32, 32) uint8 frame of `state` (x, y, vx, vy) in this episode's layout, with its goal."""
        return render(self.walls[None], np.asarray(state)[None], self.goal[None], self.view)[0]

    def _observation(self, state: np.ndarray) -> np.ndarray:
        if not self.image:
            return state.astype(np.float32)
        frames = np.concatenate([self._previous_view, self._view]).astype(np.float32) / 255.0
        return np.concatenate([state.astype(np.float32), frames.ravel()])

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if self.training:  # a new layout, start and goal, drawn from this env's generator (= training_task(seed))
            task = draw_training_task(self.np_random)
            self._set_layout(task.walls)
        else:
            start, goal = cell_anchor(self.walls, self.start), cell_anchor(self.walls, self.goal_cell)
            task = MazeTask(self.walls, tuple(self.start), tuple(self.goal_cell), start, goal, np.zeros(2))
        cells = {"reset_cell": np.array(task.start_cell), "goal_cell": np.array(task.goal_cell)}
        self._maze.reset(seed=int(self.np_random.integers(2**31)), options=cells)
        point = self._maze.point_env
        point.set_state(np.asarray(task.start, dtype=np.float64), np.asarray(task.velocity, dtype=np.float64))
        self._maze.goal = self.goal = np.asarray(task.goal, dtype=np.float64)
        self.steps, self.reached = 0, False
        state = np.concatenate([point.data.qpos, point.data.qvel]).astype(np.float32)
        if self.image:
            self._view = self.view_at(state)
            self._previous_view = self._view
        info = {"start_cell": task.start_cell, "goal_cell": task.goal_cell, "success": False}
        return self._observation(state), info

    def place(self, xy, velocity) -> np.ndarray:
        """Put the agent, after a reset, at `xy` moving with `velocity` (PointMaze units); the previous frame shows
        it one step earlier, as if it had been moving so. Returns the observation. For probes of what skills do in
        a given spot (bench/bench_maze.py); the episode's step count and reward are unchanged."""
        xy, velocity = np.asarray(xy, dtype=np.float64), np.asarray(velocity, dtype=np.float64)
        point = self._maze.point_env
        point.set_state(xy, velocity)
        state = np.concatenate([xy, velocity]).astype(np.float32)
        if self.image:
            earlier = np.concatenate([xy - point.dt * velocity, velocity]).astype(np.float32)
            self._previous_view, self._view = self.view_at(earlier), self.view_at(state)
        return self._observation(state)

    def step(self, action):
        obs, _, _, _, _ = self._maze.step(np.asarray(action, dtype=np.float64))
        # Frames are drawn from the state as observed (and as datasets store it), in float32.
        state = obs["observation"].astype(np.float32)
        self.steps += 1
        distance = float(np.linalg.norm(state[:2] - self.goal))
        reward = float(distance <= self.goal_threshold)  # per-step binary reward near the goal
        self.reached |= reward > 0
        if self.image:
            self._previous_view, self._view = self._view, self.view_at(state)
        truncated = self.steps >= self.max_episode_steps
        # "success": the goal was reached at some step of this episode (the paper's maze success rate)
        return self._observation(state), reward, False, truncated, {"success": self.reached, "distance": distance}
