"""envs/maze.py, envs/maze_demos.py and the methods on the maze: layouts, the env, images, data, image prior."""

import hashlib
import os

import numpy as np
import pytest
import tyro

from envs.maze import (
    AGENT,
    DOWNSTREAM_GOAL,
    DOWNSTREAM_SEED,
    DOWNSTREAM_SIZE,
    DOWNSTREAM_START,
    FLOOR,
    FLOOR_Z,
    GOAL,
    VIEW_PIXELS,
    WALL_COVERAGE,
    WALL_TOP,
    WALL_TOP_Z,
    MazeEnv,
    cell_anchor,
    cell_to_xy,
    distances_from,
    downstream_layout,
    pixels_per_cell,
    place_wall,
    random_layout,
    render,
    render_raster_views,
    shortest_path,
    training_task,
    xy_to_cell,
)
from tests.conftest import docs_script


@pytest.mark.parametrize("seed", range(50))
def test_training_layouts_are_bordered_and_connected(seed):
    walls = random_layout(20, np.random.default_rng(seed))
    assert walls.shape == (22, 22)
    assert walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    assert 0.25 <= walls[1:-1, 1:-1].mean() < 0.5  # a quarter is wall (more where a closed-off pocket was filled)
    free = np.argwhere(~walls)
    assert (distances_from(walls, free[0]) >= 0).sum() == len(free)  # every free cell reachable


def test_downstream_maze_is_fixed_four_times_larger_and_its_goal_is_far():
    walls = downstream_layout()
    assert walls.shape == (42, 42) and np.array_equal(walls, downstream_layout())
    assert (walls.shape[0] - 2) ** 2 == 4 * 20**2
    assert not walls[DOWNSTREAM_START] and not walls[DOWNSTREAM_GOAL]
    path = shortest_path(walls, DOWNSTREAM_START, DOWNSTREAM_GOAL)
    assert path is not None and len(path) - 1 == 34  # in the authors' maze2d-randMaze0S40
    for a, b in zip(path, path[1:]):  # a path of free, 4-adjacent cells
        assert abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 and not walls[b]


# SHA-256 of np.packbits of the interior that kpertsch/d4rl maze_layouts.py sample_layout(seed=0, size=40) returns
# (as bool): the authors' downstream maze (maze2d-randMaze0S40-ac-v0), 418 wall cells, computed with their code.
AUTHORS_RAND_MAZE_0_S40 = "c9a620b47c9b0f2021ca803d99f5e2ad31d9b08103a38d4e6b112238dedce2d6"


def test_the_walls_are_drawn_as_the_authors_so_the_downstream_maze_is_theirs():
    interior, rng = np.zeros((DOWNSTREAM_SIZE, DOWNSTREAM_SIZE), dtype=bool), np.random.default_rng(DOWNSTREAM_SEED)
    while interior.mean() < WALL_COVERAGE:
        place_wall(interior, rng)
    assert interior.sum() == 418
    assert hashlib.sha256(np.packbits(interior).tobytes()).hexdigest() == AUTHORS_RAND_MAZE_0_S40
    # downstream_layout() is that interior in a wall border, with the one pocket the start cannot reach filled.
    walls = downstream_layout()
    assert np.array_equal(walls[1:-1, 1:-1] | interior, walls[1:-1, 1:-1])
    assert (walls[1:-1, 1:-1] & ~interior).sum() == 1 and (distances_from(walls, DOWNSTREAM_START) >= 0).sum() > 1000


def test_unreachable_goal_has_no_path():
    walls = np.ones((5, 5), dtype=bool)
    walls[1, 1] = walls[3, 3] = False
    assert shortest_path(walls, (1, 1), (3, 3)) is None


def test_cell_coordinates_round_trip():
    walls = downstream_layout()
    for cell in [(1, 1), DOWNSTREAM_START, DOWNSTREAM_GOAL, (40, 40)]:
        assert xy_to_cell(walls, cell_to_xy(walls, cell)) == cell


def test_the_agent_cannot_enter_walls_and_the_layout_changes_each_episode():
    env = MazeEnv()
    layouts = []
    for seed in range(3):
        _, info = env.reset(seed=seed)
        layouts.append(env.walls.copy())
        assert not env.walls[info["start_cell"]] and not env.walls[info["goal_cell"]]
        rng = np.random.default_rng(seed)
        for _ in range(300):
            state, *_ = env.step(np.sign(rng.normal(size=2)))  # hard pushes in random directions
            assert not env.walls[xy_to_cell(env.walls, state[:2])]
    assert not np.array_equal(layouts[0], layouts[1]) and not np.array_equal(layouts[1], layouts[2])


def test_reward_is_one_per_step_within_the_threshold_and_episodes_do_not_terminate():
    env = MazeEnv.downstream(max_episode_steps=50)
    _, info = env.reset(seed=0)
    assert info["start_cell"] == DOWNSTREAM_START
    _, reward, terminated, _, info = env.step(np.zeros(2))
    assert reward == 0.0 and not info["success"]
    point = env._maze.point_env  # test only: put the agent next to the goal
    point.set_state(np.r_[env.goal + 0.5, point.data.qpos[2:]], np.zeros_like(point.data.qvel))
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(np.zeros(2))
        assert reward == 1.0 and info["success"] and not terminated and not truncated


def colour(rgb) -> np.ndarray:
    return (np.asarray(rgb) * 255 + 0.5).astype(np.uint8)


def test_camera_view_shows_about_four_cells_with_wall_tops_floor_agent_and_goal_where_they_are():
    env = MazeEnv.downstream(image=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4 + 2 * 3 * VIEW_PIXELS * VIEW_PIXELS,) and env.observation_space.shape == obs.shape
    assert 3.9 < VIEW_PIXELS / pixels_per_cell(FLOOR_Z) < 4.3  # the authors' camera: about 4 x 4 cells
    walls, state = env.walls, obs[:4]
    assert np.allclose(state[2:], 0.0)  # downstream: at rest, so the camera is right above the agent
    view = env.view_at(state)
    assert view.shape == (3, VIEW_PIXELS, VIEW_PIXELS) and view.dtype == np.uint8
    assert np.array_equal(view[:, VIEW_PIXELS // 2, VIEW_PIXELS // 2], colour(AGENT))
    frames = obs[4:].reshape(2, 3, VIEW_PIXELS, VIEW_PIXELS)
    assert np.allclose(frames[1] * 255, view) and np.allclose(frames[0], frames[1])  # no motion yet
    checked = {"wall": 0, "floor": 0}
    for i in range(VIEW_PIXELS):
        for j in range(VIEW_PIXELS):
            pixel = [None, None]
            for k, z in enumerate((WALL_TOP_Z, FLOOR_Z)):  # the pixel's footprint on the wall tops and the floor
                scale = pixels_per_cell(z)
                xs = state[0] + (np.array([j, j + 1]) - VIEW_PIXELS / 2) / scale
                ys = state[1] - (np.array([i, i + 1]) - VIEW_PIXELS / 2) / scale
                cells = {xy_to_cell(walls, (x, y)) for x in xs for y in ys}
                pixel[k] = cells.pop() if len(cells) == 1 else None  # inside one cell
            if np.hypot(i + 0.5 - VIEW_PIXELS / 2, j + 0.5 - VIEW_PIXELS / 2) < 3:
                continue  # the agent
            if pixel[0] is not None and walls[pixel[0]]:
                assert np.array_equal(view[:, i, j], colour(WALL_TOP)), (i, j)
                checked["wall"] += 1
            elif pixel[0] is not None and pixel[1] == pixel[0] and not walls[pixel[1]]:
                low, high = colour(FLOOR).min(0).astype(int) - 1, colour(FLOOR).max(0).astype(int) + 1
                assert ((low <= view[:, i, j]) & (view[:, i, j] <= high)).all(), (i, j)  # floor squares, mixed at edges
                checked["floor"] += 1
    assert checked["wall"] > 50 and checked["floor"] > 300
    assert not (np.abs(view.astype(int) - colour(GOAL)[:, None, None]).max(0) <= 2).any()  # the goal is far
    near = render(walls[None], state[None], state[None, :2] + [1.0, 0.5])[0]  # a goal one cell away is in view
    assert (np.abs(near.astype(int) - colour(GOAL)[:, None, None]).max(0) <= 2).sum() >= 4


def test_two_frames_show_sub_pixel_motion_and_the_trailing_camera_shows_the_heading():
    walls = downstream_layout()
    still = np.r_[cell_anchor(walls, DOWNSTREAM_START), 0.0, 0.0]
    goal = cell_anchor(walls, DOWNSTREAM_GOAL)[None]
    moved = still + [0.02, 0.0, 0.0, 0.0]  # 0.15 pixels
    a, b = (render(walls[None], s[None], goal)[0] for s in (still, moved))
    assert not np.array_equal(a, b)
    green = colour(AGENT)[:, None, None]
    for velocity in ([4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]):  # the agent sits ahead of the camera, as it moves
        view = render(walls[None], np.r_[still[:2], velocity][None], goal)[0]
        rows, cols = np.nonzero((np.abs(view.astype(int) - green).max(0) <= 40))
        offset = np.array([cols.mean(), -rows.mean()]) - (VIEW_PIXELS / 2 - 0.5) * np.array([1, -1])
        assert offset @ np.array(velocity) > 0 and np.linalg.norm(offset) > 0.5, (velocity, offset)


def test_placing_the_agent_sets_its_state_and_a_previous_frame_that_shows_the_motion():
    env = MazeEnv.downstream(image=True)
    env.reset(seed=0)
    xy = cell_anchor(env.walls, (14, 22))
    for velocity in ([-3.0, 0.0], [0.0, 0.0]):
        observation = env.place(xy, velocity)
        np.testing.assert_allclose(observation[:4], np.r_[xy, velocity], atol=1e-6)
        frames = observation[4:].reshape(2, -1)
        assert np.array_equal(frames[0], frames[1]) == (velocity == [0.0, 0.0])
    moving = env.place(xy, [-3.0, 0.0])
    after, *_ = env.step(np.zeros(2))  # it coasts on: about velocity x dt further left
    assert -0.05 < after[0] - moving[0] < -0.01 and abs(after[1] - moving[1]) < 1e-3


def test_the_raster_view_of_the_older_prior_is_kept_and_an_unknown_view_is_a_one_line_error():
    from envs.errors import SpirlError

    env = MazeEnv.downstream(image=True, view="raster")
    obs, _ = env.reset(seed=0)
    view = render_raster_views(env.walls[None], obs[None, :2])[0]
    assert np.allclose(obs[4:].reshape(2, 3, VIEW_PIXELS, VIEW_PIXELS)[1] * 255, view)
    with pytest.raises(SpirlError, match="unknown maze view 'top'"):
        MazeEnv(view="top")


def test_training_tasks_are_uniform_over_free_cells_and_rebuilt_from_the_seed():
    env = MazeEnv()
    distances = []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        task = training_task(seed)
        assert np.array_equal(env.walls, task.walls) and np.allclose(env.goal, task.goal)
        assert np.allclose(obs[:2], task.start, atol=1e-6) and np.allclose(obs[2:], task.velocity, atol=1e-6)
        assert np.abs(task.start - cell_anchor(task.walls, info["start_cell"])).max() <= 0.1
        distances.append(distances_from(task.walls, info["start_cell"])[info["goal_cell"]])
    assert min(distances) < 10 and max(distances) > 20  # near and far goals alike, not a band of distances


# ----------------------------------------------------------------------------- planner data


@pytest.fixture(scope="module")
def maze_dataset(tmp_path_factory):
    from envs.maze_demos import Args, collect

    out = tmp_path_factory.mktemp("maze") / "maze-small"
    return out, collect(Args(episodes=12, out=str(out), seed=1))


def test_planner_data_ends_at_the_goal_or_after_500_actions_and_loads_through_the_loader(maze_dataset):
    from envs.datasets import load_episodes
    from envs.maze_demos import MIN_ACTIONS, REACHED

    out, summary = maze_dataset
    assert 0.0 < summary["reached_goal"] < 1.0  # far goals are cut at 500 actions, and those episodes are kept
    episodes = load_episodes(str(out), "maze")
    assert len(episodes) == 12 and sum(len(e.actions) for e in episodes) == summary["transitions"]
    for e in episodes:
        assert e.states.shape == (len(e.actions) + 1, 4) and e.actions.shape[1] == 2
        assert MIN_ACTIONS < len(e.actions) <= 500 and np.abs(e.actions).max() <= 1.0
        task = training_task(e.seed)
        target = cell_anchor(task.walls, xy_to_cell(task.walls, task.goal))
        if len(e.actions) < 500:  # it stopped at the goal: within REACHED one step before its last action
            assert np.linalg.norm(e.states[-2, :2] - target) < REACHED


def test_maze_data_from_an_earlier_layout_draw_stops_an_image_prior_with_the_collector_to_rerun(tmp_path, monkeypatch):
    """Data of the v1 collector stores seeds that rebuild other layouts than its episodes ran in (the walls were drawn
    in another order): its frames would be wrong, so an image model refuses it with a one-line error."""
    from envs import maze_demos
    from envs.datasets import SpirlError, dataset_views, load_episodes

    monkeypatch.setattr(maze_demos, "DATASET_ID", "spirl/maze-planner-v1")
    maze_demos.collect(maze_demos.Args(episodes=2, out=str(tmp_path / "v1"), seed=1, workers=1))
    episodes = load_episodes(str(tmp_path / "v1"), "maze")
    assert len(episodes) == 2 and all(e.seed is None for e in episodes)
    with pytest.raises(SpirlError, match="python -m envs.maze_demos"):
        dataset_views("maze", episodes, "spirl/maze-planner-v1")


def test_the_planner_puts_a_jittered_waypoint_on_every_cell_and_brakes_at_them():
    from envs.maze_demos import WAYPOINT_JITTER, Args, collect_episode, waypoints

    walls = downstream_layout()
    path = shortest_path(walls, DOWNSTREAM_START, DOWNSTREAM_GOAL)
    plan = waypoints(walls, path, np.random.default_rng(0))
    assert len(plan) == len(path) - 1 and np.array_equal(plan[-1], cell_anchor(walls, path[-1]))
    for cell, point in zip(path[1:-1], plan[:-1]):
        offset = point - cell_to_xy(walls, cell)  # from the cell's centre: within the jitter box of the anchor
        assert 0.0 <= offset[0] <= WAYPOINT_JITTER and -WAYPOINT_JITTER <= offset[1] <= 0.0
    episode = collect_episode(MazeEnv(), np.random.default_rng(0), 3, Args(out="unused"))
    speed = np.linalg.norm(episode["states"][:, 2:], axis=1)
    assert speed.max() > 4.0 and np.mean(np.diff(speed) < 0) > 0.25  # it brakes often, cell by cell


def test_episodes_do_not_depend_on_how_collection_is_split_across_workers(tmp_path):
    from envs.maze_demos import Args, collect_chunk

    args = Args(out=str(tmp_path))
    whole = collect_chunk(args, 0, 5)
    split = collect_chunk(args, 0, 3) + collect_chunk(args, 3, 2)
    for a, b in zip(whole, split):
        assert (
            a["seed"] == b["seed"]
            and np.array_equal(a["states"], b["states"])
            and np.array_equal(a["actions"], b["actions"])
        )


def test_a_stopped_collection_continues_from_its_finished_chunks_to_the_same_data(tmp_path, monkeypatch):
    from envs import maze_demos
    from envs.datasets import load_episodes
    from envs.errors import SpirlError

    monkeypatch.setattr(maze_demos, "CHUNK", 2)
    collect_chunk = maze_demos.collect_chunk
    args = maze_demos.Args(episodes=4, out=str(tmp_path / "maze"), seed=2, workers=1)

    def stopped_at_the_second_chunk(args, first, count):
        if first:
            raise KeyboardInterrupt
        return collect_chunk(args, first, count)

    monkeypatch.setattr(maze_demos, "collect_chunk", stopped_at_the_second_chunk)
    with pytest.raises(SpirlError, match="the same command continues"):
        maze_demos.collect(args)
    assert not (tmp_path / "maze").exists() and len(list((tmp_path / "maze.partial").glob("chunk_*"))) == 1
    collected = []  # the rerun collects the second chunk only: the first is read back
    monkeypatch.setattr(maze_demos, "collect_chunk", lambda *a: collected.append(a[1]) or collect_chunk(*a))
    assert maze_demos.collect(args)["episodes"] == 4 and not (tmp_path / "maze.partial").exists()
    assert collected == [2]
    for stored, fresh in zip(load_episodes(str(tmp_path / "maze"), "maze"), collect_chunk(args, 0, 4)):
        assert stored.seed == fresh["seed"] and np.allclose(stored.actions, fresh["actions"])


def test_random_action_fraction_makes_sub_optimal_data(tmp_path):
    from envs.maze import MazeEnv
    from envs.maze_demos import Args, collect_episode

    env = MazeEnv()
    reached = {}
    for fraction in (0.0, 1.0):
        args = Args(random_action_fraction=fraction, out=str(tmp_path))
        eps = [collect_episode(env, np.random.default_rng(i), i, args) for i in range(6)]
        reached[fraction] = np.mean([e["terminated"] for e in eps])
    assert reached[0.0] >= 0.5 and reached[1.0] < reached[0.0]


def test_a_bc_policy_collects_non_expert_data_in_the_planner_tasks_and_collisions_are_counted(maze_dataset, tmp_path):
    """App. G / Fig. 12: --bc-policy runs a baselines/bc_sac.py maze image policy in the planner's tasks; the
    planner's own data never hits a wall (as the paper's expert data), an untrained policy does."""
    import torch

    from baselines import bc_sac
    from envs.datasets import load_episodes
    from envs.errors import SpirlError
    from envs.maze_demos import Args, collect
    from envs.runs import save_checkpoint

    _, planner = maze_dataset
    assert planner["wall_collisions_per_episode"] == 0.0
    settings = bc_sac.Args(env="maze", image=True, hidden=16, layers=2)
    torch.manual_seed(0)
    policy = dict(args=vars(settings), policy=bc_sac.make_policy(settings).state_dict())
    save_checkpoint(str(tmp_path / "policy.pt"), policy, kind="bc_sac_policy")
    out = tmp_path / "bc"
    summary = collect(Args(episodes=3, out=str(out), seed=1, workers=1, bc_policy=str(tmp_path / "policy.pt")))
    episodes = load_episodes(str(out), "maze")
    assert len(episodes) == 3 and all(e.states.shape[1] == 4 and len(e.actions) <= 500 for e in episodes)
    assert summary["wall_collisions_per_episode"] > 0
    with pytest.raises(SpirlError, match="not the policy of a baselines/bc_sac.py --env maze --image run"):
        save_maze_skill_model(tmp_path / "skills.pt")
        collect(Args(episodes=1, out=str(tmp_path / "no"), bc_policy=str(tmp_path / "skills.pt")))


# ----------------------------------------------------------------------------- the method on the maze


def save_maze_skill_model(path, latent_dim=10, hidden_dim=32, prior_layers=2, image=False):
    """An untrained maze skill model, saved as spirl_pretrain.py does."""
    import spirl_pretrain as sp
    from envs.runs import save_checkpoint

    config = {
        "env": "maze",
        "state_dim": 4,
        "action_dim": 2,
        "skill_horizon": 10,
        "latent_dim": latent_dim,
        "hidden_dim": hidden_dim,
        "prior_layers": prior_layers,
        "image": image,
        "dataset": "synthetic",
        "seed": 0,
        "val_fraction": 0.0,
        "beta": 1e-2,
        "num_steps": 0,
        "lr": 1e-3,
        "batch_size": 16,
        "state_features": None,
    }
    model = sp.SkillModel(**config)
    save_checkpoint(str(path), {"config": config, "model": model.state_dict()}, kind="spirl_pretrain")


def test_spirl_sac_runs_on_the_maze_and_logs_success(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import spirl_sac as sac

    save_maze_skill_model(tmp_path / "skills.pt")
    args = sac.Args(
        env="maze",
        prior_checkpoint=str(tmp_path / "skills.pt"),
        total_env_steps=2500,
        warmup_transitions=20,
        batch_size=16,
        critic_hidden=32,
        eval_every=10_000,
        eval_episodes=1,
        log_every=5,
        run_name=str(tmp_path / "run"),
        threads=1,
    )
    result = sac.train(args)
    assert result["env_steps"] >= 2500 and 0.0 <= result["eval"]["success"] <= 1.0
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert {"charts/success", "charts/eval_success", "charts/episodic_return"} <= set(events.Tags()["scalars"])
    with pytest.raises(sac.SpirlError, match="--tasks"):
        sac.train(sac.Args(env="maze", tasks=("microwave",), prior_checkpoint=str(tmp_path / "skills.pt")))


def test_exploration_figure_script_writes_a_png_with_an_image_prior_and_a_flat_prior(tmp_path, maze_dataset):
    from baselines import flat_prior

    plot_maze_exploration = docs_script("plot_maze_exploration")
    save_maze_skill_model(tmp_path / "skills.pt", latent_dim=4, hidden_dim=16, prior_layers=1, image=True)
    small = dict(prior_steps=20, hidden=16, layers=2, total_env_steps=100, warmup_steps=10**6, eval_episodes=1)
    args = flat_prior.Args(env="maze", dataset=str(maze_dataset[0]), run_name=str(tmp_path / "flat"), **small)
    flat = flat_prior.train(args)
    out = tmp_path / "exploration.png"
    script = [str(tmp_path / "skills.pt"), "--steps", "500"]
    plot_maze_exploration.main(script + ["--flat-prior", flat["checkpoint"], "--out", str(out)])
    assert out.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="^error: --flat-prior .* is not a baselines/flat_prior.py checkpoint"):
        plot_maze_exploration.main(script + ["--flat-prior", str(tmp_path / "skills.pt")])


def test_each_episode_stores_the_env_seed_that_rebuilds_its_layout(maze_dataset):
    import glob

    import h5py

    from envs.datasets import load_episodes
    from envs.maze import MazeEnv

    out, _ = maze_dataset
    episodes = load_episodes(str(out), "maze")
    (path,) = glob.glob(os.path.join(str(out), "data", "*.hdf5"))
    with h5py.File(path) as f:
        seeds = [int(f[f"episode_{i}"].attrs["seed"]) for i in range(len(episodes))]
    assert len(set(seeds)) == len(seeds)
    env = MazeEnv()
    for episode, seed in zip(episodes, seeds):
        env.reset(seed=seed)  # the same layout, start and goal as when the episode was recorded
        assert np.allclose(env._maze.point_env.data.qpos[:2], episode.states[0, :2])
        cells = [xy_to_cell(env.walls, xy) for xy in episode.states[:, :2]]
        assert not any(env.walls[c] for c in cells)


# ----------------------------------------------------------------------------- image prior


def test_dataset_views_are_the_image_observations_the_env_gives(maze_dataset):
    """Frames rendered for a dataset step from the episode's stored seed equal the env's own image
    observation there (replaying the episode's actions in MazeEnv(image=True))."""
    from envs.datasets import load_episodes
    from envs.maze import DatasetViews

    out, _ = maze_dataset
    episodes = load_episodes(str(out), "maze")
    assert all(e.seed is not None for e in episodes) and len({e.seed for e in episodes}) == len(episodes)
    views = DatasetViews([e.seed for e in episodes])
    env = MazeEnv(image=True)
    for index in (0, 5):
        episode = episodes[index]
        obs, _ = env.reset(seed=episode.seed)
        assert np.array_equal(env.walls, training_task(episode.seed).walls)
        for t in range(40):
            rendered = views(np.array([index]), episode.states[max(t - 1, 0)][None], episode.states[t][None])[0].numpy()
            np.testing.assert_allclose(rendered[:4], obs[:4], atol=1e-5)
            np.testing.assert_array_equal(rendered[4:], obs[4:])  # the frames, pixel for pixel
            obs, *_ = env.step(episode.actions[t])


def test_image_prior_pretrains_without_a_validation_split(maze_dataset, tmp_path):
    import spirl_pretrain as sp

    out, _ = maze_dataset
    sizes = dict(num_steps=2, batch_size=4, hidden_dim=16, prior_layers=1, run_name=str(tmp_path / "run"))
    result = sp.train(sp.Args(env="maze", image=True, dataset=str(out), val_fraction=0.0, **sizes))
    assert result["step"] == 2 and os.path.exists(result["checkpoint"])


def test_image_prior_pretrains_on_planner_data_and_reports_maze_success(maze_dataset, tmp_path):
    import spirl_pretrain as sp

    out, _ = maze_dataset
    args = sp.Args(
        env="maze",
        image=True,
        dataset=str(out),
        num_steps=6,
        batch_size=8,
        hidden_dim=16,
        prior_layers=2,
        val_fraction=0.2,
        val_every=3,
        log_every=3,
        prior_rollouts=1,
        run_name=str(tmp_path / "run"),
    )
    result = sp.train(args)
    assert result["prior_rollouts"]["metric"] == "success" and result["prior_rollouts"]["mean"] in (0.0, 1.0)
    assert np.isfinite(result["val"]["prior_nll"])
    model, config = sp.load_skill_model(result["checkpoint"], env="maze", image=True)
    assert config["image"] and model.skill_prior.conv is not None and config["view"] == "camera"
    with pytest.raises(sp.SpirlError, match="--image"):  # resuming without --image is another model
        sp.train(
            sp.Args(
                env="maze",
                dataset=str(out),
                hidden_dim=16,
                prior_layers=2,
                val_fraction=0.2,
                resume=result["checkpoint"],
            )
        )


def test_state_conditioned_decoder_reads_the_first_frames_and_drives_spirl_without_init(maze_dataset, tmp_path):
    """App. D / Fig. 9: the conditioned decoder's actions depend on s_1's frames, the model reloads as trained, and
    spirl_sac.py runs on it without prior initialisation, with app. F's omega (skills from the prior until 500 env
    steps, from pi after 1000) and another goal cell (app. H)."""
    import torch

    import spirl_pretrain as sp
    import spirl_sac as sac

    plot_maze_training = docs_script("plot_maze_training")

    out, _ = maze_dataset
    tiny = dict(env="maze", image=True, dataset=str(out), hidden_dim=16, prior_layers=1, val_fraction=0.2)
    result = sp.train(
        sp.Args(conditioned_decoder=True, num_steps=4, batch_size=8, run_name=str(tmp_path / "pre"), **tiny)
    )
    assert np.isfinite(result["val"]["reconstruction_mse"])
    model, config = sp.load_skill_model(result["checkpoint"], env="maze", image=True, conditioned_decoder=True)
    env = MazeEnv.downstream(image=True)
    first, _ = env.reset(seed=0)
    moved = env.reset(seed=0)[0]
    moved[4:] = np.roll(moved[4:], 96)  # other frames, the same state vector
    z = torch.randn(1, config["latent_dim"])
    plans = [model.decoder.plan(z, torch.as_tensor(o)[None]) for o in (first, moved)]
    assert plans[0].shape == (1, 10, 2) and not torch.allclose(*plans)
    with pytest.raises(sp.SpirlError, match="--closed-loop"):
        sp.train(sp.Args(conditioned_decoder=True, closed_loop=True, **tiny))

    actors, choose = [], sac.choose_skill

    def record(actor, *rest, **kwargs):  # who chose each training skill
        if not kwargs.get("deterministic"):
            actors.append(actor)
        return choose(actor, *rest, **kwargs)

    args = sac.Args(
        env="maze",
        prior_checkpoint=result["checkpoint"],
        prior_init=False,
        omega_schedule=(500, 1000),
        goal=(7, 23),  # 8 cells from the start
        total_env_steps=1500,
        warmup_transitions=20,
        batch_size=8,
        critic_hidden=16,
        eval_every=10_000,
        eval_episodes=1,
        run_name=str(tmp_path / "rl"),
        threads=1,
    )
    make_env = sac.make_env
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sac, "choose_skill", record)
        monkeypatch.setattr(sac, "make_env", lambda *a, **k: make_env(*a, max_episode_steps=600, **k))  # shorter
        run = sac.train(args)
    prior = actors[0]  # omega = 1 at the start: the prior chooses the first skill
    assert run["env_steps"] == 1800 and len(actors) == 180 and 51 <= sum(a is prior for a in actors) <= 100
    assert all(a is prior for a in actors[:51]) and not any(a is prior for a in actors[100:])  # 10 env steps each
    assert [sac.omega(n, (500, 1000)) for n in (0, 500, 750, 1000, 2000)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    paths, goal, env_steps = plot_maze_training.training_paths(run["checkpoint"])  # Fig. 13's panels
    assert paths.shape == (180, 2, 2) and goal == (7, 23) and env_steps == 1800
    plot_maze_training.main([run["checkpoint"], "--out", str(tmp_path / "fig13.png")])
    assert (tmp_path / "fig13.png").stat().st_size > 0
    rows = plot_maze_training.closest_by_window(paths, goal, 2)  # the three 600-step episodes, two to a row
    assert [(first, n) for first, n, *_ in rows] == [(0, 2), (2, 1)]
    bands = plot_maze_training.critic_by_distance(run["checkpoint"])  # --critic: Q by distance to the goal
    assert sum(n for _, _, n, _, _ in bands) == 60 and all(q10 <= q50 <= q90 for *_, (q10, q50, q90) in bands)
    assert all(lo in plot_maze_training.BANDS and rewarded <= n for lo, _, n, rewarded, _ in bands)
    plot_maze_training.main([run["checkpoint"], "--out", str(tmp_path / "fig13.png"), "--critic"])
    with pytest.raises(SystemExit, match="not a spirl_sac.py checkpoint of a maze run"):
        plot_maze_training.main([result["checkpoint"], "--out", str(tmp_path / "no.png")])
    for bad, match in (({"goal": (0, 0)}, "goal cell"), ({"omega_schedule": (10, 5)}, "--omega-schedule")):
        with pytest.raises(sac.SpirlError, match=match):
            sac.train(sac.replace(args, run_name=str(tmp_path / "bad"), **bad))


def test_closed_loop_model_that_reads_the_frames_trains_on_rendered_maze_windows_and_drives_spirl(
    maze_dataset, tmp_path, monkeypatch
):
    """The authors' maze closed-loop model (ImageClSPiRLMdl, --image --closed-loop --decoder-frames): every step of a
    window is rendered in its episode's layout, as the image prior's first step is; the decoder's action depends on
    the frames it reads; spirl_sac.py and bench_maze's skill episodes decode it step by step."""
    import torch

    import spirl_pretrain as sp
    import spirl_sac as sac
    from bench import bench_maze
    from envs.datasets import load_episodes, skill_windows
    from envs.maze import DatasetViews

    out, _ = maze_dataset
    train_windows, _ = skill_windows(str(out), "maze", 10, 0.0, 1, image=True, step_frames=True)
    states, actions, first = train_windows.sample(4, torch.Generator().manual_seed(0))
    assert states.shape == (4, 11, 4 + 6144) and actions.shape == (4, 10, 2)
    torch.testing.assert_close(first, states[:, 0])
    torch.testing.assert_close(states[:, 3, 4 + 3072 :], states[:, 4, 4 : 4 + 3072])  # current -> next's previous
    episodes = load_episodes(str(out), "maze")
    views = DatasetViews([e.seed for e in episodes])
    chain = torch.from_numpy(np.stack([episodes[0].states[:3], episodes[1].states[5:8]])).float()
    whole = views.sequence([0, 1], chain[:, 0], chain[:, 1:])  # a window's steps, one at a time below
    for t in (0, 1):
        torch.testing.assert_close(whole[:, t], views([0, 1], chain[:, t].numpy(), chain[:, t + 1].numpy()))

    small = dict(env="maze", image=True, dataset=str(out), hidden_dim=16, prior_layers=2, val_fraction=0.0)
    args = sp.Args(closed_loop=True, decoder_frames=True, num_steps=2, batch_size=4, run_name=str(tmp_path / "s"))
    result = sp.train(sp.replace(args, **small))
    model, config = sp.load_skill_model(result["checkpoint"])
    assert config["decoder_state_features"] == "frames" and model.decoder.reads_frames
    env = MazeEnv.downstream(image=True)
    observation = torch.as_tensor(env.reset(seed=0)[0])[None]
    moved = observation.clone()
    moved[:, 4:] = torch.roll(moved[:, 4:], 96)  # other frames, the same state vector
    z = torch.randn(1, config["latent_dim"])
    with torch.no_grad():
        assert not torch.allclose(model.decoder(observation, z), model.decoder(moved, z))

    def short_downstream(**kwargs):  # 3 skills an episode
        env = downstream(**kwargs)
        env.max_episode_steps = 30
        return env

    downstream = bench_maze.MazeEnv.downstream
    monkeypatch.setattr(bench_maze.MazeEnv, "downstream", short_downstream)
    figures = bench_maze.skill_exploration(result["checkpoint"], episodes=1, ways=("prior",))
    assert 1 <= figures["prior"]["cells_visited_quartiles"][0] <= 30
    oracle = bench_maze.route_oracle(result["checkpoint"], 1)  # the encoder reads the controller's observations
    assert oracle["episodes"] == 1 and np.isfinite(oracle["prior_gap_median"])
    make_env = sac.make_env
    monkeypatch.setattr(sac, "make_env", lambda *a, **k: make_env(*a, max_episode_steps=200, **k))
    rl = dict(total_env_steps=300, warmup_transitions=10, batch_size=8, critic_hidden=16, eval_every=10**6)
    run = sac.train(
        sac.Args(env="maze", prior_checkpoint=result["checkpoint"], eval_episodes=1, threads=1, **rl,
                 run_name=str(tmp_path / "rl"))
    )  # fmt: skip
    assert run["env_steps"] >= 300


def test_the_training_rollout_table_splits_episodes_at_resets_and_finds_each_ones_closest_distance():
    plot_maze_training = docs_script("plot_maze_training")
    walls = downstream_layout()
    route = [cell_anchor(walls, c) for c in shortest_path(walls, DOWNSTREAM_START, DOWNSTREAM_GOAL)]  # 35 cells
    start = route[0]
    episodes = [route[:10], route, [start] * 5]  # closest: 25 cells, the goal itself, the start's 34
    segments = np.array([[a, b] for points in episodes for a, b in zip(points[:-1], points[1:])])
    rows = plot_maze_training.closest_by_window(segments, DOWNSTREAM_GOAL, 2)
    assert rows == [
        (0, 2, [6.25, 12.5, 18.75], 1, [15.25, 21.5, 27.75]),
        (2, 1, [34.0, 34.0, 34.0], 0, [0.0, 0.0, 0.0]),
    ]


def test_ssp_prior_init_starts_from_the_image_prior_and_collects_its_own_warm_up(tmp_path):
    """Fig. 10's "SSP PriorInit + SAC": SSP's policy is a copy of the image prior (frames in), and it, not uniform
    skills, chooses every training skill from the first."""
    import torch

    import baselines.ssp as ssp

    save_maze_skill_model(tmp_path / "skills.pt", latent_dim=4, hidden_dim=16, prior_layers=1, image=True)
    calls, choose = [], ssp.choose_skill

    def record(policy, observation, *rest, **kwargs):  # what each training skill was chosen from
        if not kwargs.get("deterministic"):
            calls.append(len(observation))
        return choose(policy, observation, *rest, **kwargs)

    args = ssp.Args(
        env="maze",
        prior_checkpoint=str(tmp_path / "skills.pt"),
        prior_init=True,
        total_env_steps=1000,
        warmup_transitions=20,
        batch_size=8,
        critic_hidden=16,
        eval_every=10_000,
        eval_episodes=1,
        run_name=str(tmp_path / "run"),
        threads=1,
    )
    make_env = ssp.make_env
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(ssp, "choose_skill", record)
        monkeypatch.setattr(ssp, "make_env", lambda *a, **k: make_env(*a, max_episode_steps=500, **k))  # shorter
        result = ssp.train(args)
    assert calls == [4 + 2 * 3 * 32 * 32] * 100  # two 500-step episodes of 10-step skills, each from the frames
    policy = torch.load(result["policy"], weights_only=False)["policy"]
    prior = torch.load(tmp_path / "skills.pt", weights_only=False)["model"]
    assert "conv.0.weight" in policy and policy["conv.0.weight"].shape == prior["skill_prior.conv.0.weight"].shape


def test_image_prior_sees_only_the_frames():
    import torch

    import spirl_pretrain as sp

    prior = sp.SkillPrior(4, 10, 16, 2, image=True).eval()
    obs = torch.rand(3, 4 + sp.IMAGE_DIM)
    moved = obs.clone()
    moved[:, :4] += 100.0  # other coordinates, same view
    torch.testing.assert_close(prior(obs), prior(moved))
    assert not torch.allclose(prior(obs)[0], prior(torch.rand(3, 4 + sp.IMAGE_DIM))[0])


def test_image_flag_needs_an_env_with_images():
    import spirl_pretrain as sp

    with pytest.raises(sp.SpirlError, match="--image needs an env with image observations"):
        sp.train(sp.Args(env="kitchen", image=True))


def test_replay_buffer_stores_frames_as_bytes_and_returns_them_exactly():
    import torch

    import spirl_sac as sac
    from envs.maze import MazeEnv

    env = MazeEnv.downstream(image=True)
    first, _ = env.reset(seed=0)
    second, *_ = env.step(np.ones(2, np.float32))
    buffer = sac.ReplayBuffer(10, 4, 3, image_dim=len(first) - 4)
    assert buffer.frames.dtype == torch.uint8
    buffer.add(first, torch.zeros(3), 1.0, second, False, torch.ones(6), torch.full((6,), 2.0))
    states, _, _, next_states, _, priors, next_priors = buffer.sample(2, torch.Generator().manual_seed(0))
    assert (priors == 1).all() and (next_priors == 2).all()
    torch.testing.assert_close(states[0], torch.as_tensor(first), atol=0, rtol=0)
    torch.testing.assert_close(next_states[1], torch.as_tensor(second), atol=0, rtol=0)


def test_spirl_sac_runs_and_resumes_with_an_image_prior(tmp_path):
    import spirl_sac as sac

    save_maze_skill_model(tmp_path / "skills.pt", latent_dim=4, hidden_dim=16, prior_layers=1, image=True)
    common = dict(
        warmup_transitions=20,
        batch_size=8,
        critic_hidden=16,
        eval_every=10_000,
        eval_episodes=1,
        log_every=5,
        checkpoint_every=1000,
        threads=1,
    )
    result = sac.train(
        sac.Args(
            env="maze",
            prior_checkpoint=str(tmp_path / "skills.pt"),
            total_env_steps=2000,
            run_name=str(tmp_path / "run"),
            **common,
        )
    )
    assert result["env_steps"] >= 2000
    resumed = sac.train(sac.Args(resume=result["checkpoint"], total_env_steps=4000, **common))
    assert resumed["env_steps"] >= 4000 and resumed["updates"] > result["updates"]


@pytest.mark.parametrize(
    "suffix, dataset, view",
    [
        ("", "spirl/maze-planner-v2", "camera"),
        ("-raster", "spirl/maze-planner-v0", "raster"),
        ("-closed-loop", "spirl/maze-planner-v2", "camera"),
    ],
)
def test_spirl_sac_runs_out_of_the_box_on_the_shipped_maze_image_prior(tmp_path, monkeypatch, suffix, dataset, view):
    """`python spirl_sac.py --env maze` needs no --prior-checkpoint: the repo ships the image prior, trained on the
    camera view of the current data. The earlier priors are kept beside it (the one on the v1 data, and the one on
    the raster view, which gets those frames), and so is the authors' closed-loop model, whose decoder reads the
    env's frames at every step."""
    import torch

    import spirl_pretrain as sp
    import spirl_sac as sac

    shipped = sac.env_spec("maze")["default_prior"]
    path = shipped.replace(".pt", f"{suffix}.pt")
    assert os.path.isfile(path), f"{path} is missing from the repo"
    _, config = sp.load_skill_model(path, env="maze", state_dim=4, action_dim=2, image=True)
    if not suffix:  # the camera-view prior on the v1 data loads as the shipped one does
        _, v1 = sp.load_skill_model(shipped.replace(".pt", "-v1.pt"), env="maze", state_dim=4, action_dim=2, image=True)
        assert v1["dataset"] == "spirl/maze-planner-v1" and v1["view"] == "camera"
    assert config["dataset"] == dataset and config["beta"] == 1e-2 and config["view"] == view
    assert bool(config.get("closed_loop")) == (suffix == "-closed-loop")  # the raster prior predates the key
    if suffix == "-closed-loop":
        assert config["decoder_state_features"] == "frames"
    views = []
    make_env = sac.make_env
    monkeypatch.setattr(
        sac, "make_env", lambda name, **kwargs: views.append(kwargs.get("view")) or make_env(name, **kwargs)
    )
    result = sac.train(
        sac.Args(
            env="maze",
            prior_checkpoint=path if suffix else None,
            total_env_steps=1000,
            warmup_transitions=20,
            batch_size=8,
            eval_every=10_000,
            eval_episodes=1,
            log_every=5,
            run_name=str(tmp_path / "run"),
            threads=1,
        )
    )
    assert result["env_steps"] >= 1000
    assert torch.load(result["checkpoint"], weights_only=True)["args"]["prior_checkpoint"] == path
    assert views and set(views) == {view}  # the env shows the frames the prior was trained on


def test_bench_maze_measures_how_close_skills_get_to_the_goal_from_the_start():
    from bench import bench_maze

    figures = bench_maze.skill_exploration(bench_maze.Args().skill_checkpoint, episodes=1)
    for way in ("prior", "uniform"):
        quartiles = figures[way]["closest_cells_quartiles"]
        assert figures[way]["episodes"] == 1 and figures[way]["episodes_reaching_goal"] in (0, 1)
        # One episode: its closest grid distance, at most the start's 34 cells, and each cell nearer the goal is
        # one more cell visited (the grid distance drops by at most one from a cell to its neighbour).
        visited = figures[way]["cells_visited_quartiles"]
        assert 0 <= quartiles[0] == quartiles[2] <= 34 and 1 <= visited[0] == visited[2] <= 2000
        assert quartiles[1] >= 34 - (visited[1] - 1)
    with pytest.raises(SystemExit):  # an unknown way of choosing skills is tyro's one-line error
        tyro.cli(bench_maze.Args, args=["--skill-ways", "greedy"])


def test_bench_maze_squashed_prior_ways_execute_the_prior_samples_as_spirl_sac_does(monkeypatch):
    import torch

    import spirl_pretrain
    from bench import bench_maze
    from spirl_sac import squash

    skills, load, downstream = [], spirl_pretrain.load_skill_model, bench_maze.MazeEnv.downstream

    def recording_load(path):  # the same model, its decoder's inputs recorded
        model, config = load(path)
        plan = model.decoder.plan
        model.decoder.plan = lambda z, observation: skills.append(z.clone()) or plan(z, observation)
        return model, config

    def short_episodes(**kwargs):  # 3 skills an episode
        env = downstream(**kwargs)
        env.max_episode_steps = 30
        return env

    monkeypatch.setattr(spirl_pretrain, "load_skill_model", recording_load)
    monkeypatch.setattr(bench_maze.MazeEnv, "downstream", short_episodes)
    ways = ("prior", "prior_tanh", "prior_tanh2")
    figures = bench_maze.skill_exploration(bench_maze.Args().skill_checkpoint, episodes=1, ways=ways)
    assert set(figures) == set(ways) and len(skills) == 9
    # Each way starts from the same state with the same noise, so its first skill is the prior's sample u,
    # then 2 tanh(u) and 2 tanh(u / 2): what spirl_sac.py executes with --squash-scale 1 and 2.
    u = skills[0]
    torch.testing.assert_close(skills[3], squash(u, scale=1.0))
    torch.testing.assert_close(skills[6], squash(u, scale=2.0))
    assert not torch.allclose(skills[3], u)


def test_bench_maze_junction_probes_count_episodes_that_get_through_the_routes_narrow_spots():
    from bench import bench_maze

    figures = bench_maze.junction_probes(bench_maze.Args().skill_checkpoint, episodes=2, skills=3)
    assert len(figures) == len(bench_maze.JUNCTIONS)
    for (what, cell, _, through), (name, result) in zip(bench_maze.JUNCTIONS, figures.items()):
        assert name == f"{what} {cell}" and result["episodes"] == 2 and 0 <= result["through"] <= 2
    # Three skills at rest in the mouth are 30 steps, too few to cross the corridor's three cells.
    assert figures[f"{bench_maze.JUNCTIONS[1][0]} {bench_maze.JUNCTIONS[1][1]}"]["through"] == 0


def test_bench_maze_route_oracle_puts_the_env_back_after_each_proposal(monkeypatch):
    """With a decoder that plays back exactly the proposed actions, the route oracle is the data's controller
    itself, so it must reach the goal: each proposal's trial steps are undone (state, frames, step count) before
    the skill runs. The prior gaps come per band of cells from the start."""
    import torch

    import spirl_pretrain
    from bench import bench_maze

    load = spirl_pretrain.load_skill_model

    def playback_load(path):
        model, config = load(path)
        proposed = []
        model.encode = lambda states, actions: proposed.append(actions) or (torch.zeros(1, 10), torch.zeros(1, 10))
        model.decoder.plan = lambda z, observation: proposed[-1]
        return model, config

    states, downstream = [], bench_maze.MazeEnv.downstream

    def recording_env(**kwargs):  # every step's observed state, trial and executed
        env = downstream(**kwargs)
        step = env.step
        env.step = lambda action: (lambda out: states.append(out[0][:4].copy()) or out)(step(action))
        return env

    monkeypatch.setattr(spirl_pretrain, "load_skill_model", playback_load)
    monkeypatch.setattr(bench_maze.MazeEnv, "downstream", recording_env)
    figures = bench_maze.route_oracle(bench_maze.Args().skill_checkpoint, episodes=1)
    assert figures["episodes_reaching_goal"] == 1 and figures["closest_cells"][0] <= 2
    # Proposal i's 10 trial steps, then the same 10 actions executed from the restored state: the same states.
    chunks = np.asarray(states).reshape(-1, 2, 10, 4)
    np.testing.assert_allclose(chunks[:, 0], chunks[:, 1], atol=1e-4)  # put back from the float32 observation
    bands = list(figures["prior_gap_median_by_cells_from_start"])
    assert bands[0] == "0-10" and len(bands) >= 3 and np.isfinite(figures["prior_gap_median"])
