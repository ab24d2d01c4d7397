"""Approved code runs in the sandbox, never in the server: the dispatch syft's runs go to.

syft 0.9.5 runs an approved function with ``exec`` inside the server process
(``execute_byte_code``). The server replaces that with `PlanExecutor`: the private
inputs become plain data, the function runs in a fresh sandbox (`domain_setup.sandbox`)
under the limits of ``approval.yaml`` (``sandbox:``, with ``start
--plan-timeout/--plan-memory-mb`` on top), and what it returns goes through its plan
kind (`domain_setup.vetting.registry`) before syft stores anything: the output
contract, the privacy mechanism's post-processing, and the release filter, which lets
out exactly the fields the kind declares, and ``trusted`` ones only where the admin
trusts the researcher (the dataset does not require DP, or the request was approved
with an override). Every execution is audited with the code's hash, its kind, its
outcome and its cost.

An approval is for one run (`ApprovalLedger.claim_run`), recorded as it moves from
``queued`` to ``running`` to its end, so that recovery at start knows what a crash
interrupted. Everything that can refuse a run is checked before any private data enters
the sandbox (the round's parties and model, the privacy budget, the trust a kind needs,
room in the sandbox queue); a refusal there refunds a charge. A run then waits in the
sandbox queue (`server/run_queue.py`) until its memory fits the domain's budget; its
wall-clock limit starts when it leaves the queue. Once data has entered, a failure reaches the
researcher as one fixed line (`domain_setup.vetting.failures`), never a value from
inside, and the charge stays. The admin reads the rest in the domain log.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from common import syft_compat
from common.aggregation import RoundSpec, private_key_bytes
from common.errors import PneumoSyftError, SharingError
from common.training import held_out_count, passes_made
from common.training_config import validate_training_config
from domain_setup.policy.approval import sandbox_limits
from domain_setup.sandbox import (ContractViolation, PlanError, ResultRefused, Sandbox,
                                  SandboxLimits)
from domain_setup.server.approval_ledger import ApprovalLedger
from domain_setup.server.privacy_charge import PrivacyCharge, PrivacyRefused
from domain_setup.server.privacy_ledger import PrivacyLedger
from domain_setup.server.round_ledger import RoundLedger, RoundRefused
from domain_setup.server.round_quote import aggregation_problems, round_quote
from domain_setup.server.run_queue import QueueRefused, RunQueue
from domain_setup.vetting.constants import model_binding_problems
from domain_setup.vetting.contract_parts import ContractContext
from domain_setup.vetting.failures import researcher_message
from domain_setup.vetting.registry import (PlanKind, ReleaseRefused, code_sha256, identify,
                                           plan_kind, runnable)
from domain_setup.vetting.verdicts import asset_names_of, code_bindings

log = logging.getLogger("pneumosyft.execution")


class Withheld(Exception):
    """A run refused before private data entered the sandbox, with the line she sees."""


class RunFailed(Exception):
    """A run that released nothing: the one line the researcher sees, and whether private
    data had entered the sandbox (a job round then counts as attempted)."""

    def __init__(self, message: str, *, data_entered: bool = False):
        super().__init__(message)
        self.data_entered = data_entered


class PlanExecutor:
    """What syft calls instead of ``execute_byte_code`` for the private run."""

    def __init__(self, *, policies: Any, config_extra: dict, sandbox_factory:
                 Callable[..., Sandbox], audit: Any, worker: Any, ledger: PrivacyLedger,
                 rounds: RoundLedger, approvals: ApprovalLedger, queue: RunQueue,
                 own_aggregation_key: Callable[[], bytes | None]):
        self.ledger = ledger
        self.rounds = rounds
        self.approvals = approvals
        self.queue = queue
        self.own_aggregation_key = own_aggregation_key  # public key bytes, or None
        self.policies = policies
        self.config_extra = config_extra
        self.sandbox_factory = sandbox_factory
        self.audit = audit
        self.worker = worker

    def limits(self) -> SandboxLimits:
        """The sandbox limits in force: approval.yaml's, then this domain's overrides."""
        return sandbox_limits(self.policies.current.approval, self.config_extra)

    def __call__(self, code_item: Any, kwargs: dict, context: Any, output_type: type) -> Any:
        kind = identify(code_item.raw_code)
        requester = syft_compat.email_of(self.worker, context.credentials)
        run_id = str(code_item.id.no_dash)
        details = {"requester": requester, "function": code_item.service_func_name,
                   "plan": kind.name, "code_sha256": code_sha256(code_item.raw_code)}
        try:
            if kind.served_by:
                self.audit.record(requester, "execution", target=run_id, outcome="refused",
                                  reason=f"served by {kind.served_by}", **details)
                raise RunFailed(f"this {kind.name} request is approved once and served by "
                                f"{kind.served_by}, not run as code")
            if kind.job:
                self.audit.record(requester, "execution", target=run_id, outcome="refused",
                                  reason="a federated job runs round by round", **details)
                raise RunFailed("a federated job is approved once and runs round by round "
                                "through the job routes (scientist.federated_job), not as one run")
            result = self.execute(kind, code_item.raw_code, kwargs, requester=requester,
                                  run_id=run_id, credentials=context.credentials,
                                  dataset=self.dataset_of(code_item), details=details)
        except RunFailed as exc:
            return output_type(user_code_id=code_item.id, stdout="", stderr="", result=None,
                               errored=True, safe_error_message=str(exc))
        return output_type(user_code_id=code_item.id, stdout="", stderr="",
                           result=result["result"] if kind.whole_result else result,
                           errored=False)

    def execute(self, kind: PlanKind, raw_code: str, kwargs: dict, *, requester: str,
                run_id: str, credentials: Any, dataset: str, details: dict,
                job_of: str | None = None, session: Any = None,
                kept: dict | None = None) -> dict:
        """Run `raw_code` of `kind` on `kwargs` in the sandbox and return what is released
        (RunFailed with the researcher's one line otherwise). A syft run claims its
        approval's one run; a round of the job approved as code `job_of` is bounded by the
        job ledger instead (and trusted as that approval was), and may run in the job's
        `session` (a `SandboxSession`) rather than a fresh sandbox. The kind's `kept`
        fields go into `kept`, never out."""
        limits = self.limits()
        charge: PrivacyCharge | None = None
        claimed = data_entered = False
        waited = 0.0
        try:
            inputs = {name: _plain(name, value) for name, value in kwargs.items()}
            contract = self._contract_context(kind, inputs)
            try:
                source, function = runnable(raw_code)
            except ValueError as exc:
                raise Withheld(str(exc)) from None
            if job_of is None:
                if not self.approvals.claim_run(run_id):
                    raise Withheld("this request has run once already: an approval is for one "
                                   "run (submit the code again for another)")
                claimed = True
            trusted = self._trusted(dataset, job_of or run_id)
            if kind.needs_trust and not trusted:
                raise Withheld(f"dataset {dataset} requires differential privacy; the "
                               f"{kind.name} plan kind releases values without a bound")
            if kind.secure:
                self._contribute(inputs, requester, contract)
            if kind.private:
                charge = self._charge(kind, dataset, inputs, credentials, requester, run_id)
                contract = dataclasses.replace(contract, max_epsilon=charge.target_epsilon)
            with self._queued(run_id, limits, requester) as waited:
                if claimed:
                    self.approvals.run_started(run_id)
                pooled = self.sandbox_factory(limits)
                sandbox = _live(session) or pooled
                data_entered = True
                run = sandbox.run(source, function, inputs,
                                  max_result_bytes=contract.max_custom_bytes
                                  if kind.whole_result else None,
                                  torch_threads=self.queue.core_share(pooled.torch_threads))
            kind.contract(run.result, contract)
            checked, taken = run.result, {}
            if kind.kept:  # fields the domain keeps (the contract made the result a dict)
                checked = dict(checked)
                taken = {name: checked.pop(name) for name in kind.kept if name in checked}
            released = charge.release(checked, self.ledger) if charge else checked
            result = kind.release(released, trusted=trusted)
        except (Withheld, PlanError, ReleaseRefused) as exc:
            if charge is not None and not data_entered:
                charge.refund(self.ledger, "refused before any data entered the sandbox")
                self.audit.record(requester, "privacy.refund", target=run_id,
                                  dataset=charge.dataset, epsilon=f"{charge.target_epsilon:g}")
            message = (str(exc) if isinstance(exc, Withheld) and not data_entered else
                       researcher_message(kind=kind.name, error=exc, limits=limits))
            if claimed:
                self.approvals.run_ended(run_id, "failed" if data_entered else "refused")
            log.error("run %s (%s) for %s released nothing: %s\n%s", run_id, kind.name,
                      requester, exc, getattr(exc, "traceback", "") or "")
            self.audit.record(requester, "execution", target=run_id, outcome=_outcome(exc),
                              reason=message, detail=" ".join(str(exc).split())[:500],
                              charge_kept="yes" if charge and data_entered else "no",
                              **details)
            raise RunFailed(message, data_entered=data_entered) from None
        if claimed:
            self.approvals.run_ended(run_id, "done")
        if kept is not None:
            kept.update(taken)
        self.audit.record(requester, "execution", target=run_id, **details,
                          queued_seconds=f"{waited:.2f}",
                          released=",".join(sorted(map(str, result))) if not kind.whole_result
                          else "result",
                          seconds=f"{run.seconds:.2f}", start_seconds=f"{run.start_seconds:.3f}",
                          ready_seconds=f"{run.ready_seconds:.3f}",
                          warm="yes" if run.warm else "no",
                          peak_memory_mb=f"{run.peak_memory_mb or 0:.0f}")
        return result

    # --- before any data enters ------------------------------------------------------

    @contextmanager
    def _queued(self, run_id: str, limits: SandboxLimits, owner: str) -> Iterator[float]:
        """Wait in the sandbox queue (Withheld when it has no room); yields seconds waited."""
        with ExitStack() as stack:
            try:
                waited = stack.enter_context(
                    self.queue.slot(run_id, memory_mb=limits.memory_mb, owner=owner))
            except QueueRefused as exc:
                raise Withheld(str(exc)) from None
            yield waited

    def dataset_of(self, code_item: Any) -> str:
        """The dataset whose assets the code binds (its aggregation key aside)."""
        bound, _ = code_bindings(code_item, asset_names_of(syft_compat.all_datasets(self.worker)))
        names = sorted({v.split("/", 1)[0] for k, v in bound.items()
                        if "/" in v and k != "aggregation_key"})
        return names[0] if names else "?"

    def _trusted(self, dataset: str, run_id: str) -> bool:
        """Does the admin trust this run with values no bound covers (``trusted``)?"""
        rules = self.policies.current.privacy.dataset(dataset)
        return rules is None or not rules.require_dp or self.approvals.overridden(run_id)

    def _contribute(self, inputs: dict, requester: str, contract: ContractContext) -> None:
        """Check the round again (members, this hospital, total, model) and record this run
        as the domain's one contribution to it."""
        spec = _round_spec(inputs)
        quote = round_quote(self.policies.current, inputs, own_key=self.own_aggregation_key(),
                            own_count=contract.n_samples)
        problems = (quote or {}).get("problems", []) + model_binding_problems(spec, inputs)
        if problems:
            raise Withheld(f"the round is refused: {problems[0]}")
        try:
            self.rounds.contribute(spec, requester, job=isinstance(inputs.get("job"), dict))
        except RoundRefused as exc:
            raise Withheld(str(exc)) from None

    def _charge(self, kind: PlanKind, dataset: str, inputs: dict, credentials: Any,
                email: str, run_id: str) -> PrivacyCharge:
        """Charge the requester's ledger for this DP run (Withheld when it may not run)."""
        policies = self.policies.current
        user = syft_compat.user_by_verify_key(self.worker, credentials)
        try:
            charge = PrivacyCharge.prepare(
                kind, inputs, ledger=self.ledger, rules=policies.privacy.dataset(dataset),
                dataset=dataset, email=email, groups=policies.groups_of(email),
                role=syft_compat.role_of(user) if user is not None else "guest", run_id=run_id)
        except PrivacyRefused as exc:
            raise Withheld(f"privacy: {exc}") from None
        account = self.ledger.account(email, dataset, delta=charge.rules.delta)
        self.audit.record(email, "privacy.charge", target=run_id, dataset=dataset,
                          plan=kind.name, epsilon=f"{charge.target_epsilon:g}",
                          spent=f"{account.spent:.3f}", left=f"{account.left(charge.budget):.3f}")
        return charge

    def _contract_context(self, kind: PlanKind, inputs: dict) -> ContractContext:
        rules = self.policies.current.approval
        if kind.whole_result:
            return ContractContext(max_custom_bytes=rules.custom_max_result_bytes)
        config = inputs.get("config") or {}
        n_images = len(inputs["images"])
        if n_images < rules.min_samples:
            raise Withheld(f"a {kind.name} release needs at least {rules.min_samples} images; "
                           f"this split has {n_images}")
        held_out = held_out_count(n_images, config.get("validation_fraction", 0.0))
        context = ContractContext(model=config.get("model"),
                                  epochs=_passes(config, n_images - held_out),
                                  n_samples=n_images - held_out, n_validation=held_out)
        if not kind.secure:
            return context
        spec = _round_spec(inputs)
        try:
            own = spec.index_of(private_key_bytes(inputs.get("aggregation_key")))
        except (SharingError, ValueError, TypeError) as exc:
            raise Withheld(f"aggregator_keys: {exc}") from None
        job = inputs.get("job")
        return dataclasses.replace(context, n_parties=spec.n_parties, own_index=own,
                                   with_control=isinstance(job, dict)
                                   and job.get("control") is not None)

    # --- the aggregation route -------------------------------------------------------

    def aggregate(self, spec: RoundSpec, ciphertexts: list, private_key: bytes,
                  requester: str, *, via_job: bool = False, session: Any = None) -> bytes:
        """Run the registry's aggregation of `spec`'s round on exactly `ciphertexts` (one
        per party) in the sandbox (a job's light `session` when given), once per round;
        the partial sum, or Withheld. A federated job's round only `via_job`."""
        kind = plan_kind("aggregate")
        problems = aggregation_problems(self.policies.current, spec, self.own_aggregation_key())
        if problems:
            self.audit.record(requester, "federation.aggregate", target=spec.round_id,
                              outcome="refused", reason=problems[0])
            raise Withheld(f"the round is refused: {problems[0]}")
        try:
            self.rounds.claim(spec, requester, via_job=via_job)
        except RoundRefused as exc:
            raise Withheld(str(exc)) from None
        details = {"requester": requester, "plan": kind.name, "round": spec.round_id}
        source, function = runnable(inspect.getsource(kind.function))
        inputs = {"aggregation_key": private_key, "aggregator_keys": spec.to_constant(),
                  "ciphertexts": ciphertexts}
        limits = self.limits()
        try:
            with self._queued(f"aggregate-{spec.round_id}", limits, requester):
                runner = _live(session) or self.sandbox_factory(limits, light=True)
                run = runner.run(source, function, inputs)
            kind.contract(run.result, ContractContext(n_ciphertexts=len(ciphertexts),
                                                      n_parties=spec.n_parties))
            released = kind.release(run.result, trusted=False)
        except (PlanError, ReleaseRefused, Withheld) as exc:
            self.rounds.unclaim(spec.round_id)
            message = (str(exc) if isinstance(exc, Withheld) else
                       researcher_message(kind=kind.name, error=exc, limits=limits))
            self.audit.record(requester, "federation.aggregate", target=spec.round_id,
                              outcome=_outcome(exc), reason=message,
                              detail=" ".join(str(exc).split())[:500], **details)
            raise Withheld(message) from None
        self.rounds.released(spec.round_id)
        self.audit.record(requester, "federation.aggregate", target=spec.round_id, **details,
                          parties=str(spec.n_parties), seconds=f"{run.seconds:.2f}",
                          warm="yes" if run.warm else "no",
                          sandbox="job session" if runner is session else "per run")
        return released["partial_sum"]


def _live(session: Any) -> Any:
    """A federated job's sandbox session if it can serve a run, else None (the run then
    takes a sandbox from the pool)."""
    return session if session is not None and session.alive else None


def _round_spec(inputs: dict) -> RoundSpec:
    """The secure round a run's inputs name: a secure_train request's ``aggregator_keys``,
    or the round the job routes put into a job's ``job`` constant."""
    job = inputs.get("job")
    value = job.get("round") if isinstance(job, dict) else inputs.get("aggregator_keys")
    try:
        return RoundSpec.from_constant(value)
    except SharingError as exc:
        raise Withheld(f"aggregator_keys: {exc}") from None


def _passes(config: dict, n_train: int) -> Any:
    """The history entries a training run of `config` must return: its epochs, fewer
    with local_steps (the epochs as given for a config the catalogue would refuse)."""
    try:
        validate_training_config(config)
        return passes_made(n_train, epochs=config["epochs"], batch_size=config["batch_size"],
                           local_steps=config.get("local_steps", 0))
    except (PneumoSyftError, KeyError):
        return config.get("epochs")


def _plain(name: str, value: Any) -> Any:
    """An input as plain data for the sandbox (ActionObjects unwrapped)."""
    data = getattr(value, "syft_action_data", value)
    if syft_compat.is_syft_error(data):
        raise Withheld(f"input {name} could not be read")
    if isinstance(data, np.ndarray) and data.dtype == object:
        raise Withheld(f"input {name} is an object array, not plain data")
    return data


def _outcome(exc: Exception) -> str:
    if isinstance(exc, (Withheld, ReleaseRefused, ContractViolation, ResultRefused)):
        return "withheld"
    return type(exc).__name__
