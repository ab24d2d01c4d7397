"""Output contracts: what each kind of plan may return, checked before syft stores it.

A sandboxed run returns plain data; that alone says nothing about its *shape*. A
catalogue plan (``common/vetted_plans.py``) has a fixed output, and anything else
it returns (an extra key, an array of the wrong shape, a NaN, an n_samples that
lies) is withheld. Custom code may return any plain data up to a size bound.

    from domain_setup.sandbox import ContractContext, ContractViolation, check_result

    context = ContractContext(model="small_cnn", epochs=3, n_samples=len(images))
    try:
        check_result("train", run.result, context)
    except ContractViolation as exc:      # one line, naming the path:
        print(exc)                        # history.loss[2] is not finite (nan)

Every violation is a ``ContractViolation`` (a ``PlanError``) whose message names the
offending path: ``result`` is the whole result, its keys are named bare
(``weights``, ``metrics.roc.fpr[3]``) and state-dict names in brackets
(``weights['features.0.weight']``). A context lacking a value the kind needs, or an
unknown kind, is a programming error: ``ValueError``.

``common`` (torch, PyNaCl) is imported only when a contract needs a model or a seal,
so importing the sandbox package stays light.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Collection, Mapping

import numpy as np

from .errors import ContractViolation, PlainDataError
from .plain_data import encode_parts

KINDS = ("train", "evaluate", "secure_train", "aggregate", "train_private",
         "secure_train_private", "evaluate_private", "custom")

# An aggregator's partial sum is one party's share of a state dict: 4 bytes per value
# plus a header. resnet18's share is about 45 MB (11.2M values), so a 32 MiB bound
# would withhold a legitimate resnet18 sum; 64 MiB leaves room for it and no more.
MAX_PARTIAL_SUM_BYTES = 64 << 20
_SHOWN_NAMES = 8  # names listed in a message before "..."
_LISTED_KEYS = 5  # a dict with at most this many keys is described by all of them


@dataclass(frozen=True)
class ContractContext:
    """What the server knows about a run, against which its result is checked."""

    model: str | None = None          # the config's model (train, evaluate, secure_train)
    epochs: int | None = None         # the passes training makes (epochs, or fewer:
                                      # common.training.passes_made)
    n_samples: int | None = None      # number of images the plan was given
    n_parties: int | None = None      # secure_train: number of aggregator keys
    own_index: int | None = None      # secure_train: this hospital's index among them
    n_validation: int = 0             # train, secure_train: images held out to validate
    n_ciphertexts: int | None = None  # aggregate: number of sealed shares given
    max_custom_bytes: int = 1 << 20   # custom code: bound on the encoded result
    max_epsilon: float | None = None  # train_private: the ε the domain charged for

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError(f"context.model must be a str or None, got {self.model!r}")
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("model", "max_epsilon") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"context.{field.name} must be a non-negative int, "
                                 f"got {value!r}")


def check_result(kind: str, result: Any, context: ContractContext) -> None:
    """Raise ``ContractViolation`` unless `result` keeps the output contract of `kind`
    (one of ``KINDS``) given what `context` says about the run; return None if it does."""
    check = _CHECKS.get(kind) if isinstance(kind, str) else None
    if check is None:
        raise ValueError(f"unknown result kind {kind!r}; one of {', '.join(KINDS)}")
    if not isinstance(context, ContractContext):
        raise ValueError(f"context must be a ContractContext, got {type(context).__name__}")
    check(result, context)


# --------------------------------------------------------------------------- one per kind

def _check_train(result: Any, context: ContractContext) -> None:
    """The weights of exactly the model's state dict, a per-epoch history, n_samples,
    and with images held out, their validation metrics."""
    _need(context, "train", "model", "epochs", "n_samples")
    result = _exact_keys("result", result, ("weights", "history", "n_samples",
                                                   "validation"))
    _weights("weights", result["weights"], context.model)
    _history("history", result["history"], context.epochs)
    _exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    _validation(result, context)


def _validation(result: Mapping[str, Any], context: ContractContext) -> None:
    """Loss, accuracy and AUC (None with one class only) of the held-out images; None
    when no image was held out."""
    if not context.n_validation:
        if result["validation"] is not None:
            raise _violation("validation must be None: no image was held out")
        return
    metrics = _exact_keys("validation", result["validation"],
                          ("loss", "accuracy", "auc", "n_samples"))
    _float("validation.loss", metrics["loss"], 0.0)
    _float("validation.accuracy", metrics["accuracy"], 0.0, 1.0)
    if metrics["auc"] is not None:
        _float("validation.auc", metrics["auc"], 0.0, 1.0)
    _exact_int("validation.n_samples", metrics["n_samples"], context.n_validation,
               "held-out images")


def _check_evaluate(result: Any, context: ContractContext) -> None:
    """Aggregate metrics only: accuracy, auc, confusion matrix, ROC curve, n_samples."""
    from common.training import ROC_THRESHOLDS

    _need(context, "evaluate", "n_samples")
    metrics = _exact_keys("result", result, ("metrics",))["metrics"]
    metrics = _exact_keys("metrics", metrics, ("accuracy", "auc", "confusion_matrix", "roc",
                                                "n_samples"))
    _exact_int("metrics.n_samples", metrics["n_samples"], context.n_samples, "images")
    (tn, fp), (fn, tp) = _confusion_matrix("metrics.confusion_matrix",
                                           metrics["confusion_matrix"], context.n_samples)
    _float("metrics.accuracy", metrics["accuracy"], 0.0, 1.0)
    if context.n_samples and metrics["accuracy"] != (tn + tp) / context.n_samples:
        raise _violation(f"metrics.accuracy is {metrics['accuracy']}; the confusion matrix "
                         f"gives {(tn + tp) / context.n_samples}")
    if metrics["auc"] is not None:
        _float("metrics.auc", metrics["auc"], 0.0, 1.0)
    roc = _exact_keys("metrics.roc", metrics["roc"], ("fpr", "tpr"))
    for name in ("fpr", "tpr"):
        rates = _finite_floats(f"metrics.roc.{name}", roc[name], len(ROC_THRESHOLDS), 0.0, 1.0)
        if np.any(np.diff(rates) > 0):  # thresholds ascend, so rates cannot rise
            raise _violation(f"metrics.roc.{name} rises with the threshold; a ROC rate "
                             f"cannot")


def _check_secure_train(result: Any, context: ContractContext) -> None:
    """One ciphertext per party of the round, each exactly as long as what it must be
    (a sealed seed; at the hospital's own index its sealed correction share), plus the
    history, n_samples and validation of train."""
    _need(context, "secure_train", "model", "epochs", "n_samples", "n_parties", "own_index")
    result = _exact_keys("result", result, ("sealed_shares", "n_samples", "history",
                                                   "validation"))
    lengths = _contribution_lengths(context.model, context.n_parties, context.own_index)
    shares = _sized_list("sealed_shares", result["sealed_shares"], len(lengths), "items",
                         ", one per party of the round")
    for party, (sealed, length) in enumerate(zip(shares, lengths)):
        path = f"sealed_shares[{party}]"
        _bytes(path, sealed)
        if len(sealed) != length:
            what = "sealed correction share" if party == context.own_index else "sealed seed"
            raise _violation(f"{path} is {len(sealed)} bytes; a {what} of the "
                             f"{context.model} model for party {party} is {length} bytes")
    _history("history", result["history"], context.epochs)
    _exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    _validation(result, context)


def _check_aggregate(result: Any, context: ContractContext) -> None:
    """A partial sum in the share wire format (never pickle) and the number of shares
    added. With ``context.model`` / ``n_parties`` it must also be a share of that model
    among that many parties."""
    _need(context, "aggregate", "n_ciphertexts")
    result = _exact_keys("result", result, ("partial_sum", "n_shares"))
    _partial_sum("partial_sum", result["partial_sum"], context)
    _exact_int("n_shares", result["n_shares"], context.n_ciphertexts, "sealed shares")


def _check_train_private(result: Any, context: ContractContext) -> None:
    """train's contract, plus the ε Opacus accounted, which may not exceed the charge."""
    _need(context, "train_private", "model", "epochs", "n_samples", "max_epsilon")
    result = _exact_keys("result", result, ("weights", "history", "n_samples", "privacy"))
    _check_train({k: result[k] for k in ("weights", "history", "n_samples")}
                 | {"validation": None}, context)
    _privacy_spent(result["privacy"], context)


def _check_secure_train_private(result: Any, context: ContractContext) -> None:
    """secure_train's contract, plus the ε Opacus accounted (at most the charge)."""
    _need(context, "secure_train_private", "max_epsilon")
    result = _exact_keys("result", result, ("sealed_shares", "n_samples", "history",
                                            "privacy"))
    _check_secure_train({k: result[k] for k in ("sealed_shares", "n_samples", "history")}
                        | {"validation": None}, context)
    _privacy_spent(result["privacy"], context)


def _privacy_spent(value: Any, context: ContractContext) -> None:
    privacy = _exact_keys("privacy", value, ("epsilon", "delta"))
    spent = _float("privacy.epsilon", privacy["epsilon"], 0.0)
    _float("privacy.delta", privacy["delta"], 0.0, 1.0)
    if spent > context.max_epsilon * 1.01:
        raise _violation(f"privacy.epsilon is {spent:.3f}; the domain charged for "
                         f"{context.max_epsilon:.3f}")


def _check_evaluate_private(result: Any, context: ContractContext) -> None:
    """Exact counts per label and score bin, summing to the images given (the domain adds
    the noise before anything is released)."""
    from common.dp_metrics import BINS

    _need(context, "evaluate_private", "n_samples")
    result = _exact_keys("result", result, ("histogram", "n_samples"))
    _exact_int("n_samples", result["n_samples"], context.n_samples, "images")
    rows = _sized_list("histogram", result["histogram"], 2, "rows", ", one per label")
    total = 0
    for label, row in enumerate(rows):
        for count in _sized_list(f"histogram[{label}]", row, BINS, "counts"):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise _violation(f"histogram[{label}] holds {_a(count)}; counts are "
                                 "non-negative integers")
            total += count
    if total != context.n_samples:
        raise _violation(f"histogram counts {total} images; the plan was given "
                         f"{context.n_samples}")


def _check_custom(result: Any, context: ContractContext) -> None:
    """Any plain data whose encoding is at most ``context.max_custom_bytes``."""
    try:
        parts = encode_parts(result)
    except PlainDataError as exc:  # names the path, e.g. "result['t'] is a torch tensor; ..."
        raise _violation(str(exc)) from None
    size = sum(part.nbytes if isinstance(part, memoryview) else len(part) for part in parts)
    if size > context.max_custom_bytes:
        raise _violation(f"result encodes to {size} bytes; custom results are limited to "
                         f"{context.max_custom_bytes} bytes")


_CHECKS: dict[str, Callable[[Any, ContractContext], None]] = {
    "train": _check_train, "evaluate": _check_evaluate, "secure_train": _check_secure_train,
    "aggregate": _check_aggregate, "train_private": _check_train_private,
    "secure_train_private": _check_secure_train_private,
    "evaluate_private": _check_evaluate_private, "custom": _check_custom}
assert tuple(_CHECKS) == KINDS


# --------------------------------------------------------------------------- shared parts

def _violation(message: str) -> ContractViolation:
    return ContractViolation(" ".join(message.split()))  # always one line


def _need(context: ContractContext, kind: str, *names: str) -> None:
    """ValueError (the caller's mistake, not the plan's) if the context lacks a value."""
    missing = [name for name in names if getattr(context, name) is None]
    if missing:
        raise ValueError(f"checking a {kind} result needs "
                         f"{', '.join('context.' + name for name in missing)}")


def _a(value: Any) -> str:
    """'a list', 'an int', 'a bool (True)', 'None': what a value is, for a message."""
    if value is None:
        return "None"
    name = type(value).__name__
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return f"{article} {name} ({value})" if isinstance(value, bool) else f"{article} {name}"


def _name(key: Any) -> str:
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _names(keys: Collection[Any]) -> str:
    shown = [_name(key) for key in list(keys)[:_SHOWN_NAMES]]
    more = len(keys) - len(shown)
    return ", ".join(shown) + (f", ... ({more} more)" if more > 0 else "")


def _exact_keys(path: str, value: Any, keys: Collection[str]) -> Mapping[str, Any]:
    """`value` must be a dict with exactly `keys`; returns it."""
    expected = sorted(keys)
    if not isinstance(value, dict):
        raise _violation(f"{path} is {_a(value)}; expected a dict with keys {_names(expected)}")
    if len(value) == len(expected) and all(key in value for key in expected):
        return value
    if len(expected) <= _LISTED_KEYS:
        present = [key for key in expected if key in value]
        extra = sorted((key for key in value if key not in keys), key=str)
        raise _violation(f"{path} has keys {_names(present + extra) if value else 'none'}; "
                         f"expected {_names(expected)}")
    # a state dict: list what is missing and what is not expected, not every name
    missing = [key for key in expected if key not in value]
    extra = sorted((key for key in value if key not in keys), key=str)
    problems = ([f"is missing {_names(missing)}"] if missing else []) + \
               ([f"has unexpected {_names(extra)}"] if extra else [])
    raise _violation(f"{path} {' and '.join(problems)}")


def _exact_int(path: str, value: Any, expected: int, given: str) -> None:
    """An int (not a bool) equal to what the plan was given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _violation(f"{path} is {_a(value)}; expected an int")
    if value != expected:
        raise _violation(f"{path} is {value}; the plan was given {expected} {given}")


def _float(path: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite Python float within [low, high]."""
    if type(value) is not float:
        raise _violation(f"{path} is {_a(value)}; expected a float")
    if not math.isfinite(value):
        raise _violation(f"{path} is not finite ({value})")
    if not low <= value <= high:
        bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise _violation(f"{path} is {value}; expected a value {bound}")
    return value


def _sized_list(path: str, value: Any, n: int, noun: str, why: str = "") -> list:
    """A list of exactly `n` items."""
    if not isinstance(value, list):
        raise _violation(f"{path} is {_a(value)}; expected a list of {n} {noun}")
    if len(value) != n:
        raise _violation(f"{path} has {len(value)} {noun}; expected {n}{why}")
    return value


def _finite_floats(path: str, values: Any, n: int, low: float = -math.inf,
                   high: float = math.inf) -> list[float]:
    """A list of exactly `n` finite Python floats within [low, high] (short lists only)."""
    values = _sized_list(path, values, n, "values")
    for index, value in enumerate(values):
        _float(f"{path}[{index}]", value, low, high)
    return values


def _history(path: str, value: Any, epochs: int) -> None:
    """Per-epoch training loss (>= 0) and accuracy (in [0, 1])."""
    history = _exact_keys(path, value, ("loss", "accuracy"))
    _finite_floats(f"{path}.loss", history["loss"], epochs, 0.0)
    _finite_floats(f"{path}.accuracy", history["accuracy"], epochs, 0.0, 1.0)


def _bytes(path: str, value: Any) -> bytes:
    if type(value) is not bytes:
        raise _violation(f"{path} is {_a(value)}; expected bytes")
    return value


@functools.lru_cache(maxsize=None)
def _model_shapes(model: str) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of `model` (buffers included), in state-dict order."""
    from common.models import build_model

    return {name: tuple(value.shape) for name, value in build_model(model).state_dict().items()}


def _shape(path: str, shape: tuple[int, ...], model: str, name: str) -> None:
    expected = _model_shapes(model)[name]
    if tuple(shape) != expected:
        raise _violation(f"{path} has shape {tuple(shape)}; the {model} model has {expected}")


def _weights(path: str, value: Any, model: str) -> None:
    """Exactly the model's state dict as finite float32 numpy arrays."""
    weights = _exact_keys(path, value, _model_shapes(model))
    for name in _model_shapes(model):
        item, item_path = weights[name], f"{path}[{name!r}]"
        if not isinstance(item, np.ndarray):
            raise _violation(f"{item_path} is {_a(item)}; expected a float32 numpy array")
        _shape(item_path, item.shape, model, name)
        if item.dtype != np.float32:
            raise _violation(f"{item_path} has dtype {item.dtype}; expected float32")
        if not np.isfinite(item).all():
            nan = int(np.isnan(item).sum())
            raise _violation(f"{item_path} is not finite ({nan} NaN, "
                             f"{int(np.isinf(item).sum())} inf of {item.size} values)")


def _confusion_matrix(path: str, value: Any, n_samples: int) -> list[list[int]]:
    """[[tn, fp], [fn, tp]]: non-negative ints that add up to the number of images."""
    rows = _sized_list(path, value, 2, "rows")
    for i, row in enumerate(rows):
        for j, count in enumerate(_sized_list(f"{path}[{i}]", row, 2, "counts")):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                shown = count if isinstance(count, int) and not isinstance(count, bool) \
                    else _a(count)
                raise _violation(f"{path}[{i}][{j}] is {shown}; expected a non-negative int")
    total = sum(map(sum, rows))
    if total != n_samples:
        raise _violation(f"{path} sums to {total}; the plan was given {n_samples} images")
    return rows


@functools.lru_cache(maxsize=None)
def _contribution_lengths(model: str, n_parties: int, own_index: int) -> tuple[int, ...]:
    """The exact byte length of each entry of a hospital's contribution to a round of
    `n_parties`: a sealed seed for every other party, the sealed correction share at
    `own_index`. Computed with the project's own functions, by contributing a zero
    float32 state dict of `model` to a throwaway round of that many parties."""
    from common.aggregation import RoundSpec, contribute
    from common.sealing import generate_keypair, key_to_text

    if not 0 <= own_index < n_parties:
        raise ValueError(f"context.own_index {own_index} is not below n_parties {n_parties}")
    zeros = {name: np.zeros(shape, np.float32) for name, shape in _model_shapes(model).items()}
    pairs = [generate_keypair() for _ in range(max(n_parties, 2))]
    spec = RoundSpec.new([key_to_text(public) for _, public in pairs[:n_parties]], 1)
    return tuple(len(sealed) for sealed in contribute(pairs[own_index][0], zeros, 1, spec))


def _partial_sum(path: str, value: Any, context: ContractContext) -> None:
    """Bounded bytes that ``common.wire`` parses as one party's sum of shares in the
    round's ring (``common.aggregation``: 32-bit words, its fractional bits)."""
    from common import wire
    from common.errors import SharingError
    from common.aggregation import FRAC_BITS, RING_BITS

    data = _bytes(path, value)
    if len(data) > MAX_PARTIAL_SUM_BYTES:
        raise _violation(f"{path} is {len(data)} bytes; at most {MAX_PARTIAL_SUM_BYTES} "
                         f"are allowed")
    try:
        shared = wire.loads(data)
    except (SharingError, ValueError, TypeError, RecursionError) as exc:
        raise _violation(f"{path} is not share data ({exc})") from None
    if not shared.tensors:
        raise _violation(f"{path} holds no tensors")
    if shared.frac_bits != FRAC_BITS:
        raise _violation(f"{path} has {shared.frac_bits} fractional bits; shares have "
                         f"{FRAC_BITS}")
    for name, tensor in shared.tensors.items():
        if tensor.data.dtype != np.dtype(f"uint{RING_BITS}"):
            raise _violation(f"{path}[{name!r}] holds {tensor.data.dtype} words, "
                             f"not uint{RING_BITS}")
    if context.n_parties is not None and shared.n_parties != context.n_parties:
        raise _violation(f"{path} is a share among {shared.n_parties} parties; expected "
                         f"{context.n_parties}")
    if context.model is not None:
        _exact_keys(path, shared.tensors, _model_shapes(context.model))
        for name, tensor in shared.tensors.items():
            _shape(f"{path}[{name!r}]", tensor.shape, context.model, name)
