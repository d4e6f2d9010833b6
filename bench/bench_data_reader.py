"""DATA read in pieces (gateway/mail/data_reader.py) against aiosmtpd's line loop: CPU
of the receiving process per message, both in one run.

    python bench/bench_data_reader.py [--messages 3000] [--rounds 3]

This process runs two SMTP servers (aiosmtpd's SMTP, and the same with the gateway's
DATA), each with a handler that only answers 250; a client in a separate process sends
the shared yardstick's ~8 KB multipart marketing message (its smtp_load.py) over one
connection to each in turn. Printed: server CPU per message for each and their ratio."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mail.test_data_reader import Pieces, Plain  # noqa: E402 - the equivalence test's pair

CLIENT = textwrap.dedent('''
    import smtplib, sys
    sys.path.insert(0, sys.argv[3])
    from smtp_load import build_message  # the shared yardstick's 8 KB marketing message
    port, n = int(sys.argv[1]), int(sys.argv[2])
    raw = build_message(["jane@example.com"], 0)
    with smtplib.SMTP("127.0.0.1", port) as c:
        c.ehlo()
        for _ in range(n):
            c.sendmail("news@acme.test", ["jane@example.com"], raw)
''')
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"



class Null:
    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        return "250 OK"


async def serve(server_class, messages: int) -> float:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: server_class(Null(), data_size_limit=26_214_400, decode_data=False,
                             enable_SMTPUTF8=True, hostname="gw.test", loop=loop),
        "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.process_time()
    client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, str(port),
                                                  str(messages), str(SHARED))
    if await client.wait() != 0:
        raise SystemExit("the client failed; see above")
    used = time.process_time() - started
    server.close()
    await server.wait_closed()
    return used * 1000 / messages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    got: dict[str, list[float]] = {"lines (aiosmtpd)": [], "pieces (gateway)": []}
    for i in range(args.rounds):
        order = [("lines (aiosmtpd)", Plain), ("pieces (gateway)", Pieces)]
        for name, cls in (order if i % 2 == 0 else order[::-1]):
            got[name].append(asyncio.run(serve(cls, args.messages)))
            print(f"round {i + 1} {name}: {got[name][-1]:.3f} ms CPU per message", flush=True)
    lines = statistics.median(got["lines (aiosmtpd)"])
    pieces = statistics.median(got["pieces (gateway)"])
    print(f"median: lines {lines:.3f} ms, pieces {pieces:.3f} ms per message; "
          f"pieces/lines {pieces / lines:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
