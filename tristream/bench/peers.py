"""``tristream bench peers``: tristream against another RL library, run side by side on this machine.

The peer runs in a virtual environment of its own (created and installed on first use, never imported here)
through a standalone script in ``peer_scripts/``. Both sides get the same hyper-parameters, mapped from the
one tristream config (a preset plus overrides), the same env and the same budget; seeds are interleaved
(peer seed 0, tristream seed 0, peer seed 1, ...) so a drift in the machine's speed hits both.

    sb3  Stable-Baselines3 PPO (MlpPolicy) against policy.name=mlp, on any Gymnasium state env, for the same
         env steps: the return at equal env steps, and the wall time.
    sf   Sample Factory APPO (its default conv encoder, no RNN) against policy.name=cnn, on any Gymnasium
         pixel env, for the same wall time: env steps/s, CPU busy and the return at equal wall time.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tristream.provenance import publish, run_meta
from tristream.bench.variants import with_overrides
from tristream.config.loader import save_config
from tristream.envs.headless_gl import DEFAULTS as GL_DEFAULTS

SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"
REPO = Path(__file__).resolve().parents[2]  # examples/ (an env named examples.module:Class) lives here


class PeerInstallError(RuntimeError):
    """A peer's virtual environment could not be made; the message says what pip said and how to retry."""


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]  # pip requirements of the peer's own venv
    script: str
    version_of: str  # the package whose version the result records
    budget: str  # "env_steps" (equal samples) or "seconds" (equal wall time)
    policy: str  # tristream's policy of the peer's network size


# torch pinned to the CPU build tristream uses (an unpinned one pulls a multi-GB CUDA build); one MuJoCo for all
PEERS = {
    "sb3": Peer("sb3", ("torch==2.13.0", "stable-baselines3==2.9.2", "gymnasium[mujoco]==1.4.0", "mujoco==3.3.0"),
                "sb3_ppo.py", "stable-baselines3", "env_steps", "mlp"),
    # Sample Factory 2.1.1 needs gymnasium < 1.0 and numpy < 2
    "sf": Peer("sf", ("torch==2.13.0", "sample-factory==2.1.1", "gymnasium==0.29.1", "numpy<2", "mujoco==3.3.0"),
               "sf_appo.py", "sample-factory", "seconds", "cnn"),
}


def peer_python(peer: Peer, root: Path, *, pip_args: tuple[str, ...] = ()) -> Path:
    """The peer's venv interpreter under ``root/<name>``, made and installed on first use (a stamp file marks a
    finished install, so a half-made venv is redone)."""
    venv = root / peer.name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    want = " ".join(peer.packages + pip_args)
    if stamp.is_file() and stamp.read_text() == want:
        return python
    print(f"[tristream] installing peer {peer.name} into {venv}: {' '.join(peer.packages)} (first use; minutes)",
          flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", *pip_args, *peer.packages]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-6:])
            raise PeerInstallError(
                f"could not install peer {peer.name!r} into {venv}: `{' '.join(cmd)}` exited {r.returncode}:\n{tail}\n"
                f"Fix the cause (network to the package registry, disk space) and rerun; or install it yourself "
                f"with that command and rerun.")
    stamp.write_text(want)
    return python


# ----------------------------------------------------------------------------- one config, the peer's names
def sb3_settings(cfg, seed: int, total_steps: int) -> dict:
    """The tristream config's PPO as Stable-Baselines3's PPO arguments (the same numbers, SB3's names)."""
    a, p, r = cfg.algo, cfg.policy, cfg.rollout
    kw = p.factory_kwargs()
    layers = kw.get("layers", 2)
    ppo = {"learning_rate": a.lr, "n_steps": r.steps_per_env, "batch_size": a.global_batch,
           "n_epochs": a.update_epochs, "gamma": a.gamma, "gae_lambda": a.gae_lambda, "clip_range": a.clip_eps,
           "ent_coef": a.ent_coef, "vf_coef": a.vf_coef, "max_grad_norm": a.max_grad_norm or 1e9,
           "normalize_advantage": a.norm_adv, "target_kl": a.target_kl}
    return {"env_id": cfg.env.gym.id, "seed": seed, "total_steps": total_steps, "n_envs": r.num_envs,
            "normalize_obs": bool(kw.get("normalize_state", True)), "normalize_reward": a.norm_reward,
            "linear_lr": a.lr_schedule == "linear", "torch_threads": 1, "ppo": ppo,
            "policy_kwargs": {"net_arch": {"pi": [p.hidden_dim] * layers, "vf": [p.hidden_dim] * layers},
                              "activation": kw.get("activation", "tanh"), "log_std_init": p.init_log_std,
                              "ortho_init": bool(kw.get("ortho_init", True))}}


def sf_settings(cfg, seed: int, seconds: float, train_dir: Path) -> dict:
    """The tristream config as Sample Factory APPO arguments: env workers x envs, rollout length, batch, epochs,
    PPO constants, the conv encoder of ``policy.name=cnn`` (Sample Factory's convnet_simple) without an RNN."""
    a, p, r, rt = cfg.algo, cfg.policy, cfg.rollout, cfg.runtime
    per_step = r.num_envs * r.steps_per_env
    args = {"num_workers": rt.env_workers, "num_envs_per_worker": r.num_envs // rt.env_workers,
            "worker_num_splits": rt.groups_per_worker,  # env groups a worker alternates between
            "rollout": r.steps_per_env, "batch_size": a.global_batch,
            "num_batches_per_epoch": max(1, per_step // a.global_batch), "num_epochs": a.update_epochs,
            "learning_rate": a.lr, "gamma": a.gamma, "gae_lambda": a.gae_lambda, "ppo_clip_ratio": a.clip_eps,
            "value_loss_coeff": a.vf_coef, "exploration_loss_coeff": a.ent_coef, "max_grad_norm": a.max_grad_norm,
            "normalize_returns": a.value_norm, "use_rnn": False,
            # images in [0, 1] as policy.name=cnn sees them (raw 0-255 pixels blow the first updates up)
            "normalize_input": False, "obs_scale": 255.0,
            "encoder_conv_architecture": "convnet_simple", "encoder_conv_mlp_layers": p.hidden_dim,
            "nonlinearity": "elu", "policy_initialization": "orthogonal",
            # a state-independent log std, as tristream's Gaussian head; bootstrap at a time limit, as GAE here does
            "adaptive_stddev": False, "initial_stddev": round(math.exp(p.init_log_std), 6), "value_bootstrap": True,
            "batched_sampling": True, "device": "cpu",
            "with_wandb": False, "train_for_seconds": int(seconds) + 3600, "seed": seed,  # stopped at `seconds` wall
            "experiment": f"seed{seed}",
            "save_every_sec": 100000, "decorrelate_experience_max_seconds": 0}
    return {"env": cfg.env.gym.id, "env_kwargs": dict(cfg.env.kwargs), "max_episode_steps": cfg.env.max_episode_steps,
            "train_dir": str(train_dir), "sf_args": [f"--{k}={v}" for k, v in args.items()]}


def check_comparable(cfg, peer: Peer) -> None:
    """What the side-by-side needs of the tristream config; each problem named with its fix."""
    problems = []
    if cfg.env.name != "gym" or not cfg.env.gym.id:
        problems.append(f"env.name=gym env.gym.id=<a Gymnasium id or module:Class> (got env.name={cfg.env.name!r})")
    if cfg.policy.name != peer.policy:
        problems.append(f"policy.name={peer.policy}, the peer's network (got {cfg.policy.name!r})")
    if cfg.policy.chunk_len != 1:
        problems.append(f"policy.chunk_len=1: the peer acts every env step (got {cfg.policy.chunk_len})")
    if cfg.rollout.steps_per_env < 1:
        problems.append("rollout.steps_per_env=N (the peer's rollout length: fixed-horizon rollouts; got 0, episodic)")
    if cfg.algo.loss != "ppo" or cfg.algo.advantage != "gae":
        problems.append(f"algo.loss=ppo algo.advantage=gae (got {cfg.algo.loss}, {cfg.algo.advantage})")
    if peer.name == "sf" and cfg.algo.norm_reward:
        problems.append("algo.norm_reward=false (Sample Factory does not scale rewards; its normalize_returns is "
                        "algo.value_norm)")
    if peer.name == "sb3" and cfg.algo.value_norm:
        problems.append("algo.value_norm=false (Stable-Baselines3 has no value-target standardisation)")
    if peer.name == "sf" and cfg.rollout.num_envs % cfg.runtime.env_workers:
        problems.append("rollout.num_envs divisible by runtime.env_workers (the peer's workers x envs per worker)")
    if problems:
        preset = {"sb3": "ppo_mujoco", "sf": "ppo_pixels"}[peer.name]
        raise ValueError(f"bench peers --peer {peer.name} compares like with like; set " + "; ".join(problems)
                         + f" (the preset {preset} has all of these)")


# ----------------------------------------------------------------------------- running each side
def _group_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every live process of process group ``pgid``, from /proc: a library's
    worker processes count even when they are never waited for (killed with the group at the end)."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out[int(d.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _run(cmd: list[str], log: Path, *, env: dict | None = None, seconds: float | None = None,
         poll=None) -> tuple[float, float]:
    """Run ``cmd`` in a session of its own, its output to ``log``; after ``seconds`` SIGTERM to the whole process
    group (a library's worker processes included), SIGKILL after a grace period. ``poll(elapsed)`` is called
    twice a second. Returns (wall s, CPU s of the process group until the stop, sampled twice a second)."""
    t0 = time.perf_counter()
    cpu: dict[int, float] = {}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stopped = False
        while proc.poll() is None:
            cpu |= _group_cpu(proc.pid)
            if seconds is not None and time.perf_counter() - t0 > seconds and not stopped:
                _signal_group(proc, signal.SIGTERM)
                stopped = True
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
                break
            if poll is not None:
                poll(time.perf_counter() - t0)
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        _signal_group(proc, signal.SIGKILL)  # nothing of the run outlives it
        proc.wait()
    if proc.returncode != 0 and not stopped:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"`{' '.join(cmd[:6])} ...` failed (exit {proc.returncode}); the end of {log}:\n{tail}")
    return wall, sum(cpu.values())


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _sb3(python: Path, cfg, seed: int, total: int, out: Path) -> tuple[list[dict], float, float]:
    settings = out / f"sb3_seed{seed}.json"
    settings.write_text(json.dumps(sb3_settings(cfg, seed, total), indent=2))
    log = out / f"sb3_seed{seed}.jsonl"
    env = {**GL_DEFAULTS, **os.environ, "SB3_LOGDIR": str(out / "sb3_logs")}  # not a fresh folder in /tmp per run
    wall, cpu = _run([str(python), str(SCRIPTS / "sb3_ppo.py"), str(settings), str(log)], out / f"sb3_seed{seed}.log",
                     env=env)
    return [json.loads(x) for x in log.read_text().splitlines()], wall, cpu


def _sf(python: Path, cfg, seed: int, seconds: float, out: Path) -> tuple[list[dict], float, float]:
    settings, logs = out / f"sf_seed{seed}.json", out / f"sf_seed{seed}_episodes"
    shutil.rmtree(logs, ignore_errors=True)  # a rerun into the same folder starts afresh
    shutil.rmtree(out / "sf_train_dir" / f"seed{seed}", ignore_errors=True)
    logs.mkdir(parents=True)
    settings.write_text(json.dumps(sf_settings(cfg, seed, seconds, out / "sf_train_dir"), indent=2))
    # the rendering defaults tristream's env workers run with (a value the user set wins on both sides), so
    # the two sides render alike and the comparison measures the runtimes
    env = {**GL_DEFAULTS, **os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.time()
    wall, cpu = _run([str(python), str(SCRIPTS / "sf_appo.py"), str(settings), str(logs)], out / f"sf_seed{seed}.log",
                     env=env, seconds=seconds)  # the same wall time as tristream's side, start-up included
    events = []  # (time, file, steps of that env instance, return)
    for f in logs.glob("*.jsonl"):
        events += [(r["t"], f.name, r["steps"], r["return"]) for r in map(json.loads, f.read_text().splitlines())]
    events.sort()
    last: dict[str, int] = {}
    rows = []
    for t, name, steps, ret in events:  # env steps so far: every instance's count at its latest episode end
        last[name] = steps
        rows.append({"env_steps": sum(last.values()), "wall_s": t - start, "return": ret})
    return rows, wall, cpu


def complete_rows(text: str) -> list[dict]:
    """The JSON rows of a metrics.jsonl that another process is appending to: its last line may be half
    written, so only lines ended by a newline count."""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def _tristream(preset: Path, cfg, seed: int, out: Path, *, steps: int | None = None,
               seconds: float | None = None, label: str = "tristream") -> tuple[list[dict], float, float]:
    """A ``tristream train`` subprocess; each global step's row is stamped with the time since launch when it
    appears (polled), so start-up counts as it does for the peer. ``label`` names its run folder and log."""
    run_dir = out / f"{label}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a rerun into the same folder starts afresh
    cmd = [sys.executable, "-c", "from tristream.cli import main; raise SystemExit(main())", "train",
           "--no-progress", "--preset", str(preset), f"run.seed={seed}", f"run.dir={out}",
           f"run.name={label}_seed{seed}", f"train.steps={steps or 1_000_000}", "train.init=", "eval.episodes=1",
           "eval.videos=0"]
    seen: dict[int, float] = {}

    def poll(elapsed: float) -> None:
        path = run_dir / "metrics.jsonl"
        if path.is_file():
            for m in complete_rows(path.read_text()):
                if m.get("phase") == "train":
                    seen.setdefault(int(m["step"]), elapsed)

    wall, cpu = _run(cmd, out / f"{label}_seed{seed}.log", seconds=seconds, poll=poll)
    poll(wall)
    rows = []
    for m in complete_rows((run_dir / "metrics.jsonl").read_text()):
        if m.get("phase") == "train" and "return" in m:
            rows.append({"env_steps": m["env_steps_total"], "wall_s": seen[int(m["step"])], "return": m["return"]})
    return rows, wall, cpu


# ----------------------------------------------------------------------------- the benchmark
def bench_peers(cfg, out: str | Path, *, peer: str = "sb3", env_steps: int = 100_000, seconds: float = 200.0,
                seeds: int = 3, bins: int = 10, peers_dir: str | Path | None = None,
                also: dict[str, list[str]] | None = None) -> dict:
    """``also``: more tristream sides, {name: overrides of the config} (e.g. {"vla": ["policy.name=vla"]}: the
    default VLA beside the peer-sized network), run after tristream's side with every seed."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; valid: {sorted(PEERS)}")
    spec = PEERS[peer]
    check_comparable(cfg, spec)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_step = cfg.rollout.num_envs * cfg.rollout.steps_per_env
    steps = math.ceil(env_steps / per_step)
    budget = steps * per_step if spec.budget == "env_steps" else seconds  # whole rollouts of the same size
    root = Path(peers_dir or os.environ.get("TRISTREAM_PEERS_DIR", Path.home() / ".cache" / "tristream" / "peers"))
    python = peer_python(spec, root)
    peer_version = subprocess.run([str(python), "-c", f"from importlib.metadata import version; "
                                   f"print(version({spec.version_of!r}))"], capture_output=True, text=True).stdout.strip()
    preset = save_config(cfg, out / "tristream_config.yaml")
    extra = {f"tristream {name}": (save_config(with_overrides(cfg, o), out / f"tristream_{name}_config.yaml"), o)
             for name, o in (also or {}).items()}
    size = f"{budget} env steps per run ({steps} rollouts of {per_step})" if spec.budget == "env_steps" else \
        f"{budget:.0f} s per run"
    print(f"workload: {cfg.env.gym.id} {dict(cfg.env.kwargs) or ''}, {size}, {cfg.rollout.num_envs} envs x "
          f"{cfg.rollout.steps_per_env} steps a rollout, {seeds} seeds, interleaved; {peer} {peer_version} vs tristream "
          f"(policy {cfg.policy.name} {cfg.policy.hidden_dim}, runtime.mode={cfg.runtime.mode}); the same settings "
          f"({out / 'tristream_config.yaml'})"
          + "".join(f"; {side}: {' '.join(o)}" for side, (_, o) in extra.items()), flush=True)
    runs: dict[str, list[dict]] = {peer: [], "tristream": [], **{side: [] for side in extra}}
    limit = {"steps": steps} if spec.budget == "env_steps" else {"seconds": budget}
    for seed in range(seeds):
        peer_run = (lambda: _sb3(python, cfg, seed, budget, out)) if spec.budget == "env_steps" else \
            (lambda: _sf(python, cfg, seed, budget, out))
        sides = [(peer, peer_run), ("tristream", lambda: _tristream(preset, cfg, seed, out, **limit))]
        sides += [(side, lambda p=p, label=side.replace(" ", "_"): _tristream(p, cfg, seed, out, label=label,
                                                                               **limit))
                  for side, (p, _) in extra.items()]
        for side, run in sides:
            rows, wall, cpu = run()
            runs[side].append(_summary(rows, wall, cpu, budget, spec.budget, bins))
            r = runs[side][-1]
            print(f"  {side} seed {seed}: {r['wall_s']:.0f} s, {r['env_steps']:.0f} env steps "
                  f"({r['steady_steps_per_s']:.0f}/s steady), CPU busy {r['cpu_busy']:.0%}, final return "
                  f"{r['final']:.1f}", flush=True)
    keys = ("final", "wall_s", "steady_steps_per_s", "cpu_busy")
    result = {"benchmark": "peers", "peer": peer, "peer_version": peer_version, "env_id": cfg.env.gym.id,
              "env_kwargs": dict(cfg.env.kwargs), "budget": spec.budget, "budget_value": budget, "seeds": seeds,
              "bins": bins, "meta": run_meta(), "runs": runs,
              "summary": {side: {k: _spread([r[k] for r in rs]) for k in keys} for side, rs in runs.items()}}
    publish(result, out / "peers.json", out / "peers.png", plot_peers, format_table(result))
    return result


def _binned(rows: list[dict], axis: str, total: float, bins: int) -> list[float | None]:
    """Mean return of the episodes that ended in each of ``bins`` equal intervals of ``axis`` (None: none)."""
    edges = np.linspace(0, total, bins + 1)
    out: list[float | None] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        v = [r["return"] for r in rows if lo < r[axis] <= hi]
        out.append(float(np.mean(v)) if v else None)
    return out


def _summary(rows: list[dict], wall_s: float, cpu_s: float, total: float, budget: str, bins: int) -> dict:
    axis = "env_steps" if budget == "env_steps" else "wall_s"
    curve = _binned(rows, axis, total, bins)
    last = [c for c in curve if c is not None]
    steps = rows[-1]["env_steps"] if rows else 0.0
    # steady speed: env steps over the last 80% of the run's wall time, start-up left out
    t20 = 0.2 * (rows[-1]["wall_s"] if rows else 0.0)
    early = max((r["env_steps"] for r in rows if r["wall_s"] <= t20), default=0.0)
    span = (rows[-1]["wall_s"] - t20) if rows else 0.0
    return {"wall_s": wall_s, "cpu_s": cpu_s, "cpu_busy": cpu_s / max(wall_s, 1e-9) / (os.cpu_count() or 1),
            "env_steps": steps, "steady_steps_per_s": (steps - early) / span if span > 0 else 0.0,
            "curve": curve, "final": last[-1] if last else float("nan"),
            "episodes": [[r["env_steps"], round(r["wall_s"], 2), r["return"]] for r in rows]}


def _spread(v: list[float]) -> dict:
    return {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def format_table(result: dict) -> str:
    """The markdown table docs/benchmarks.md shows: median [min, max] over seeds of each side."""
    peer, bins, s = result["peer"], result["bins"], result["summary"]
    by_steps = result["budget"] == "env_steps"
    marks = [result["budget_value"] * (i + 1) / bins for i in range(bins)]
    pick = sorted({bins // 2 - 1, bins - 1})
    label = (lambda m: f"return at {m / 1000:.0f}k steps") if by_steps else (lambda m: f"return at {m:.0f} s")
    head = [label(marks[i]) for i in pick] + ["wall time (s)", "env steps/s (steady)", "CPU busy"]
    lines = ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]

    def cell(v, fmt):
        return f"{fmt(np.median(v))} [{fmt(min(v))}, {fmt(max(v))}]" if v else "-"

    for side in result["runs"]:
        rs = result["runs"][side]
        cells = [cell([r["curve"][i] for r in rs if r["curve"][i] is not None], lambda x: f"{x:.0f}") for i in pick]
        cells += [cell([r["wall_s"] for r in rs], lambda x: f"{x:.0f}"),
                  cell([r["steady_steps_per_s"] for r in rs], lambda x: f"{x:.0f}"),
                  cell([r["cpu_busy"] for r in rs], lambda x: f"{x:.0%}")]
        name = f"{peer} {result['peer_version']}" if side == peer else side
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    axis = "env steps" if by_steps else "wall time"
    seeds = f"{result['seeds']} seed{'s' if result['seeds'] != 1 else ''}"
    lines.append(f"\nmedian [min, max] over {seeds}; a return is the mean training-episode return of "
                 f"the episodes that ended in the last {100 // bins}% of {axis} before the mark; wall time of the "
                 f"whole run, start-up included.")
    for side in (x for x in result["runs"] if x != peer):
        lines.append(f"{side} vs {peer}: final return {_compare(s[side]['final'], s[peer]['final'])}, env steps/s "
                     f"{_compare(s[side]['steady_steps_per_s'], s[peer]['steady_steps_per_s'])}.")
    return "\n".join(lines)


def _compare(a: dict, b: dict) -> str:
    """tristream's median against the peer's: a ratio where both are positive, else the difference (a ratio
    of two negative returns reads backwards: -19 / -13 = 1.5x for the worse one)."""
    if a["median"] > 0 and b["median"] > 0:
        return f"{a['median'] / b['median']:.2f}x"
    return f"{a['median'] - b['median']:+.1f}"


def plot_peers(result: dict, path: Path) -> Path:
    """Return against env steps and against wall time, every seed of both sides in one figure."""
    from tristream.metrics.plots import count_axis, plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    palette = iter(["tab:orange", "tab:green", "tab:red", "tab:purple"])
    colours = {side: "tab:blue" if side == result["peer"] else next(palette) for side in result["runs"]}
    for side, rs in result["runs"].items():
        for i, r in enumerate(rs):
            ep = np.array(r["episodes"], dtype=float).reshape(-1, 3)
            if not len(ep):
                continue
            k = max(1, len(ep) // 50)  # a running mean, so seeds stay readable on top of each other
            smooth = np.convolve(ep[:, 2], np.ones(k) / k, mode="valid")
            label = side if i == 0 else None
            axes[0].plot(ep[k - 1:, 0], smooth, color=colours[side], alpha=0.8, label=label)
            axes[1].plot(ep[k - 1:, 1], smooth, color=colours[side], alpha=0.8, label=label)
    count_axis(axes[0].xaxis)
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("wall time since launch (s)")
    for ax in axes:
        ax.set_ylabel("training episode return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{result['env_id']}: {result['peer']} {result['peer_version']} vs tristream, {result['seeds']} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
