"""The `gateway` command: run, check, consent import, optout, erase, audit, demo."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from . import config as config_mod
from . import eventloop
from .addresses import guess_channel, normalise
from .consent import classify
from .errors import ConfigError, GatewayError, InvalidAddress
from .ledger import SchemaMismatch, open_ledger
from .ledger.export import trail_csv
from .policy.reasons import MEANING

EXIT_OK, EXIT_BLOCKED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def _settings(args) -> config_mod.Settings:
    return config_mod.load(args.config)


def _regions(settings) -> dict[str, str]:
    return {o.id: o.default_region for o in settings.orgs.values()}


def _normalise(settings, channel: str, address: str, org: str | None) -> str:
    region = settings.orgs[org].default_region if org in settings.orgs else "GB"
    return normalise(channel, address, region)


def ledger_location(settings) -> str:
    """Where the ledger is, as `gateway run` says it: a path, or the URL without its
    password."""
    url = settings.ledger.url
    if settings.ledger.postgres:
        from .ledger.postgres import redact
        return f"PostgreSQL {redact(url)}"
    return str(url.removeprefix("sqlite:///") if url else settings.gateway.data_dir / "ledger.db")


def cmd_run(args) -> int:
    from . import logs
    from .ledger.spool import SpoolBusy

    settings = _settings(args)
    logs.setup(args.log_level)
    loop = eventloop.check(settings.gateway.event_loop)  # ConfigError when unavailable

    def describe(processes: int, smtp: bool = True) -> None:
        s = settings
        print(f"consent gateway {s.gateway.mode} mode, rule set {s.gateway.ruleset}")
        print(f"  config:   {s.path or 'built-in defaults'}")
        for org in s.orgs.values():  # these orgs choose per recipient (docs/rulesets.md)
            if org.rulesets:
                print(f"  org {org.id}: rule set per recipient: " + ", ".join(
                    f"{key} -> {name}" for key, name in org.rulesets.items()))
        print(f"  data:     {s.gateway.data_dir}")
        print(f"  ledger:   {ledger_location(s)}")
        print(f"  loop:     {loop}")
        print(f"  http:     {s.http.listen}  (public URL {s.http.public_url})")
        if smtp:
            print(f"  smtp:     {s.smtp.listen}")
        print(f"  email to: {s.delivery.upstream.split('@')[-1]}")
        print(f"  texts to: {s.sms.provider}"
              + (f" ({s.sms.outbox})" if s.sms.provider == "outbox" else ""))
        if processes > 1:
            print(f"  workers:  {processes} processes")
        sys.stdout.flush()

    try:
        if settings.gateway.processes > 1:
            from . import supervisor  # before anything imports prometheus_client

            return supervisor.run(settings, describe)

        from . import server

        def ready(running) -> None:
            describe(1, "smtp" in running.runtime.health_probes or bool(running.stops))

        eventloop.run(server.serve(settings, ready), settings.gateway.event_loop)
    except SpoolBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(f"error: cannot listen: {exc}; is another gateway or program using the "
              "port? See [smtp] listen and [http] listen", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_OK


def cmd_check(args) -> int:
    from .consent import ConsentService

    settings = _settings(args)
    if args.org not in settings.orgs:
        print(f"error: unknown org {args.org!r}; known: {', '.join(settings.orgs)}",
              file=sys.stderr)
        return EXIT_USAGE
    channel = args.channel or guess_channel(args.address)
    address = _normalise(settings, channel, args.address, args.org)
    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    try:
        service = ConsentService(settings, ledger)
        stream = next((s for s in settings.streams if s.org == args.org), None)
        c = classify(stream, args.purpose, args.nature, args.category)
        c = type(c)(args.org, None, c.purpose, c.nature, c.category)
        try:
            region, at = check_region_and_time(args.region, args.at)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        decision = service.evaluate(c, channel, address, region=region, at=at)
        evidence = [e for e in ledger.evidence_for(address, channel, args.org)
                    if decision.evidence_id and e.id == decision.evidence_id]
    finally:
        ledger.close()
    result = {
        "address": address, "org": args.org, "channel": channel, "purpose": c.purpose,
        "nature": c.nature, "category": c.category, "allowed": decision.allowed,
        "reason": decision.reason, "explanation": decision.explanation,
        "ruleset": decision.ruleset, "evidence_id": decision.evidence_id,
        "evidence": [_evidence_json(e) for e in evidence],
        "outcome": decision.outcome, "region": decision.region or None,
        "region_source": decision.region_source or None, "meaning": MEANING[decision.reason],
    }
    if decision.deferred:
        result["send_at"] = decision.send_at.isoformat()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        verdict = ("DEFER" if decision.deferred else "ALLOW" if decision.allowed
                   else "BLOCK")
        print(f"{verdict} {decision.reason}: {decision.explanation}")
        print(f"  ({decision.reason}: {MEANING[decision.reason]})")
        print(f"  {channel} {address} · org {args.org} · {c.purpose}/{c.nature}"
              f" · category {c.category or '-'} · rule set {decision.ruleset}"
              + (f" · region {decision.region} from {decision.region_source}"
                 if decision.region else ""))
        if decision.deferred:
            print(f"  would be sent at {decision.send_at.isoformat()}")
        for e in evidence:
            print(f"  relied on evidence #{e.id}: {e.basis} obtained {e.obtained_at.isoformat()}"
                  f" source {e.source!r}")
    # A deferred text will go: not a block.
    return EXIT_OK if decision.allowed or decision.deferred else EXIT_BLOCKED


def check_region_and_time(region: str | None, at: str | None):
    """`--region CC` and `--at TIME` of `gateway check`, validated."""
    from .evidence import parse_time
    from .policy.regions import country_code

    try:
        code = country_code(region) if region is not None else None
    except ValueError as exc:
        raise ValueError(f"--region {exc}") from None
    return code, parse_time(at) if at is not None else None


def _evidence_json(e) -> dict:
    return {"id": e.id, "basis": e.basis, "obtained_at": e.obtained_at.isoformat(),
            "source": e.source, "categories": list(e.categories), "context": e.context,
            "collected_by": e.collected_by, "opt_out_offered": e.opt_out_offered,
            "named_orgs": list(e.named_orgs), "region": e.region,
            "relationship": e.relationship,
            "relationship_ended_at": _iso(e.relationship_ended_at), "written": e.written,
            "confirmed_at": _iso(e.confirmed_at)}


def _iso(when) -> str | None:
    return None if when is None else when.isoformat()


def cmd_import(args) -> int:
    from tqdm import tqdm

    from .importer import ImportFileError, count_lines, import_csv

    settings = _settings(args)
    if args.org and args.org not in settings.orgs:
        print(f"error: unknown org {args.org!r}", file=sys.stderr)
        return EXIT_USAGE
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    bar = tqdm(total=max(count_lines(path) - 1, 0), unit="rows", file=sys.stderr,
               disable=args.quiet or None, mininterval=0.5)
    done = [0]

    def progress(line: int) -> None:
        bar.update(line - 1 - done[0])
        done[0] = line - 1

    try:
        report = import_csv(path, ledger, _regions(settings), org=args.org, on_progress=progress)
    except ImportFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        bar.close()
        ledger.close()
    for line, reason in report.bad[: args.max_errors]:
        print(f"{path}:{line}: rejected: {reason}", file=sys.stderr)
    if report.rejected > args.max_errors:
        print(f"... and {report.rejected - args.max_errors} more rejected rows", file=sys.stderr)
    print(f"imported {report.stored} record(s), rejected {report.rejected} row(s) from {path}")
    return EXIT_OK if report.rejected == 0 else EXIT_BLOCKED


def cmd_optout(args) -> int:
    settings = _settings(args)
    if args.org != "*" and args.org not in settings.orgs:
        print(f"error: unknown org {args.org!r}", file=sys.stderr)
        return EXIT_USAGE
    channel = args.channel
    kind = channel if channel in ("email", "sms") else guess_channel(args.address)
    address = _normalise(settings, kind, args.address, args.org)
    from .consent import ConsentService
    from .optouts import OptOutRequest, OptOuts

    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    try:
        done = OptOuts(ledger, ConsentService(settings, ledger), None, None).record(
            OptOutRequest(args.org, channel, address, source=args.source, method="cli"))
    finally:
        ledger.close()
    opt_id = done.id
    print(f"opt-out #{opt_id} recorded: {address} org {args.org} channel {channel}")
    return EXIT_OK


def cmd_audit(args) -> int:
    settings = _settings(args)
    channel = guess_channel(args.address)
    address = _normalise(settings, channel, args.address, args.org)
    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    try:
        trail = ledger.trail(address, args.org)
        from .privacy.suppression import load_key  # an erased person: only the erasure
        trail["erasures"] = ledger.erasures_for(load_key(settings, ledger).of(channel, address),
                                                args.org)
    finally:
        ledger.close()
    if args.format == "csv":
        sys.stdout.write(trail_csv(trail))
    else:
        print(json.dumps(trail, indent=2, default=str))
    return EXIT_OK


def cmd_migrate(args) -> int:
    """Create or upgrade the ledger's schema; say what was done."""
    settings = _settings(args)
    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir, upgrade=True)
    try:
        where = getattr(ledger, "where", None) or str(ledger.path)
        if not ledger.applied:
            print(f"ledger at {where}: schema version {ledger.schema_version()}, up to date")
        for m in ledger.applied:
            print(f"applied {m.version:04d}_{m.name}")
        if ledger.applied:
            print(f"ledger at {where}: schema version {ledger.schema_version()}")
    finally:
        ledger.close()
    return EXIT_OK


def cmd_ledger_copy(args) -> int:
    """Copy the configured SQLite ledger into an empty PostgreSQL one."""
    from tqdm import tqdm

    from .ledger.postgres import PostgresLedger, redact
    from .ledger.queries import TABLES
    from .ledger.store import Ledger
    from .ledger.transfer import copy_ledger, count

    settings = _settings(args)
    if not args.to.startswith(("postgresql:", "postgres:")):
        print("error: --to must be a PostgreSQL URL (postgresql://…)", file=sys.stderr)
        return EXIT_USAGE
    source = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    if not isinstance(source, Ledger):
        print("error: the configured ledger is not SQLite; copy from an SQLite ledger",
              file=sys.stderr)
        source.close()
        return EXIT_USAGE
    target = PostgresLedger(args.to, upgrade=True)
    try:
        total = sum(count(source, t) for t in TABLES)
        bars: list = []  # shown once copying starts (a refused target shows none)

        def progress(table: str, n: int) -> None:
            if not bars:
                bars.append(tqdm(total=total, unit="rec", disable=args.quiet, file=sys.stderr))
            bars[0].update(n)
        try:
            copied = copy_ledger(source, target, progress)
        finally:
            for bar in bars:
                bar.close()
    finally:
        source.close()
        target.close()
    for table, n in copied.items():
        print(f"{table}: {n}")
    print(f"copied {sum(copied.values())} records from {source.path} to {redact(args.to)}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="TOML file (default ./config.toml, else built-ins)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="start SMTP, HTTP and delivery")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(fn=cmd_run)

    check = sub.add_parser("check", parents=[common], help="decide for one address")
    check.add_argument("address")
    check.add_argument("--org", required=True)
    check.add_argument("--channel", choices=["email", "sms"])
    check.add_argument("--category")
    check.add_argument("--purpose", choices=["marketing", "service"], default="marketing")
    check.add_argument("--nature", choices=["commercial", "campaigning"])
    check.add_argument("--json", action="store_true")
    check.add_argument("--region", metavar="CC", help="decide as if the person's region "
                       "were CC (ISO 3166-1 alpha-2)")
    check.add_argument("--at", metavar="TIME", help="decide as at TIME (ISO 8601 with zone)")
    check.set_defaults(fn=cmd_check)

    consent = sub.add_parser("consent", help="evidence records")
    csub = consent.add_subparsers(dest="consent_command", required=True)
    imp = csub.add_parser("import", parents=[common], help="bulk-load evidence from CSV")
    imp.add_argument("file")
    imp.add_argument("--org", help="org for rows without an org column/value")
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.add_argument("--max-errors", type=int, default=100, help="bad rows listed (default 100)")
    imp.set_defaults(fn=cmd_import)

    opt = sub.add_parser("optout", parents=[common], help="record an opt-out")
    opt.add_argument("address")
    opt.add_argument("--org", required=True, help='org id, or "*" for every org')
    opt.add_argument("--channel", choices=["email", "sms", "all"], default="all")
    opt.add_argument("--source", default="recorded by operator with gateway optout")
    opt.set_defaults(fn=cmd_optout)

    audit = sub.add_parser("audit", parents=[common], help="a person's whole evidence trail")
    audit.add_argument("address")
    audit.add_argument("--org")
    audit.add_argument("--format", choices=["json", "csv"], default="json")
    audit.set_defaults(fn=cmd_audit)

    from .privacy.cli import add_parser as add_erase_parser  # gateway erase (docs/privacy.md)
    add_erase_parser(sub, common)

    mig = sub.add_parser("migrate", parents=[common], help="create or upgrade the ledger schema")
    mig.set_defaults(fn=cmd_migrate)

    ledger = sub.add_parser("ledger", help="the ledger as a whole")
    lsub = ledger.add_subparsers(dest="ledger_command", required=True)
    copy = lsub.add_parser("copy", parents=[common],
                           help="copy the SQLite ledger into an empty PostgreSQL ledger")
    copy.add_argument("--to", required=True, metavar="URL", help="postgresql://…")
    copy.add_argument("--quiet", action="store_true", help="no progress bar")
    copy.set_defaults(fn=cmd_ledger_copy)

    demo = sub.add_parser("demo", parents=[common], help="a self-contained guided tour")
    demo.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    demo.add_argument("--ledger", metavar="URL",
                      help="an empty PostgreSQL database for the ledger (postgresql://…)")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, SchemaMismatch) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except InvalidAddress as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
