"""Fixed stage costs for the planner's tests: round numbers, every transfer free unless a test sets it."""
import pytest

from tristream.plan.costs import StageCosts


def fixed_costs(**kw) -> StageCosts:
    base = dict(env_step_s=0.001, env_reset_s=0.002, episode_steps=[40], forward_s={1: 0.002, 64: 0.02},
                forward_threads_s={1: 0.02}, serve_overhead_s=0.0, learner_prepare_s=1e-4,
                learner_step_s={1: 0.256, 2: 0.128},
                learner_step_fixed_s={}, learner_update_scale=1.0, learner_proximal_s=0.0, corun_slowdown={1: 1.0},
                segment_pickle_s=0.0, segment_unpickle_s=0.0, segment_bytes=0.0, message_s=0.0, publish_s=0.0,
                load_s=0.0, weight_bytes=0, env_mb=1.0, process_mb=100.0, inference_mb=300.0,
                learner_mb=400.0, global_batch=256)
    return StageCosts(**(base | kw))


@pytest.fixture
def costs():
    """``costs(**fields)``: fixed stage costs with some fields replaced."""
    return fixed_costs
