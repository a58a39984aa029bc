"""Task families of the tabletop suite: episode sampling, language instructions, success checks, shaping.

Every episode is a pure function of its seed: the family (for a mix), the colours, which object is the
target, the goal (zone side / plate) and all positions come from ``numpy.random.default_rng(seed)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tristream.envs.tabletop.scene import (
    NUM_OBJECTS,
    NUM_PLATES,
    OBJ_HALF,
    PLATE_RADIUS,
    ZONE_HALF,
    ZONE_X,
)

FAMILIES: tuple[str, ...] = ("reach", "push", "pick", "place")

# name -> rgba; boxes and plates of one episode get distinct colours.
PALETTE: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.10, 0.10, 1.0),
    "green": (0.10, 0.70, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.90, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "purple": (0.55, 0.15, 0.75, 1.0),
    "orange": (1.00, 0.50, 0.05, 1.0),
    "cyan": (0.10, 0.80, 0.85, 1.0),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)

TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": (
        "reach the {colour} block",
        "move the gripper to the {colour} cube",
        "touch the {colour} block",
        "go to the {colour} object",
    ),
    "push": (
        "push the {colour} block into the {zone} zone",
        "slide the {colour} cube to the {zone} zone",
        "push the {colour} object to the {zone} area",
    ),
    "pick": (
        "pick up the {colour} block",
        "lift the {colour} cube",
        "grasp the {colour} block and lift it up",
    ),
    "place": (
        "put the {colour} block on the {colour2} plate",
        "place the {colour} cube onto the {colour2} plate",
        "move the {colour} block onto the {colour2} plate",
    ),
}

# Success thresholds.
REACH_DIST = 0.04  # end-effector point within 4 cm of the target box's centre
PICK_HEIGHT = 0.10  # box centre above 10 cm (it rests at 2 cm)
REST_Z = OBJ_HALF + 0.01  # "on the table / on a plate": box centre below 3 cm
PLATE_TOL = PLATE_RADIUS - 0.01  # box centre within 4 cm of the plate centre
PLACE_CARRY_Z = 0.07  # staged place shaping: box centre lifted 5 cm clears the plates

# Sampling regions.
OBJ_REGION = (0.10, 0.10)  # boxes: |x|, |y| <= these
PLATE_REGION = (0.14, 0.13)
GRIPPER_START_Z = 0.12


def validate_family(name: str) -> str:
    if name not in FAMILIES:
        raise ValueError(f"unknown tabletop task family {name!r}; valid families: {', '.join(FAMILIES)} (or 'mix')")
    return name


@dataclass
class Episode:
    family: str
    instruction: str
    colours: tuple[str, ...]  # one per box
    plate_colours: tuple[str, ...]
    target: int  # index of the target box
    obj_pos: np.ndarray  # [NUM_OBJECTS, 3]
    obj_yaw: np.ndarray  # [NUM_OBJECTS]
    plate_pos: np.ndarray  # [NUM_PLATES, 2]
    gripper_start: np.ndarray  # [3]
    zone: str = ""  # push: "left" / "right"
    plate: int = -1  # place: index of the target plate

    def goal_xy(self) -> np.ndarray | None:
        if self.family == "push":
            return np.array([-ZONE_X if self.zone == "left" else ZONE_X, 0.0])
        if self.family == "place":
            return self.plate_pos[self.plate].copy()
        return None


def _far(p: np.ndarray, others: list[np.ndarray], d: float) -> bool:
    return all(np.linalg.norm(p[:2] - o[:2]) >= d for o in others)


def sample_episode(seed: int, families: tuple[str, ...]) -> Episode:
    rng = np.random.default_rng(seed)
    family = families[int(rng.integers(len(families)))]
    picks = rng.choice(len(COLOUR_NAMES), size=NUM_OBJECTS + NUM_PLATES, replace=False)
    colours = tuple(COLOUR_NAMES[i] for i in picks[:NUM_OBJECTS])
    plate_colours = tuple(COLOUR_NAMES[i] for i in picks[NUM_OBJECTS:])
    target = int(rng.integers(NUM_OBJECTS))
    zone = ("left", "right")[int(rng.integers(2))]
    plate = int(rng.integers(NUM_PLATES))
    template = TEMPLATES[family][int(rng.integers(len(TEMPLATES[family])))]

    for _ in range(1000):
        objs: list[np.ndarray] = []
        while len(objs) < NUM_OBJECTS:
            p = np.array([rng.uniform(-OBJ_REGION[0], OBJ_REGION[0]), rng.uniform(-OBJ_REGION[1], OBJ_REGION[1]), OBJ_HALF])
            if _far(p, objs, 0.075):
                objs.append(p)
        plates: list[np.ndarray] = []
        tries = 0
        while len(plates) < NUM_PLATES and tries < 200:
            tries += 1
            q = np.array([rng.uniform(-PLATE_REGION[0], PLATE_REGION[0]), rng.uniform(-PLATE_REGION[1], PLATE_REGION[1])])
            if _far(q, objs, PLATE_RADIUS + 0.04) and _far(q, plates, 2 * PLATE_RADIUS + 0.02):
                plates.append(q)
        if len(plates) < NUM_PLATES:
            continue
        t = objs[target]
        if family == "push":
            # keep the pushing corridor (target -> zone, plus room behind the target for the gripper) clear
            sx = -1.0 if zone == "left" else 1.0
            if any(
                abs(o[1] - t[1]) < 0.07 and -0.09 < sx * (o[0] - t[0])
                for i, o in enumerate(objs) if i != target
            ):
                continue
        if family == "place" and np.linalg.norm(t[:2] - plates[plate]) < 0.12:
            continue
        break
    else:  # pragma: no cover - the region is large enough that this never happens in practice
        raise RuntimeError(f"could not sample a tabletop layout for seed {seed}")

    yaw = rng.uniform(-0.3, 0.3, size=NUM_OBJECTS)
    start = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.08, 0.0), GRIPPER_START_Z])
    instruction = template.format(colour=colours[target], zone=zone, colour2=plate_colours[plate])
    return Episode(
        family=family,
        instruction=instruction,
        colours=colours,
        plate_colours=plate_colours,
        target=target,
        obj_pos=np.stack(objs),
        obj_yaw=yaw,
        plate_pos=np.stack(plates),
        gripper_start=start,
        zone=zone if family == "push" else "",
        plate=plate if family == "place" else -1,
    )


def is_success(ep: Episode, ee: np.ndarray, obj: np.ndarray) -> bool:
    """``ee``: end-effector point [3]; ``obj``: the target box's centre [3]."""
    if ep.family == "reach":
        return bool(np.linalg.norm(ee - obj) < REACH_DIST)
    if ep.family == "pick":
        return bool(obj[2] > PICK_HEIGHT)
    if ep.family == "push":
        g = ep.goal_xy()
        return bool(
            abs(obj[0] - g[0]) < ZONE_HALF[0] and abs(obj[1] - g[1]) < ZONE_HALF[1] and obj[2] < REST_Z
        )
    if ep.family == "place":
        g = ep.goal_xy()
        return bool(np.linalg.norm(obj[:2] - g) < PLATE_TOL and obj[2] < REST_Z)
    raise ValueError(ep.family)


def potential(ep: Episode, ee: np.ndarray, obj: np.ndarray, staged_place: bool = False) -> float:
    """Shaping potential (metres, <= 0): minus the remaining distance to solve the task.

    reach: -|ee - obj|; pick: -|ee - obj| - max(0, PICK_HEIGHT - obj_z); push: -|ee - obj| - |obj_xy - zone_xy|;
    place: -|ee - obj| - |obj_xy - plate_xy|, and with ``staged_place`` also - max(0, PLACE_CARRY_Z - obj_z)
    while the box is not over its plate (the lift the carry needs, which the plain distance does not
    reward). The dense reward is the potential's increase per step.
    """
    d = float(np.linalg.norm(ee - obj))
    if ep.family == "reach":
        return -d
    if ep.family == "pick":
        return -d - max(0.0, PICK_HEIGHT - float(obj[2]))
    g = ep.goal_xy()
    to_goal = float(np.linalg.norm(obj[:2] - g))
    lift = 0.0
    if staged_place and ep.family == "place" and to_goal >= PLATE_TOL:
        lift = max(0.0, PLACE_CARRY_Z - float(obj[2]))
    return -d - to_goal - lift
