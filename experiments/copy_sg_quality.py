"""How much of the future gradient can the state M predict on Copy? A plain-PyTorch replica of the engine's
DNI on an LSTM (truncated BPTT with window T over a stream of Copy batches, g_hat = 0.1 * M(h, c) at each
window end, M linear, zero-initialised, Adam, bootstrapped target; same sizes, curriculum and threshold as
scenarios/copy.yaml), which also computes, at every boundary, the EXACT gradient of the rest of the
sequence's loss w.r.t. the boundary state (an extra forward/backward with the current weights).

It prints, every ``--every`` ticks (5k), the curriculum level and M's explained variance
(r2 = 1 - sum||g_hat - g||^2 / sum||g||^2) against its bootstrapped target and against the exact gradient, and
its cosine with the exact gradient. ``--target exact`` trains M on the exact gradient instead (what a perfect
bootstrap would hand it);
``--target nstep --horizon K`` on the true loss of the next K windows plus the bootstrap after them
(an n-step target; K = 1 is the engine's).
``--g-hat noise`` applies random noise instead of M's output (a control), ``--g-hat zero`` nothing (BPTT).

    python experiments/copy_sg_quality.py                  # M trained as in the engine
    python experiments/copy_sg_quality.py --target exact   # M trained on the exact future gradient
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

SCALE_DEFAULT = 0.1
p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--T", type=int, default=2, help="window (update.unroll)")
p.add_argument("--ticks", type=int, default=20000)
p.add_argument("--target", choices=["bootstrap", "exact", "nstep"], default="bootstrap")
p.add_argument("--horizon", type=int, default=2, help="--target nstep: windows of true loss before the bootstrap")
p.add_argument("--g-hat", choices=["M", "noise", "zero"], default="M",
               help="what is applied at window ends: M's output (DNI), Gaussian noise of about M's size "
                    "(per-unit std 0.15: a control), or nothing (truncated BPTT); M is trained in every case")
p.add_argument("--boot-scale", type=float, default=SCALE_DEFAULT,
               help="scale of the next g_hat inside M's bootstrapped target (the engine: the applied 0.1)")
p.add_argument("--m-lr", type=float, default=3e-3, help="M's Adam learning rate (the engine: the agent's, 3e-3)")
p.add_argument("--aux", type=float, default=0.0, help="DNI + Aux weight (0: off), as the engine's aux head")
p.add_argument("--aux-input", choices=["h", "state"], default="h", help="what the Aux head reads (engine: h)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--every", type=int, default=5000, help="ticks between reports")
a = p.parse_args()
torch.manual_seed(a.seed)
torch.set_num_threads(1)
BITS, B, H, SCALE = 8, 32, 128, SCALE_DEFAULT
cell, readout = torch.nn.LSTMCell(BITS + 1, H), torch.nn.Linear(H, BITS)
opt = torch.optim.Adam([*cell.parameters(), *readout.parameters()], lr=3e-3)
M = torch.nn.Linear(2 * H, 2 * H)
torch.nn.init.zeros_(M.weight), torch.nn.init.zeros_(M.bias)
m_opt = torch.optim.Adam(M.parameters(), lr=a.m_lr)
with torch.random.fork_rng():  # zero-initialised below: leave the random stream as without Aux
    A = torch.nn.Linear(H if a.aux_input == "h" else 2 * H, 2 * H)  # DNI + Aux: predicts g_hat at the window end
torch.nn.init.zeros_(A.weight), torch.nn.init.zeros_(A.bias)
a_opt = torch.optim.Adam(A.parameters(), lr=3e-3)


def batch(n: int):
    sym = (torch.rand(n, B, BITS) < 0.5).float()
    x = torch.zeros(2 * n + 1, B, BITS + 1)
    x[:n, :, :BITS], x[n, :, BITS] = sym, 1.0
    return x, torch.cat([torch.zeros(n + 1, B, BITS), sym]), n


def rest_loss(state, seq, pos, steps=None):
    """Loss of the rest of the sequence from ``state`` at step ``pos`` (per-example sums, batch mean), or of
    its next ``steps`` steps only; and the state where it stops."""
    (x, y, n), total = seq, torch.zeros(())
    for t in range(pos, len(x) if steps is None else min(len(x), pos + steps)):
        state = cell(x[t], state)
        if t > n:
            total = total + F.binary_cross_entropy_with_logits(readout(state[0]), y[t], reduction="sum") / B
    return total, state


def pairs(loss, s_end, g, scale=SCALE):
    """(tensors, their gradients) for a backward pass: the window's loss, and scale * g on the end state."""
    out = [(loss, torch.ones(()))] + ([] if g is None else [(s_end, g * scale / B)])
    return [o for o, _ in out if o.requires_grad], [d for o, d in out if o.requires_grad]


n, tick, seq, pos, wrong, prev, start = 2, 0, None, 0, 0.0, None, None
acc = {"boot": [0.0, 0.0], "exact": [0.0, 0.0], "cos": [0.0, 0]}
while tick < a.ticks:
    window_loss, leaf, window_states = torch.zeros(()), None, []
    for k in range(a.T):
        if seq is None or pos == len(seq[0]):
            seq, pos, wrong = batch(n), 0, 0.0
            state, window_states = (torch.zeros(B, H), torch.zeros(B, H)), []
        if k == 0:
            leaf = state = tuple(s.detach().requires_grad_(True) for s in state)
            start = (seq, pos)  # where the boundary state sits: the exact target is the rest of this sequence
        x, y, level = seq
        state = cell(x[pos], state)
        window_states.append(state[0] if a.aux_input == "h" else torch.cat(state, 1))
        if pos > level:
            logits = readout(state[0])
            window_loss = window_loss + F.binary_cross_entropy_with_logits(logits, y[pos], reduction="sum") / B
            wrong += float(((logits > 0).float() != y[pos]).float().sum()) / B
        pos, tick = pos + 1, tick + 1
        if pos == len(x) and wrong / level < 0.15 and level == n:
            n += 1  # solved: the curriculum advances
    end = pos == len(seq[0])
    s_end = torch.cat(state, 1)
    g_hat = None if end else M(s_end.detach()).detach()
    applied = {"M": g_hat, "noise": None if end else 0.15 * torch.randn(B, 2 * H), "zero": None}[a.g_hat]
    if prev is not None:  # M's record of the last boundary (= this window's start state) meets its targets
        outs, grads = pairs(window_loss, s_end, g_hat, a.boot_scale)
        boot = torch.cat(torch.autograd.grad(outs, leaf, grads, retain_graph=True, materialize_grads=True), 1) * B
        s0 = tuple(s.detach().requires_grad_(True) for s in leaf)
        exact = torch.cat(torch.autograd.grad(rest_loss(s0, *start)[0], s0), 1) * B
        if a.target == "nstep":  # true loss over the next horizon * T steps, then the (scaled) g_hat there
            s1 = tuple(s.detach().requires_grad_(True) for s in leaf)
            loss_n, s_n = rest_loss(s1, *start, steps=a.horizon * a.T)
            goes_on = start[1] + a.horizon * a.T < len(start[0][0])  # the sequence goes on: bootstrap there
            s_cat = torch.cat(s_n, 1)
            outs, grads = pairs(loss_n, s_cat, M(s_cat.detach()).detach() if goes_on else None, a.boot_scale)
            boot = torch.cat(torch.autograd.grad(outs, s1, grads, materialize_grads=True), 1) * B if outs \
                else torch.zeros_like(prev)
        pred = M(prev)
        for key, tgt in (("boot", boot), ("exact", exact)):
            acc[key][0] += float(((pred.detach() - tgt) ** 2).sum()) / B
            acc[key][1] += float((tgt ** 2).sum()) / B
        acc["cos"][0] += float(F.cosine_similarity(pred.detach().flatten(), exact.flatten(), dim=0))
        acc["cos"][1] += 1
        m_opt.zero_grad()
        (((pred - (exact if a.target == "exact" else boot)) ** 2).sum(1).mean()).backward()
        m_opt.step()
    update_loss = window_loss
    if a.aux:  # the engine's aux head: its gradient trains A and the LSTM, never M's target (computed above)
        aux_target = torch.zeros_like(s_end) if end else M(s_end.detach()).detach()
        update_loss = update_loss + a.aux * ((A(torch.stack(window_states)) - aux_target) ** 2).sum(2).mean()
    opt.zero_grad(), a_opt.zero_grad()
    if pairs(update_loss, s_end, applied)[0]:
        torch.autograd.backward(*pairs(update_loss, s_end, applied))
    opt.step(), a_opt.step()
    prev = None if end else s_end.detach()
    state = tuple(s.detach() for s in state)
    if tick % a.every < a.T and acc["cos"][1]:
        r2 = {k: 1 - acc[k][0] / max(acc[k][1], 1e-12) for k in ("boot", "exact")}
        print(f"tick {tick:6d}  level N={n}  r2 vs bootstrapped target {r2['boot']:+.3f}  "
              f"r2 vs exact gradient {r2['exact']:+.3f}  cosine with exact {acc['cos'][0] / acc['cos'][1]:+.3f}",
              flush=True)
        acc = {"boot": [0.0, 0.0], "exact": [0.0, 0.0], "cos": [0.0, 0]}
