"""``tristream bench peers``: tristream's PPO against another library's, run side by side on this machine.

The peer runs in a virtual environment of its own (created and installed on first use, never imported here)
through a standalone script in ``peer_scripts/``. Both sides get the same hyper-parameters, mapped from the
one tristream config (a preset plus overrides), the same env and the same env-step budget; seeds are
interleaved (peer seed 0, tristream seed 0, peer seed 1, ...) so a drift in the machine's speed hits both.

Peers: ``sb3`` (Stable-Baselines3 PPO, MlpPolicy) on any Gymnasium state env, against ``policy.name=mlp``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tristream.bench.meta import run_meta
from tristream.config.loader import save_config

SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"


class PeerInstallError(RuntimeError):
    """A peer's virtual environment could not be made; the message says what pip said and how to retry."""


@dataclass(frozen=True)
class Peer:
    name: str
    packages: tuple[str, ...]  # pip requirements of the peer's own venv
    script: str
    version_of: str  # the package whose version the result records


PEERS = {
    # torch pinned to the CPU build tristream uses (an unpinned one pulls a multi-GB CUDA build); one MuJoCo
    "sb3": Peer("sb3", ("torch==2.13.0", "stable-baselines3==2.9.2", "gymnasium[mujoco]==1.4.0", "mujoco==3.3.0"),
                "sb3_ppo.py", "stable-baselines3"),
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


def sb3_settings(cfg, seed: int, total_steps: int) -> dict:
    """The tristream config's PPO as Stable-Baselines3's PPO arguments (the same numbers, SB3's names)."""
    a, p, r = cfg.algo, cfg.policy, cfg.rollout
    kw = {**p.factory_kwargs()}
    layers, hidden = kw.get("layers", 2), p.hidden_dim
    ppo = {"learning_rate": a.lr, "n_steps": r.steps_per_env, "batch_size": a.global_batch,
           "n_epochs": a.update_epochs, "gamma": a.gamma, "gae_lambda": a.gae_lambda, "clip_range": a.clip_eps,
           "ent_coef": a.ent_coef, "vf_coef": a.vf_coef, "max_grad_norm": a.max_grad_norm or 1e9,
           "normalize_advantage": a.norm_adv, "target_kl": a.target_kl}
    return {"env_id": cfg.env.gym.id, "seed": seed, "total_steps": total_steps, "n_envs": r.num_envs,
            "normalize_obs": bool(kw.get("normalize_state", True)), "normalize_reward": a.norm_reward,
            "linear_lr": a.lr_schedule == "linear", "torch_threads": 1, "ppo": ppo,
            "policy_kwargs": {"net_arch": {"pi": [hidden] * layers, "vf": [hidden] * layers},
                              "activation": kw.get("activation", "tanh"), "log_std_init": p.init_log_std,
                              "ortho_init": bool(kw.get("ortho_init", True))}}


def check_comparable(cfg) -> None:
    """What the side-by-side needs of the tristream config; each problem named with its fix."""
    problems = []
    if cfg.env.name != "gym" or not cfg.env.gym.id:
        problems.append(f"env.name=gym env.gym.id=<a Gymnasium id> (got env.name={cfg.env.name!r})")
    if cfg.policy.name != "mlp":
        problems.append(f"policy.name=mlp, the peer's network (got {cfg.policy.name!r})")
    if cfg.policy.chunk_len != 1:
        problems.append(f"policy.chunk_len=1: the peer acts every env step (got {cfg.policy.chunk_len})")
    if cfg.rollout.steps_per_env < 1:
        problems.append("rollout.steps_per_env=N (the peer's n_steps: fixed-horizon rollouts; got 0, episodic)")
    if cfg.algo.loss != "ppo" or cfg.algo.advantage != "gae":
        problems.append(f"algo.loss=ppo algo.advantage=gae (got {cfg.algo.loss}, {cfg.algo.advantage})")
    if problems:
        raise ValueError("bench peers compares like with like; set " + "; ".join(problems)
                         + " (the preset ppo_mujoco has all of these)")


def _binned(rows: list[dict], total: int, bins: int) -> list[float | None]:
    """Mean return of the episodes that ended in each of ``bins`` equal env-step intervals (None: none ended)."""
    edges = np.linspace(0, total, bins + 1)
    out: list[float | None] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        v = [r["return"] for r in rows if lo < r["env_steps"] <= hi]
        out.append(float(np.mean(v)) if v else None)
    return out


def _tristream_episodes(run_dir: Path) -> list[dict]:
    """Per global step: (env steps so far, wall s, mean return of its finished episodes) from metrics.jsonl."""
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        if m.get("phase") == "train" and "return" in m:
            rows.append({"env_steps": m["env_steps_total"], "wall_s": m["wall_s_total"], "return": m["return"]})
    return rows


def bench_peers(cfg, out: str | Path, *, peer: str = "sb3", env_steps: int = 100_000, seeds: int = 3,
                bins: int = 10, peers_dir: str | Path | None = None) -> dict:
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; valid: {sorted(PEERS)}")
    check_comparable(cfg)
    spec = PEERS[peer]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_step = cfg.rollout.num_envs * cfg.rollout.steps_per_env
    steps = math.ceil(env_steps / per_step)
    total = steps * per_step  # both sides run whole rollouts of the same size
    root = Path(peers_dir or os.environ.get("TRISTREAM_PEERS_DIR", Path.home() / ".cache" / "tristream" / "peers"))
    python = peer_python(spec, root)
    peer_version = subprocess.run([str(python), "-c", f"from importlib.metadata import version; "
                                   f"print(version({spec.version_of!r}))"], capture_output=True, text=True).stdout.strip()
    preset = save_config(cfg, out / "tristream_config.yaml")
    print(f"workload: {cfg.env.gym.id}, {total} env steps per run ({steps} rollouts of {cfg.rollout.num_envs} envs x "
          f"{cfg.rollout.steps_per_env} steps), {seeds} seeds, interleaved; {peer} {peer_version} vs tristream "
          f"(policy mlp {cfg.policy.hidden_dim}, runtime.mode={cfg.runtime.mode}); same PPO settings "
          f"({out / 'tristream_config.yaml'})", flush=True)
    runs: dict[str, list[dict]] = {peer: [], "tristream": []}
    for seed in range(seeds):
        settings = sb3_settings(cfg, seed, total)
        (out / f"{peer}_seed{seed}.json").write_text(json.dumps(settings, indent=2))
        log = out / f"{peer}_seed{seed}.jsonl"
        t0 = time.perf_counter()
        r = subprocess.run([str(python), str(SCRIPTS / spec.script), str(out / f"{peer}_seed{seed}.json"), str(log)],
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"peer {peer} seed {seed} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        rows = [json.loads(x) for x in log.read_text().splitlines()]
        runs[peer].append(_summary(rows, time.perf_counter() - t0, total, bins))
        print(f"  {peer} seed {seed}: {runs[peer][-1]['wall_s']:.0f} s, final return {runs[peer][-1]['final']:.1f}",
              flush=True)
        run_dir = out / f"tristream_seed{seed}"
        t0 = time.perf_counter()
        cmd = [sys.executable, "-c", "from tristream.cli import main; raise SystemExit(main())", "train",
               "--no-progress", "--preset", str(preset), f"run.seed={seed}", f"run.dir={out}",
               f"run.name=tristream_seed{seed}", f"train.steps={steps}", "train.init=", "eval.episodes=1",
               "eval.videos=0"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"tristream seed {seed} failed (exit {r.returncode}):\n{r.stderr[-2000:]}")
        runs["tristream"].append(_summary(_tristream_episodes(run_dir), time.perf_counter() - t0, total, bins))
        print(f"  tristream seed {seed}: {runs['tristream'][-1]['wall_s']:.0f} s, final return "
              f"{runs['tristream'][-1]['final']:.1f}", flush=True)
    result = {"benchmark": "peers", "peer": peer, "peer_version": peer_version, "env_id": cfg.env.gym.id,
              "env_steps": total, "seeds": seeds, "bins": bins, "meta": run_meta(), "runs": runs,
              "summary": {side: _spread([r["final"] for r in rs]) | {"wall_s": _spread([r["wall_s"] for r in rs])}
                          for side, rs in runs.items()}}
    path = out / "peers.json"
    path.write_text(json.dumps(result, indent=2))
    png = plot_peers(result, out / "peers.png")
    s = result["summary"]
    print(f"final return (mean over the last {100 // bins}% of env steps), median [min, max] over {seeds} seeds:")
    for side in (peer, "tristream"):
        print(f"  {side:10s} {s[side]['median']:9.1f} [{s[side]['min']:.1f}, {s[side]['max']:.1f}]   wall "
              f"{s[side]['wall_s']['median']:.0f} s")
    print(f"ratio tristream / {peer}: return {s['tristream']['median'] / s[peer]['median']:.2f}x, wall time "
          f"{s['tristream']['wall_s']['median'] / s[peer]['wall_s']['median']:.2f}x")
    print(f"wrote {path} and {png}")
    return result


def _summary(rows: list[dict], wall_s: float, total: int, bins: int) -> dict:
    curve = _binned(rows, total, bins)
    last = [c for c in curve if c is not None]
    return {"wall_s": wall_s, "curve": curve, "final": last[-1] if last else float("nan"),
            "episodes": [[r["env_steps"], round(r["wall_s"], 2), r["return"]] for r in rows]}


def _spread(v: list[float]) -> dict:
    return {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}


def plot_peers(result: dict, path: Path) -> Path:
    """Return against env steps and against wall time, every seed of both sides in one figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {result["peer"]: "tab:blue", "tristream": "tab:orange"}
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
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:.0f}k"))
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("wall time (s)")
    for ax in axes:
        ax.set_ylabel("training episode return")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"PPO on {result['env_id']}: {result['peer']} {result['peer_version']} vs tristream, "
                 f"{result['seeds']} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
