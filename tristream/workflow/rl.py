"""``tristream train`` (the RL part): run dir, resume, clean stop on SIGINT/SIGTERM, logging, checkpoints."""
from __future__ import annotations

import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tristream.algos.registry import loss_spec
from tristream.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tristream.metrics.plots import learning_curve
from tristream.metrics.tracker import Tracker, console_line, drop_rows_after
from tristream.runtime.backends.base import RestartsExhausted
from tristream.policies.io import load_policy
from tristream.runtime.learner import Learner
from tristream.runtime.pipeline import train_loop
from tristream.policies.from_config import apply_rl_options, build_policy
from tristream.runtime.topology import Topology


class StopFlag:
    """SIGINT/SIGTERM set the flag (the run stops at the next safe point and checkpoints); a second
    SIGINT raises KeyboardInterrupt at once."""

    def __init__(self):
        self.set = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True
        print(f"\n[tristream] {signal.Signals(signum).name}: stopping after a checkpoint "
              "(Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def __call__(self) -> bool:
        return self.set


def set_exploration(policy, log_std: float) -> None:
    """Behaviour cloning fits the noise of the demonstrations; RL wants its own exploration level."""
    import torch

    head = getattr(policy, "head", None)
    if not hasattr(head, "set_log_std"):
        print(f"[tristream] train.rl_log_std ignored: {type(policy).__name__} has no Gaussian head")
        return
    with torch.no_grad():
        head.set_log_std(log_std)


def _has_gaussian_head(policy) -> bool:
    return hasattr(policy, "set_gaussian_tokens") and getattr(getattr(policy, "config", None), "head", None) == "gaussian"


def rl_train(cfg, run_dir: str | Path, env_spec, *, init: str | Path | None = None, resume: bool = False,
             progress: bool = True, stop: StopFlag | None = None):
    """RL from ``init`` (a policy folder; None: a fresh policy) or, with ``resume``, from the run's last
    checkpoint. Returns the trained policy. On the Ray backend this runs in the learner actor."""
    import torch

    if cfg.runtime.backend == "ray":
        from tristream.runtime.backends.ray_learner import in_actor, run_in_learner_actor
        if not in_actor():
            flag = stop or StopFlag()
            with contextlib.nullcontext() if stop else flag:  # a caller's flag already handles the signals
                return run_in_learner_actor(cfg, rl_train, cfg, run_dir, env_spec, init=init, resume=resume,
                                            progress=False, stop=flag)

    run_dir = Path(run_dir)
    torch.set_num_threads(cfg.run.torch_threads)
    totals = {"env_steps_total": 0.0, "wall_s_total": 0.0}
    if resume:
        ckpt = latest_checkpoint(run_dir)
        policy, state = load_checkpoint(ckpt)
        apply_rl_options(cfg, policy)
        learner = Learner(policy, cfg.algo, seed=cfg.run.seed + 2, total_steps=cfg.train.steps,
                          rollout_mismatch=cfg.rollout.weights != "fp32")
        learner.load_state_dict(state["learner"])
        start, totals = int(state["step"]), state["totals"]
        print(f"[tristream] resuming from {ckpt} (global step {start}, policy version {learner.version})")
        dropped = drop_rows_after(run_dir, start)
        if dropped:
            print(f"[tristream] dropped {dropped} metric rows past global step {start} from metrics.jsonl: "
                  f"those steps ran after the checkpoint and are trained again")
    else:
        torch.manual_seed(cfg.run.seed)
        policy = load_policy(init) if init else build_policy(cfg, env_spec)
        if cfg.train.rl_log_std is not None:
            set_exploration(policy, cfg.train.rl_log_std)
        if cfg.train.rl_gaussian_tokens is not None:
            if not hasattr(policy, "set_gaussian_tokens"):
                raise ValueError(f"train.rl_gaussian_tokens: {type(policy).__name__} has no Gaussian head to split")
            policy.set_gaussian_tokens(cfg.train.rl_gaussian_tokens)
        elif loss_spec(cfg.algo.loss).fine_tokens and _has_gaussian_head(policy):
            print(f"[tristream] loss {cfg.algo.loss} bounds every token's ratio: the Gaussian head uses one token "
                  f"per action dimension (train.rl_gaussian_tokens=chunk to keep one per chunk)")
            policy.set_gaussian_tokens("dim")
        apply_rl_options(cfg, policy)
        learner = Learner(policy, cfg.algo, seed=cfg.run.seed + 2, total_steps=cfg.train.steps,
                          rollout_mismatch=cfg.rollout.weights != "fp32")
        start = 0
    print(Topology.from_config(cfg).plan.describe())
    tracker = Tracker(run_dir)
    bar = tqdm(total=cfg.train.steps, initial=start, desc="rl", unit="step", disable=not progress)
    last_saved = start

    def checkpoint(step: int) -> None:
        nonlocal last_saved
        save_checkpoint(run_dir, step, policy, {"learner": learner.state_dict(), "totals": dict(totals)})
        last_saved = step

    def on_step(step: int, metrics: dict[str, Any]) -> None:
        totals["env_steps_total"] += metrics["env_steps"]
        totals["wall_s_total"] += metrics["step_s"]
        metrics |= totals
        tracker.log(step, metrics)
        bar.update(1)
        line = console_line(step, cfg.train.steps, metrics)
        (bar.write if progress else print)(line)
        if step % cfg.train.save_every == 0 or step == cfg.train.steps:
            checkpoint(step)

    own_stop = stop is None
    stop = stop or StopFlag()
    t0 = time.perf_counter()
    try:
        if own_stop:
            stop.__enter__()
        step = train_loop(cfg, policy, env_spec, learner=learner, start_step=start, on_step=on_step,
                          should_stop=stop)
    except RestartsExhausted as e:  # keep what was trained: the last completed step, when it is intact
        if e.step_intact is not None and e.step_intact != last_saved:
            checkpoint(e.step_intact)
        print(f"[tristream] the run stopped: a role kept failing. Newest checkpoint: global step {last_saved}; "
              f"resume with: tristream train --resume {run_dir}", flush=True)
        raise
    finally:
        if own_stop:
            stop.__exit__(None, None, None)
        bar.close()
        tracker.close()
    if step != last_saved:
        checkpoint(step)
    if stop.set:
        print(f"[tristream] stopped at global step {step}; resume with: tristream train --resume {run_dir}")
    learning_curve(run_dir)
    print(f"[tristream] RL: {step - start} global steps in {time.perf_counter() - t0:.0f} s; "
          f"checkpoints in {run_dir / 'checkpoints'}")
    return policy
