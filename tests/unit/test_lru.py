"""The least-recently-used map behind the compile cache and fusion's memory of evaluations."""

from qubus.lru import Lru


def test_the_least_recently_used_entry_goes_first():
    lru = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # now b is the least recently used
    lru.put("c", 3)
    assert lru.get("b") is None
    assert (lru.get("a"), lru.get("c")) == (1, 3)


def test_pop_takes_an_entry_out_once():
    lru = Lru(4)
    lru.put(("t.1", "eval.noise"), ("event", 7))
    assert lru.pop(("t.1", "eval.noise")) == ("event", 7)
    assert lru.pop(("t.1", "eval.noise")) is None
    assert lru.get(("t.1", "eval.noise")) is None
