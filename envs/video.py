"""Evaluation videos (`--capture-video`): what a policy does, as an animated GIF per evaluation.

Not part of SPiRL: apparatus shared by spirl_sac.py and the baselines. The kitchen is drawn by MuJoCo's offscreen
renderer, which needs OpenGL (EGL or OSMesa); the maze and block stacking by their own numpy views, upscaled, so
they need nothing. GIFs are written with Pillow (a matplotlib dependency), so no video codec is needed.

    env = VideoRecorder(make_env("maze"), "runs/x/videos/eval_50000.gif")   # records the first episode
"""

from __future__ import annotations

import os
import sys

import gymnasium as gym
import numpy as np

from envs.errors import SpirlError

KITCHEN_SIZE = (240, 320)  # height, width of the kitchen frames
UPSCALE = 8  # the maze's and block stacking's 32 x 32 views, 8 x larger
# A fixed camera looking at the counter from the robot's side (MuJoCo's free camera: look-at point, distance,
# azimuth and elevation in degrees), so that every subtask's object is in view.
KITCHEN_CAMERA = dict(lookat=(-0.2, 0.5, 2.0), distance=2.2, azimuth=90.0, elevation=-35.0)


class KitchenFrames:
    """RGB frames of a KitchenEnv's simulator. Raises a one-line SpirlError where MuJoCo cannot render."""

    def __init__(self, env):
        import mujoco

        self.model, self.data = env._sim.model, env._sim.data
        self.renderer = make_renderer(self.model)
        self.camera = mujoco.MjvCamera()
        for key, value in KITCHEN_CAMERA.items():
            setattr(self.camera, key, value)

    def __call__(self) -> np.ndarray:
        self.renderer.update_scene(self.data, self.camera)
        return self.renderer.render().copy()


def make_renderer(model):
    """mujoco.Renderer for the kitchen frames, or a one-line SpirlError naming what to install. Where MuJoCo finds no
    OpenGL, its failed Renderer prints GLFW warnings and an ignored exception from its __del__: both are kept quiet."""
    import gc
    import warnings

    import mujoco

    error, hook = None, sys.unraisablehook
    sys.unraisablehook = lambda *_: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return mujoco.Renderer(model, *KITCHEN_SIZE)
            except Exception as e:  # no OpenGL context: MuJoCo raises from PyOpenGL or its own GL loader
                error = type(e).__name__
        gc.collect()  # the half-built Renderer goes now, while its __del__'s complaint is ignored
    finally:
        sys.unraisablehook = hook
    raise SpirlError(
        f"cannot render the kitchen (MUJOCO_GL={os.environ.get('MUJOCO_GL', 'unset')}, {error}): install EGL "
        "(apt install libegl1) and set MUJOCO_GL=egl, or OSMesa (apt install libosmesa6) and set MUJOCO_GL=osmesa"
    )


def numpy_frame(env, observation: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: the maze's or block stacking's own 32 x 32 view at this observation, upscaled."""
    from envs.block_stacking import BlockStackingEnv
    from envs.block_stacking import render_view as block_view
    from envs.maze import MazeEnv

    base = env.unwrapped
    if isinstance(base, MazeEnv):
        view = base.view_at(observation[:4])
    elif isinstance(base, BlockStackingEnv):
        view = block_view(observation[: 8 + 3 * base.n_blocks], base.half_length)
    else:
        raise SpirlError(f"--capture-video has no frames for {type(base).__name__}")
    return np.kron(view.transpose(1, 2, 0), np.ones((UPSCALE, UPSCALE, 1), np.uint8))


class VideoRecorder(gym.Wrapper):
    """Records the frames of the first `episodes` episodes and writes them to `path` (GIF) on close(); `written`:
    how many (the GIF itself merges identical consecutive frames into one longer one)."""

    def __init__(self, env, path: str, episodes: int = 1, fps: int = 20):
        super().__init__(env)
        from envs.kitchen import KitchenEnv

        self.path, self.episodes_left, self.fps, self.frames, self.written = path, episodes, fps, [], 0
        self.kitchen = KitchenFrames(env.unwrapped) if isinstance(env.unwrapped, KitchenEnv) else None

    def _record(self, observation):
        if self.episodes_left > 0:
            self.frames.append(self.kitchen() if self.kitchen else numpy_frame(self.env, observation))

    def reset(self, **kwargs):
        observation, info = self.env.reset(**kwargs)
        self._record(observation)
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        self._record(observation)
        if terminated or truncated:
            self.episodes_left -= 1
        return observation, reward, terminated, truncated, info

    def close(self):
        if self.frames:
            write_gif(self.path, self.frames, self.fps)
            self.written, self.frames = len(self.frames), []
        super().close()


def write_gif(path: str, frames: list[np.ndarray], fps: int = 20):
    """Frames (H, W, 3) uint8 -> an animated GIF, written atomically (a killed run leaves no half file)."""
    from PIL import Image

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    partial = path + ".partial"
    images[0].save(partial, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    os.replace(partial, path)
