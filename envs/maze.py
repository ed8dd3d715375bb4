"""Point-mass maze navigation (paper Sec. 4.2, app. C) on gymnasium-robotics PointMaze.

The layouts, shortest paths, the downstream maze, the env and its image observations (a top-down
view rasterised with numpy) are here; the planner's data is written by envs/maze_demos.py.

- Layouts are boolean wall grids with a wall border. Training layouts are random, made as the
  authors' (kpertsch/d4rl): straight walls of 30-50% of the side, each with one doorway at a random
  position, spread out, until a quarter of the 20 x 20 interior is wall; a pocket that walls close
  off is filled, so every free cell is reachable. The downstream maze is one such layout, 40 x 40
  (four times the area), fixed by a seed, with the authors' start cell (10, 24) and goal cell (18, 8)
  (../shared/reference), 26 cells apart along the shortest path.
- Reward (the authors' set-up): 1 for every step within `GOAL_THRESHOLD` = 2 cells of the goal,
  episodes never terminate, 2000 steps downstream. A random policy diffuses a few cells in that
  time (bench/bench_maze.py); the goal is 26 cells away along the grid, about 520 steps at the top speed.
- The physics is PointMaze's: a point mass with 2-dim actions in [-1, 1] driving its x and y joints
  (the "(x, y) velocity actions" of D4RL maze2d are likewise actuator inputs), velocity clipped to 5;
  the state is (x, y, vx, vy), in PointMaze's coordinates (1 unit per cell). PointMaze jitters the
  start and goal by up to 0.25 cells each episode; the reference set-up is silent on this, and the
  2-cell goal threshold makes it immaterial, so it is kept.
- One PointMaze model serves every layout: it is built once with a wall box on every interior cell,
  and a new layout switches boxes on and off (collision and colour) instead of recompiling the model
  (72 ms a build, measured; a new layout comes with every training episode).
"""

from __future__ import annotations

import contextlib
import io
from collections import deque

import gymnasium as gym
import numpy as np

with contextlib.redirect_stderr(io.StringIO()):  # silence an import-time notice about Adroit envs
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv

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
    """Add one straight wall with a doorway to the (size, size) bool grid `interior`, in place."""
    size = interior.shape[0]
    vertical = rng.random() < 0.5
    length = max(int(size * (WALL_LENGTH[0] + (WALL_LENGTH[1] - WALL_LENGTH[0]) * rng.random())), 3)
    door = int(rng.integers(1, length - 1))
    grid = interior if vertical else interior.T  # a view: a horizontal wall is a vertical one of the transpose
    # Wall density of the (length x 5) band centred on every possible wall position, from an integral image.
    integral = np.pad(grid.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    band = integral[length:, 5:] - integral[:-length, 5:] - integral[length:, :-5] + integral[:-length, :-5]
    weights = np.exp(-WALL_SPREAD * band / (5 * length)).ravel()
    top, col = divmod(int(rng.choice(weights.size, p=weights / weights.sum())), size - 4)
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


# ----------------------------------------------------------------------------- top-down view

VIEW_PIXELS = 32
VIEW_CELLS = 8.0  # the view spans this many cells, centred on the agent
FLOOR, WALL, AGENT = (np.array(c, dtype=np.uint8) for c in ((230, 230, 230), (60, 60, 160), (220, 40, 40)))
AGENT_RADIUS = 0.5  # cells


def cell_to_xy(walls: np.ndarray, cell) -> np.ndarray:
    """Centre of (row, col) in PointMaze coordinates (x right, y up, origin at the maze centre)."""
    rows, cols = walls.shape
    return np.array([cell[1] + 0.5 - cols / 2, rows / 2 - cell[0] - 0.5])


def xy_to_cell(walls: np.ndarray, xy) -> tuple[int, int]:
    rows, cols = walls.shape
    return int(np.floor(rows / 2 - xy[1])), int(np.floor(xy[0] + cols / 2))


def render_views(walls: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(B, 3, 32, 32) uint8 top-down views of the VIEW_CELLS x VIEW_CELLS cells around each of the B
    positions `xy` (B, 2), in the layouts `walls` (B, rows, cols): floor, walls (outside the maze counts
    as wall) and the agent as a disk at the centre. Rasterised with numpy from the grid, no renderer
    needed. Row 0 is the top (+y) edge."""
    batch, rows, cols = walls.shape
    offsets = (np.arange(VIEW_PIXELS) + 0.5) / VIEW_PIXELS * VIEW_CELLS - VIEW_CELLS / 2
    x = xy[:, 0, None, None] + offsets[None, None, :]  # (B, 1, W)
    y = xy[:, 1, None, None] - offsets[None, :, None]  # (B, H, 1)
    r = np.floor(rows / 2 - y).astype(np.int64)
    c = np.floor(x + cols / 2).astype(np.int64)
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    cell_is_wall = walls[np.arange(batch)[:, None, None], np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)]
    is_wall = np.where(inside, cell_is_wall, True)
    image = np.where(is_wall[..., None], WALL, FLOOR)
    image[:, (offsets[None, :] ** 2 + offsets[:, None] ** 2) <= AGENT_RADIUS**2] = AGENT
    return np.ascontiguousarray(image.transpose(0, 3, 1, 2))


def render_view(walls: np.ndarray, xy) -> np.ndarray:
    """(3, 32, 32) uint8 view around one position `xy` in the layout `walls` (see render_views)."""
    return render_views(walls[None], np.asarray(xy, dtype=np.float64)[None])[0]


def training_layout(seed: int) -> np.ndarray:
    """The training layout that `MazeEnv().reset(seed=seed)` builds (the env draws it first from the
    generator gymnasium seeds), rebuilt without the simulator: the data stores each episode's seed."""
    return random_layout(TRAIN_SIZE, gym.utils.seeding.np_random(seed)[0])


class DatasetViews:
    """The image observations of a maze dataset's steps, rendered on demand (85k episodes of frames
    would take 130 GB; their layouts take 41 MB). `seeds`: each episode's env seed.

    Called with episode indices (B,), the states one step earlier (B, 4) and the states (B, 4), it
    returns what MazeEnv(image=True) observes there: the state, then the previous and the current
    frame scaled to [0, 1], (B, 4 + 6144) float32. At an episode's first step pass the state as its
    own previous one, as the env's reset does."""

    def __init__(self, seeds):
        self.layouts = np.stack([training_layout(int(s)) for s in seeds])

    def __call__(self, episode, previous_states, states):
        import torch  # envs needs torch only here, for the data pipeline of spirl_pretrain.py

        layouts = self.layouts[np.asarray(episode)]
        views = [render_views(layouts, np.asarray(s[:, :2], dtype=np.float64)) for s in (previous_states, states)]
        frames = np.concatenate(views, axis=1)
        frames = torch.from_numpy(frames.reshape(len(frames), -1)).float().div_(255.0)
        return torch.cat([torch.as_tensor(states, dtype=torch.float32), frames], dim=1)


# ----------------------------------------------------------------------------- the env


class MazeEnv(gym.Env):
    """Point-mass maze. `layout=None`: a new random training layout, start and goal every episode;
    otherwise that layout with fixed `start` and `goal` cells (the downstream task by default:
    `MazeEnv.downstream()`). Observation: the 4-dim state, or with `image=True` the state followed by
    two stacked top-down frames (previous, current), flattened: 4 + 2 * 3 * 32 * 32 values."""

    def __init__(
        self,
        layout: np.ndarray | None = None,
        start=None,
        goal=None,
        image: bool = False,
        max_episode_steps: int | None = None,
        goal_threshold: float = GOAL_THRESHOLD,
        goal_distance: tuple[int, int] = (5, 20),
    ):
        self.training = layout is None
        self.size = TRAIN_SIZE if self.training else layout.shape[0] - 2
        self.walls = layout if layout is not None else random_layout(TRAIN_SIZE, np.random.default_rng(0))
        self.start, self.goal_cell = start, goal
        self.image, self.goal_threshold = image, goal_threshold
        # Training goals lie this many cells (shortest path) from the start: the point mass covers at
        # most 0.05 cells per step (velocity clip 5, dt 0.01), so 20 cells fit a 500-step episode.
        self.goal_distance = goal_distance
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
        obs_dim = STATE_DIM + (2 * 3 * VIEW_PIXELS**2 if image else 0)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._set_layout(self.walls)

    @classmethod
    def downstream(cls, **kwargs) -> "MazeEnv":
        return cls(downstream_layout(), DOWNSTREAM_START, DOWNSTREAM_GOAL, **kwargs)

    def _set_layout(self, walls: np.ndarray):
        model = self._maze.point_env.model
        ids = self._boxes[self._boxes >= 0]
        on = walls[self._boxes >= 0]
        model.geom_contype[ids] = model.geom_conaffinity[ids] = on.astype(np.int32)
        model.geom_rgba[ids] = np.where(on[:, None], self._rgba, 0.0)
        self._maze.maze._maze_map = walls.astype(int).tolist()  # PointMaze checks reset/goal cells on it
        self.walls = walls

    def _draw_start_and_goal(self):
        free = np.argwhere(~self.walls)
        low, high = self.goal_distance
        while True:  # a start from which some cell lies at the wanted distance (nearly always the first)
            start = tuple(free[self.np_random.integers(len(free))])
            dist = distances_from(self.walls, start)
            goals = np.argwhere((dist >= low) & (dist <= high))
            if len(goals):
                return start, tuple(goals[self.np_random.integers(len(goals))])

    def _observation(self, state: np.ndarray) -> np.ndarray:
        if not self.image:
            return state.astype(np.float32)
        frames = np.concatenate([self._previous_view, self._view]).astype(np.float32) / 255.0
        return np.concatenate([state.astype(np.float32), frames.ravel()])

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        start, goal = self.start, self.goal_cell
        if self.training:  # a new layout, start and goal, drawn from this env's generator
            self._set_layout(random_layout(TRAIN_SIZE, self.np_random))  # = training_layout(seed) when seeded
            start, goal = self._draw_start_and_goal()
        cells = {"reset_cell": np.array(start), "goal_cell": np.array(goal)}
        obs, _ = self._maze.reset(seed=int(self.np_random.integers(2**31)), options=cells)
        self.goal = obs["desired_goal"].copy()
        self.steps, self.reached = 0, False
        state = obs["observation"]
        if self.image:
            self._view = render_view(self.walls, state[:2])
            self._previous_view = self._view
        return self._observation(state), {"start_cell": start, "goal_cell": goal, "success": False}

    def step(self, action):
        obs, _, _, _, _ = self._maze.step(np.asarray(action, dtype=np.float64))
        state = obs["observation"]
        self.steps += 1
        distance = float(np.linalg.norm(state[:2] - self.goal))
        reward = float(distance <= self.goal_threshold)  # per-step binary reward near the goal
        self.reached |= reward > 0
        if self.image:
            self._previous_view, self._view = self._view, render_view(self.walls, state[:2])
        truncated = self.steps >= self.max_episode_steps
        # "success": the goal was reached at some step of this episode (the paper's maze success rate)
        return self._observation(state), reward, False, truncated, {"success": self.reached, "distance": distance}
