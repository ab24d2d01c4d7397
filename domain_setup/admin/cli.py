"""`python -m domain_setup COMMAND`: the hospital admin's command line.

Every command takes ``--state-dir`` (default ``$PNEUMOSYFT_STATE_DIR`` or ``./state``).
``start`` runs the domain; every other command talks to it over HTTP with the
admin token the domain wrote into its state directory. Each command is a thin
layer over `AdminClient`. Errors print one line (``error: ...``) and exit 1.
"""

from __future__ import annotations

import argparse
import errno
import json
import sqlite3
import sys
from typing import Any, Callable

from common.errors import PneumoSyftError
from domain_setup import operating_limits
from domain_setup.admin.client import AdminClient
from domain_setup.exposure import check_exposure
from domain_setup.policy.roles import ROLES
from domain_setup.state import StateDir, resolve_state_dir


def _print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def os_error_line(exc: Exception) -> str:
    """One line for an error of the machine (OSError, SQLite's), without a traceback."""
    if getattr(exc, "errno", None) == errno.ENOSPC or "database or disk is full" in str(exc):
        return "the disk is full: nothing was written (free space in the state directory)"
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return " ".join(f"{getattr(exc, 'strerror', None) or exc}{where}".split())


# the registered data sources (`datasets.xray.sources.source_usages()`), written out: the
# registry imports numpy, 75 ms on every CLI command; tests/test_registries.py keeps it true
UPLOAD_SOURCES = "synthetic | pneumoniamnist:PATH | folder:PATH | dicom:PATH"


# -- commands -----------------------------------------------------------------------
def cmd_start(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin import lifecycle

    config = lifecycle.resolve_config(
        state, name=args.name, port=args.port, host=args.host, db_url=args.db_url,
        policies=args.policies, admin_email=args.admin_email, jwt_algorithm=args.jwt_algorithm,
        operating=operating_limits.from_args(args), insecure_http=args.insecure_http,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_self_signed=args.tls_self_signed)
    warning = check_exposure(config)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.foreground:
        from domain_setup.server.app import serve

        state.create_dirs()
        state.save_config(config)
        serve(state)
        return 0
    lifecycle.start(state, config)
    print(f"domain {config.name!r} is up at {config.url}")
    from domain_setup.tls_certificate import fingerprint

    pin = fingerprint(config)
    if pin:
        print(f"  TLS:   SHA-256 fingerprint {pin}")
    print(f"  admin: {config.admin_email} (password in {state.admin_password_path})")
    print(f"  next:  python -m domain_setup upload synthetic --name xray --state-dir {state.root}")
    return 0


def cmd_stop(args: argparse.Namespace, state: StateDir) -> int:
    name = state.load_config().name
    print(f"stopped {name!r}" if AdminClient(state).stop() else f"{name!r} was not running")
    return 0


def cmd_status(args: argparse.Namespace, state: StateDir) -> int:
    info = AdminClient(state).status()
    if args.json:
        print(json.dumps(info))
    else:
        health = "healthy" if info["healthy"] else "not answering"
        if info["problems"]:
            health = "degraded: " + "; ".join(info["problems"])
        where = f"pid {info['pid']}, {health}" if info["running"] else "not running"
        print(f"{info['name']} at {info['url']}: {where}; database {info['database']}")
    return 0 if info["healthy"] else 3


def cmd_service(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin.service import ServiceUnit

    unit = ServiceUnit.of(user=args.user, state_dir=state.root, host=args.host, port=args.port,
                          start_args=args.start_args)
    build_parser().parse_args(["start", *unit.start_args])  # start's own checks, as it will
    for problem in unit.problems():
        print(f"warning: {problem}", file=sys.stderr)
    if args.write:
        print(f"wrote {unit.write(args.write)}")
    else:
        print(unit.render(), end="")
    return 0


def cmd_upload(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin.upload import parse_partition

    report = AdminClient(state).upload(args.source, args.name, size=args.size, n=args.n,
                                       seed=args.seed, replace=args.replace,
                                       partition=parse_partition(args.partition),
                                       label_skew=args.label_skew,
                                       progress=not args.no_progress)
    card = report.card
    print(f"uploaded {report.name!r}: {card.get('summary', '')}")
    print(f"  {report.n_bytes / 1e6:.1f} MB in {report.seconds:.1f} s "
          f"({report.megabytes_per_second:.1f} MB/s)")
    return 0


def cmd_accounts_apply(args: argparse.Namespace, state: StateDir) -> int:
    rows = AdminClient(state).apply_accounts(args.file)
    _print_table(rows, ["email", "role", "result"])
    if any(r["result"] == "created" for r in rows):
        print(f"generated passwords are in {state.account_passwords_path} (0600)")
    return 0


def cmd_token_issue(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin.researcher_file import write_researcher_file

    admin = AdminClient(state)
    token, claims = admin.issue_token(args.email, role=args.role, ttl=args.ttl)
    if args.write_connection:
        path = write_researcher_file(args.write_connection, state, admin.url, args.email, token)
        print(f"wrote {path} (0600): url, email, password and token for {args.email}")
    else:
        print(token)
    print(f"jti {claims['jti']}, role {claims['role']}, expires at {claims['exp']}",
          file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace, state: StateDir) -> int:
    _print_table(AdminClient(state).tokens(), ["jti", "sub", "role", "exp", "revoked"])
    return 0


def cmd_token_revoke(args: argparse.Namespace, state: StateDir) -> int:
    record = AdminClient(state).revoke_token(args.jti, reason=args.reason or "")
    print(f"revoked {record['jti']} ({record['sub']})")
    return 0


def _on_terminal(text: str) -> str:
    """A researcher's text as it may be written on the admin's terminal: no control or
    format characters (escape sequences, bidi overrides) reach it."""
    import unicodedata

    return "".join(c if unicodedata.category(c)[0] != "C" else f"\\u{ord(c):04x}" for c in text)


def _print_summary(summary: Any, *, with_code: bool) -> None:
    print(f"request   {summary.id}")
    print(f"from      {summary.requester}")
    print(f"function  {summary.function}")
    print(f"status    {summary.status}   submitted {summary.created}")
    print(f"reason    {_on_terminal(summary.reason)}")
    for kwarg, name in summary.inputs.items():
        print(f"input     {kwarg} <- {name}")
    for kwarg, value in summary.constants.items():
        print(f"constant  {kwarg} = {value}")
    verdict = summary.verdict
    print(f"verdict   {verdict.headline}" + ("" if verdict.kind == "vetted" else
                                             "; approve only with --override --reason"))
    for reason in verdict.reasons + [f"linter: {note}" for note in verdict.notes]:
        print(f"  - {reason}")
    print(f"sandbox   {summary.limits}")
    print(f"returns   {summary.returns}")
    for name, bound, why in summary.releases:
        print(f"releases  {name} [{bound}]: {why}")
    if summary.round and "job" in summary.round:
        strategy = summary.round.get("strategy") or {}
        print(f"job       {summary.round['job']}: up to {summary.round['rounds']} rounds of "
              f"{strategy.get('name', '?')}, parties {', '.join(summary.round['parties'])}")
    elif summary.round:
        print(f"round     {summary.round['round']}: parties "
              f"{', '.join(summary.round['parties'])}")
    quote = summary.privacy or {}
    if "spent_after" in quote:
        releases = quote.get("releases", 1)
        asked = (f"ε {quote['epsilon']:g} per round, {releases} rounds" if releases > 1
                 else f"ε {quote['epsilon']:g}")
        after = "every round" if releases > 1 else "this release"
        print(f"privacy   {asked} at δ {quote['delta']:g} on {quote['dataset']}; "
              f"{summary.requester} has spent {quote['spent']:.2f} of {quote['budget']:g}, "
              f"{quote['spent_after']:.2f} after {after} ({quote['left_after']:.2f} left)")
    if with_code:
        print("code:")
        for number, line in enumerate(summary.code.splitlines(), 1):
            print(f"  {number:3d} | {line}")


def _review_auto(admin: AdminClient, approve_compliant: bool, watch: float | None) -> None:
    """One pass over the pending requests; with `watch`, a pass every `watch` seconds until
    interrupted (an admin desk that decides what the rules decide as requests arrive)."""
    import time

    if watch is not None and not 0.5 <= watch <= 3600:
        raise PneumoSyftError("--watch takes 0.5 to 3600 seconds between passes")
    while True:
        for summary, outcome in admin.auto_review(approve_compliant=approve_compliant):
            print(f"{summary.id}  {summary.function}  {outcome}", flush=True)
        if watch is None:
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


def cmd_review(args: argparse.Namespace, state: StateDir) -> int:
    admin = AdminClient(state)
    if args.review_command == "list":
        rows = [{"id": s.id, "from": s.requester, "function": s.function, "status": s.status,
                 "verdict": "ok" if s.verdict_ok else f"{len(s.verdict_reasons)} violation(s)"}
                for s in admin.requests(pending_only=not args.all)]
        _print_table(rows, ["id", "from", "function", "status", "verdict"])
    elif args.review_command == "show":
        _print_summary(admin.show(args.id), with_code=True)
    elif args.review_command == "approve":
        summary = admin.approve(args.id, override=args.override, reason=args.reason or "")
        print(f"approved {summary.id} ({summary.function} from {summary.requester})")
    elif args.review_command == "deny":
        summary = admin.deny(args.id, reason=args.reason)
        print(f"denied {summary.id} ({summary.function} from {summary.requester})")
    elif args.review_command == "auto":
        _review_auto(admin, args.approve_compliant, args.watch)
    return 0


def cmd_federation_enable(args: argparse.Namespace, state: StateDir) -> int:
    print(f"aggregation public key: {AdminClient(state).enable_federation()}")
    return 0


def cmd_federation_card(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin.federation_card import key_id
    from common.secure_files import write_bytes_atomic

    card = AdminClient(state).federation_card(url=args.url)
    text = json.dumps(card, indent=2) + "\n"
    if args.write:
        write_bytes_atomic(args.write, text.encode(), mode=0o644)
        print(f"wrote {args.write}", file=sys.stderr)
    else:
        print(text, end="")
    print(f"card of {card['name']!r} at {card['url']}, key id {key_id(card)}: read the key id "
          "to the other hospital's admin when they add it", file=sys.stderr)
    return 0


def cmd_federation_members(args: argparse.Namespace, state: StateDir) -> int:
    admin = AdminClient(state)
    if args.members_command == "add" and not (args.url or args.public_key):
        from domain_setup.admin.federation_card import key_id

        card, members = admin.add_federation_card(args.name)
        print(f"added {card['name']!r} at {card['url']} from its card (signature verified; "
              f"key id {key_id(card)}: compare it with their admin)")
    elif args.members_command == "add":
        if not (args.url and args.public_key):
            raise PneumoSyftError("add a member from its card file, or give both --url and "
                                  "--public-key")
        members = admin.add_federation_member(args.name, url=args.url,
                                              public_key=args.public_key)
    elif args.members_command == "remove":
        members = admin.remove_federation_member(args.name)
    else:
        members = admin.federation_members()
    _print_table([{**m, "tls": "pinned" if m.get("tls_fingerprint") else "-",
                   "card": "signed" if m.get("signing_key") else "-"} for m in members],
                 ["name", "url", "public_key", "tls", "card"])
    return 0


def cmd_jobs(args: argparse.Namespace, state: StateDir) -> int:
    admin = AdminClient(state)
    if args.jobs_command == "stop":
        jobs = [admin.stop_job(args.id, reason=args.reason)]
        print(f"job {jobs[0]['job_id']} stops at its next round")
    else:
        jobs = admin.jobs()
    _print_table(jobs, ["request_id", "job_id", "requester", "kind", "round", "rounds", "state",
                        "reason"])
    return 0


def cmd_policies(args: argparse.Namespace, state: StateDir) -> int:
    admin = AdminClient(state)
    snapshot = admin.reload_policies() if args.policies_command == "reload" else admin.policies()
    verb = "in force now" if args.policies_command == "reload" else "in force"
    print(f"policies {verb}: {snapshot['directory']} (sha256 {snapshot['digest'][:16]}, "
          f"loaded {snapshot['loaded_at']})")
    return 0


def cmd_privacy(args: argparse.Namespace, state: StateDir) -> int:
    admin = AdminClient(state)
    if args.privacy_command == "grant":
        accounts = admin.grant_privacy(args.email, dataset=args.dataset, epsilon=args.epsilon,
                                       reason=args.reason)
        print(f"granted ε {args.epsilon:g} to {args.email} on {args.dataset}")
    elif args.privacy_command == "show":
        accounts = admin.privacy_accounts(args.email)
    else:
        accounts = admin.privacy_accounts()
    rows = [{"email": a["email"], "dataset": a["dataset"], "delta": f"{a['delta']:g}",
             "spent": f"{a['spent']:.2f}", "sum": f"{a['spent_sum']:.2f}",
             "budget": f"{a['budget']:g}", "left": f"{a['left']:.2f}",
             "releases": a["releases"]} for a in accounts]
    _print_table(rows, ["email", "dataset", "delta", "spent", "sum", "budget", "left",
                        "releases"])
    if args.privacy_command != "list":
        for account in accounts:
            for release in account.get("history", []):
                print(f"  {account['dataset']}  {release['kind']:<16}  ε {release['epsilon']:g}"
                      f"  {release['status']:<8}  request {release['request']}")
    print("spent: the RDP composition of the releases; sum: their ε added (an over-count)")
    return 0


def cmd_audit(args: argparse.Namespace, state: StateDir) -> int:
    entries = AdminClient(state).audit(since=args.since, actor=args.actor, action=args.action,
                                       limit=args.limit)
    for entry in entries:
        if args.json:
            print(json.dumps(entry))
            continue
        extra = {k: v for k, v in entry.items()
                 if k not in ("time", "actor", "action", "target", "outcome")}
        tail = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"{entry['time']}  {entry['actor']}  {entry['action']}  {entry.get('target', '')}"
              f"  {entry['outcome']}  {tail}".rstrip())
    return 0


def cmd_backup(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin.backup import backup, read_passphrase

    report = backup(state, args.to, read_passphrase(args.passphrase_file, confirm=True),
                    show_progress=not args.no_progress)
    print(f"wrote {report.path} (0600): {report.files} files, {report.n_bytes / 1e6:.1f} MB "
          f"in {report.seconds:.1f} s; sha256 {report.sha256}")
    return 0


def cmd_restore(args: argparse.Namespace, state: StateDir) -> int:
    from domain_setup.admin.backup import read_passphrase, restore

    report = restore(args.source, state, read_passphrase(args.passphrase_file, confirm=False),
                     db_url=args.db_url, show_progress=not args.no_progress)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"restored {report.manifest['domain']!r} (snapshot of {report.manifest['created']}, "
          f"{report.files} files) into {state.root} in {report.seconds:.1f} s")
    print(f"  next:  python -m domain_setup start --state-dir {state.root}")
    return 0


# -- parser -------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m domain_setup",
                                     description="Run and administer a PneumoSyft hospital domain.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help="the domain's state directory "
                        "(default: $PNEUMOSYFT_STATE_DIR or ./state)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_text: str, parent=sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = add("start", cmd_start, "start the domain (a new one, or the one in --state-dir)")
    p.add_argument("--name", help="domain name (first start)")
    p.add_argument("--port", type=int, help="TCP port")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; any other "
                   "needs TLS or --insecure-http)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM certificate "
                   "(chain); with --tls-key (kept for later starts)")
    p.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key")
    p.add_argument("--tls-self-signed", action="store_true",
                   help="serve HTTPS with a key and self-signed certificate generated into the "
                   "state dir on first start and kept (researchers pin its fingerprint)")
    p.add_argument("--insecure-http", action="store_true",
                   help="serve plain HTTP on a non-loopback --host (this start only; "
                   "loud and audited)")
    p.add_argument("--db-url", help="postgresql://USER@HOST:PORT/DB (default: SQLite in the state dir)")
    p.add_argument("--policies", help="folder with accounts/permissions/approval YAML "
                   "(default: the project's policies/)")
    p.add_argument("--admin-email", help="the root admin's email (first start)")
    p.add_argument("--jwt-algorithm", choices=["EdDSA", "RS256", "HS256"],
                   help="token signing algorithm (first start; default EdDSA)")
    operating_limits.add_arguments(p)
    p.add_argument("--foreground", action="store_true", help="run in this process")
    add("stop", cmd_stop, "stop the running domain")
    p = add("status", cmd_status, "is the domain running and answering? (exit 3 when not)")
    p.add_argument("--json", action="store_true")
    p = add("service", cmd_service, "a systemd unit running the domain as an unprivileged user "
            "of its own (the sandbox in user namespaces, its cgroups delegated)")
    output = p.add_mutually_exclusive_group(required=True)
    output.add_argument("--print-systemd", action="store_true", help="print the unit")
    output.add_argument("--write", metavar="FILE", help="write the unit to FILE (0644)")
    p.add_argument("--user", default="pneumosyft", help="the service's user (default pneumosyft)")
    p.add_argument("--host", help="start's --host")
    p.add_argument("--port", type=int, help="start's --port")
    p.add_argument("start_args", nargs=argparse.REMAINDER, metavar="-- START_OPTION",
                   help="further start options, after -- (e.g. -- --tls-self-signed)")

    p = add("upload", cmd_upload, "upload X-rays as a dataset with synthetic mocks")
    p.add_argument("source", help=UPLOAD_SOURCES + " (dicom: a folder of CR/DX files and "
                   "labels.csv; datasets/xray/dicom.py)")
    p.add_argument("--name", required=True, help="dataset name, e.g. xray")
    p.add_argument("--size", type=int, default=64, metavar="PX", help="image size (px)")
    p.add_argument("--n", type=int, default=3000, help="number of synthetic images")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator")
    p.add_argument("--replace", action="store_true", help="replace a dataset of the same name")
    p.add_argument("--partition", metavar="I/K",
                   help="keep only partition I of K (federated demos: one per hospital)")
    p.add_argument("--label-skew", type=float, metavar="ALPHA",
                   help="with --partition: Dirichlet label skew (smaller = more skewed)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it goes to stderr)")

    accounts = sub.add_parser("accounts", help="user accounts").add_subparsers(
        dest="accounts_command", required=True, metavar="ACTION")
    p = add("apply", cmd_accounts_apply, "create/update users from an accounts YAML (idempotent)",
            accounts)
    p.add_argument("file", help="e.g. policies/accounts.yaml")

    token = sub.add_parser("token", help="issue, list and revoke JWTs").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    p = add("issue", cmd_token_issue, "issue a token for an account", token)
    p.add_argument("--email", required=True)
    p.add_argument("--role", choices=ROLES,
                   help="default: the account's role")
    p.add_argument("--ttl", default="8h", help="lifetime: 30m, 8h, 2d (max 30d)")
    p.add_argument("--write-connection", metavar="FILE",
                   help="write a researcher connection file (0600) instead of printing the token")
    add("list", cmd_token_list, "list issued tokens", token)
    p = add("revoke", cmd_token_revoke, "revoke a token by its jti", token)
    p.add_argument("jti")
    p.add_argument("--reason", default="")

    review = sub.add_parser("review", help="researchers' requests").add_subparsers(
        dest="review_command", required=True, metavar="ACTION")
    p = add("list", cmd_review, "list the pending requests with their verdict", review)
    p.add_argument("--all", action="store_true",
                   help="every request, decided ones too (costs a call per request)")
    p = add("show", cmd_review, "show who asked, what code, which assets, the verdict", review)
    p.add_argument("id")
    p = add("approve", cmd_review, "approve a request", review)
    p.add_argument("id")
    p.add_argument("--override", action="store_true", help="approve despite rule violations")
    p.add_argument("--reason", help="why (required with --override)")
    p = add("deny", cmd_review, "deny a request", review)
    p.add_argument("id")
    p.add_argument("--reason", required=True)
    p = add("auto", cmd_review, "deny every pending request that violates the rules", review)
    p.add_argument("--approve-compliant", action="store_true",
                   help="also approve the pending requests that comply")
    p.add_argument("--watch", type=float, metavar="SECONDS",
                   help="keep reviewing, a pass every SECONDS, until interrupted (Ctrl-C)")

    federation = sub.add_parser("federation", help="secure aggregation").add_subparsers(
        dest="federation_command", required=True, metavar="ACTION")
    add("enable", cmd_federation_enable,
        "act as a secure-aggregation party (publishes the key asset)", federation)
    p = add("card", cmd_federation_card, "print this hospital's signed federation card (name, "
            "URL, TLS fingerprint, aggregation key) for the other hospitals' admins", federation)
    p.add_argument("--url", help="the URL the others reach this domain at (default: its own; "
                   "https:// unless all run on this machine)")
    p.add_argument("--write", metavar="FILE", help="write the card to FILE instead of stdout")
    members = federation.add_parser(
        "members", help="the hospitals secure rounds may name (audited)").add_subparsers(
        dest="members_command", required=True, metavar="ACTION")
    add("list", cmd_federation_members, "list the federation's member hospitals", members)
    p = add("add", cmd_federation_members, "add a member hospital from its card file "
            "(signature verified), or by name, URL and key", members)
    p.add_argument("name", metavar="CARD-FILE | NAME",
                   help="the card its admin's `federation card` wrote, or the hospital's name "
                   "with --url and --public-key")
    p.add_argument("--url", help="with a name: its domain's URL, http(s)://HOST:PORT")
    p.add_argument("--public-key",
                   help="with a name: its aggregation public key (`federation enable` prints it)")
    p = add("remove", cmd_federation_members, "remove a member hospital", members)
    p.add_argument("name")

    jobs = sub.add_parser("jobs", help="federated jobs: approved once, run round by round"
                          ).add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    add("list", cmd_jobs, "every federated job here: its round, rounds and state", jobs)
    p = add("stop", cmd_jobs, "end a federated job at its next round (audited)", jobs)
    p.add_argument("id", help="the job's request id here")
    p.add_argument("--reason", required=True)

    policies = sub.add_parser("policies", help="the policy files in force").add_subparsers(
        dest="policies_command", required=True, metavar="ACTION")
    add("show", cmd_policies, "which policy files the domain enforces, and their digest",
        policies)
    add("reload", cmd_policies, "validate the edited policy files and put them in force "
        "(gate and review alike)", policies)

    privacy = sub.add_parser("privacy", help="privacy budgets and the ledger").add_subparsers(
        dest="privacy_command", required=True, metavar="ACTION")
    add("list", cmd_privacy, "every researcher's ε spent and left, per dataset", privacy)
    p = add("show", cmd_privacy, "one researcher's accounts and releases", privacy)
    p.add_argument("email")
    p = add("grant", cmd_privacy, "add ε to one researcher's budget on a dataset (audited)",
            privacy)
    p.add_argument("email")
    p.add_argument("--dataset", required=True)
    p.add_argument("--epsilon", type=float, required=True)
    p.add_argument("--reason", required=True)

    p = add("audit", cmd_audit, "read the audit log")
    p.add_argument("--since", help="2026-11-21, 2026-11-21T10:00, or 1h / 30m / 2d ago")
    p.add_argument("--actor", help="only this email")
    p.add_argument("--action", help="only this action")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")

    passphrase = ("the backup passphrase from this file (0600, one line); else "
                  "$PNEUMOSYFT_BACKUP_PASSPHRASE, else asked on the terminal")
    p = add("backup", cmd_backup, "write an encrypted snapshot of the state directory (running "
            "or not): databases (pg_dump for PostgreSQL), blobs, keys, tokens, ledgers, "
            "members, audit log; audited as backup.created")
    p.add_argument("--to", required=True, metavar="FILE", help="the backup file to create "
                   "(0600; outside the state dir; an existing file is never replaced)")
    p.add_argument("--passphrase-file", metavar="FILE", help=passphrase + " (twice)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (stderr)")
    p = add("restore", cmd_restore, "restore a backup into --state-dir, which must be new or "
            "empty; then `start --state-dir` brings back the same domain")
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="a file `backup` wrote")
    p.add_argument("--passphrase-file", metavar="FILE", help=passphrase)
    p.add_argument("--db-url", help="PostgreSQL backups: pg_restore into this database "
                   "instead of the one the backup's domain used")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (stderr)")
    return parser


def check_owner(state: StateDir) -> None:
    """Root may not run a command on a state directory another user owns (a service's):
    the files it wrote would be root's, and the domain could no longer read them."""
    import os
    import pwd

    try:
        owner = state.root.stat().st_uid
    except OSError:
        return  # not there yet: `start` makes it, as whoever runs it
    if os.geteuid() == 0 and owner != 0:
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise PneumoSyftError(f"{state.root} belongs to {name}: run the command as that user "
                              f"(runuser -u {name} -- python -m domain_setup ...), or files "
                              "root writes there would lock the domain out")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        state = resolve_state_dir(args.state_dir)
        check_owner(state)
        return args.func(args, state)
    except PneumoSyftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.OperationalError) as exc:  # a full disk, a read-only state dir
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
