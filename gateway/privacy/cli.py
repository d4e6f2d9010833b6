"""`gateway erase`: the CLI side of erasure (docs/privacy.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ValidationError

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(sub, common) -> None:
    """The `erase` subcommand."""
    erase = sub.add_parser("erase", parents=[common],
                           help="erase a person; they stay suppressed (docs/privacy.md)")
    erase.add_argument("address")
    erase.add_argument("--channel", choices=["email", "sms"], required=True)
    erase.add_argument("--org", required=True, help='org id, or "*" for every org')
    erase.add_argument("--source", required=True,
                       help="who asked and how (kept; must not contain the address)")
    erase.add_argument("--json", action="store_true")
    erase.set_defaults(fn=cmd_erase)


def local_spools(data_dir: Path) -> tuple[list, list[str]]:
    """The spools in data_dir this process can open, and the names of those a running
    gateway holds (it drops their copies for an erased person before delivery)."""
    from ..ledger.spool import Spool, SpoolBusy

    opened, busy = [], []
    for path in sorted(Path(data_dir).glob("spool*.db")):
        try:
            opened.append(Spool(data_dir, path.name))
        except SpoolBusy:
            busy.append(path.name)
    return opened, busy


def cmd_erase(args) -> int:
    from .. import config
    from ..consent import ConsentService
    from ..ledger import open_ledger
    from ..ledger.deferred import DeferredTexts
    from ..ledger.pending import PendingOptOuts
    from .erasure import Erasures, parse_erasure

    settings = config.load(args.config)
    regions = {o.id: o.default_region for o in settings.orgs.values()}
    try:
        wanted = parse_erasure({"channel": args.channel, "address": args.address,
                                "org": args.org, "source": args.source}, regions)
    except ValidationError as exc:
        for name, problem in exc.fields.items():
            print(f"error: {name}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    spools, busy = local_spools(settings.gateway.data_dir)
    texts = DeferredTexts(settings.gateway.data_dir)  # shared with a running gateway (SQLite)
    kept = PendingOptOuts(settings.gateway.data_dir)  # so are the opt-outs kept in an outage
    try:
        answer = Erasures(ledger, ConsentService(settings, ledger), lambda: spools,
                          lambda: texts, lambda: kept).erase(wanted)
    finally:
        kept.close()
        texts.close()
        for spool in spools:
            spool.close()
        ledger.close()
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        removed = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in answer["removed"].items())
        state = "recorded" if answer["new"] else "already recorded, nothing left to remove"
        print(f"erasure #{answer['erasure_id']} {state}: org {wanted.org} channel "
              f"{wanted.channel}; removed {removed}")
    if busy:
        print(f"note: {', '.join(busy)} is held by a running gateway: it drops this person's "
              "waiting copies before delivering them", file=sys.stderr)
    return EXIT_OK
