"""Approved code runs in the sandbox, never in the server: the dispatch syft's runs go to.

syft 0.9.5 runs an approved function with ``exec`` inside the server process
(``execute_byte_code``). The server replaces that with `PlanExecutor`: the
private inputs become plain data, the function runs in a fresh sandbox
(`domain_setup.sandbox`) under the limits of ``approval.yaml`` (``sandbox:``, with
``start --plan-timeout/--plan-memory-mb`` on top), and its result is checked
against the output contract of its kind (a catalogue plan's, or the plain-data
bound of custom code) before syft stores anything. A result that breaks the
contract is withheld. Every execution is audited with the code's hash, its kind,
its outcome and its cost.

What the researcher sees of a failure is one line without any value from inside:
the plan's exception type (custom code) or its message (vetted plans, whose
messages are the hospital's own), a timeout, an out-of-memory kill, or why the
result was withheld. The admin reads the rest in the domain log.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any, Callable

import numpy as np

from common import syft_compat
from common.aggregation import RoundSpec, private_key_bytes
from common.errors import PneumoSyftError, SharingError
from common.training import held_out_count, passes_made
from common.training_config import validate_training_config
from domain_setup.catalogue import code_sha256, identify, runnable
from domain_setup.policies import sandbox_limits
from domain_setup.sandbox import (ContractContext, ContractViolation, PlanError, PlanFailed,
                                  ResultRefused, Sandbox, SandboxLimits, check_result)
from domain_setup.server.privacy_charge import PRIVATE_KINDS, PrivacyCharge, PrivacyRefused
from domain_setup.server.privacy_ledger import PrivacyLedger
from domain_setup.server.round_ledger import RoundLedger, RoundRefused
from domain_setup.verdicts import asset_names_of, code_bindings

log = logging.getLogger("pneumosyft.execution")
RELEASE_KINDS = ("train", "evaluate", "secure_train", *PRIVATE_KINDS)
SECURE_KINDS = ("secure_train", "secure_train_private")


class Withheld(Exception):
    """A run whose result the researcher does not get, with the one line she sees."""


class PlanExecutor:
    """What syft calls instead of ``execute_byte_code`` for the private run."""

    def __init__(self, *, policies: Any, config_extra: dict, sandbox_factory:
                 Callable[[SandboxLimits], Sandbox], audit: Any, worker: Any,
                 ledger: PrivacyLedger, rounds: RoundLedger):
        self.ledger = ledger
        self.rounds = rounds
        self.policies = policies
        self.config_extra = config_extra
        self.sandbox_factory = sandbox_factory
        self.audit = audit
        self.worker = worker

    def limits(self) -> SandboxLimits:
        """The sandbox limits in force: approval.yaml's, then this domain's overrides."""
        return sandbox_limits(self.policies.current.approval, self.config_extra)

    def __call__(self, code_item: Any, kwargs: dict, context: Any, output_type: type) -> Any:
        plan = identify(code_item.raw_code)
        kind = plan.name if plan else "custom"
        requester = syft_compat.email_of(self.worker, context.credentials)
        details = {"requester": requester, "function": code_item.service_func_name,
                   "plan": kind, "code_sha256": code_sha256(code_item.raw_code)}
        charge: PrivacyCharge | None = None
        try:
            inputs = {name: _plain(name, value) for name, value in kwargs.items()}
            contract = self._contract_context(kind, inputs)
            try:
                source, function = runnable(code_item.raw_code)
            except ValueError as exc:
                raise Withheld(str(exc)) from None
            if kind in SECURE_KINDS:
                self._contribute(inputs, requester)
            if kind in PRIVATE_KINDS:
                charge = self._charge(kind, code_item, inputs, context.credentials, requester)
                contract = dataclasses.replace(contract, max_epsilon=charge.target_epsilon)
            run = self.sandbox_factory(self.limits()).run(source, function, inputs)
            check_result(kind, run.result, contract)
            result = charge.release(run.result, self.ledger) if charge else run.result
        except (Withheld, PlanError) as exc:
            if charge is not None:
                charge.refund(self.ledger, "nothing released")
                self.audit.record(requester, "privacy.refund", target=str(code_item.id.no_dash),
                                  dataset=charge.dataset, epsilon=f"{charge.target_epsilon:g}")
            message = _researcher_message(kind, exc)
            log.error("run of %s (%s) for %s failed: %s\n%s", code_item.service_func_name,
                      kind, requester, exc, getattr(exc, "traceback", "") or "")
            self.audit.record(requester, "execution", target=str(code_item.id.no_dash),
                              outcome=_outcome(exc), reason=message, **details)
            return output_type(user_code_id=code_item.id, stdout="", stderr="", result=None,
                               errored=True, safe_error_message=message)
        self.audit.record(requester, "execution", target=str(code_item.id.no_dash), **details,
                          seconds=f"{run.seconds:.2f}", start_seconds=f"{run.start_seconds:.3f}",
                          ready_seconds=f"{run.ready_seconds:.3f}",
                          warm="yes" if run.warm else "no",
                          peak_memory_mb=f"{run.peak_memory_mb or 0:.0f}")
        return output_type(user_code_id=code_item.id, stdout="", stderr="", result=result,
                           errored=False)

    def _contribute(self, inputs: dict, requester: str) -> None:
        """Record this run as the domain's one contribution to the round it names."""
        try:
            self.rounds.contribute(RoundSpec.from_constant(inputs.get("aggregator_keys")),
                                   requester)
        except (RoundRefused, SharingError) as exc:
            raise Withheld(str(exc)) from None

    def aggregate(self, spec: RoundSpec, ciphertexts: list, private_key: bytes,
                  requester: str) -> bytes:
        """Run the catalogue's aggregation of `spec`'s round on exactly `ciphertexts`
        (one per party) in the sandbox, once per round; the partial sum, or Withheld."""
        from common.vetted_plans import aggregate_round_plan

        try:
            self.rounds.claim(spec, requester)
        except RoundRefused as exc:
            raise Withheld(str(exc)) from None
        details = {"requester": requester, "plan": "aggregate", "round": spec.round_id}
        source, function = runnable(inspect.getsource(aggregate_round_plan))
        inputs = {"aggregation_key": private_key, "aggregator_keys": spec.to_constant(),
                  "ciphertexts": ciphertexts}
        try:
            run = self.sandbox_factory(self.limits(), light=True).run(source, function, inputs)
            check_result("aggregate", run.result,
                         ContractContext(n_ciphertexts=len(ciphertexts),
                                         n_parties=spec.n_parties))
        except PlanError as exc:
            self.rounds.unclaim(spec.round_id)
            message = _researcher_message("aggregate", exc)
            self.audit.record(requester, "federation.aggregate", target=spec.round_id,
                              outcome=_outcome(exc), reason=message, **details)
            raise Withheld(message) from None
        self.rounds.released(spec.round_id)
        self.audit.record(requester, "federation.aggregate", target=spec.round_id, **details,
                          parties=str(spec.n_parties), seconds=f"{run.seconds:.2f}",
                          warm="yes" if run.warm else "no")
        return run.result["partial_sum"]

    def _charge(self, kind: str, code_item: Any, inputs: dict, credentials: Any,
                email: str) -> PrivacyCharge:
        """Charge the requester's ledger for this DP run (Withheld when it may not run)."""
        bound, _ = code_bindings(code_item, asset_names_of(syft_compat.all_datasets(self.worker)))
        dataset = str(bound.get("images", "?")).split("/", 1)[0]
        policies = self.policies.current
        user = syft_compat.user_by_verify_key(self.worker, credentials)
        try:
            charge = PrivacyCharge.prepare(
                kind, inputs, ledger=self.ledger, rules=policies.privacy.dataset(dataset),
                dataset=dataset, email=email, groups=policies.groups_of(email),
                role=syft_compat.role_of(user) if user is not None else "guest",
                run_id=str(code_item.id.no_dash))
        except PrivacyRefused as exc:
            raise Withheld(f"privacy: {exc}") from None
        account = self.ledger.account(email, dataset, delta=charge.rules.delta)
        self.audit.record(email, "privacy.charge", target=str(code_item.id.no_dash),
                          dataset=dataset, plan=kind, epsilon=f"{charge.target_epsilon:g}",
                          spent=f"{account.spent:.3f}", left=f"{account.left(charge.budget):.3f}")
        return charge

    def _contract_context(self, kind: str, inputs: dict) -> ContractContext:
        rules = self.policies.current.approval
        if kind == "custom":
            return ContractContext(max_custom_bytes=rules.custom_max_result_bytes)
        config = inputs.get("config") or {}
        n_images = len(inputs["images"])
        if n_images < rules.min_samples:
            raise Withheld(f"a {kind} release needs at least {rules.min_samples} images; "
                           f"this split has {n_images}")
        held_out = held_out_count(n_images, config.get("validation_fraction", 0.0))
        context = ContractContext(model=config.get("model"),
                                  epochs=_passes(config, n_images - held_out),
                                  n_samples=n_images - held_out, n_validation=held_out)
        if kind not in SECURE_KINDS:
            return context
        try:
            spec = RoundSpec.from_constant(inputs.get("aggregator_keys"))
            own = spec.index_of(private_key_bytes(inputs.get("aggregation_key")))
        except (SharingError, ValueError, TypeError) as exc:
            raise Withheld(f"aggregator_keys: {exc}") from None
        return dataclasses.replace(context, n_parties=spec.n_parties, own_index=own)


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


def _researcher_message(kind: str, exc: Exception) -> str:
    if isinstance(exc, PlanFailed):
        detail = (f"{exc.exc_type}: {exc.exc_message}" if kind != "custom"
                  else f"{exc.exc_type} (the hospital admin has the details)")
        return f"the plan failed inside the sandbox: {detail}"
    if isinstance(exc, ContractViolation):
        return f"result withheld: it breaks the {kind} output contract: {exc}"
    return f"result withheld: {exc}"


def _outcome(exc: Exception) -> str:
    if isinstance(exc, (ContractViolation, ResultRefused, Withheld)):
        return "withheld"
    return type(exc).__name__

