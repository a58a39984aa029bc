"""Sample Factory's APPO on a Gymnasium pixel env, run by `tristream bench peers` with the peer's own Python.

Standalone on purpose: it runs in the peer's virtual environment and imports nothing from tristream.
    python sf_appo.py SETTINGS.json LOG_DIR
SETTINGS: {"env": "package.module:Class", "env_kwargs", "max_episode_steps", "train_dir", "sf_args": [...]}.
An HxWxC image observation is handed to Sample Factory as CxHxW.
Every env instance appends one JSON line per finished episode to LOG_DIR/<pid>_<n>.jsonl:
{"t": unix time, "return", "length", "steps": env steps this instance has taken}.
"""
import importlib
import itertools
import json
import os
import sys
import time

import gymnasium as gym
import numpy as np
from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
from sample_factory.envs.env_utils import register_env
from sample_factory.train import run_rl

_instances = itertools.count()


class EpisodeLog(gym.Wrapper):
    def __init__(self, env, log_dir):
        super().__init__(env)
        self.file = open(os.path.join(log_dir, f"{os.getpid()}_{next(_instances)}.jsonl"), "a")
        self.ret, self.len, self.steps = 0.0, 0, 0

    def reset(self, **kwargs):
        self.ret, self.len = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.ret, self.len, self.steps = self.ret + float(r), self.len + 1, self.steps + 1
        if term or trunc:
            self.file.write(json.dumps({"t": time.time(), "return": self.ret, "length": self.len,
                                        "steps": self.steps}) + "\n")
            self.file.flush()
        return obs, r, term, trunc, info


class ChannelsFirst(gym.ObservationWrapper):
    """HxWxC uint8 images -> CxHxW, the layout Sample Factory's conv encoder reads."""

    def __init__(self, env):
        super().__init__(env)
        h, w, c = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (c, h, w), np.uint8)

    def observation(self, obs):
        return np.ascontiguousarray(obs.transpose(2, 0, 1))


def make_env(full_env_name, cfg=None, env_config=None, render_mode=None):
    """Module level, so Sample Factory's spawned workers can unpickle it; the settings come by env var."""
    s = json.load(open(os.environ["TRISTREAM_PEER_SETTINGS"]))
    module, cls = s["env"].split(":")
    env = getattr(importlib.import_module(module), cls)(**s["env_kwargs"])
    env = gym.wrappers.TimeLimit(env, max_episode_steps=s["max_episode_steps"])
    env = EpisodeLog(env, os.environ["TRISTREAM_PEER_LOGS"])
    shape = env.observation_space.shape
    return ChannelsFirst(env) if len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3) else env


register_env("tristream_peer_env", make_env)  # at import: spawned workers import this module too


def main(settings_path, log_dir):
    os.environ["TRISTREAM_PEER_SETTINGS"], os.environ["TRISTREAM_PEER_LOGS"] = settings_path, log_dir
    s = json.load(open(settings_path))
    argv = ["--env=tristream_peer_env", f"--train_dir={s['train_dir']}", *s["sf_args"]]
    parser, _ = parse_sf_args(argv=argv)
    cfg = parse_full_cfg(parser, argv)
    t0 = time.perf_counter()
    status = run_rl(cfg)
    print(f"sample-factory: status {status} after {time.perf_counter() - t0:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
