"""The rewards section reaches the Ray reward workers (``cluster.backend=ray``)."""

import pytest

from longrl.config import load_config
from longrl.errors import UserError
from longrl.types import Prompt

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

REWARDS = '''
def exact(data_source, solution_str, ground_truth, extra_info=None):
    return {"score": float(solution_str == ground_truth), "pid": __import__("os").getpid()}

def fails(prompts, completions, **kwargs):
    raise ValueError("bad reward")
'''


def _cfg(*sets):
    return load_config(None, ["threads=1", "cluster.backend=ray", "cluster.cpus_per_worker=0.4",
                              "cluster.reward_workers=3", "cluster.num_cpus=2", *sets])


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for both tests (starting one takes most of their time); each test
    gives it its own config, and its reward workers take the placement group's next bundles."""
    from longrl.distributed.ray_cluster import RayCluster

    c = RayCluster(_cfg())
    yield c
    c.close()


def test_reward_workers_score_with_the_configured_functions(cluster, tmp_path, monkeypatch, capsys):
    import os

    (tmp_path / "ray_reward_fns.py").write_text(REWARDS)
    monkeypatch.chdir(tmp_path)  # a relative path, as a user writes it, resolved in the driver's directory
    cluster.cfg = _cfg("rewards.custom.mine=ray_reward_fns.py:exact", "rewards.terms.mine.fmt.fn=ray_reward_fns.py:fails",
                       "rewards.terms.mine.fmt.weight=0.5", "cluster.reward_workers=2")
    pool = cluster.reward_pool()
    prompts = [Prompt(id=str(i), text="q", reference="4", task="mine") for i in range(4)]
    scores = pool(prompts, ["4", "5", "4", "x"])
    assert [s.value for s in scores] == [1.0, 0.0, 1.0, 0.0]
    pids = {s.parts["pid"] for s in scores}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers, each with its own function process
    assert all(s.parts["term_reasons"] == {"fmt": "reward_error"} for s in scores)
    assert capsys.readouterr().err.count("ValueError: bad reward") == 1  # shown once, in the driver
    pool.close()


def test_a_worker_that_cannot_build_its_scorer_stops_at_start_with_the_users_message(cluster):
    pytest.importorskip("openai")
    cluster.cfg = _cfg("rewards.math.policy=rule_then_judge", "rewards.math.judge.base_url=http://127.0.0.1:9/v1",
                       "rewards.math.judge.request_timeout=2", "cluster.reward_workers=1")
    with pytest.raises(UserError, match=r"judge endpoint http://127.0.0.1:9/v1 did not answer"):
        cluster.reward_pool()
