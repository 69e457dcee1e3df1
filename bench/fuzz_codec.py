"""Fuzz the wire codec and the Connection state machine.

    python -m bench.fuzz_codec --runs 1000000 [--seed N] [--engine atheris|random]
                               [--max-len BYTES] [--corpus DIR]

The property checked on every input: the bytes are accepted, or rejected with
RemoteProtocolError (never any other exception, never a LocalProtocolError from
receiving), the Connection ends CLOSED after EOF, and the decoder never buffers
more than one frame. The input's first byte picks the role (client, fresh
server, server past its handshake), the chunk size and the maximum frame size;
the rest is the byte stream.

With atheris installed (``pip install atheris``, the ``fuzz`` extra) inputs are
coverage-guided by libFuzzer, seeded with valid sessions. Without it, a
deterministic random-mutation loop over the same seeds runs instead (same CLI;
it says so on stderr). Either way the script prints the number of inputs run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import types
from typing import Any

from tcpdispatch.errors import LocalProtocolError, RemoteProtocolError
from tcpdispatch.protocol import (
    Bye,
    Connection,
    Data,
    Error,
    Frame,
    Hello,
    Ping,
    Pong,
    Reconnect,
    Role,
    State,
    Welcome,
    encode,
)

_MAX_FRAMES = (8, 16, 300, 65536)  # 8 still fits the setup HELLO below
_count = 0


def check_one(data: bytes) -> None:
    """Run one input; raise AssertionError (or the unexpected error) on a finding."""
    global _count
    _count += 1
    if not data:
        return
    ctl, stream = data[0], data[1:]
    mode = ctl % 3  # 0 client after HELLO, 1 fresh server, 2 server after WELCOME
    chunk = 1 + (ctl >> 2) % 16
    max_frame = _MAX_FRAMES[ctl >> 6]
    conn = Connection(Role.CLIENT if mode == 0 else Role.SERVER, max_frame_size=max_frame)
    if mode == 0:
        conn.send(Hello("t", "c"))
    elif mode == 2:
        conn.receive_data(encode(Hello("t", "c")))
        conn.send(Welcome("session", 1000, 3000))
    conn.data_to_send()
    try:
        for i in range(0, len(stream), chunk):
            conn.receive_data(stream[i : i + chunk])
            conn.data_to_send()
            assert conn._decoder.buffered <= max_frame + 4, "decoder hoards bytes"
        conn.receive_eof()
    except LocalProtocolError as exc:
        raise AssertionError(f"LocalProtocolError while receiving: {exc}") from exc
    except RemoteProtocolError:
        assert conn.state is State.CLOSED, "not closed after a protocol error"
        assert conn.receive_data(b"\x00" * 8) == [], "closed connection returned frames"
    assert conn.state is State.CLOSED, "not closed after EOF"


def seeds() -> list[bytes]:
    """Valid sessions for each mode, and a few near misses, as starting points."""
    client: list[Frame] = [
        Welcome("s1", 10_000, 30_000),
        Pong(1),
        Data(b"hello"),
        Reconnect(500, "drain"),
        Data(b"x" * 40),
        Pong(2),
        Error(304, "draining"),
    ]
    server: list[Frame] = [Ping(1), Data(b"hello"), Data(b""), Ping(2**63), Bye()]
    out = []
    for ctl in (0, 4, 60, 64, 128):
        out.append(bytes([ctl]) + b"".join(encode(f) for f in client))
        out.append(bytes([ctl + 2]) + b"".join(encode(f) for f in server))
        out.append(bytes([ctl + 1]) + encode(Hello("v1.abc.def", "c1")) + encode(Data(b"early")))
    return out


def mutate(rng: random.Random, data: bytes, max_len: int = 1024) -> bytes:
    """One to four random edits: bit flips, byte sets, inserts, deletes, cuts, splices."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if not buf:
            buf += rng.randbytes(rng.randint(1, 8))
            continue
        i = rng.randrange(len(buf))
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i] = rng.choice((0, 1, 2, 8, 9, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3:
            del buf[i : i + rng.randint(1, 8)]
        elif op == 4:
            del buf[i:]
        else:  # splice: repeat a slice of the input elsewhere (reordering / duplicated frames)
            j = rng.randrange(len(buf))
            buf[j:j] = buf[i : i + rng.randint(1, 24)]
    return bytes(buf[:max_len])


def run_random(runs: int, seed: int, max_len: int) -> None:
    rng = random.Random(seed)
    corpus = seeds()
    for n in range(runs):
        if n % 8 == 0:
            data = rng.randbytes(rng.randint(0, 64))
        else:
            data = mutate(rng, rng.choice(corpus), max_len)
            if len(corpus) < 2000 and n % 97 == 0:
                corpus.append(data)  # let mutations compound, bounded
        check_one(data)


def _instrument(atheris: Any, module: types.ModuleType) -> int:
    """Add coverage instrumentation to the functions and methods defined in ``module``.

    The modules are already imported (check_one uses them), so instrument_imports()
    would see nothing; instrument_func patches each code object in place instead.
    """
    n = 0
    for obj in list(vars(module).values()):
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        targets = [obj] if isinstance(obj, types.FunctionType) else []
        if isinstance(obj, type):
            for attr in vars(obj).values():
                if isinstance(attr, property):
                    attr = attr.fget
                if isinstance(attr, (staticmethod, classmethod)):
                    attr = attr.__func__
                if isinstance(attr, types.FunctionType):
                    targets.append(attr)
        for fn in targets:
            atheris.instrument_func(fn)
            n += 1
    return n


def run_atheris(runs: int, seed: int, max_len: int, corpus_dir: str) -> None:
    import atheris

    from tcpdispatch.protocol import connection, frames, states

    n = sum(_instrument(atheris, m) for m in (connection, frames, states, sys.modules[__name__]))
    print(f"fuzz_codec: instrumented {n} functions", file=sys.stderr)

    # libFuzzer exits the process without running Python's atexit, so the corpus lives in
    # one reused directory (libFuzzer keeps it small: only inputs with new coverage).
    os.makedirs(corpus_dir, exist_ok=True)
    for i, s in enumerate(seeds()):
        with open(os.path.join(corpus_dir, f"seed{i}"), "wb") as fh:
            fh.write(s)
    done = {"reported": False}
    t0 = time.monotonic()

    def one(data: bytes) -> None:
        check_one(data)
        if _count >= runs and not done["reported"]:
            done["reported"] = True
            _report("atheris", time.monotonic() - t0)

    argv = [
        sys.argv[0],
        f"-runs={runs}",
        f"-seed={seed}",
        f"-max_len={max_len}",
        "-print_final_stats=0",
        f"-artifact_prefix={corpus_dir}/",
        corpus_dir,
    ]
    atheris.Setup(argv, one)
    atheris.Fuzz()  # exits the process when done


def _report(engine: str, elapsed: float) -> None:
    rate = _count / elapsed if elapsed else 0.0
    print(
        f"fuzz_codec: {_count} inputs run, 0 findings, {elapsed:.1f} s ({rate:,.0f}/s), "
        f"engine={engine}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz the tcpdispatch codec and Connection.")
    ap.add_argument("--runs", type=int, default=1_000_000, help="inputs to run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument(
        "--max-len",
        type=int,
        default=1024,
        help="longest input in bytes (a few frames reach every state)",
    )
    ap.add_argument(
        "--corpus",
        default=os.path.join(tempfile.gettempdir(), f"tcpdispatch-fuzz-corpus-{os.getuid()}"),
        help="atheris corpus directory (seeded with valid sessions, then grown)",
    )
    args = ap.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            print("atheris is not installed: using the random-mutation loop", file=sys.stderr)
            engine = "random"
    if engine == "atheris":
        run_atheris(args.runs, args.seed, args.max_len, args.corpus)
        return 0
    t0 = time.monotonic()
    run_random(args.runs, args.seed, args.max_len)
    _report("random", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
