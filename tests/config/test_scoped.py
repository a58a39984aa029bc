"""The preset's task lists belong to its simulator (tristream/config/scoped.py)."""
from tristream.config import Config, load_config
from tristream.config.scoped import load_cli_config, simulator


def test_simulator_is_the_name_before_the_slash():
    assert simulator("tabletop/push") == "tabletop" == simulator("tabletop")
    assert simulator("metaworld/button-press-v3") == "metaworld"


def test_default_preset_keeps_its_tabletop_task_lists():
    cfg, note = load_cli_config("default", ["algo.lr=3e-4"])
    assert note is None and cfg.env.tasks == ["push"] and cfg.collect.tasks == ["reach", "push", "pick", "place"]
    cfg, note = load_cli_config("default", ["env.name=tabletop/push"])  # same simulator: kept
    assert note is None and cfg.env.tasks == ["push"]


def test_another_simulator_clears_the_presets_task_lists_and_says_so():
    cfg, note = load_cli_config("default", ["env.name=toy"])
    assert cfg.env.tasks == [] and cfg.collect.tasks == []
    assert "env.tasks=['push']" in note and "collect.tasks=" in note and "env.name=toy" in note
    # everything else of the preset stays
    assert cfg.algo.advantage == load_config(Config, "default").algo.advantage == "gae"


def test_task_lists_given_on_the_command_line_are_kept():
    cfg, note = load_cli_config("default", ["env.name=metaworld/reach-v3", "env.tasks=[reach-v3]"])
    assert cfg.env.tasks == ["reach-v3"] and cfg.collect.tasks == []
    assert "collect.tasks=[" in note and "env.tasks=[" not in note


def test_a_preset_without_task_lists_needs_no_note():
    cfg, note = load_cli_config("tiny", ["env.name=toy"])
    assert note is None and cfg.env.tasks == []


def test_cli_prints_the_note_on_stderr(capsys):
    import yaml

    from tristream.cli import main
    assert main(["config", "show", "env.name=toy"]) == 0
    out, err = capsys.readouterr()
    assert "were cleared" in err
    shown = yaml.safe_load(out)  # stdout stays plain YAML
    assert shown["env"]["tasks"] == [] and shown["collect"]["tasks"] == []


def test_every_shipped_preset_loads_and_validates():
    from tristream.config.loader import DEFAULT_PRESETS_DIR
    names = sorted(p.stem for p in DEFAULT_PRESETS_DIR.glob("*.yaml"))
    assert {"default", "mix4", "tiny", "lm_tiny"} <= set(names)
    for name in names:
        assert isinstance(load_config(Config, name), Config), name
    # the four-family preset is the earlier default: demos, RL and eval on the whole mix with GRPO groups
    mix4 = load_config(Config, "mix4")
    assert mix4.env.tasks == [] and mix4.collect.tasks == [] and mix4.algo.advantage == "grpo"
    assert mix4.rollout.group_size == 8
