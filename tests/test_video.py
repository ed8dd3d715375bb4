"""--capture-video: evaluation episodes as GIFs (maze and block stacking from their own frames; the kitchen needs
OpenGL, and says so in one line where there is none)."""

import numpy as np
import pytest
from PIL import Image

from baselines import sac as flat_sac
from envs import SpirlError, make_env
from envs.video import UPSCALE, VideoRecorder


def frames_of(path):
    with Image.open(path) as gif:
        return gif.n_frames, gif.size


@pytest.mark.parametrize("name", ["maze", "block_stacking"])
def test_the_first_episode_is_recorded_from_the_envs_own_frames(name, tmp_path):
    path = tmp_path / "videos" / "eval.gif"
    env = VideoRecorder(make_env(name, max_episode_steps=6), str(path))
    rng = np.random.default_rng(0)
    for _ in range(2):  # two episodes: only the first is recorded
        env.reset(seed=0)
        done = False
        while not done:
            done = any(env.step(rng.uniform(env.action_space.low, env.action_space.high))[2:4])
    env.close()
    assert env.written == 7 and frames_of(path)[1] == (32 * UPSCALE, 32 * UPSCALE)  # the reset frame and 6 steps
    assert not (tmp_path / "videos" / "eval.gif.partial").exists()


def test_the_kitchen_is_recorded_or_says_in_one_line_what_to_install(tmp_path):
    path = tmp_path / "kitchen.gif"
    try:
        env = VideoRecorder(make_env("kitchen", max_episode_steps=3), str(path))
    except SpirlError as e:  # no OpenGL here: the one-line error names the fix
        assert "MUJOCO_GL" in str(e) and "\n" not in str(e)
        pytest.skip(f"MuJoCo cannot render on this machine: {e}")
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(9, np.float32))
    env.close()
    assert env.written == 4 and frames_of(path)[0] >= 1


def test_capture_video_writes_a_gif_per_evaluation(tmp_path, monkeypatch):
    import envs.maze

    monkeypatch.setattr(envs.maze, "DOWNSTREAM_EPISODE_STEPS", 30)  # short episodes
    small = dict(hidden=16, layers=2, critic_hidden=16, critic_layers=2, batch_size=16, warmup_steps=50, threads=1)
    run = tmp_path / "maze_video"
    args = flat_sac.Args(env="maze", total_env_steps=60, eval_every=10**6, eval_episodes=1, capture_video=True, **small)
    flat_sac.train(flat_sac.Args(**{**args.__dict__, "run_name": str(run)}))
    assert sorted(p.name for p in (run / "videos").iterdir()) == ["eval_0.gif", "eval_60.gif"]
    assert frames_of(run / "videos" / "eval_0.gif")[1] == (32 * UPSCALE, 32 * UPSCALE)
