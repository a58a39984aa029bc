"""Meta-World task ids, the MT10/MT50 sets and one language instruction per task.

Pure Python (no Meta-World import), so names validate, and errors list the valid ids, without the extra.
The lists are Meta-World 3.1.1's ``ALL_V3_ENVIRONMENTS`` and ``MT10_V3`` (a test checks they match).
"""
from __future__ import annotations

import difflib

# task id -> instruction. Each sentence is the task's name read as an imperative ("button-press-topdown"
# -> "press the button from the top"), naming the object and the goal as Meta-World's scene shows them.
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "put the nut onto the peg",
    "basketball-v3": "put the ball into the basket",
    "bin-picking-v3": "move the puck from one bin to the other",
    "box-close-v3": "put the lid on the box",
    "button-press-topdown-v3": "press the button from the top",
    "button-press-topdown-wall-v3": "press the button from the top behind the wall",
    "button-press-v3": "press the button",
    "button-press-wall-v3": "press the button behind the wall",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial",
    "disassemble-v3": "take the nut off the peg",
    "door-close-v3": "close the door",
    "door-lock-v3": "lock the door by turning the lock",
    "door-open-v3": "open the door",
    "door-unlock-v3": "unlock the door by turning the lock",
    "hand-insert-v3": "put the gripper into the hole",
    "drawer-close-v3": "close the drawer",
    "drawer-open-v3": "open the drawer",
    "faucet-open-v3": "turn the faucet handle to open it",
    "faucet-close-v3": "turn the faucet handle to close it",
    "hammer-v3": "hammer the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the puck out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate into the goal",
    "plate-slide-side-v3": "slide the plate sideways into the goal",
    "plate-slide-back-v3": "slide the plate back out of the goal",
    "plate-slide-back-side-v3": "slide the plate sideways back out of the goal",
    "peg-insert-side-v3": "insert the peg into the hole from the side",
    "peg-unplug-side-v3": "unplug the peg from the side",
    "soccer-v3": "kick the ball into the goal",
    "stick-push-v3": "grasp the stick and push the box with it",
    "stick-pull-v3": "grasp the stick and pull the box with it",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck to the goal behind the wall",
    "push-back-v3": "push the puck back to the goal",
    "reach-v3": "reach the goal position",
    "reach-wall-v3": "reach the goal position behind the wall",
    "shelf-place-v3": "place the puck on the shelf",
    "sweep-into-v3": "sweep the puck into the hole",
    "sweep-v3": "sweep the puck off the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

MT50: tuple[str, ...] = tuple(INSTRUCTIONS)
MT10: tuple[str, ...] = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
    "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)
TASK_SETS: dict[str, tuple[str, ...]] = {"mt10": MT10, "mt50": MT50}


def normalize_task(name: str) -> str:
    """``"reach"`` or ``"reach-v3"`` -> ``"reach-v3"``; an unknown id raises ValueError listing the valid ones."""
    task = str(name).strip()
    if task not in INSTRUCTIONS and f"{task}-v3" in INSTRUCTIONS:
        task = f"{task}-v3"
    if task not in INSTRUCTIONS:
        close = difflib.get_close_matches(task, MT50, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown Meta-World task {name!r}.{hint} Valid tasks (Meta-World v3, the '-v3' may be "
                         f"left out): {', '.join(MT50)}; sets: {', '.join(TASK_SETS)}")
    return task


def resolve_tasks(task: str | None, tasks) -> tuple[str, ...]:
    """The task ids an env instance serves: ``task`` (one id or a set name "mt10"/"mt50") or ``tasks`` (a
    list of ids); both empty means MT50. Duplicates are dropped, the order kept."""
    if task and tasks:
        raise ValueError(f"give either task={task!r} or tasks={list(tasks)!r}, not both")
    if task:
        key = str(task).lower()
        names = TASK_SETS[key] if key in TASK_SETS else (normalize_task(task),)
    elif tasks:
        names = []
        for t in (tasks if not isinstance(tasks, str) else [tasks]):
            names.extend(TASK_SETS[t.lower()] if t.lower() in TASK_SETS else [normalize_task(t)])
        names = tuple(names)
    else:
        names = MT50
    return tuple(dict.fromkeys(names))


def instruction(task: str) -> str:
    return INSTRUCTIONS[normalize_task(task)]
