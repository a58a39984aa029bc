"""``runtime.env_workers=auto``: env workers fill the cores the inference worker and the learner leave."""
import pytest
import yaml

from tristream.config.loader import load_config, save_config
from tristream.config.schema import Config
from tristream.cores import auto_env_workers


@pytest.mark.parametrize("cores,expected", [(1, 2), (2, 2), (4, 2), (6, 4), (8, 4), (16, 8), (64, 32), (256, 32)])
def test_env_workers_fill_the_cores_left_in_a_count_that_splits_the_envs(cores, expected):
    # 64 envs in groups of 2 per worker: the count must divide 32
    assert auto_env_workers(64, 2, cores) == expected


def test_env_workers_fall_back_to_one_when_no_count_splits_the_envs():
    assert auto_env_workers(7, 1, 16) == 7 and auto_env_workers(7, 1, 4) == 1
    assert auto_env_workers(30, 4, 16) == 1  # no count does: the config's check names the values


def test_auto_is_resolved_on_load_and_saved_as_a_number(tmp_path, monkeypatch):
    monkeypatch.setattr("tristream.config.schema.auto_env_workers",
                        lambda n, g: auto_env_workers(n, g, cores=16))
    cfg = load_config(Config, "default", ["rollout.num_envs=48", "runtime.groups_per_worker=2"])
    assert cfg.runtime.env_workers == 12  # 14 cores left; 12 is the largest count dividing 48 / 2
    saved = yaml.safe_load(save_config(cfg, tmp_path / "config.yaml").read_text())
    assert saved["runtime"]["env_workers"] == 12
    assert load_config(Config, "default", ["runtime.env_workers=3", "rollout.num_envs=30"]).runtime.env_workers == 3
    with pytest.raises(ValueError, match=r"runtime.env_workers: expected int \| one of 'auto', got 'many'"):
        load_config(Config, "default", ["runtime.env_workers=many"])
