"""Scripted expert for the tabletop families: a waypoint state machine on privileged sim state.

The phase is re-derived from the simulator state on every call (where the gripper, fingers and target box
are), so the expert recovers from noise (a dropped box is re-grasped, a lost push is re-approached).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tristream.envs.tabletop import scene

if TYPE_CHECKING:  # pragma: no cover
    from tristream.envs.tabletop.env import TabletopEnv

SAFE_Z = 0.08  # transit height of the end-effector point (fingertips clear the 4 cm boxes)
CARRY_Z = 0.115  # transit height while holding a box
GRASP_DZ = 0.005  # grasp with the end-effector point this far above the box centre
PUSH_Z = 0.02
PUSH_BACKOFF = 0.055  # start a push this far behind the box centre
OPEN, CLOSE = -1.0, 1.0


def _toward(env: "TabletopEnv", goal: np.ndarray) -> np.ndarray:
    """xyz action moving the controller's position target to ``goal`` (a straight line, clipped)."""
    from tristream.envs.tabletop.env import MAX_DELTA

    d = (np.asarray(goal, float) - env.controller_target()) / MAX_DELTA
    m = max(1.0, float(np.abs(d).max()))
    return d / m


def _goto(env: "TabletopEnv", goal: np.ndarray, safe_z: float, tol: float = 0.012) -> np.ndarray:
    """Move to ``goal`` through a transit height: rise, travel above it, then descend."""
    ee = env.ee_pos()
    goal = np.asarray(goal, float)
    if np.linalg.norm(ee[:2] - goal[:2]) > tol:
        if ee[2] < safe_z - 0.025:
            return _toward(env, np.array([ee[0], ee[1], safe_z]) + 0.3 * np.r_[goal[:2] - ee[:2], 0.0])
        return _toward(env, np.array([goal[0], goal[1], max(goal[2], safe_z)]))
    return _toward(env, goal)


def _act(xyz: np.ndarray, grip: float) -> np.ndarray:
    return np.array([xyz[0], xyz[1], xyz[2], grip], dtype=np.float64)


def _reach(env: "TabletopEnv") -> np.ndarray:
    obj = env.object_pos()
    return _act(_goto(env, obj + np.array([0.0, 0.0, 0.015]), SAFE_Z), OPEN)


def _push(env: "TabletopEnv") -> np.ndarray:
    ep = env.episode
    gx = ep.goal_xy()[0]
    s = 1.0 if gx > 0 else -1.0
    obj, ee = env.object_pos(), env.ee_pos()
    behind = np.array([obj[0] - s * PUSH_BACKOFF, obj[1], PUSH_Z])
    in_pose = s * (obj[0] - ee[0]) > 0.02 and abs(ee[1] - obj[1]) < 0.025 and ee[2] < 0.035
    if in_pose:
        # contact distance is finger half-depth + box half-size = 0.03; stop 2 cm short of putting the box
        # on the zone centre (it slides on a little after the push)
        goal = np.array([gx - s * 0.05, obj[1], PUSH_Z])
        return _act(_toward(env, goal), CLOSE)
    return _act(_goto(env, behind, SAFE_Z, tol=0.01), CLOSE)


def _pick_or_place(env: "TabletopEnv", place: bool) -> np.ndarray:
    obj, ee, q = env.object_pos(), env.ee_pos(), env.finger_q()
    rel = ee - obj
    between = np.linalg.norm(rel[:2]) < 0.02 and -0.01 < rel[2] < 0.03
    closing = env._grip_cmd > 0
    closed_on = 0.006 < q < scene.FINGER_RANGE - 0.006
    if closing and between and closed_on:  # holding the box
        if not place:
            return _act(_toward(env, np.array([ee[0], ee[1], 0.16])), CLOSE)
        g = env.episode.goal_xy()
        want_xy = g + rel[:2]  # put the box centre (not the gripper) over the plate centre
        if np.linalg.norm(obj[:2] - g) > 0.012:
            if ee[2] < CARRY_Z - 0.03:
                return _act(_toward(env, np.array([ee[0], ee[1], CARRY_Z]) + 0.3 * np.r_[want_xy - ee[:2], 0.0]), CLOSE)
            return _act(_toward(env, np.array([want_xy[0], want_xy[1], CARRY_Z])), CLOSE)
        return _act(_toward(env, np.array([want_xy[0], want_xy[1], scene.OBJ_HALF + rel[2] + 0.002])), CLOSE)
    if closing and q >= scene.FINGER_RANGE - 0.006:  # closed on nothing: open and back off upwards
        return _act(_toward(env, np.array([ee[0], ee[1], max(ee[2], SAFE_Z)])), OPEN)
    grasp = obj + np.array([0.0, 0.0, GRASP_DZ])
    at_grasp = np.linalg.norm(ee[:2] - grasp[:2]) < 0.012 and abs(ee[2] - grasp[2]) < 0.012
    if at_grasp and q < 0.006:
        return _act(np.zeros(3), CLOSE)
    if closing or q > 0.006:  # fingers not open yet: open before moving in
        return _act(np.zeros(3), OPEN)
    return _act(_goto(env, grasp, SAFE_Z), OPEN)


def expert_action(env: "TabletopEnv") -> np.ndarray:
    fam = env.episode.family
    if fam == "reach":
        return _reach(env)
    if fam == "push":
        return _push(env)
    if fam == "pick":
        return _pick_or_place(env, place=False)
    if fam == "place":
        return _pick_or_place(env, place=True)
    raise ValueError(fam)
