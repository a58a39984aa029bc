from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from tristream.config.loader import (
    ConfigError,
    config_from_dict,
    describe,
    load_config,
    save_config,
    to_dict,
)


@dataclass
class AlgoCfg:
    lr: float = field(default=1e-3, metadata={"min": 0.0, "help": "learning rate"})
    clip_eps: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0, "help": "PPO clip"})
    epochs: int = 4
    kind: Literal["ppo", "grpo"] = "ppo"
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class EnvCfg:
    name: str = "tabletop"
    num_envs: int = field(default=8, metadata={"min": 1})
    cameras: tuple[str, ...] = ("agentview", "wrist")
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    max_steps: Optional[int] = 100
    camera_keys: dict[str, str] = field(default_factory=lambda: {"agentview": "agentview_rgb"})
    render: bool = False


@dataclass
class RuntimeCfg:
    batch_size: int = 64
    minibatch: int = 16

    def validate(self) -> None:
        if self.batch_size % self.minibatch:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of minibatch {self.minibatch}")


@dataclass
class LoggingCfg:
    every: int = 10


@dataclass
class TrainCfg:
    env: EnvCfg = field(default_factory=EnvCfg)
    algo: AlgoCfg = field(default_factory=lambda: AlgoCfg(lr=3e-4))
    runtime: RuntimeCfg = field(default_factory=RuntimeCfg)
    logging: Optional[LoggingCfg] = None
    seed: int = 0
    run_name: str = "run"


def write(d: Path, name: str, text: str) -> Path:
    p = d / f"{name}.yaml"
    p.write_text(text)
    return p


def err(fn, *a, **k) -> str:
    with pytest.raises(ConfigError) as ei:
        fn(*a, **k)
    assert isinstance(ei.value, ValueError)
    return str(ei.value)


def test_defaults_typed():
    cfg = load_config(TrainCfg)
    assert cfg.algo.lr == 3e-4  # parent default_factory wins over the class default
    assert cfg.env.cameras == ("agentview", "wrist") and isinstance(cfg.env.cameras, tuple)
    assert cfg.logging is None


def test_overrides_nested_lists_null_literal():
    cfg = load_config(
        TrainCfg,
        overrides=[
            "algo.lr=3e-4",
            "algo.epochs=2",
            "algo.kind=grpo",
            "env.cameras=[agentview]",
            "env.seeds=[3,4,5]",
            "env.max_steps=null",
            "env.render=true",
            "env.name=libero_spatial",
            "run_name=123",  # a str field keeps the raw text
            "env.camera_keys.wrist=eye_in_hand_rgb",
            "algo.betas=[0.5, 0.6]",
            "logging.every=5",
        ],
    )
    assert cfg.algo.lr == pytest.approx(3e-4) and isinstance(cfg.algo.lr, float)
    assert cfg.algo.epochs == 2 and cfg.algo.kind == "grpo"
    assert cfg.env.cameras == ("agentview",)
    assert cfg.env.seeds == [3, 4, 5]
    assert cfg.env.max_steps is None
    assert cfg.env.render is True
    assert cfg.env.name == "libero_spatial"
    assert cfg.run_name == "123"
    assert cfg.env.camera_keys == {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}
    assert cfg.algo.betas == (0.5, 0.6)
    assert cfg.logging == LoggingCfg(every=5)
    assert isinstance(cfg.algo.clip_eps, float)


def test_int_accepted_for_float():
    cfg = load_config(TrainCfg, overrides=["algo.lr=1"])
    assert cfg.algo.lr == 1.0 and isinstance(cfg.algo.lr, float)


def test_unknown_key_override_suggests():
    msg = err(load_config, TrainCfg, overrides=["algo.lrr=0.1"])
    assert "unknown config key 'algo.lrr'" in msg
    assert "did you mean 'algo.lr'?" in msg
    assert "valid keys under 'algo': betas, clip_eps, epochs, kind, lr" in msg
    # a leaf name at the wrong level points at where it lives
    msg = err(load_config, TrainCfg, overrides=["lr=0.1"])
    assert "unknown config key 'lr'" in msg and "did you mean 'algo.lr'?" in msg


def test_unknown_key_in_yaml(tmp_path):
    write(tmp_path, "p", "env:\n  num_env: 4\n")
    msg = err(load_config, TrainCfg, "p", presets_dir=tmp_path)
    assert "unknown config key 'env.num_env'" in msg and "did you mean 'env.num_envs'?" in msg
    assert "p.yaml" in msg


def test_wrong_type_messages(tmp_path):
    msg = err(load_config, TrainCfg, overrides=["algo.lr=abc"])
    assert msg == "algo.lr: expected float, got 'abc' (str)"
    msg = err(load_config, TrainCfg, overrides=["algo.epochs=true"])
    assert "algo.epochs: expected int, got True (bool)" in msg
    msg = err(load_config, TrainCfg, overrides=["algo.epochs=2.5"])
    assert "algo.epochs: expected int, got 2.5 (float)" in msg
    write(tmp_path, "s", "algo:\n  epochs: '3'\n")
    msg = err(load_config, TrainCfg, "s", presets_dir=tmp_path)
    assert "algo.epochs: expected int, got '3' (str)" in msg
    msg = err(load_config, TrainCfg, overrides=["env.seeds=[1, x]"])
    assert "env.seeds[1]: expected int, got 'x' (str)" in msg
    msg = err(load_config, TrainCfg, overrides=["algo.betas=[1, 2, 3]"])
    assert "algo.betas" in msg and "2 items" in msg
    msg = err(load_config, TrainCfg, overrides=["env.max_steps=abc"])
    assert "env.max_steps: expected int | None, got 'abc' (str)" in msg
    msg = err(load_config, TrainCfg, overrides=["env=3"])
    assert "env" in msg and "mapping" in msg


def test_literal_choices():
    msg = err(load_config, TrainCfg, overrides=["algo.kind=sac"])
    assert "algo.kind" in msg and "'sac'" in msg and "'ppo', 'grpo'" in msg


def test_min_max_metadata():
    msg = err(load_config, TrainCfg, overrides=["algo.clip_eps=1.5"])
    assert "algo.clip_eps" in msg and "1.5" in msg and "[0.0, 1.0]" in msg
    msg = err(load_config, TrainCfg, overrides=["env.num_envs=0"])
    assert "env.num_envs" in msg and "0" in msg and "[1, inf]" in msg


def test_validate_hook_prefixed():
    msg = err(load_config, TrainCfg, overrides=["runtime.batch_size=10", "runtime.minibatch=4"])
    assert msg.startswith("runtime: batch_size 10 must be a multiple of minibatch 4")


def test_malformed_override():
    msg = err(load_config, TrainCfg, overrides=["algo.lr"])
    assert "'algo.lr'" in msg and "key.sub=value" in msg
    msg = err(load_config, TrainCfg, overrides=["seed.x=1"])
    assert "seed" in msg and "key.sub=value" in msg


def test_missing_preset_lists_available(tmp_path):
    write(tmp_path, "alpha", "seed: 1\n")
    write(tmp_path, "beta", "seed: 2\n")
    msg = err(load_config, TrainCfg, "gamma", presets_dir=tmp_path)
    assert str(tmp_path / "gamma.yaml") in msg
    assert "alpha, beta" in msg


def test_preset_inheritance_and_override_order(tmp_path):
    write(tmp_path, "base", "seed: 1\nalgo:\n  lr: 1e-4\n  epochs: 8\nenv:\n  num_envs: 4\n")
    write(tmp_path, "child", "base: base\nalgo:\n  epochs: 2\nlogging:\n  every: 3\n")
    cfg = load_config(TrainCfg, "child", presets_dir=tmp_path, overrides=["seed=7"])
    assert cfg.seed == 7
    assert cfg.algo.lr == pytest.approx(1e-4) and cfg.algo.epochs == 2
    assert cfg.algo.clip_eps == 0.2  # untouched keys keep defaults
    assert cfg.env.num_envs == 4
    assert cfg.logging.every == 3
    # a preset given as a file path works too, and its base is found next to it
    cfg2 = load_config(TrainCfg, tmp_path / "child.yaml")
    assert cfg2.algo.epochs == 2 and cfg2.seed == 1


def test_preset_cycle(tmp_path):
    write(tmp_path, "a", "base: b\n")
    write(tmp_path, "b", "base: a\n")
    msg = err(load_config, TrainCfg, "a", presets_dir=tmp_path)
    assert "cycle" in msg


def test_round_trip(tmp_path):
    cfg = load_config(TrainCfg, overrides=["logging.every=2", "env.cameras=[wrist]", "algo.kind=grpo"])
    d = to_dict(cfg)
    assert d["env"]["cameras"] == ["wrist"] and d["algo"]["betas"] == [0.9, 0.999]
    assert yaml.safe_load(yaml.safe_dump(d)) == d
    assert config_from_dict(TrainCfg, d) == cfg
    p = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert config_from_dict(TrainCfg, yaml.safe_load(p.read_text())) == cfg


def test_config_from_dict_validates():
    msg = err(config_from_dict, TrainCfg, {"algo": {"lr": "x"}})
    assert "algo.lr: expected float" in msg
    msg = err(config_from_dict, TrainCfg, {"algo": {"lrr": 1}})
    assert "unknown config key 'algo.lrr'" in msg
    # missing keys fall back to defaults
    assert config_from_dict(TrainCfg, {"seed": 3}).seed == 3


def test_describe():
    rows = {k: (t, d, h) for k, t, d, h in describe(TrainCfg)}
    assert rows["algo.lr"] == ("float", 3e-4, "learning rate")
    assert rows["algo.kind"][0] == "one of 'ppo', 'grpo'"
    assert rows["env.max_steps"][:2] == ("int | None", 100)
    assert rows["env.cameras"][0] == "tuple[str, ...]"
    assert rows["env.camera_keys"][0] == "dict[str, str]"
    assert rows["logging"][1] is None and "logging.every" in rows
    assert "env" not in rows  # plain sections are not leaves


def test_real_schema_validators():
    """The project's own config tree: cross-field checks name the key and the fix."""
    from tristream.config import Config
    msg = err(load_config, Config, overrides=["policy.kwargs.head=discrete"])
    assert "policy.kwargs.head" in msg and "policy.head=" in msg
    msg = err(load_config, Config, overrides=["algo.dual_clip=0.5"])
    assert msg.startswith("algo:") and "dual_clip" in msg
    msg = err(load_config, Config, overrides=["algo.advantage=grpo", "algo.critic_warmup=4"])
    assert msg.startswith("algo:") and "critic_warmup=4 needs advantage=gae" in msg
    assert load_config(Config, overrides=["policy.kwargs.lang_encoder=attention"]).policy.kwargs == {
        "lang_encoder": "attention"}
