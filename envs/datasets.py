"""Offline data: (state, action) episodes in the env's state space, and H-step training windows.

`load_episodes(source, env)` reads any of
  0. a dataset this repo generates, by name: "spirl/kitchen-scripted-v0" (the kitchen default, written
     to data/kitchen-scripted-v0 by `python -m envs.kitchen_demos`),
  1. a Minari dataset id, e.g. "D4RL/kitchen/mixed-v2" (local copy first, else a download, which
     needs `pip install "minari[hf]"` and internet),
  2. a local Minari dataset directory (the folder that holds `data/`, or `data/` itself),
  3. a D4RL hdf5 file (`observations`, `actions`, `terminals`, `timeouts`),
and maps every observation format to the env's state (kitchen: FrankaKitchen-v1's 59 dims, D4RL's
60 dims, or the 30-dim state itself). Each episode has len(states) == len(actions) + 1.

`WindowSampler` draws the windows of eq. 1: H actions with their H+1 states, sampled uniformly over
episodes, then uniformly inside one episode, never across an episode boundary.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from envs.errors import SpirlError
from envs.registry import LOCAL_DATASETS, env_spec

OFFLINE_HINT = "or pass a local file/folder with --dataset (a D4RL .hdf5 file or a Minari dataset directory)"


@dataclass
class Episode:
    states: np.ndarray  # (T + 1, state_dim) float32
    actions: np.ndarray  # (T, action_dim) float32
    seed: int | None = None  # the env seed the episode was collected with, where the dataset stores one


# ----------------------------------------------------------------------------- state mapping


def observations_to_states(env: str, observations, source: str) -> np.ndarray:
    """Map a dataset's observations (array or Minari dict) to the env's state vectors."""
    state_dim = env_spec(env)["state_dim"]
    if isinstance(observations, dict):
        if "observation" not in observations:
            raise SpirlError(f"{source}: dict observations without an 'observation' key; not {env} data")
        observations = observations["observation"]
    obs = np.asarray(observations, dtype=np.float32)
    dim = obs.shape[-1] if obs.ndim == 2 else None
    if env == "kitchen":
        from envs.kitchen import d4rl_observation_to_state, v1_observation_to_state

        mapping = {30: lambda o: o, 59: v1_observation_to_state, 60: d4rl_observation_to_state}
        if dim in mapping:
            return np.ascontiguousarray(mapping[dim](obs))
    elif dim == state_dim or dim in env_spec(env).get("data_state_dims", ()):
        return obs
    raise SpirlError(
        f"{source}: observations have shape {obs.shape[1:]}, which does not fit --env {env} "
        f"(state dim {state_dim}); use a dataset recorded in that env"
    )


def _check_actions(env: str, actions, source: str) -> np.ndarray:
    action_dim = env_spec(env)["action_dim"]
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2 or actions.shape[1] != action_dim:
        raise SpirlError(
            f"{source}: actions have shape {actions.shape[1:]}, but --env {env} has {action_dim}-dim "
            "actions; use a dataset recorded in that env"
        )
    return actions


# ----------------------------------------------------------------------------- readers


def _read_d4rl_hdf5(path: str, env: str) -> list[Episode]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("observations", "actions", "terminals") if k not in f]
            if missing:
                raise SpirlError(f"{path}: not a D4RL dataset (no {', '.join(missing)}); pass a D4RL .hdf5 file")
            observations = f["observations"][:]
            actions = f["actions"][:]
            ends = f["terminals"][:].astype(bool)
            if "timeouts" in f:
                ends |= f["timeouts"][:].astype(bool)
    except SpirlError:
        raise
    except Exception as e:  # h5py raises OSError/KeyError/... on corrupt or truncated files
        raise SpirlError(
            f"cannot read {path} ({type(e).__name__}): the file is corrupt or truncated; download it again"
        ) from None
    if not (len(observations) == len(actions) == len(ends)):
        raise SpirlError(f"{path}: observations, actions and terminals differ in length; file is damaged")
    states = observations_to_states(env, observations, path)
    actions = _check_actions(env, actions, path)
    # An episode runs up to and including a step flagged terminal/timeout; data after the last flag
    # is a final, unterminated episode. D4RL stores no observation after the last action, so each
    # episode keeps its T states and the first T-1 actions (the last one has no next state).
    bounds = np.flatnonzero(ends) + 1
    bounds = np.concatenate([[0], bounds, [len(ends)] if not ends[-1:].all() else []]).astype(int)
    return [Episode(states[a:b], actions[a : b - 1]) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2]


def _read_minari(dataset, env: str, source: str) -> list[Episode]:
    episodes = []
    for ep in dataset.iterate_episodes():
        states = observations_to_states(env, ep.observations, source)
        actions = _check_actions(env, ep.actions, source)
        if len(states) != len(actions) + 1:
            raise SpirlError(f"{source}: episode {ep.id} has {len(states)} observations for {len(actions)} actions")
        episodes.append(Episode(states, actions))
    # Per-episode env seeds (the maze's image observations rebuild each episode's layout from it).
    metadata = dataset.storage.get_episode_metadata(dataset.episode_indices)
    # The earlier maze collectors' seeds rebuild other layouts or goals than the episodes ran in (v0: other goals than
    # the camera view marks; v1: walls drawn in another order): treated as seedless, so an image prior on that data
    # stops with dataset_views' one-line error, which names the collector to rerun.
    stale = dataset.spec.dataset_id in ("spirl/maze-planner-v0", "spirl/maze-planner-v1")
    for episode, meta in zip(episodes, metadata):
        episode.seed = None if stale else meta.get("seed")
    return episodes


def _open_minari_dir(path: str):
    import minari

    # The dataset folder (holding data/) or its data/ folder itself; a dataset folder may be named "data" too.
    data_path = os.path.join(path, "data")
    if not os.path.isdir(data_path) and os.path.basename(os.path.normpath(path)) == "data":
        data_path = path
    if not os.path.isdir(data_path):
        raise SpirlError(f"{path}: not a Minari dataset directory (no data/ folder inside)")
    try:
        return minari.MinariDataset(data_path)
    except Exception as e:
        raise SpirlError(
            f"cannot read Minari dataset {path} ({type(e).__name__}: {e}); it is corrupt or incomplete"
        ) from None


def _open_minari_id(dataset_id: str):
    import minari

    try:
        return minari.load_dataset(dataset_id)  # local copy (MINARI_DATASETS_PATH or ~/.minari)
    except FileNotFoundError:
        pass
    except Exception as e:
        raise SpirlError(f"cannot read local Minari dataset {dataset_id} ({type(e).__name__}: {e})") from None
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as e:
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise SpirlError(
            f"Minari dataset '{dataset_id}' is not on this machine and could not be downloaded ({why}); "
            f'fix: pip install "minari[hf]" and connect to the internet, {OFFLINE_HINT}'
        ) from None


def load_episodes(source: str, env: str) -> list[Episode]:
    """Read episodes of (states, actions) in `env`'s state space from a file, folder or Minari id."""
    env_spec(env)
    source = os.fspath(source)
    if source in LOCAL_DATASETS:
        path, command = LOCAL_DATASETS[source]
        if not os.path.isdir(path):
            raise SpirlError(
                f"dataset {source} is not generated yet: run `{command}` (writes {path}), or pass --dataset"
            )
        source = path
    if source.endswith((".hdf5", ".h5")) or os.path.isfile(source):
        if not os.path.isfile(source):
            raise SpirlError(f"dataset file {source} does not exist; check the path given to --dataset")
        episodes = _read_d4rl_hdf5(source, env)
    elif os.path.isdir(source):
        episodes = _read_minari(_open_minari_dir(source), env, source)
    elif re.fullmatch(r"[\w.-]+(/[\w.-]+)*-v\d+", source):  # a Minari id: [namespace/]name-vN
        episodes = _read_minari(_open_minari_id(source), env, source)
    else:
        raise SpirlError(
            f"dataset {source} does not exist; give a Minari id like D4RL/kitchen/mixed-v2, {OFFLINE_HINT}"
        )
    if not episodes:
        raise SpirlError(f"{source}: contains no episodes")
    bad = sum(not (np.isfinite(e.states).all() and np.isfinite(e.actions).all()) for e in episodes)
    if bad:
        raise SpirlError(f"{source}: {bad} episode(s) contain NaN or inf values; clean or regenerate the dataset")
    return episodes


def split_episodes(episodes: list[Episode], val_fraction: float, seed: int):
    """Split by episode (never inside one): at least one validation episode when there are two or more."""
    n = len(episodes)
    n_val = 0 if val_fraction <= 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return [episodes[i] for i in order[n_val:]], [episodes[i] for i in order[:n_val]]


# ----------------------------------------------------------------------------- windows


class WindowSampler:
    """Uniform H-step windows (H actions, H+1 states) that never cross an episode boundary.

    Each batch is (states (B, H+1, S), actions (B, H, A), observations (B, O)): `observations` is the
    skill prior's input at the window's first step, the state s_1 itself unless an `observe` function
    renders more (the maze's image observations): observe(episode indices into `episodes` (B,),
    states one step before s_1 (B, S) (s_1 itself at an episode's start), s_1 (B, S)) -> (B, O).
    With `step_observations` the states come as observations at every step, (B, H+1, O) (observe.sequence
    renders them: a closed-loop decoder that reads the frames)."""

    def __init__(self, episodes: list[Episode], skill_horizon: int, observe=None, step_observations: bool = False):
        if skill_horizon < 1:
            raise SpirlError(f"--skill-horizon must be at least 1 (got {skill_horizon})")
        H = skill_horizon
        usable = [i for i, e in enumerate(episodes) if len(e.actions) >= H]
        self.skipped = len(episodes) - len(usable)
        if not usable:
            raise SpirlError(
                f"no episode has at least H+1 = {H + 1} states: lower --skill-horizon or use a dataset with "
                "longer episodes"
            )
        if self.skipped:
            warnings.warn(
                f"{self.skipped} of {len(episodes)} episodes are shorter than H+1 = {H + 1} states and are skipped"
            )
        if step_observations and not hasattr(observe, "sequence"):
            raise SpirlError(
                "observations at every step of a window need image data that renders them (maze, block stacking)"
            )
        self.skill_horizon, self.observe, self.step_observations = H, observe, step_observations
        self.num_episodes = len(usable)
        self.episode_ids = torch.tensor(usable)  # index of each usable episode in `episodes`
        self.states = torch.from_numpy(np.concatenate([episodes[i].states for i in usable]))
        self.actions = torch.from_numpy(np.concatenate([episodes[i].actions for i in usable]))
        n_actions = torch.tensor([len(episodes[i].actions) for i in usable])
        self.windows_per_episode = n_actions - H + 1
        self.state_offset = torch.cumsum(n_actions + 1, 0) - (n_actions + 1)
        self.action_offset = torch.cumsum(n_actions, 0) - n_actions
        self.num_windows = int(self.windows_per_episode.sum())
        self._state_steps = torch.arange(H + 1)
        self._action_steps = torch.arange(H)

    def _gather(self, episode: torch.Tensor, start: torch.Tensor):
        s = self.state_offset[episode] + start
        a = self.action_offset[episode] + start
        states = self.states[s[:, None] + self._state_steps]
        if self.observe is None:
            return states, self.actions[a[:, None] + self._action_steps], states[:, 0]
        previous = self.states[s - (start > 0).long()]
        if self.step_observations:  # the window's states become observations: state, then the two frames
            states = self.observe.sequence(self.episode_ids[episode], previous, states)
            return states, self.actions[a[:, None] + self._action_steps], states[:, 0]
        observations = self.observe(self.episode_ids[episode], previous, states[:, 0])
        return states, self.actions[a[:, None] + self._action_steps], observations

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        """(states, actions, observations): an episode uniformly, then a start uniformly inside it."""
        episode = torch.randint(self.num_episodes, (batch_size,), generator=generator)
        u = torch.rand(batch_size, generator=generator)
        start = (u * self.windows_per_episode[episode]).long()
        return self._gather(episode, start)

    def all_windows(self, batch_size: int):
        """Every window once, in order (for deterministic validation)."""
        episode = torch.repeat_interleave(torch.arange(self.num_episodes), self.windows_per_episode)
        start = torch.arange(self.num_windows) - torch.repeat_interleave(
            torch.cumsum(self.windows_per_episode, 0) - self.windows_per_episode, self.windows_per_episode
        )
        for i in range(0, self.num_windows, batch_size):
            yield self._gather(episode[i : i + batch_size], start[i : i + batch_size])


def write_minari(out: str, episodes: list[dict], dataset_id: str, env, seed: int, algorithm: str, description: str):
    """Write `episodes` (dicts of "states" (T + 1, d), "actions" (T, a), "rewards" (T,), "terminated",
    and optionally the episode's env "seed", else `seed`) as the Minari dataset `dataset_id` at `out`.
    It is built in a temporary folder beside `out` and then moved into place, so an interrupted run
    never leaves a half-written dataset."""
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = []
    for i, ep in enumerate(episodes):
        n = len(ep["actions"])
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=ep.get("seed", seed),
                observations=ep["states"],
                actions=ep["actions"],
                rewards=ep["rewards"],
                terminations=[False] * (n - 1) + [bool(ep["terminated"])],
                truncations=[False] * (n - 1) + [not ep["terminated"]],
                infos={},
            )
        )
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".minari-") as tmp:
        previous = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = tmp
        try:
            with warnings.catch_warnings():  # minari nags about author/permalink metadata
                warnings.simplefilter("ignore")
                minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=env, algorithm_name=algorithm, description=description
                )
        finally:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
        if os.path.exists(out):
            shutil.rmtree(out)
        shutil.move(os.path.join(tmp, *dataset_id.split("/")), out)


# ----------------------------------------------------------------------------- collectors' worker pool


class ChunkStore:
    """The finished chunks of a long collection, kept in `<out>.partial/` until the dataset is written, so that an
    interrupted collection (Ctrl-C, a killed session) continues where it stopped when the same command is run again.
    A chunk's result depends only on the collector's settings and its episode indices, so the data come out the same
    however often the collection was interrupted; `settings` (JSON) must match those the folder was started with."""

    def __init__(self, out: str, settings: dict):
        self.dir = os.path.abspath(out).rstrip(os.sep) + ".partial"
        path = os.path.join(self.dir, "settings.json")
        if os.path.isfile(path):
            with open(path) as f:
                started = json.load(f)
            if started != settings:
                raise SpirlError(
                    f"{self.dir} holds a collection started with other settings ({started}): run it again with "
                    f"those, or delete the folder to start anew"
                )
        else:
            os.makedirs(self.dir, exist_ok=True)
            with open(path, "w") as f:
                json.dump(settings, f)
        self.done = len([name for name in os.listdir(self.dir) if name.startswith("chunk_")])

    def _path(self, first: int) -> str:
        return os.path.join(self.dir, f"chunk_{first:09d}.pkl")

    def load(self, first: int):
        """The saved result of the chunk starting at episode index `first`, or None."""
        if not os.path.isfile(self._path(first)):
            return None
        with open(self._path(first), "rb") as f:
            return pickle.load(f)  # written by save() below, never from elsewhere

    def save(self, first: int, result):
        tmp = self._path(first) + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self._path(first))  # a chunk file is complete or absent

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_pool(workers: int):
    """What the demo collectors map their chunks over: a ProcessPoolExecutor of `workers` processes
    (0: one per core), or for 1 the same `map` run in this process. Returns (pool, worker count)."""
    if workers < 0:
        raise SpirlError(f"--workers must be 0 (one per core) or a positive count (got {workers})")
    workers = workers or os.cpu_count() or 1
    return (ProcessPoolExecutor(workers) if workers > 1 else _InProcess()), workers


class _InProcess:
    """ProcessPoolExecutor's map, run in this process (--workers 1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, *iterables):
        return map(fn, *iterables)


def dataset_views(env: str, episodes: list, dataset: str):
    """The image observations of `episodes`' steps, rendered on demand: a callable (episode indices into `episodes`,
    the states one step earlier, the states) -> [state, previous frame, current frame] (envs/block_stacking.py and
    envs/maze.py DatasetViews: block stacking's frames come from the states, the maze's from each episode's layout,
    rebuilt from its env seed)."""
    if env == "block_stacking":
        from envs.block_stacking import DatasetViews as BlockViews

        return BlockViews()
    from envs.maze import DatasetViews

    if any(e.seed is None for e in episodes):
        fix = "use data written by `python -m envs.maze_demos`"
        raise SpirlError(f"{dataset} stores no per-episode env seeds to rebuild its maze layouts from: {fix}")
    return DatasetViews([e.seed for e in episodes])


def skill_windows(
    dataset: str,
    env: str,
    skill_horizon: int,
    val_fraction: float,
    seed: int,
    image: bool = False,
    step_frames: bool = False,
):
    """spirl_pretrain.py's data: episodes -> split by episode -> H-step windows (never across an episode boundary);
    returns (training windows, validation windows or None). With `image`, the frames the image prior sees are
    rendered per batch: block stacking's from the states, the maze's from each episode's layout (its env seed);
    with `step_frames` at every step of the windows, for a closed-loop decoder that reads them."""
    episodes = load_episodes(dataset, env)
    train_episodes, val_episodes = split_episodes(episodes, val_fraction, seed)
    observe = [None, None]
    if image:
        observe = [dataset_views(env, part, dataset) if part else None for part in (train_episodes, val_episodes)]
    train_windows = WindowSampler(train_episodes, skill_horizon, observe[0], step_frames)
    val_windows = WindowSampler(val_episodes, skill_horizon, observe[1], step_frames) if val_episodes else None
    counts = f"{len(train_episodes)} train / {len(val_episodes)} validation episodes"
    print(f"{dataset}: {counts}, {train_windows.num_windows} training windows of H={skill_horizon}")
    return train_windows, val_windows
