"""A small distributed training run that needs nothing but Python 3.10+ (no numpy, no GPU).

Every node of the job runs this file. Each rank fits its own shard of one synthetic linear
regression (``y = w·x + b + noise``) by gradient descent; at every step the ranks average their
gradients through rank 0, over TCP at ``MASTER_ADDR:MASTER_PORT``. So a run that finishes proves
that the job's environment is right on every node and that the nodes reach each other, which is
what a real ``torchrun`` job needs too.

Environment (the job sets the first four on every node, under ``torchrun``'s names):

- ``NODE_RANK`` (default 0), ``NNODES`` (default 1): this node's rank and the number of nodes.
- ``MASTER_ADDR``, ``MASTER_PORT`` (default 29500): rank 0 listens there (bound to that address);
  the other ranks connect, retrying for ``TRAIN_RENDEZVOUS_SECONDS`` (default 60) while rank 0
  starts. With ``NNODES=1`` no socket is opened.
- ``PRIME_RESULT_FILE``: where rank 0 writes the result, ``{"weights", "bias", "final_loss",
  "steps", "nodes"}`` (``final_loss`` is the loss of the last step). Unset: printed only.
- ``TRAIN_STEPS`` (30), ``TRAIN_SEED`` (0): the same on every node (rank 0 checks).
- ``TRAIN_STEP_SECONDS`` (0.2): a pause per step, so that the log streams in a demo.
- ``TRAIN_FAIL_RANK``: that rank exits 3 at step 3 (a demo of failure handling).

Output: one line first (rank, world, master), then ``step 12/30 loss 0.0312`` per step, the same
loss on every rank (it is the mean over all shards). Exit codes: 0 done, 1 the rendezvous failed
or a peer was lost (the message names ``MASTER_ADDR:MASTER_PORT`` or the peer), 2 a bad
environment, 3 the failure asked for by ``TRAIN_FAIL_RANK``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Protocol

FEATURES = 3
SAMPLES_PER_RANK = 64
LEARNING_RATE = 0.2
NOISE = 0.05
FAIL_AT_STEP = 3
#: How long a peer may stay silent once the run has started (beyond its pauses).
PEER_SILENCE_SECONDS = 60.0


class TrainingError(Exception):
    """The run cannot go on (rendezvous failed, a peer lost); the message says which and where."""


class ConfigError(Exception):
    """The environment is wrong; the message names the variable."""


@dataclass(frozen=True)
class Config:
    rank: int
    world: int
    master_addr: str
    master_port: int
    steps: int
    seed: int
    step_seconds: float
    fail_rank: int | None
    rendezvous_seconds: float
    result_file: Path | None

    @property
    def master(self) -> str:
        return f"{self.master_addr}:{self.master_port}"


def _number(env: Mapping[str, str], name: str, default: str, kind: type[int] | type[float]) -> float:
    text = env.get(name, "").strip() or default
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None


def config_from_env(env: Mapping[str, str]) -> Config:
    """Read the run's settings; a value that would make the nodes disagree silently is refused."""
    rank, world = int(_number(env, "NODE_RANK", "0", int)), int(_number(env, "NNODES", "1", int))
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"NODE_RANK={rank} with NNODES={world}: the rank must be in 0..NNODES-1")
    master_addr = env.get("MASTER_ADDR", "").strip()
    if world > 1 and not master_addr:
        raise ConfigError(f"MASTER_ADDR is not set, and NNODES={world} needs it")
    port = int(_number(env, "MASTER_PORT", "29500", int))
    if not 0 < port < 65536:
        raise ConfigError(f"MASTER_PORT={port} is not a TCP port")
    steps = int(_number(env, "TRAIN_STEPS", "30", int))
    if steps < 1:
        raise ConfigError(f"TRAIN_STEPS={steps} must be at least 1")
    fail = env.get("TRAIN_FAIL_RANK", "").strip()
    result = env.get("PRIME_RESULT_FILE", "").strip()
    return Config(
        rank=rank,
        world=world,
        master_addr=master_addr or "127.0.0.1",
        master_port=port,
        steps=steps,
        seed=int(_number(env, "TRAIN_SEED", "0", int)),
        step_seconds=max(0.0, _number(env, "TRAIN_STEP_SECONDS", "0.2", float)),
        fail_rank=int(_number(env, "TRAIN_FAIL_RANK", "", int)) if fail else None,
        rendezvous_seconds=max(0.1, _number(env, "TRAIN_RENDEZVOUS_SECONDS", "60", float)),
        result_file=Path(result) if result else None,
    )


# -- the data and the model --------------------------------------------------------------------


def true_model(seed: int) -> tuple[list[float], float]:
    """The weights and bias every shard is drawn from: the same on every rank."""
    rng = random.Random(f"train-regression/{seed}/model")
    return [rng.uniform(-1, 1) for _ in range(FEATURES)], rng.uniform(-1, 1)


def make_shard(seed: int, rank: int) -> tuple[list[list[float]], list[float]]:
    """This rank's samples: its own, and the same on every run with this seed."""
    weights, bias = true_model(seed)
    rng = random.Random(f"train-regression/{seed}/shard/{rank}")
    xs = [[rng.uniform(-1, 1) for _ in range(FEATURES)] for _ in range(SAMPLES_PER_RANK)]
    ys = [sum(w * x for w, x in zip(weights, row, strict=True)) + bias + rng.gauss(0, NOISE) for row in xs]
    return xs, ys


def gradient_and_loss(
    weights: list[float], bias: float, xs: list[list[float]], ys: list[float]
) -> list[float]:
    """The mean squared error's gradient (weights, then bias) followed by the loss itself."""
    grad, grad_bias, loss = [0.0] * len(weights), 0.0, 0.0
    for row, y in zip(xs, ys, strict=True):
        error = sum(w * x for w, x in zip(weights, row, strict=True)) + bias - y
        for i, x in enumerate(row):
            grad[i] += 2 * error * x / len(xs)
        grad_bias += 2 * error / len(xs)
        loss += error * error / len(xs)
    return [*grad, grad_bias, loss]


# -- the all-reduce -------------------------------------------------------------------------------


class Group(Protocol):
    def mean(self, step: int, values: list[float]) -> list[float]:
        """The element-wise mean of ``values`` over every rank at this step."""

    def close(self) -> None: ...


class Alone:
    """One node: the mean is its own values, and no socket is opened."""

    def mean(self, step: int, values: list[float]) -> list[float]:
        return values

    def close(self) -> None:
        pass


def _send(conn: socket.socket, message: Mapping[str, object]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _receive(reader: BufferedReader, who: str) -> dict[str, object]:
    """One JSON line from a peer; a closed connection or garbage is a ``TrainingError``."""
    try:
        line = reader.readline(1 << 20)
    except TimeoutError:
        raise TrainingError(f"{who} sent nothing for too long") from None
    except OSError as error:
        raise TrainingError(f"lost {who}: {error}") from None
    if not line:
        raise TrainingError(f"lost {who}: the connection was closed (did it exit?)")
    try:
        message = json.loads(line)
    except ValueError:
        raise TrainingError(f"{who} sent something that is not this script's protocol") from None
    if not isinstance(message, dict):
        raise TrainingError(f"{who} sent something that is not this script's protocol")
    return message


def _values(message: Mapping[str, object], step: int, size: int, who: str) -> list[float]:
    if "error" in message:
        raise TrainingError(f"{who} stopped the run: {message['error']}")
    values = message.get("values")
    if message.get("step") != step or not isinstance(values, list) or len(values) != size:
        raise TrainingError(f"{who} is out of step (expected step {step}); are both the same script?")
    return [float(v) for v in values]


class Master:
    """Rank 0: listens on ``MASTER_ADDR:MASTER_PORT``, averages what the others send each step."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.peers: dict[int, tuple[str, socket.socket, BufferedReader]] = {}
        try:
            server = socket.create_server((config.master_addr, config.master_port))
        except OSError as error:
            raise TrainingError(
                f"cannot listen on MASTER_ADDR:MASTER_PORT {config.master} ({error}); MASTER_ADDR must be"
                " an address of this node and the port free"
            ) from None
        try:
            self._accept(server)
        except TrainingError as error:
            self.abort(str(error))
            raise
        finally:
            server.close()

    def _accept(self, server: socket.socket) -> None:
        config = self.config
        deadline = time.monotonic() + config.rendezvous_seconds
        while len(self.peers) < config.world - 1:
            server.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                conn, (host, port, *_) = server.accept()
            except TimeoutError:
                missing = sorted(set(range(1, config.world)) - set(self.peers))
                raise TrainingError(
                    f"ranks {missing} did not join at MASTER_ADDR:MASTER_PORT {config.master}"
                    f" within {config.rendezvous_seconds:g} s"
                ) from None
            conn.settimeout(config.rendezvous_seconds + config.step_seconds + PEER_SILENCE_SECONDS)
            reader = conn.makefile("rb")
            hello = _receive(reader, f"a peer at {host}:{port}")
            expected = {"world": config.world, "steps": config.steps, "seed": config.seed}
            rank = hello.get("rank")
            if not isinstance(rank, int) or not 0 < rank < config.world or rank in self.peers:
                _send(conn, {"error": f"rank {rank!r} is not expected or already joined"})
                raise TrainingError(f"a peer at {host}:{port} joined as rank {rank!r}, which is wrong")
            if {key: hello.get(key) for key in expected} != expected:
                mismatch = {key: hello.get(key) for key in expected}
                _send(conn, {"error": f"rank 0 runs with {expected}, this rank with {mismatch}"})
                raise TrainingError(f"rank {rank} runs with {mismatch}, rank 0 with {expected}")
            self.peers[rank] = (f"rank {rank} at {host}", conn, reader)
            print(f"rank {rank} joined from {host}", flush=True)

    def mean(self, step: int, values: list[float]) -> list[float]:
        total = list(values)
        try:
            for _, (who, _, reader) in sorted(self.peers.items()):
                theirs = _values(_receive(reader, who), step, len(values), who)
                total = [a + b for a, b in zip(total, theirs, strict=True)]
            mean = [value / self.config.world for value in total]
            for _, (who, conn, _) in sorted(self.peers.items()):
                try:
                    _send(conn, {"step": step, "values": mean})
                except OSError as error:
                    raise TrainingError(f"lost {who}: {error}") from None
        except TrainingError as error:
            self.abort(f"step {step}: {error}")
            raise TrainingError(f"step {step}: {error}") from None
        return mean

    def abort(self, reason: str) -> None:
        """Tell every rank still connected why the run stops (best effort), then hang up."""
        for _, conn, _ in self.peers.values():
            with contextlib.suppress(OSError):
                _send(conn, {"error": reason})
        self.close()

    def close(self) -> None:
        for _, conn, _ in self.peers.values():
            conn.close()
        self.peers.clear()


class Worker:
    """Any rank but 0: joins rank 0 (retrying while it starts), sends its values, gets the mean."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.who = f"rank 0 at MASTER_ADDR:MASTER_PORT {config.master}"
        deadline = time.monotonic() + config.rendezvous_seconds
        while True:
            try:
                self.conn = socket.create_connection(
                    (config.master_addr, config.master_port), timeout=max(0.01, deadline - time.monotonic())
                )
                break
            except OSError as error:
                if time.monotonic() + 0.2 >= deadline:
                    raise TrainingError(
                        f"cannot reach {self.who} within {config.rendezvous_seconds:g} s (last: {error});"
                        " is rank 0 running, and MASTER_ADDR reachable from this node?"
                    ) from None
                time.sleep(0.2)
        self.conn.settimeout(config.rendezvous_seconds + config.step_seconds + PEER_SILENCE_SECONDS)
        self.reader = self.conn.makefile("rb")
        hello = {"rank": config.rank, "world": config.world, "steps": config.steps, "seed": config.seed}
        self._send(hello)
        print(f"joined {self.who}", flush=True)

    def _send(self, message: Mapping[str, object]) -> None:
        try:
            _send(self.conn, message)
        except OSError as error:
            raise TrainingError(f"lost {self.who}: {error}") from None

    def mean(self, step: int, values: list[float]) -> list[float]:
        self._send({"step": step, "values": values})
        return _values(_receive(self.reader, self.who), step, len(values), self.who)

    def close(self) -> None:
        self.conn.close()


# -- the run --------------------------------------------------------------------------------------


def train(config: Config, group: Group) -> dict[str, object]:
    """Gradient descent on this rank's shard with the gradients averaged over every rank."""
    xs, ys = make_shard(config.seed, config.rank)
    weights, bias, loss = [0.0] * FEATURES, 0.0, float("nan")
    for step in range(1, config.steps + 1):
        if config.rank == config.fail_rank and step == min(FAIL_AT_STEP, config.steps):
            print(f"rank {config.rank}: failing at step {step}, as TRAIN_FAIL_RANK asks", file=sys.stderr)
            raise SystemExit(3)
        *grad, grad_bias, loss = group.mean(step, gradient_and_loss(weights, bias, xs, ys))
        weights = [w - LEARNING_RATE * g for w, g in zip(weights, grad, strict=True)]
        bias -= LEARNING_RATE * grad_bias
        print(f"step {step}/{config.steps} loss {loss:.4f}", flush=True)
        if config.step_seconds:
            time.sleep(config.step_seconds)
    return {
        "weights": [round(w, 6) for w in weights],
        "bias": round(bias, 6),
        "final_loss": round(loss, 6),
        "steps": config.steps,
        "nodes": config.world,
    }


def write_result(path: Path, result: Mapping[str, object]) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result) + "\n")
    os.replace(partial, path)


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        config = config_from_env(os.environ if env is None else env)
    except ConfigError as error:
        print(f"train_regression: {error}", file=sys.stderr, flush=True)
        return 2
    print(
        f"rank {config.rank} of {config.world}, master {config.master}, seed {config.seed},"
        f" {config.steps} steps, {SAMPLES_PER_RANK} samples per rank",
        flush=True,
    )
    try:
        group: Group = Alone()
        if config.world > 1:
            group = Master(config) if config.rank == 0 else Worker(config)
        try:
            result = train(config, group)
        finally:
            group.close()
    except TrainingError as error:
        print(f"rank {config.rank}: {error}", file=sys.stderr, flush=True)
        return 1
    if config.rank == 0:
        print(f"result {json.dumps(result)}", flush=True)
        if config.result_file is not None:
            write_result(config.result_file, result)
            print(f"wrote {config.result_file}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
