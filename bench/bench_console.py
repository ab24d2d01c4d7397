"""The web console's page loads on a busy domain: the requests page with 500 requests and
the audit page on a log of 100,000 lines, in the system's Chromium (Playwright: from the
click to the page's load event) and as one HTTP GET.

The baseline, measured in the same run on the same domain, is what the admin would run
instead: the CLI's work for `review list` (`AdminClient.requests()`: every request with its
verdict) and for `audit --limit 100` (`AdminClient.audit`: the log read from its start).
Past requests are copies of one decided request written into syft's store while the
domain is stopped (`bench_review.py`), five more are pending (submitted for real); the
audit lines are written into the log file in the domain's own format.

    .venv/bin/python bench/bench_console.py [--requests 500] [--audit-lines 100000]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import requests  # noqa: E402

from bench_review import archive_domain, timed, write_past_requests  # noqa: E402
from common.vetted_plans import train_xray_plan  # noqa: E402
from scientist import TrainingPlan, connect  # noqa: E402
from scientist.submission import split_assets, submit_plan  # noqa: E402

RESEARCHER = "ada@pneumosyft-research.org"
PENDING = 5


def write_audit_lines(state_root: Path, count: int) -> None:
    """`count` audit entries (an hour of a busy domain, oldest first) before the domain's own."""
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    actors = [f"researcher{n}@lung-imaging-lab.ac.uk" for n in range(20)]
    lines = []
    for n in range(count):
        entry = {"time": (start + timedelta(milliseconds=n * 30)).isoformat(timespec="milliseconds"),
                 "actor": actors[n % len(actors)], "action": "api_call",
                 "target": "dataset.get_all", "outcome": "accepted", "path": "dataset.get_all"}
        lines.append(json.dumps(entry) + "\n")
    path = state_root / "audit.jsonl"
    path.write_text("".join(lines) + (path.read_text() if path.exists() else ""))
    path.chmod(0o600)


def console_session(url: str, email: str, password: str) -> requests.Session:
    http = requests.Session()
    form = http.get(f"{url}/admin/login", timeout=60).text
    token = re.search(r'name="login_token" value="([^"]+)"', form).group(1)
    done = http.post(f"{url}/admin/login", headers={"Origin": url}, timeout=60,
                     data={"login_token": token, "email": email, "password": password})
    if "/admin/requests" not in done.url:
        raise SystemExit(f"console login failed: {done.status_code}")
    return http


def browser_loads(url: str, cookies: list, paths: list[str], passes: int) -> dict[str, list]:
    """Seconds from navigation to the load event of each path, in Chromium."""
    from console_browser import Browser

    browser = Browser(url)
    try:
        page = browser.page()
        page.context.add_cookies(cookies)
        seconds: dict[str, list] = {path: [] for path in paths}
        for _ in range(passes):
            for path in paths:
                started = time.monotonic()
                page.goto(url + path, wait_until="load")
                seconds[path].append(time.monotonic() - started)
        return seconds
    finally:
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--audit-lines", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    if args.requests <= PENDING or args.audit_lines < 1 or args.passes < 1:
        parser.error(f"--requests must exceed {PENDING}; --audit-lines and --passes at least 1")
    with tempfile.TemporaryDirectory(prefix="pneumosyft-console-") as workdir:
        work = Path(workdir)
        domain, request_id = archive_domain("Console General", work)
        try:
            domain.stop()
            write_past_requests(domain, request_id, args.requests - PENDING - 1)
            write_audit_lines(domain.state.root, args.audit_lines)
            domain.start()
            ada = connect(connection_file=domain.researcher_file(RESEARCHER, work / "ada.json"))
            for n in range(PENDING):
                submit_plan(ada, train_xray_plan, inputs=split_assets(ada, "xray", "train"),
                            constants={"config": TrainingPlan().config(), "initial_weights": {}},
                            reason=f"pending request {n}")
            admin = domain.admin
            started = time.monotonic()  # the baseline once: it quotes every request
            listed = len(admin.requests())
            cli_list = [time.monotonic() - started]
            http = console_session(domain.url, domain.state.load_config().admin_email,
                                   domain.state.admin_password())
            pages = {"requests": "/admin/requests", "audit": "/admin/audit",
                     "audit filtered": "/admin/audit?actor=nobody%40x.org"}
            get = {name: timed(args.passes, lambda p=path: http.get(domain.url + p, timeout=120)
                               .raise_for_status()) for name, path in pages.items()}
            cli_audit = timed(args.passes, lambda: admin.audit(limit=100))
            cookies = [{"name": k, "value": v, "url": domain.url} for k, v in http.cookies.items()]
            loads = browser_loads(domain.url, cookies, list(pages.values()), args.passes)
        finally:
            domain.stop()
    med = statistics.median
    print(f"{listed} requests ({PENDING} pending), {args.audit_lines:,} audit lines and the "
          f"domain's own; median of {args.passes} passes")
    print(f"requests page: browser load {med(loads['/admin/requests']):.2f} s, GET "
          f"{med(get['requests']):.2f} s; baseline `review list --all` work (once) "
          f"{med(cli_list):.2f} s; ratio baseline / GET {med(cli_list) / med(get['requests']):.2f}")
    print(f"audit page (newest 100): browser load {med(loads['/admin/audit']):.3f} s, GET "
          f"{med(get['audit']):.3f} s; baseline `audit --limit 100` work {med(cli_audit):.2f} s; "
          f"ratio baseline / GET {med(cli_audit) / med(get['audit']):.1f}")
    print(f"audit page filtered to an actor with no entries (the whole log read): browser load "
          f"{med(loads['/admin/audit?actor=nobody%40x.org']):.2f} s, GET "
          f"{med(get['audit filtered']):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
