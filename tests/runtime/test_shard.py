from tristream.runtime.shard import ShardPlan, episode_seed


def test_plan_covers_every_env_once():
    plan = ShardPlan(num_envs=12, env_workers=2, groups_per_worker=3)
    assert plan.num_groups == 6 and plan.envs_per_group == 2
    seen = []
    for w in range(2):
        groups = plan.worker_groups(w)
        assert sorted(e for envs in groups.values() for e in envs) == plan.worker_envs(w)
        seen += plan.worker_envs(w)
    assert sorted(seen) == list(range(12))
    assert "2 env workers x 3 groups x 2 envs" in plan.describe()


def test_episode_seeds_are_shared_within_a_group_and_below_eval_seeds():
    a = episode_seed(0, 3, env_id=4, episode=0, group_size=2)
    assert a == episode_seed(0, 3, env_id=5, episode=0, group_size=2)
    assert a != episode_seed(0, 3, env_id=6, episode=0, group_size=2)
    assert a != episode_seed(0, 4, env_id=4, episode=0, group_size=2)
    assert all(episode_seed(s, g, e, k) < 10_000_000 for s in range(3) for g in range(50) for e in range(64)
               for k in range(3))
