"""Scripted controllers for the seven FrankaKitchen-v1 subtasks (for the offline demonstrations).

The paper's kitchen prior is learned from D4RL "mixed", teleoperated data that needs a download. These
controllers produce demonstrations of the same kind in the same simulator, acting only through the
env's own 9-dim joint-velocity actions:

- Arm: damped least-squares IK on the `end_effector` site with MuJoCo's Jacobian (position and
  orientation error -> joint displacement -> velocity action), plus a null-space pull towards a
  teleoperator-like posture (REST_POSTURE) so that the redundant 7th degree of freedom does not drift.
- Each subtask is a short list of waypoints: a joint-space move to the subtask's ready posture, then
  approach, grasp or touch, operate (going back for one regrasp if the object does not follow the
  hand), release, retreat. Articulated objects are operated closed-loop: the target is the grasp point
  carried a little further along the object's own joint (read from the simulator: anchor, axis,
  current joint value), so the hand follows the door / knob / switch as it actually moves.
- Noise, as in human teleoperation: waypoint jitter, per-subtask speed, Gaussian action noise. The
  action the env executes (after noise and clipping) is what a collector records.

The simulator is read (positions, Jacobians), never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mujoco
import numpy as np

from envs.kitchen import STATE_DIM, SUBTASK_GOALS, KitchenEnv, subtasks_complete

# End-effector orientation with the gripper pointing forward (+y, into the kitchen) and the fingers
# spread along world x: the columns are the site's x, y, z axes in world coordinates.
FORWARD_GRIP = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
OPEN, CLOSE = 1.0, -1.0
# The Panda's usual "ready" posture with the hand turned to FORWARD_GRIP. The null-space pull goes
# here rather than to the env's initial posture, whose shoulder sits at its joint limit.
REST_POSTURE = np.array([-1.2, -1.6, 1.5, -2.0, 0.0, 1.5, 1.6])
VELOCITY_SCALE = 2.0 * 0.08  # FrankaKitchen-v1: action 1 = 2 rad/s for one 0.08 s env step
# Every subtask starts with a joint-space move to a "ready" posture: the arm configuration in which
# its Cartesian approach, run from the env's reset, reaches the pre-grasp pose (mean over env seeds
# 0-4, recorded with `python bench/tune_kitchen_subtask.py TASK --ready`; rerun it after changing a
# plan, though differences of a few hundredths of a radian do not matter: the Cartesian approach
# after the move corrects them). A straight joint-space move is as fast as the joint speed limit
# allows (about 0.07 rad per env step) and cannot fall into the IK's local minima at the joint
# limits, which a Cartesian move from wherever the previous subtask left the arm did (it stuck 10 cm
# short of the microwave with the shoulder at its limit, for instance).
READY_TOLERANCE = 0.15  # radians, on every joint
READY_POSTURES = {
    "bottom burner": np.array([-1.0, -1.42, 1.41, -2.49, 0.02, 1.77, 1.32]),
    "top burner": np.array([-1.03, -1.4, 1.34, -2.33, 0.03, 1.49, 1.24]),
    "light switch": np.array([-1.06, -1.63, 1.35, -2.24, -0.21, 1.61, 1.69]),
    "slide cabinet": np.array([-1.48, -1.59, 0.89, -2.2, -0.71, 1.67, 1.93]),
    "hinge cabinet": np.array([-1.09, -1.03, 1.37, -1.6, 0.02, 1.16, 0.98]),
    "microwave": np.array([-0.95, -1.76, 1.91, -1.67, -0.71, 1.18, 2.55]),
    "kettle": np.array([-0.41, -1.75, 2.12, -2.12, 0.37, 0.63, 1.9]),
}


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation matrix of `angle` radians about the unit vector `axis`."""
    quat, mat = np.zeros(4), np.zeros(9)
    mujoco.mju_axisAngle2Quat(quat, axis, angle)
    mujoco.mju_quat2Mat(mat, quat)
    return mat.reshape(3, 3)


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Angular displacement (world frame, radians) that takes `current` to `target`."""
    q, qt, qi, dq, w = np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(3)
    mujoco.mju_mat2Quat(q, current.flatten())
    mujoco.mju_mat2Quat(qt, target.flatten())
    mujoco.mju_negQuat(qi, q)
    mujoco.mju_mulQuat(dq, qt, qi)
    mujoco.mju_quat2Vel(w, dq, 1.0)
    return w


class ArmIK:
    """Cartesian end-effector targets -> FrankaKitchen-v1 joint-velocity actions (damped least squares)."""

    def __init__(self, env: KitchenEnv, damping: float = 0.05, gain: float = 3.0, posture_gain: float = 0.1):
        self.model, self.data = env._sim.model, env._sim.data
        self.site = self.model.site("end_effector").id
        self.rest_posture = REST_POSTURE
        self.damping, self.gain, self.posture_gain = damping, gain, posture_gain
        # The tighter of the model's joint ranges and the env's own clipping bounds (franka_config.xml
        # clips joint 6 to >= 0, for instance), kept `margin` radians clear.
        margin = 0.05
        bounds = env._sim.robot_env.robot_pos_bound[:7]
        self.lower = np.maximum(self.model.jnt_range[:7, 0], bounds[:, 0]) + margin
        self.upper = np.minimum(self.model.jnt_range[:7, 1], bounds[:, 1]) - margin

    @property
    def position(self) -> np.ndarray:
        return self.data.site_xpos[self.site].copy()

    @property
    def orientation(self) -> np.ndarray:
        return self.data.site_xmat[self.site].reshape(3, 3).copy()

    def action(self, position, orientation, grip: float, max_step: float, max_turn: float = 0.15):
        """One env action moving the hand towards (position, orientation); grip +1 opens, -1 closes.

        The Cartesian error is capped at `max_step` metres / `max_turn` radians, mapped to joints by
        dq = J^T (J J^T + lambda^2 I)^-1 e, and scaled by `gain` because the env's position servos cover
        only about a third of a commanded displacement within one step. Where a joint would exceed the
        action bound, all joints are scaled down together (per-joint clipping bends the hand's path;
        scaling instead cut the kettle's steps from 70 to 52 in bench/tune_kitchen_subtask.py).
        """
        dp = position - self.position
        dp *= min(1.0, max_step / max(np.linalg.norm(dp), 1e-9))
        dw = rotation_error(self.orientation, orientation)
        dw *= min(1.0, max_turn / max(np.linalg.norm(dw), 1e-9))
        jac_pos, jac_rot = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jac_pos, jac_rot, self.site)
        error = self.gain * np.concatenate([dp, dw])
        q = self.data.qpos[:7]
        posture = self.posture_gain * (self.rest_posture - q)
        # Joints that would pass their limit are frozen and the rest re-solved (a few rounds at most),
        # so that one saturated joint does not stall the hand.
        free = np.ones(7, dtype=bool)
        for _ in range(3):
            jac = np.vstack([jac_pos, jac_rot])[:, :7] * free
            jjt = jac @ jac.T + self.damping**2 * np.eye(6)
            dq = jac.T @ np.linalg.solve(jjt, error)
            dq += ((np.eye(7) - jac.T @ np.linalg.solve(jjt, jac)) @ posture) * free
            over = ((q + dq < self.lower) & (dq < 0)) | ((q + dq > self.upper) & (dq > 0))
            if not over.any():
                break
            free &= ~over
        action = np.empty(9)
        action[:7] = dq / VELOCITY_SCALE
        action[:7] /= max(1.0, np.abs(action[:7]).max())  # scale all joints together: clipping one bends the path
        action[7:] = grip
        return np.clip(action, -1.0, 1.0)

    def joint_action(self, posture: np.ndarray, grip: float) -> np.ndarray:
        """One env action moving the joints straight towards `posture` (clipped into the joint limits),
        as fast as the action bound allows, all joints scaled together so the path stays a line."""
        dq = self.gain * (np.clip(posture, self.lower, self.upper) - self.data.qpos[:7]) / VELOCITY_SCALE
        action = np.empty(9)
        action[:7] = dq / max(1.0, np.abs(dq).max())
        action[7:] = grip
        return action


class ObjectJoint:
    """Read-only view of one articulated object's joint: value, and how a rigid motion of it moves a point."""

    def __init__(self, env: KitchenEnv, joint_name: str):
        model, self.data = env._sim.model, env._sim.data
        self.id = model.joint(joint_name).id
        self.address = model.jnt_qposadr[self.id]
        self.sliding = model.jnt_type[self.id] == mujoco.mjtJoint.mjJNT_SLIDE

    @property
    def value(self) -> float:
        return float(self.data.qpos[self.address])

    def carry(self, point: np.ndarray, orientation: np.ndarray, delta: float, turn: float = 1.0):
        """Where `point` (and a hand `orientation` rigidly attached, turned by `turn` x the angle) goes
        when the joint moves by `delta` from now: a translation along a slide, a rotation about a hinge."""
        axis, anchor = self.data.xaxis[self.id].copy(), self.data.xanchor[self.id].copy()
        if self.sliding:
            return point + delta * axis, orientation
        return anchor + axis_rotation(axis, delta) @ (point - anchor), axis_rotation(axis, turn * delta) @ orientation


@dataclass
class Waypoint:
    """Hold or move the hand towards a target (re-evaluated every step) until `finished()` or max_steps."""

    position: Callable[[], np.ndarray]
    orientation: Callable[[], np.ndarray]
    grip: float
    finished: Callable[[], bool]
    max_steps: int = 60
    speed: float = 1.0  # fraction of the controller's hand speed
    posture: np.ndarray | None = None  # if set: a joint-space move to this arm posture instead
    stalled: Callable[[], bool] | None = None  # if it returns True: go back to waypoint `retry` (once)
    retry: "Waypoint | None" = None


def ready_move_blocked(env: KitchenEnv, task: str) -> bool:
    """Would the straight joint-space move to `task`'s ready posture sweep the arm into the open right door
    of the hinge cabinet? It does for the slide cabinet: the open door stands out towards the robot just left
    of the slide handle, and the move pins the hand against the door's lower edge (slide cabinet right after
    the hinge cabinet, env seeds 0-19: 7 of 20 succeeded). Without the move, the Cartesian approach starts
    where the hinge controller left the hand (in front of the door's edge, on the slide handle's side) and
    gets there: 20 of 20 in about 80 steps, and 8 of 8 after each of four three-subtask prefixes ending with
    the hinge cabinet. The right door counts as open past 0.3 rad (its goal is 1.45)."""
    return task == "slide cabinet" and ObjectJoint(env, "right_hinge_cabinet").value > 0.3


def site_position(env: KitchenEnv, name: str) -> np.ndarray:
    return env._sim.data.site_xpos[env._sim.model.site(name).id].copy()


class SubtaskController:
    """Drives the arm through one subtask's waypoints; `act()` gives the next (noisy) env action.

    Noise, drawn from `rng`: every waypoint's offset is jittered by `jitter` metres (std), the hand's
    speed is scaled by a per-subtask factor in `speed_range`, and Gaussian noise of std `action_noise`
    is added to each action before clipping.
    """

    def __init__(
        self,
        env: KitchenEnv,
        task: str,
        rng: np.random.Generator,
        jitter: float = 0.01,
        speed_range: tuple[float, float] = (0.8, 1.2),
        action_noise: float = 0.05,
        max_step: float = 0.04,
        ready: bool = True,
    ):
        if task not in SUBTASK_PLANS:
            raise ValueError(f"no scripted controller for subtask '{task}'")
        self.env, self.task, self.rng = env, task, rng
        self.arm = ArmIK(env)
        self.jitter, self.action_noise = jitter, action_noise
        self.max_step = max_step * rng.uniform(*speed_range)
        self.waypoints = SUBTASK_PLANS[task](self)
        if ready and not ready_move_blocked(env, task):
            posture = np.clip(READY_POSTURES[task] + rng.normal(0.0, 0.05, 7), self.arm.lower, self.arm.upper)

            def is_ready():
                return np.abs(posture - env.qpos[:7]).max() < READY_TOLERANCE

            self.waypoints.insert(0, Waypoint(None, None, OPEN, is_ready, 40, posture=posture))
        self.index, self.steps_here, self.steps, self.retries = 0, 0, 0, 1
        self._target = None

    # --- helpers used by the plans
    def offset(self, *xyz, jitter: float | None = None) -> np.ndarray:
        sigma = self.jitter if jitter is None else jitter
        return np.asarray(xyz, dtype=float) + self.rng.normal(0.0, sigma, 3)

    def reached(self, tolerance: float) -> Callable[[], bool]:
        return lambda: self._target is not None and np.linalg.norm(self._target - self.arm.position) < tolerance

    def after(self, steps: int) -> Callable[[], bool]:
        return lambda: self.steps_here >= steps

    @property
    def complete(self) -> bool:
        """Is this controller's subtask complete in the simulator (noise-free state)?"""
        return bool(subtasks_complete(self.env.qpos[:STATE_DIM], [self.task])[0])

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

    def act(self) -> np.ndarray:
        while not self.done:
            wp = self.waypoints[self.index]
            if self.steps_here > 0 and (wp.finished() or self.steps_here >= wp.max_steps):
                self.index, self.steps_here = self.index + 1, 0
                continue
            if wp.stalled is not None and self.retries and wp.stalled():  # e.g. the grasp missed: try again
                self.index, self.steps_here, self.retries = self.waypoints.index(wp.retry), 0, self.retries - 1
                continue
            if wp.posture is not None:
                action = self.arm.joint_action(wp.posture, wp.grip)
            else:
                self._target = wp.position()
                action = self.arm.action(self._target, wp.orientation(), wp.grip, wp.speed * self.max_step)
            self.steps_here += 1
            self.steps += 1
            action += self.rng.normal(0.0, self.action_noise, action.shape)
            return np.clip(action, -1.0, 1.0)
        return self.arm.action(self.arm.position, self.arm.orientation, OPEN, self.max_step)  # finished: hold


def hand(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """FORWARD_GRIP rolled by `roll` about the pointing direction (world y), pitched by `pitch` about
    world x (positive: pointing up), then turned by `yaw` about world z (positive: towards -x).
    Teleoperators in D4RL kitchen hold the hand this way, not square-on."""
    yaw_m = axis_rotation(np.array([0.0, 0.0, 1.0]), yaw)
    pitch_m = axis_rotation(np.array([1.0, 0.0, 0.0]), pitch)
    return yaw_m @ pitch_m @ axis_rotation(np.array([0.0, 1.0, 0.0]), roll) @ FORWARD_GRIP


def articulate(
    ctrl: SubtaskController,
    handle_site: str,
    joint_name: str,
    goal: float,
    grasp,
    lead: float,
    yaw=0.0,
    pitch=0.0,
    roll=0.0,
    turn: float = 1.0,
    grip: float = CLOSE,
    max_steps: int = 70,
    speed: float = 0.6,
    approach: float = 0.1,
    approach_steps: int = 20,
):
    """Waypoints for an articulated object: approach the handle from `approach` m behind along the hand's
    pointing direction, grasp it (grip=CLOSE) or just touch it (grip=OPEN), carry the grasp point
    along the object's joint with a lead of `lead` (rad or m) until the joint passes `goal`, release
    and back off. `turn` is how much of the joint's rotation the hand's orientation follows. If the
    object has not moved 12 steps into the operation (the grasp missed), the hand goes back to the
    pre-grasp pose and tries once more, as a teleoperator would."""
    joint = ObjectJoint(ctrl.env, joint_name)

    def handle():
        return site_position(ctrl.env, handle_site)

    rot = hand(yaw + ctrl.rng.normal(0, 0.05), pitch + ctrl.rng.normal(0, 0.05), roll)
    at = ctrl.offset(*grasp, jitter=ctrl.jitter / 3)
    pre = at - approach * rot[:, 2] + ctrl.offset(0, 0, 0)
    held = {}
    direction = np.sign(goal - joint.value)

    def moving_target():
        if not held:  # the hand's pose and the joint value at the moment of the grasp
            held.update(point=ctrl.arm.position, rot=ctrl.arm.orientation, q=joint.value)
        delta = joint.value - held["q"] + direction * lead
        return joint.carry(held["point"], held["rot"], delta, turn)

    def back_off():
        held.setdefault("retreat", ctrl.arm.position - 0.1 * ctrl.arm.orientation[:, 2])
        return held["retreat"]

    def stalled():  # the object has not followed the hand: the grasp or touch missed
        if ctrl.steps_here >= 12 and abs(joint.value - held["q"]) < 0.02:
            held.clear()  # regrasp from scratch
            return True
        return False

    start = Waypoint(lambda: handle() + pre, lambda: rot, OPEN, ctrl.reached(0.03), 50)
    return [
        start,
        Waypoint(lambda: handle() + at, lambda: rot, OPEN, ctrl.reached(0.015), approach_steps, 0.6),
        Waypoint(lambda: handle() + at, lambda: rot, grip, ctrl.after(4), 4),
        Waypoint(
            lambda: moving_target()[0],
            lambda: moving_target()[1],
            grip,
            lambda: direction * (goal - joint.value) <= 0,
            max_steps,
            speed,
            stalled=stalled,
            retry=start,
        ),
        Waypoint(lambda: ctrl.arm.position, lambda: ctrl.arm.orientation, OPEN, ctrl.after(2), 2),
        Waypoint(back_off, lambda: ctrl.arm.orientation, OPEN, ctrl.reached(0.03), 30),
    ]


def move_kettle(ctrl: SubtaskController, grasp=(-0.09, -0.01, -0.05), yaw=-0.45, pitch=-0.15, roll=0.0):
    """Waypoints for the kettle: grasp the left post of its handle (a vertical bar, like the D4RL
    teleoperators), lift, carry it to the top-left burner, set it down, release, back off.

    The grasp is high on the post, 5 cm below the handle's site. Grasped 8 cm below it, the kettle (whose
    centre of mass lies 9 cm to the right of the post) turned in the hand while being carried and often
    landed too far turned to count: 70% success after the microwave, 87% under action noise 0.03;
    5 cm: 100% of 30 env seeds after the microwave and from the reset, under action noise 0.01 to 0.06
    (and the kettle's final yaw quaternion component |q_z| 0.03 on average instead of 0.2). `grasp`, `yaw`,
    `pitch` and `roll` are parameters so that variants can be tried from outside."""

    def handle():
        return site_position(ctrl.env, "kettle_site")

    # Set down a little right of the goal's centre (still on the burner), as the teleoperators did:
    # the wrist then clears the microwave.
    kettle_goal = SUBTASK_GOALS["kettle"][:3] + np.array([0.05, 0.0, 0.0])

    def kettle():
        return ctrl.env.qpos[23:26].copy()

    rot = hand(yaw + ctrl.rng.normal(0, 0.05), pitch + ctrl.rng.normal(0, 0.05), roll)
    at = ctrl.offset(*grasp, jitter=ctrl.jitter / 3)  # the post under the handle's left end
    pre = at - 0.1 * rot[:, 2] + ctrl.offset(0, 0, 0)
    lift = ctrl.offset(0, 0, 0.1)
    place = ctrl.offset(0, 0, 0.01, jitter=ctrl.jitter / 3)
    held = {}

    def lifted():  # also remembers where the hand holds the kettle
        held.setdefault("hand_minus_kettle", ctrl.arm.position - kettle())
        held.setdefault("lift", ctrl.arm.position + lift)
        return held["lift"]

    def carried(offset):  # hand target that puts the kettle at its goal + offset
        return kettle_goal + held["hand_minus_kettle"] + offset

    def back_off():
        held.setdefault("retreat", ctrl.arm.position - 0.1 * rot[:, 2] + np.array([0, 0, 0.05]))
        return held["retreat"]

    return [
        Waypoint(lambda: handle() + pre, lambda: rot, OPEN, ctrl.reached(0.05), 50),
        Waypoint(lambda: handle() + at, lambda: rot, OPEN, ctrl.reached(0.015), 20, 0.6),
        Waypoint(lambda: handle() + at, lambda: rot, CLOSE, ctrl.after(4), 4),
        Waypoint(lifted, lambda: rot, CLOSE, ctrl.reached(0.03), 30, 0.7),
        Waypoint(lambda: carried(lift), lambda: rot, CLOSE, ctrl.reached(0.03), 60, 0.7),
        Waypoint(lambda: carried(place), lambda: rot, CLOSE, ctrl.reached(0.015), 30, 0.5),
        Waypoint(lambda: ctrl.arm.position, lambda: rot, OPEN, ctrl.after(3), 3),
        Waypoint(back_off, lambda: rot, OPEN, ctrl.reached(0.03), 30),
    ]


SUBTASK_PLANS = {
    # Microwave: hand turned 0.1 rad towards the door's hinge side. At 0.25 the pre-grasp pose was out of the arm's
    # reach now and then, and the door opened at the second try or not at all: slow (> 60 steps) in 7 of 30 env
    # seeds, 1 failed; 0.05-0.15: 40 of 40 in about 48 steps, under action noise 0.01 and 0.04.
    "microwave": lambda c: articulate(
        c, "microhandle_site", "microwave", -0.65, (0, -0.01, 0.07), lead=0.1, yaw=0.1, turn=-0.4
    ),
    "hinge cabinet": lambda c: articulate(
        c, "hinge_site2", "right_hinge_cabinet", 1.3, (0, -0.01, -0.12), lead=0.15, turn=0.3, pitch=-0.1
    ),
    "slide cabinet": lambda c: articulate(
        c, "slide_site", "slide_cabinet", 0.3, (0, -0.01, -0.05), lead=0.08, yaw=-0.5, pitch=0.5, speed=0.8
    ),
    # Knobs: grasp the bar's upper half, whose twist carries the hand away (+x) from the light switch
    # housing and the open hinge door (the lower half drives the wrist into them, and on the top knob
    # the fingers then catch the bottom knob's bar).
    # The bottom knob with the hand turned 0.3 rad (not 0.15 as the top knob): at 0.15 its pre-grasp pose was out of
    # reach now and then after the kettle (7% failed, 23% slow, 30 env seeds); at 0.3, 30 of 30 after each of the
    # kettle, microwave + kettle, microwave + top burner and from the reset.
    "bottom burner": lambda c: articulate(
        c, "knob2_site", "knob_Joint_2", -0.75, (0, -0.03, 0.025), lead=0.8, yaw=-0.3, approach_steps=10
    ),
    "top burner": lambda c: articulate(
        c, "knob4_site", "knob_Joint_4", -0.75, (0, -0.03, 0.025), lead=0.8, yaw=-0.15, approach_steps=10
    ),
    "kettle": move_kettle,
    "light switch": lambda c: articulate(
        c, "light_site", "light_switch", -0.55, (0, -0.01, 0.02), lead=0.3, grip=OPEN, yaw=-0.1, pitch=0.2, turn=0
    ),
}
