"""bench/experiments/search_floor.py: the ideal searcher's options and the frontier over them."""
import importlib.util
import sys
from pathlib import Path

import pytest

from longrl.tasks import countdown

_DIR = Path(__file__).parents[1] / "bench" / "experiments"
sys.path.insert(0, str(_DIR))  # the script imports its neighbour responses.py, as when it runs
try:
    _spec = importlib.util.spec_from_file_location("search_floor", _DIR / "search_floor.py")
    search_floor = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(search_floor)
finally:
    sys.path.remove(str(_DIR))


class _CharTokenizer:
    """One token per character: enough to check the counting, with no model folder."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}


def test_frontier_is_the_lower_hull_of_each_problems_options():
    # Two problems, each: give up at once (0% right, 10 tokens) or search on (100%, 20 tokens).
    options = [[(0.0, 10.0), (1.0, 20.0)], [(0.0, 10.0), (1.0, 20.0)]]
    points = search_floor.frontier(options)
    assert points[0] == (0.0, 10.0) and points[-1] == (1.0, 20.0)
    assert search_floor.tokens_at(points, 0.5) == pytest.approx(15.0)
    assert search_floor.tokens_at(points, 1.0) == pytest.approx(20.0)
    # A cheap problem is searched before a dear one: 50% costs 10 + 20 over two problems.
    options = [[(0.0, 10.0), (1.0, 20.0)], [(0.0, 10.0), (1.0, 60.0)]]
    assert search_floor.tokens_at(search_floor.frontier(options), 0.5) == pytest.approx(15.0)


def test_ideal_searcher_gets_more_right_the_longer_it_searches():
    prompt = countdown.heldout_prompts()[0]
    opts = search_floor.problem_options(prompt, _CharTokenizer(), orders=16, seed=0)
    n = len(countdown.attempts(prompt.reference["numbers"], prompt.reference["target"]))
    assert len(opts) == n
    accs, tokens = [a for a, _ in opts], [t for _, t in opts]
    assert accs == sorted(accs) and accs[-1] == 1.0 and accs[0] < 1.0
    assert tokens == sorted(tokens)


def test_first_attempt_solves_reads_the_first_attempt_line():
    assert search_floor._first_attempt_solves("plan 29 from 3 7 8\n7*3=21 21+8=29 yes\nanswer 7*3=21 21+8=29")
    assert not search_floor._first_attempt_solves("plan 29 from 3 7 8\n8+7=15 15*3=45 over\n7*3=21 21+8=29 yes")
    assert not search_floor._first_attempt_solves("answer 7*3=21 21+8=29")
