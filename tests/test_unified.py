"""The unified view (interface.kind: bp_lambda): lam = 1 trains exactly as backprop, lam = 0 exactly as
DNI, on a tiny chain; a lam in between mixes the two."""
from __future__ import annotations

import pytest
import torch
from conftest import chain

from corporation import Engine, from_dict
from corporation.errors import ScenarioError


def trained(overrides: list[str], ticks: int = 8) -> tuple[list[float], list[torch.Tensor]]:
    eng = Engine(from_dict(chain(), ["interface.context=null", *overrides]))
    losses = []
    for _ in range(ticks):
        eng.step()
        losses.append(eng.task.train_metrics()["train/loss"])
    return losses, [p.detach().clone() for n in ("l1", "l2", "l3") for p in eng.agents[n].body.parameters()]


def close(a, b) -> None:
    torch.testing.assert_close(torch.tensor(a[0]), torch.tensor(b[0]), rtol=1e-5, atol=1e-6)
    for x, y in zip(a[1], b[1]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_lam_one_is_backprop_and_lam_zero_is_dni() -> None:
    backprop, dni = trained(["interface.kind=backprop"]), trained(["interface.kind=dni"])
    close(trained(["interface.kind=bp_lambda", "interface.lam=1"]), backprop)
    close(trained(["interface.kind=bp_lambda", "interface.lam=0"]), dni)
    half = trained(["interface.kind=bp_lambda", "interface.lam=0.5"])
    for other in (backprop, dni):  # the identities above are not vacuous: the three runs differ
        assert not all(torch.equal(x, y) for x, y in zip(half[1], other[1]))


def test_bp_lambda_trains_m_on_the_true_gradient() -> None:
    eng = Engine(from_dict(chain(), ["interface.context=null", "interface.kind=bp_lambda", "interface.lam=0.5"]))
    out = eng.run(20)
    assert out["sg/l2-l3/r2"] == pytest.approx(out["sg/l2-l3/r2"])  # logged (finite)
    assert any(p.abs().sum() > 0 for p in eng.agents["l2"].outboxes[0].sg.parameters())


@pytest.mark.parametrize("override, key", [("interface.lam=2", "interface.lam"),
                                           ("interface.context=task.y", "interface.context")])
def test_bad_bp_lambda_settings_name_the_key(override, key) -> None:
    with pytest.raises(ScenarioError) as err:
        from_dict(chain(), ["interface.kind=bp_lambda", "interface.context=null", override])
    assert key in str(err.value) and "\n" not in str(err.value)
