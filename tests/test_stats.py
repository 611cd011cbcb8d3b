"""The regression statistics logged for M, I and the Aux head: loss, cosine and r2 (explained variance)."""
import pytest
import torch
import torch.nn.functional as F

from corporation.interfaces import Stats


def _add(stats: Stats, pred: torch.Tensor, target: torch.Tensor) -> None:
    loss = F.mse_loss(pred, target, reduction="sum") / pred.shape[0]
    stats.add(loss, pred, target, 0)


def test_r2_is_one_for_a_perfect_prediction_and_zero_for_predicting_zero():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(16, 8, generator=g)
    stats = Stats(torch.device("cpu"))
    _add(stats, target.clone(), target)
    assert abs(stats.read("m")["m/r2"] - 1.0) < 1e-6
    _add(stats, torch.zeros_like(target), target)
    out = stats.read("m")
    assert abs(out["m/r2"]) < 1e-6 and abs(out["m/loss"] - float((target ** 2).sum()) / 16) < 1e-4


def test_r2_is_negative_for_noise_and_pools_over_updates():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(64, 8, generator=g)
    noise = torch.randn(64, 8, generator=g)
    stats = Stats(torch.device("cpu"))
    _add(stats, noise, target)
    assert stats.read("m")["m/r2"] < -0.5  # independent noise of the same size: about -1
    half = 0.5 * target  # explains 3/4 of the energy on each of two updates of different sizes
    _add(stats, half, target)
    _add(stats, 10 * half, 10 * target)
    assert abs(stats.read("m")["m/r2"] - 0.75) < 1e-5


def test_no_r2_when_every_target_is_zero_and_nothing_after_a_read():
    stats = Stats(torch.device("cpu"))
    _add(stats, torch.ones(4, 3), torch.zeros(4, 3))
    out = stats.read("m")
    assert "m/r2" not in out and out["m/loss"] == 3.0
    assert stats.read("m") == {}


def test_cosine_matches_torch_and_the_guard_tells_overflow_from_nan():
    from corporation.guard import first_nonfinite

    g = torch.Generator().manual_seed(3)
    pred, target = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    s = Stats(torch.device("cpu"))
    s.add(((pred - target) ** 2).sum() / 16, pred, target, 0)
    want = torch.nn.functional.cosine_similarity(pred.flatten(), target.flatten(), dim=0)
    assert s.read("m")["m/cosine"] == pytest.approx(float(want), rel=1e-5)
    big = torch.full((1000,), 3.0e38)  # finite, but its sum overflows: not a divergence
    assert first_nonfinite([("big", big), ("ok", torch.ones(3))]) is None
    bad = torch.ones(5)
    bad[2] = float("nan")
    assert first_nonfinite([("big", big), ("bad", bad)]) == "bad"
    assert first_nonfinite([("inf", torch.tensor([1.0, float("-inf")]))]) == "inf"


def test_a_divergence_survives_pickling() -> None:
    """Raised in a worker process (a process pool, a distributed worker), it reaches the parent whole."""
    import pickle

    from corporation.guard import Diverged

    err = pickle.loads(pickle.dumps(Diverged(12, "non-finite loss of agent 'A'")))
    assert (err.tick, err.what, str(err)) == (12, "non-finite loss of agent 'A'",
                                              "diverged at tick 12: non-finite loss of agent 'A'")
