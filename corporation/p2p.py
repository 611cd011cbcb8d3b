"""The distributed transport: messages and targets between workers over ``torch.distributed`` P2P.

Each worker runs its own components (:mod:`corporation.placement`). An item posted on a channel whose other
half lives on another worker is kept until the end of the tick's work (:meth:`P2PTransport.flush`); then
every worker sends each peer a count and, for each item, a small fixed header followed by its payload, and
receives the same from each peer (``isend`` to every peer first, then blocking ``recv``: no ordering
deadlock). Received items join the local queues with their due tick, so the receiver's half sees exactly
what the local transport would deliver: cross-worker edges have latency >= 1, so a message sent at tick t
is due at t + 1 at the earliest and has arrived by then (``lockstep``). Targets may have back latency 0:
they are exchanged before the tick's targets are polled.

Header (int64, :data:`HEADER` entries): kind (0 message, 1 target), channel index, due tick, batch id,
sent tick, start, end, window, has-reset, dtype code, ndim, then the shape (up to :data:`MAX_DIMS` dims);
each payload (and a message's reset mask, one byte per row) is zero-padded to a multiple of 8 bytes.
Payloads travel on the CPU with gloo, or, when every worker drives a GPU (the process group is then
``cpu:gloo,cuda:nccl``), packets are built on the worker's GPU and travel by NCCL (:meth:`P2PTransport.use_nccl`);
the receiving half moves them to its agent's device.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.distributed as dist

from .messages import GradientMessage, Message
from .transport import Kind, LocalTransport

MAX_DIMS = 6
MIN_PACKET = 4096  # bytes: the smallest lockstep packet
UNSET = -2  # a free-mode length buffer before its packet arrives (lengths are >= 0; -1 ends a run)
HEADER = 11 + MAX_DIMS
PACKET, OVERFLOW = 0, 1  # tags: the fixed-size packets (receives posted ahead) and a tick's overflow
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool,
          torch.uint8]


def _header(kind: Kind, channel: int, due: int, item: Message | GradientMessage) -> tuple[torch.Tensor,
                                                                                         list[torch.Tensor]]:
    """The header and payload tensors of one item."""
    if kind == "message":
        h, reset = item.h.detach(), item.reset
        flags = [item.batch_id, item.sent, int(item.start), int(item.end), item.window, int(reset is not None)]
    else:
        h, reset = item.g.detach(), None
        flags = [item.batch_id, item.sent, 0, 0, -1, 0]
    if h.dim() > MAX_DIMS:
        raise ValueError(f"a message of {h.dim()} dims cannot cross workers (at most {MAX_DIMS})")
    shape = list(h.shape) + [0] * (MAX_DIMS - h.dim())
    head = torch.tensor([0 if kind == "message" else 1, channel, due, *flags, DTYPES.index(h.dtype), h.dim(),
                         *shape], dtype=torch.int64)
    payload = [h.contiguous()]
    if reset is not None:
        payload.append(reset.to(torch.uint8))
    return head, payload


class P2PTransport(LocalTransport):
    """The local queues plus the exchange with the other workers at each tick's :meth:`flush`.

    ``remote[(kind, channel)]`` is the rank that holds the receiving half of that channel (for a message,
    the receiver's worker; for a target, the sender's) when it is not this rank."""

    def __init__(self, rank: int, world: int, channels: list[str], remote: dict[tuple[Kind, str], int],
                 devices: dict[tuple[Kind, str], torch.device] | None = None):
        super().__init__()
        self.devices = devices or {}  # where the receiving half of a channel keeps its tensors
        self.rank, self.world = rank, world
        self.channels = channels  # every channel name, sorted: the index in a header
        self.index = {c: i for i, c in enumerate(channels)}
        self.remote = remote
        self.outgoing: dict[int, list[tuple[Kind, str, Any, int]]] = {r: [] for r in range(world) if r != rank}
        self.sent_items = 0
        self.received_items = 0
        self.exchange_seconds = 0.0  # time in flush: sending, and waiting for the peers' items
        self.capacity = MIN_PACKET  # bytes of a lockstep packet (set_capacity: the same on both sides)
        self.ahead = 0  # ticks a worker may run ahead of its peers (set_ahead)
        self._unreceived = 0  # packets each peer has sent us that we have not yet received
        self._inflight: list[list[Any]] = []  # per tick: the sends (works and tensors) not yet known complete
        self._posted: dict[int, list[tuple[torch.Tensor, Any]]] = {}  # per peer: pre-posted receives, oldest first
        self.packet_device = torch.device("cpu")  # where packets live: the GPU when they travel by NCCL
        self.tagged = True  # the backend matches messages by tag (gloo), so receives can be posted ahead

    def set_ahead(self, ticks: int) -> None:
        """Let this worker run ``ticks`` ahead of its peers: the packet of tick t is received at tick t + ticks.
        Safe when every cross-worker edge has latency >= ticks + 1 and back latency >= ticks (its items
        are then due no earlier than that); the same on every worker."""
        self.ahead = max(0, int(ticks))
    def use_nccl(self, device: torch.device) -> None:
        """Packets live on ``device`` (this worker's GPU) and travel by NCCL. NCCL has no tags, so a tick's
        overflow could be taken for a later packet: receives are then posted when taken, not ahead."""
        self.packet_device = torch.device(device)
        self.tagged = False

    def set_capacity(self, nbytes: int) -> None:
        """The fixed size of a lockstep packet (both sides of every pair must use the same: derived from the
        scenario); larger ticks send a second message, so this only sets what one send covers."""
        self.capacity = max(MIN_PACKET, int(nbytes))

    def post(self, kind: Kind, channel: str, item: Any, due: int) -> None:
        peer = self.remote.get((kind, channel))
        if peer is None:
            super().post(kind, channel, item, due)
        else:
            self.outgoing[peer].append((kind, channel, item, due))

    def flush(self, tick: int) -> None:
        """Send this tick's items to every peer and receive theirs (a collective step of every worker).

        One packet per peer and tick, of a fixed capacity both sides know (``capacity``), so a tick costs one
        send and one receive per peer (gloo's latency for a small message is about a millisecond here, so a
        count, then a header and a payload per item, cost more than the work of a small agent). A packet is
        ``[total bytes, item count]`` (int64) and the items, each its int64 header then its payload bytes; a
        tick whose items exceed the capacity sends the rest as a second message of the size the first says."""
        started = time.perf_counter()
        works: list[Any] = []  # with the tensors being sent: they must live until their sends complete
        for peer, items in self.outgoing.items():
            dev = self.packet_device
            parts = [torch.tensor([0, len(items)], dtype=torch.int64).view(torch.uint8)]
            for kind, channel, item, due in items:
                head, payload = _header(kind, self.index[channel], due, item)
                parts.append(head.view(torch.uint8))
                parts += [_padded(p.reshape(-1).view(torch.uint8)) for p in payload]
            packet = torch.cat([p.to(dev) for p in parts])
            packet[:8] = torch.tensor([packet.numel()], dtype=torch.int64).view(torch.uint8).to(dev)
            cap = self.capacity
            first = torch.zeros(cap, dtype=torch.uint8, device=dev)
            first[:min(cap, packet.numel())] = packet[:cap]
            works += [first, packet, self._isend(first, peer, PACKET)]
            if packet.numel() > cap:
                rest = packet[cap:].contiguous()
                works += [rest, self._isend(rest, peer, OVERFLOW)]
            self.sent_items += len(items)
            items.clear()
            if self.tagged:  # the receive of the peer's packet of this tick, posted now: gloo moves it in the
                # background while this worker computes the next ticks, so taking it (ahead ticks later) rarely waits
                buffer = torch.empty(cap, dtype=torch.uint8, device=dev)
                self._posted.setdefault(peer, []).append((buffer, dist.irecv(buffer, peer, tag=PACKET)))
        self._inflight.append(works)
        self._unreceived += 1
        while self._unreceived > self.ahead:  # the packets of tick - ahead: due no earlier than next tick
            self._receive_packets()
        while len(self._inflight) > self.ahead + 1:  # received by now: those sends are complete
            self._wait(self._inflight.pop(0))
        self.exchange_seconds += time.perf_counter() - started

    def _receive_packets(self) -> None:
        """One packet from every peer (the oldest not yet received)."""
        dev = self.packet_device
        for peer in self.outgoing:
            if self.tagged:
                first, work = self._posted[peer].pop(0)
                work.wait()
            else:
                first = torch.empty(self.capacity, dtype=torch.uint8, device=dev)
                dist.recv(first, peer)
            total = int(first[:8].view(torch.int64)[0])
            if total > self.capacity:
                rest = torch.empty(total - self.capacity, dtype=torch.uint8, device=dev)
                dist.recv(rest, peer, tag=OVERFLOW) if self.tagged else dist.recv(rest, peer)
                first = torch.cat([first, rest])
            self._unpack(first[:total])
        self._unreceived -= 1

    def _isend(self, tensor: torch.Tensor, peer: int, tag: int) -> Any:
        return dist.isend(tensor, peer, tag=tag) if self.tagged else dist.isend(tensor, peer)

    @staticmethod
    def _wait(works: list[Any]) -> None:
        for w in works:
            if not isinstance(w, torch.Tensor):
                w.wait()

    def close(self, tick: int) -> None:
        """The run is over: receive the packets still in flight (their items come too late to matter)."""
        while self._unreceived > 0:
            self._receive_packets()
        for works in self._inflight:
            self._wait(works)
        self._inflight.clear()

    def __getstate__(self) -> dict:
        """Checkpoints are taken between ticks with nothing in flight (run-ahead 0); sends are done."""
        state = self.__dict__.copy()
        state["_inflight"] = []
        state["_posted"] = {}
        return state

    def _unpack(self, packet: torch.Tensor) -> None:
        """Post the items of one received packet on the local queues."""
        count = int(packet[8:16].view(torch.int64)[0])
        at = 16
        for _ in range(count):
            head = packet[at:at + 8 * HEADER].view(torch.int64)
            at += 8 * HEADER
            kind_code, channel, due, batch_id, sent, start, end, window, has_reset, dtype, ndim = head[:11].tolist()
            shape = head[11:11 + ndim].tolist()
            dt = DTYPES[dtype]
            n = math.prod(shape) * torch.empty((), dtype=dt).element_size()
            h = packet[at:at + n].clone().view(dt).reshape(shape)
            at += _aligned(n)
            name = self.channels[channel]
            self.received_items += 1
            device = self.devices.get(("message" if kind_code == 0 else "target", name))
            h = h if device is None else h.to(device)
            if kind_code == 0:
                reset = None
                if has_reset:
                    reset = packet[at:at + shape[0]].clone().bool()
                    at += _aligned(shape[0])
                    reset = reset if device is None else reset.to(device)
                LocalTransport.post(self, "message", name, Message(batch_id, h, sent, bool(start), bool(end), reset,
                                                                   window), due)
            else:
                LocalTransport.post(self, "target", name, GradientMessage(batch_id, h, sent), due)


class FreeP2PTransport(P2PTransport):
    """``free`` mode: no worker waits for another at a tick. At each :meth:`flush` the tick's items for a
    peer go out as ONE packet (a length, then the items serialised by ``torch.save``) without waiting; items
    from peers are taken whenever their packet has arrived (a pending ``irecv`` of the length, checked
    without blocking) and are due at once. What the receiving halves see is therefore whatever has arrived:
    cross-worker edges are read as ``hold`` edges (the newest message; see corporation.distributed) and
    targets train M whenever they come. ``ages`` collects each received item's age in seconds (sender's
    clock at sending to receiver's at arrival: the same machine, or synchronised clocks)."""

    def __init__(self, rank: int, world: int, channels: list[str], remote: dict[tuple[Kind, str], int],
                 devices: dict[tuple[Kind, str], torch.device] | None = None, max_drift: int = 8):
        super().__init__(rank, world, channels, remote, devices)
        self.max_drift = max_drift
        self.peer_tick = {r: -1 for r in range(world) if r != rank}  # the last tick each peer finished
        self._pending_sends: list[tuple[Any, list[torch.Tensor]]] = []
        self._length: dict[int, torch.Tensor] = {}
        self._recv: dict[int, Any] = {}
        self._ended: set[int] = set()
        self.ages: list[float] = []
        for peer in self.outgoing:
            self._post_recv(peer)

    def _post_recv(self, peer: int) -> None:
        self._length[peer] = torch.full((1,), UNSET, dtype=torch.int64)
        self._recv[peer] = dist.irecv(self._length[peer], peer)

    def _arrived(self, peer: int) -> bool:
        """Whether the pending length from ``peer`` has arrived (gloo's ``is_completed`` stays False for a
        finished ``irecv``, so the buffer is checked for its sentinel; ``wait`` then completes the work)."""
        return int(self._length[peer][0]) != UNSET

    def flush(self, tick: int) -> None:
        started = time.perf_counter()
        for peer, items in self.outgoing.items():  # every tick: a packet (maybe empty) says how far we are
            self._send(peer, [(kind, channel, _cpu(item), due) for kind, channel, item, due in items], tick)
            self.sent_items += len(items)
            items.clear()
        self._pending_sends = [(w, keep) for w, keep in self._pending_sends if not w.is_completed()]
        self._take(tick, block=False)
        for peer in self.peer_tick:  # never more than max_drift ticks ahead of a peer: wait for it
            while peer not in self._ended and tick - self.peer_tick[peer] > self.max_drift:
                self._take_one(peer, tick)
        self.exchange_seconds += time.perf_counter() - started

    def _send(self, peer: int, items: list[Any] | None, tick: int = -1) -> None:
        import io

        if items is None:  # the end of this worker's run
            length = torch.tensor([-1], dtype=torch.int64)
            self._pending_sends.append((dist.isend(length, peer), [length]))
            return
        buffer = io.BytesIO()
        torch.save((time.time(), tick, items), buffer)
        payload = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        length = torch.tensor([payload.numel()], dtype=torch.int64)
        self._pending_sends.append((dist.isend(length, peer), [length]))
        self._pending_sends.append((dist.isend(payload, peer), [payload]))

    def _take(self, tick: int, block: bool) -> None:
        """Deliver every packet that has arrived (``block``: wait for each peer's end-of-run mark)."""

        for peer in list(self._recv):
            while peer not in self._ended and (block or self._arrived(peer)):
                self._take_one(peer, tick)

    def _take_one(self, peer: int, tick: int) -> None:
        """Wait for ``peer``'s next packet and deliver its items (due at once)."""
        import io

        self._recv[peer].wait()
        n = int(self._length[peer])
        if n < 0:
            self._ended.add(peer)
            return
        payload = torch.empty(n, dtype=torch.uint8)
        dist.recv(payload, peer)
        sent_at, peer_tick, items = torch.load(io.BytesIO(payload.numpy().tobytes()), weights_only=False)
        self.peer_tick[peer] = max(self.peer_tick[peer], peer_tick)
        age = time.time() - sent_at
        for kind, channel, item, _ in items:
            device = self.devices.get((kind, channel))
            if device is not None:
                item = _moved(item, device)
            self.ages.append(age)
            self.received_items += 1
            LocalTransport.post(self, kind, channel, item, tick)
        self._post_recv(peer)

    def close(self, tick: int) -> None:
        """End of the run: tell every peer, then take what is still in flight until each peer has ended."""
        for peer in self.outgoing:
            self._send(peer, None)
        self._take(tick, block=True)
        for w, _ in self._pending_sends:
            w.wait()
        self._pending_sends.clear()


def _aligned(n: int) -> int:
    """``n`` bytes rounded up to a multiple of 8 (every header starts 8-byte aligned, to be read as int64)."""
    return -(-n // 8) * 8


def _padded(part: torch.Tensor) -> torch.Tensor:
    """A payload's bytes padded with zeros to :func:`_aligned` length."""
    pad = _aligned(part.numel()) - part.numel()
    return torch.cat([part, part.new_zeros(pad)]) if pad else part


def _cpu(item: Any) -> Any:
    if isinstance(item, Message):
        reset = item.reset.cpu() if item.reset is not None else None
        return Message(item.batch_id, item.h.detach().cpu(), item.sent, item.start, item.end, reset, item.window)
    return GradientMessage(item.batch_id, item.g.detach().cpu(), item.sent)


def _moved(item: Any, device: torch.device) -> Any:
    if isinstance(item, Message):
        reset = item.reset.to(device) if item.reset is not None else None
        return Message(item.batch_id, item.h.to(device), item.sent, item.start, item.end, reset, item.window)
    return GradientMessage(item.batch_id, item.g.to(device), item.sent)
