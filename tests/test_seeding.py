"""Model seeding: every body (built-in or a user's own kind) is seeded from its agent's generator.

The rule (corporation.registry.MODELS): a factory runs under a forked global RNG seeded from the agent's
generator seed; a factory with a ``generator`` keyword draws from the generator itself; then every
``reset_parameters(generator)`` hook runs, outermost first; the global RNG is never touched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from conftest import chain
from torch import nn

import corporation
from corporation.models import init_parameters, mlp
from corporation.registry import MODELS
from corporation.seeding import generator

CONV, CONST, ORTHO, HOOKED = "test_seeding_conv", "test_seeding_const", "test_seeding_ortho", "test_seeding_hooked"


@dataclass
class ConvParams:
    kind: str = CONV
    out: int | None = None
    channels: int = 4


class ConvBody(nn.Module):
    """Conv2d over the 1x8x8 view of the 64 digits features, then flatten + Linear."""

    def __init__(self, in_size: int, out_size: int, channels: int):
        super().__init__()
        assert in_size == 64
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.fc = nn.Linear(channels * 64, out_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.view(-1, 1, 8, 8))).flatten(1))


@dataclass
class PlainParams:
    kind: str = CONST
    out: int | None = None


def const_linear(params, in_size: int, out_size: int) -> nn.Module:
    layer = nn.Linear(in_size, out_size)
    nn.init.constant_(layer.weight, 0.25)
    nn.init.constant_(layer.bias, -0.5)
    return layer


def ortho_linear(params, in_size: int, out_size: int) -> nn.Module:
    layer = nn.Linear(in_size, out_size)
    nn.init.orthogonal_(layer.weight)  # the global RNG: forked and seeded from the agent's generator
    nn.init.zeros_(layer.bias)
    return layer


class Hooked(nn.Module):
    """A layer with its own init rule (N(0, 0.01^2)), drawn from the generator it is given."""

    calls: ClassVar[list[tuple[str, torch.Generator | None]]] = []

    def __init__(self, in_size: int, out_size: int, tag: str = "layer"):
        super().__init__()
        self.tag = tag
        self.weight = nn.Parameter(torch.empty(out_size, in_size))
        self.reset_parameters()  # at construction: whatever the (forked) global RNG gives

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        Hooked.calls.append((self.tag, generator))
        with torch.no_grad():
            self.weight.normal_(0.0, 0.01, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t()


class HookedOuter(Hooked):
    def __init__(self, in_size: int, out_size: int):
        super().__init__(in_size, out_size, tag="outer")
        self.inner = Hooked(out_size, out_size, tag="inner")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(super().forward(x))


if CONV not in MODELS:
    MODELS.register(CONV, ConvParams)(lambda p, i, o: ConvBody(i, o, p.channels))
if CONST not in MODELS:
    MODELS.register(CONST, PlainParams)(const_linear)
if ORTHO not in MODELS:
    MODELS.register(ORTHO, PlainParams)(ortho_linear)
if HOOKED not in MODELS:
    MODELS.register(HOOKED, PlainParams)(lambda p, i, o: HookedOuter(i, o))


def conv_engine(seed: int = 0) -> corporation.Engine:
    """CHAIN with the conv model on l1 and l2 (both read 64 features: l1 the digits, l2 l1's output)."""
    raw = chain(seed=seed)
    raw["agents"]["l1"]["model"] = {"kind": CONV, "out": 64}
    raw["agents"]["l2"]["model"] = {"kind": CONV, "out": 32, "channels": 4}
    return corporation.Engine(corporation.from_dict(raw))


def engine_with(kind: str, seed: int = 0) -> corporation.Engine:
    raw = chain(seed=seed)
    raw["agents"]["l2"]["model"] = {"kind": kind, "out": 32}
    return corporation.Engine(corporation.from_dict(raw))


def conv_weight(eng: corporation.Engine, name: str) -> torch.Tensor:
    return eng.agents[name].body.conv.weight.detach().clone()


def test_custom_conv_weights_differ_across_seeds_and_agents_and_repeat_for_a_seed():
    a, b, again = conv_engine(0), conv_engine(1), conv_engine(0)
    assert not torch.equal(conv_weight(a, "l1"), conv_weight(b, "l1")), "same Conv2d weights for two seeds"
    assert not torch.equal(conv_weight(a, "l1"), conv_weight(a, "l2")), "same Conv2d weights for two agents"
    for name in ("l1", "l2"):
        for (k, p), q in zip(a.agents[name].body.state_dict().items(), again.agents[name].body.state_dict().values()):
            assert torch.equal(p, q), f"{name}.{k} differs for the same seed"
    # the Linear of an old-style factory is not redrawn from the agent's generator either way
    assert not torch.equal(a.agents["l1"].body.fc.bias, b.agents["l1"].body.fc.bias)


def test_a_factorys_own_init_is_kept():
    body = engine_with(CONST).agents["l2"].body
    assert torch.all(body.weight == 0.25) and torch.all(body.bias == -0.5)

    w0, w1 = (engine_with(ORTHO, seed).agents["l2"].body.weight.detach() for seed in (0, 1))
    for w in (w0, w1):  # 32 x 32 rows: orthonormal, which a uniform redraw would not be
        assert torch.allclose(w @ w.t(), torch.eye(32), atol=1e-5)
    assert not torch.equal(w0, w1)


def test_reset_parameters_with_a_generator_is_called_outermost_first():
    Hooked.calls.clear()
    eng = engine_with(HOOKED)
    body = eng.agents["l2"].body
    at_build = list(Hooked.calls)
    assert [tag for tag, _ in at_build] == ["outer", "inner", "outer", "inner"]  # construction, then hooks
    assert all(g is None for _, g in at_build[:2])
    gens = [g for _, g in at_build[2:]]
    assert isinstance(gens[0], torch.Generator) and gens[0] is gens[1]
    # the hooks are the first draws from the agent's generator, in that order
    replay = torch.Generator().manual_seed(gens[0].initial_seed())
    outer = torch.empty_like(body.weight).normal_(0.0, 0.01, generator=replay)
    inner = torch.empty_like(body.inner.weight).normal_(0.0, 0.01, generator=replay)
    assert torch.equal(body.weight, outer) and torch.equal(body.inner.weight, inner)
    assert not torch.equal(body.weight, engine_with(HOOKED, seed=1).agents["l2"].body.weight)


def test_built_in_mlp_parameters_are_unchanged():
    """Today's rule for built-in kinds: construct, then init_parameters(module, the agent's generator)."""
    eng = corporation.Engine(corporation.from_dict(chain(seed=3)))
    for name in ("l1", "l2"):
        body = eng.agents[name].body
        in_size = body[0].in_features
        want = mlp(in_size, [32], True, "relu", True)
        replay = generator(3, "agent", name)  # the agent's stream: derived from (seed, name)
        init_parameters(want, replay)
        got = body.state_dict()
        assert list(got) == list(want.state_dict())
        for k, v in want.state_dict().items():
            assert torch.equal(got[k], v), f"{name}.{k}"


@pytest.mark.parametrize("kind", ["mlp", "linear", "lstm", "gru", "rnn"])
def test_built_in_kinds_draw_from_the_generator_in_the_old_order(kind):
    from corporation.models import build_model

    params = MODELS.get(kind).params(kind=kind, out=5)
    got = build_model(params, 7, 5, torch.Generator().manual_seed(11), torch.device("cpu"))
    with torch.random.fork_rng(devices=[]):
        want = MODELS.get(kind).factory(params, 7, 5)  # no generator: PyTorch's own init ...
    init_parameters(want, torch.Generator().manual_seed(11))  # ... then the old redraw
    for (k, v), w in zip(got.state_dict().items(), want.state_dict().values()):
        assert torch.equal(v, w), f"{kind}.{k}"


def test_building_leaves_the_global_rng_untouched_and_a_conv_scenario_trains():
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    eng = conv_engine(0)
    engine_with(ORTHO)
    engine_with(HOOKED)
    assert torch.equal(torch.get_rng_state(), before)
    w = conv_weight(eng, "l1")
    for _ in range(6):
        eng.step()
    assert not torch.equal(conv_weight(eng, "l1"), w), "the conv agent did not train"
    assert all(torch.isfinite(p).all() for p in eng.agents["l1"].body.parameters())
