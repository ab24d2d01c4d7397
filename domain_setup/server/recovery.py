"""Recovery at start: reconcile what a crash (kill -9, power loss) interrupted.

Runs before the server answers anyone, in this order:

1. **Runs.** A run recorded as waiting in the queue never received data: it is marked
   ``not run`` and its privacy charge refunded. A run recorded as running had private
   data in its sandbox: it is marked ``interrupted`` and its charge kept, shown as
   ``charged-interrupted`` in the ledger (the run may have computed on the data; nothing
   was released). Running it again is a new request for the admin to approve.
2. **Sandboxes.** Run cgroups left by a server process that no longer exists
   (``pneumosyft-sandbox-<pid>-…``) are emptied with SIGKILL and removed.
3. **Blobs.** What uploads that never completed left in the blob store is removed:
   partial files (``.<entry>.partial-…``), blobs written in full whose object was never
   stored (an entry nothing refers to: the upload stopped between its bytes and its
   dataset), and files syft has no entry for.

Each step is audited as ``recovery.*`` with what it found, and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import syft_compat
from domain_setup.sandbox.cgroups import CgroupHost, remove_leftovers
from domain_setup.server.approval_ledger import ApprovalLedger
from domain_setup.server.privacy_ledger import PrivacyLedger

log = logging.getLogger("pneumosyft.recovery")
PARTIAL_MARK = ".partial-"


@dataclass
class Recovered:
    """What recovery found and did."""

    interrupted: list[str] = field(default_factory=list)  # runs that had data: charge kept
    not_run: list[str] = field(default_factory=list)      # runs that waited: refunded
    cgroups: int = 0
    partial_blobs: list[str] = field(default_factory=list)
    orphan_blobs: list[str] = field(default_factory=list)  # complete, never an object
    orphan_bytes: int = 0

    def summary(self) -> str:
        return (f"{len(self.interrupted)} interrupted run(s), {len(self.not_run)} queued run(s) "
                f"not run, {self.cgroups} leftover sandbox cgroup(s) removed, "
                f"{len(self.partial_blobs)} partial blob file(s) removed, "
                f"{len(self.orphan_blobs)} orphan blob(s) of {self.orphan_bytes / 1e6:.1f} MB "
                f"removed")


def recover(*, approvals: ApprovalLedger, ledger: PrivacyLedger, audit: Any,
            blob_dir: Path | None, cgroups: CgroupHost | None,
            worker: Any | None = None) -> Recovered:
    """Reconcile runs, sandboxes and blobs a previous server process left behind
    (`worker`: syft's server, whose blob entries are checked; None skips that)."""
    found = Recovered()
    for run_id, state in approvals.end_unfinished():
        if state == "running":
            found.interrupted.append(run_id)
            kept = ledger.mark_interrupted(run_id)
            audit.record("domain", "recovery.run", target=run_id, outcome="interrupted",
                         charge_kept="yes" if kept else "no")
        else:
            found.not_run.append(run_id)
            refunded = ledger.refund_request(run_id, "not run: the domain stopped before the "
                                                     "run left the queue")
            audit.record("domain", "recovery.run", target=run_id, outcome="not run",
                         refunded="yes" if refunded else "no")
    if cgroups is not None:
        found.cgroups = remove_leftovers(cgroups)
    if blob_dir is not None and blob_dir.is_dir():
        for partial in sorted(blob_dir.glob(f".*{PARTIAL_MARK}*")):
            partial.unlink(missing_ok=True)
            found.partial_blobs.append(partial.name)
        if worker is not None:
            _remove_orphan_blobs(worker, blob_dir, found)
    if found.interrupted or found.not_run or found.cgroups or found.partial_blobs or \
            found.orphan_blobs:
        audit.record("domain", "recovery", outcome="recovered", summary=found.summary(),
                     partial_blobs=found.partial_blobs[:50], orphan_blobs=found.orphan_blobs[:50])
        log.warning("recovery at start: %s", found.summary())
    return found


def _remove_orphan_blobs(worker: Any, blob_dir: Path, found: Recovered) -> None:
    """Blob entries no object refers to (an upload that stopped after its bytes were
    written and before its object was), with their files, and files without an entry."""
    entries = syft_compat.blob_entries(worker)
    referenced = syft_compat.referenced_blob_ids(worker)
    for entry in entries:
        if entry.id not in referenced:
            found.orphan_blobs.append(syft_compat.blob_file_name(entry))
            found.orphan_bytes += int(entry.file_size or 0)
            syft_compat.delete_blob_entry(worker, entry, blob_dir)
    known = {syft_compat.blob_file_name(entry) for entry in entries
             if entry.id in referenced}
    for path in sorted(blob_dir.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in known:
            found.orphan_blobs.append(path.name)
            found.orphan_bytes += path.stat().st_size
            path.unlink(missing_ok=True)
