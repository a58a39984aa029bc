"""Stable-Baselines3 PPO on a Gymnasium env, run by `tristream bench peers` with the peer's own Python.

Standalone on purpose: it runs in the peer's virtual environment and imports nothing from tristream.
    python sb3_ppo.py SETTINGS.json OUT.jsonl
SETTINGS: {"env_id", "seed", "total_steps", "n_envs", "normalize_obs", "normalize_reward", "ppo": {PPO kwargs},
"policy_kwargs": {"net_arch", "activation", "log_std_init", "ortho_init"}}. OUT gets one JSON line per finished
episode: {"env_steps", "wall_s", "return", "length"}.
"""
import json
import sys
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU, "gelu": torch.nn.GELU}


class EpisodeLog(BaseCallback):
    def __init__(self, path, t0):
        super().__init__()
        self.file, self.t0 = open(path, "w"), t0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:  # the Monitor wrapper's raw (unnormalised) return
                row = {"env_steps": self.num_timesteps, "wall_s": time.perf_counter() - self.t0,
                       "return": float(info["episode"]["r"]), "length": int(info["episode"]["l"])}
                self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        return True


def main(settings_path, out_path):
    s = json.load(open(settings_path))
    torch.set_num_threads(s.get("torch_threads", 1))
    t0 = time.perf_counter()
    env = make_vec_env(s["env_id"], n_envs=s["n_envs"], seed=s["seed"])
    if s["normalize_obs"] or s["normalize_reward"]:
        env = VecNormalize(env, norm_obs=s["normalize_obs"], norm_reward=s["normalize_reward"],
                           gamma=s["ppo"]["gamma"])
    pk = dict(s["policy_kwargs"])
    pk["activation_fn"] = ACTIVATIONS[pk.pop("activation")]
    ppo = dict(s["ppo"])
    if s.get("linear_lr"):  # tristream's algo.lr_schedule=linear: lr x the fraction of training left
        lr = ppo["learning_rate"]
        ppo["learning_rate"] = lambda progress_remaining: progress_remaining * lr
    model = PPO("MlpPolicy", env, seed=s["seed"], device="cpu", policy_kwargs=pk, verbose=0, **ppo)
    model.learn(total_timesteps=s["total_steps"], callback=EpisodeLog(out_path, t0))
    print(f"sb3: {s['total_steps']} env steps in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
