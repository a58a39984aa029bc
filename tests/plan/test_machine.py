"""Machine descriptions: KEY=VALUE pairs or YAML, every malformed field named."""
import pytest

from tristream.plan.machine import Machine, machine_from_dict, parse_machine


def test_pairs_and_yaml_describe_the_same_machine(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("cores: 16\ngpus: 1\ngpu_speedup: 30\n")
    assert parse_machine("cores=16,gpus=1,gpu_speedup=30") == parse_machine(str(f)) == \
        Machine(cores=16, gpus=1, gpu_speedup=30.0)


def test_default_is_this_machine():
    import os
    assert parse_machine(None).cores == os.cpu_count()


@pytest.mark.parametrize("spec, field", [("cores=0", "cores"), ("cores=x", "cores"), ("gpus=-1", "gpus"),
                                         ("gpu_speedup=0", "gpu_speedup"), ("link_gbps=fast", "link_gbps"),
                                         ("cpus=4", "cpus"), ("cores", "cores")])
def test_a_malformed_field_is_named(spec, field):
    with pytest.raises(ValueError, match=field):
        parse_machine(spec)


def test_yaml_errors_name_the_field_and_the_file(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("nodes: 1.5\n")
    with pytest.raises(ValueError, match=r"machine file .*m\.yaml: machine: nodes=1.5"):
        parse_machine(str(f))
    with pytest.raises(ValueError, match="valid: cores"):
        machine_from_dict({"ram": 4})
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        parse_machine(str(tmp_path / "nope.yaml"))
