"""What reading AMI costs the controller: µs of CPU per message, panoramisk's reader and ours.

Why: issue 10 asks for the controller's CPU per call. Every AMI event Asterisk
sends is framed, parsed and dispatched by the controller whether it needs the
event or not; ``asterisk-conf/manager.conf``'s event filter cuts what comes
(one call: 29 events of the read classes without it, 4 with it, measured by
``pytest -m asterisk -s -k AmiEventFilter``), and issue 9's guard in
``ari_handlers/ami_client._Protocol`` (repeated routing headers, a 1 MiB cap)
adds a little work to each message that still comes. This shows both.

The messages are the real Asterisk 22 events of ``tests/traces/`` (every
event of trace 03, a whole call with an agent, read with ``read = all``),
fed in 4 KiB reads to the protocol as a socket would, with the controller's
three event handlers registered (their log lines silenced: that is the log's
cost, measured elsewhere). Figures: CPU µs per message
(``time.process_time``), best of ``--repeat`` runs, for panoramisk 1.4's
``AMIProtocol`` and for ours; then the AMI reading cost of one call without
and with the filter.

    .venv/bin/python bench/ami_reader.py
    .venv/bin/python bench/ami_reader.py --messages 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog  # noqa: E402
from panoramisk.ami_protocol import AMIProtocol  # type: ignore[import-untyped]  # noqa: E402

from ari_handlers.ami_client import AgentPhones, _Protocol  # noqa: E402

TRACE = ROOT / "tests" / "traces" / "03-agent-hangs-up-first.jsonl"
#: AMI events of one call on the liyi account (read = system,call), Asterisk 22.10.1.
EVENTS_PER_CALL = {"without the filter": 29, "with the filter": 4}


def trace_messages() -> list[bytes]:
    """Every AMI event of the trace, as Asterisk wrote it."""
    out = []
    for line in TRACE.read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "ami_event":
            out.append(("".join(f"{k}: {v}\r\n" for k, v in row["event"].items()) + "\r\n").encode())
    return out


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        raise AssertionError("the reader dropped the connection")

    close = abort


async def cpu_per_message(protocol_class: Any, stream: bytes, count: int) -> float:
    """CPU µs per message to read ``stream`` (``count`` messages) in 4 KiB reads."""
    phones = AgentPhones(host="127.0.0.1", port=1, username="liyi", secret="x",
                         endpoints=["agent1", "agent2"], on_change=lambda _s: None)
    manager = phones._new_manager(asyncio.get_running_loop())
    protocol = protocol_class()
    protocol.connection_made(_Transport())
    protocol.factory, protocol.encoding = manager, "utf8"
    protocol.log.disabled = True
    manager.protocol, manager.responses = protocol, protocol.responses
    started = time.process_time()
    for at in range(0, len(stream), 4096):
        protocol.data_received(stream[at:at + 4096])
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    # The reader alone: the phone-state log lines it causes are the log's cost, not AMI's.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    real = trace_messages()
    messages = [real[i % len(real)] for i in range(args.messages)]
    stream = b"".join(messages)
    print(f"{args.messages} AMI messages from {TRACE.name} ({len(stream) / len(messages):.0f} bytes each on average)")
    results = {}
    for name, cls in (("panoramisk AMIProtocol", AMIProtocol), ("liyi _Protocol (guarded)", _Protocol)):
        best = min(asyncio.run(cpu_per_message(cls, stream, len(messages))) for _ in range(args.repeat))
        results[name] = best
        print(f"  {name:28s} {best:6.1f} µs CPU per message")
    ours = results["liyi _Protocol (guarded)"]
    print("AMI reading per call (ours):")
    for label, n in EVENTS_PER_CALL.items():
        print(f"  {label:20s} {n:3d} events  {n * ours / 1000:.2f} ms CPU")


if __name__ == "__main__":
    main()
