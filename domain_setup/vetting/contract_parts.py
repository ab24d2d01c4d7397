"""The parts output contracts are made of, and the context a result is checked against.

Each plan kind (``domain_setup/vetting/kinds/``) declares its contract as a function of
the result and a `ContractContext` built from these parts. A sandboxed run returns
plain data; that alone says nothing about its *shape*: a vetted plan has a fixed
output, and anything else it returns (an extra key, an array of the wrong shape, a
NaN, an n_samples that lies) is withheld. Every violation is a ``ContractViolation``
(a ``PlanError``) whose message names the offending path: ``result`` is the whole
result, its keys are named bare (``weights``, ``metrics.roc.fpr[3]``) and state-dict
names in brackets (``weights['features.0.weight']``). That message is for the admin
(the domain log and the audit log): the researcher is told only which contract broke.
A context lacking a value the kind needs is a programming error: ``ValueError``.

    context = ContractContext(model="small_cnn", epochs=3, n_samples=len(images))
    weights("weights", result["weights"], context.model)   # ContractViolation, or None

``common`` (torch, PyNaCl) is imported only when a check needs a model or a seal.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Any, Collection, Mapping

import numpy as np

from domain_setup.sandbox.errors import ContractViolation

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
    with_control: bool = False        # a SCAFFOLD job round: control variates beside weights

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError(f"context.model must be a str or None, got {self.model!r}")
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in ("model", "max_epsilon", "with_control") or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"context.{field.name} must be a non-negative int, "
                                 f"got {value!r}")


# --------------------------------------------------------------------------- shared parts

def violation(message: str) -> ContractViolation:
    return ContractViolation(" ".join(message.split()))  # always one line


def need(context: ContractContext, kind: str, *names: str) -> None:
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


def exact_keys(path: str, value: Any, keys: Collection[str]) -> Mapping[str, Any]:
    """`value` must be a dict with exactly `keys`; returns it."""
    expected = sorted(keys)
    if not isinstance(value, dict):
        raise violation(f"{path} is {_a(value)}; expected a dict with keys {_names(expected)}")
    if len(value) == len(expected) and all(key in value for key in expected):
        return value
    if len(expected) <= _LISTED_KEYS:
        present = [key for key in expected if key in value]
        extra = sorted((key for key in value if key not in keys), key=str)
        raise violation(f"{path} has keys {_names(present + extra) if value else 'none'}; "
                         f"expected {_names(expected)}")
    # a state dict: list what is missing and what is not expected, not every name
    missing = [key for key in expected if key not in value]
    extra = sorted((key for key in value if key not in keys), key=str)
    problems = ([f"is missing {_names(missing)}"] if missing else []) + \
               ([f"has unexpected {_names(extra)}"] if extra else [])
    raise violation(f"{path} {' and '.join(problems)}")


def exact_int(path: str, value: Any, expected: int, given: str) -> None:
    """An int (not a bool) equal to what the plan was given."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise violation(f"{path} is {_a(value)}; expected an int")
    if value != expected:
        raise violation(f"{path} is {value}; the plan was given {expected} {given}")


def float_in(path: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite Python float within [low, high]."""
    if type(value) is not float:
        raise violation(f"{path} is {_a(value)}; expected a float")
    if not math.isfinite(value):
        raise violation(f"{path} is not finite ({value})")
    if not low <= value <= high:
        bound = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise violation(f"{path} is {value}; expected a value {bound}")
    return value


def sized_list(path: str, value: Any, n: int, noun: str, why: str = "") -> list:
    """A list of exactly `n` items."""
    if not isinstance(value, list):
        raise violation(f"{path} is {_a(value)}; expected a list of {n} {noun}")
    if len(value) != n:
        raise violation(f"{path} has {len(value)} {noun}; expected {n}{why}")
    return value


def finite_floats(path: str, values: Any, n: int, low: float = -math.inf,
                   high: float = math.inf) -> list[float]:
    """A list of exactly `n` finite Python floats within [low, high] (short lists only)."""
    values = sized_list(path, values, n, "values")
    for index, value in enumerate(values):
        float_in(f"{path}[{index}]", value, low, high)
    return values


def history(path: str, value: Any, epochs: int) -> None:
    """Per-epoch training loss (>= 0) and accuracy (in [0, 1])."""
    history = exact_keys(path, value, ("loss", "accuracy"))
    finite_floats(f"{path}.loss", history["loss"], epochs, 0.0)
    finite_floats(f"{path}.accuracy", history["accuracy"], epochs, 0.0, 1.0)


def bytes_value(path: str, value: Any) -> bytes:
    if type(value) is not bytes:
        raise violation(f"{path} is {_a(value)}; expected bytes")
    return value


@functools.lru_cache(maxsize=None)
def model_shapes(model: str) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes of `model` (buffers included), in state-dict order."""
    from common.models import build_model

    return {name: tuple(value.shape) for name, value in build_model(model).state_dict().items()}


def control_shapes(model: str, zeros: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zeros shaped like `model`'s trainable parameters (a SCAFFOLD control variate)."""
    from common.scaffold import parameter_names

    return {name: zeros[name] for name in parameter_names(model)}


def control_variate(path: str, value: Any, model: str) -> None:
    """Exactly `model`'s trainable parameters as finite float32 numpy arrays."""
    from common.scaffold import parameter_names

    names = parameter_names(model)
    items = exact_keys(path, value, names)
    for name in names:
        item, item_path = items[name], f"{path}[{name!r}]"
        if not isinstance(item, np.ndarray) or item.dtype != np.float32:
            raise violation(f"{item_path} is {_a(item)}; expected a float32 numpy array")
        shape(item_path, item.shape, model, name)
        if not np.isfinite(item).all():
            raise violation(f"{item_path} is not finite")


def shape(path: str, shape: tuple[int, ...], model: str, name: str) -> None:
    expected = model_shapes(model)[name]
    if tuple(shape) != expected:
        raise violation(f"{path} has shape {tuple(shape)}; the {model} model has {expected}")


def weights(path: str, value: Any, model: str) -> None:
    """Exactly the model's state dict as finite float32 numpy arrays."""
    weights = exact_keys(path, value, model_shapes(model))
    for name in model_shapes(model):
        item, item_path = weights[name], f"{path}[{name!r}]"
        if not isinstance(item, np.ndarray):
            raise violation(f"{item_path} is {_a(item)}; expected a float32 numpy array")
        shape(item_path, item.shape, model, name)
        if item.dtype != np.float32:
            raise violation(f"{item_path} has dtype {item.dtype}; expected float32")
        if not np.isfinite(item).all():
            nan = int(np.isnan(item).sum())
            raise violation(f"{item_path} is not finite ({nan} NaN, "
                             f"{int(np.isinf(item).sum())} inf of {item.size} values)")


def confusion_matrix(path: str, value: Any, n_samples: int) -> list[list[int]]:
    """[[tn, fp], [fn, tp]]: non-negative ints that add up to the number of images."""
    rows = sized_list(path, value, 2, "rows")
    for i, row in enumerate(rows):
        for j, count in enumerate(sized_list(f"{path}[{i}]", row, 2, "counts")):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                shown = count if isinstance(count, int) and not isinstance(count, bool) \
                    else _a(count)
                raise violation(f"{path}[{i}][{j}] is {shown}; expected a non-negative int")
    total = sum(map(sum, rows))
    if total != n_samples:
        raise violation(f"{path} sums to {total}; the plan was given {n_samples} images")
    return rows


@functools.lru_cache(maxsize=None)
def contribution_lengths(model: str, n_parties: int, own_index: int,
                         with_control: bool = False) -> tuple[int, ...]:
    """The exact byte length of each entry of a hospital's contribution to a round of
    `n_parties`: a sealed seed for every other party, the sealed correction share at
    `own_index`. Computed with the project's own functions, by contributing a zero
    float32 state dict of `model` (and, `with_control`, a zero SCAFFOLD control step) to
    a throwaway round of that many parties."""
    from common.aggregation import RoundSpec, contribute
    from common.scaffold import with_control as and_control
    from common.sealing import generate_keypair, key_to_text

    if not 0 <= own_index < n_parties:
        raise ValueError(f"context.own_index {own_index} is not below n_parties {n_parties}")
    zeros = {name: np.zeros(shape, np.float32) for name, shape in model_shapes(model).items()}
    if with_control:
        zeros = and_control(zeros, control_shapes(model, zeros))
    pairs = [generate_keypair() for _ in range(max(n_parties, 2))]
    spec = RoundSpec.new([key_to_text(public) for _, public in pairs[:n_parties]], 1, "0" * 64)
    return tuple(len(sealed) for sealed in contribute(pairs[own_index][0], zeros, 1, spec))


def partial_sum(path: str, value: Any, context: ContractContext) -> None:
    """Bounded bytes that ``common.wire`` parses as one party's sum of shares in the
    round's ring (``common.aggregation``: 32-bit words, its fractional bits)."""
    from common import wire
    from common.errors import SharingError
    from common.aggregation import FRAC_BITS, RING_BITS

    data = bytes_value(path, value)
    if len(data) > MAX_PARTIAL_SUM_BYTES:
        raise violation(f"{path} is {len(data)} bytes; at most {MAX_PARTIAL_SUM_BYTES} "
                         f"are allowed")
    try:
        shared = wire.loads(data)
    except (SharingError, ValueError, TypeError, RecursionError) as exc:
        raise violation(f"{path} is not share data ({exc})") from None
    if not shared.tensors:
        raise violation(f"{path} holds no tensors")
    if shared.frac_bits != FRAC_BITS:
        raise violation(f"{path} has {shared.frac_bits} fractional bits; shares have "
                         f"{FRAC_BITS}")
    for name, tensor in shared.tensors.items():
        if tensor.data.dtype != np.dtype(f"uint{RING_BITS}"):
            raise violation(f"{path}[{name!r}] holds {tensor.data.dtype} words, "
                             f"not uint{RING_BITS}")
    if context.n_parties is not None and shared.n_parties != context.n_parties:
        raise violation(f"{path} is a share among {shared.n_parties} parties; expected "
                         f"{context.n_parties}")
    if context.model is not None:
        exact_keys(path, shared.tensors, model_shapes(context.model))
        for name, tensor in shared.tensors.items():
            shape(f"{path}[{name!r}]", tensor.shape, context.model, name)


def validation(result: Mapping[str, Any], context: ContractContext) -> None:
    """Loss, accuracy and AUC (None with one class only) of the held-out images; None
    when no image was held out."""
    if not context.n_validation:
        if result["validation"] is not None:
            raise violation("validation must be None: no image was held out")
        return
    metrics = exact_keys("validation", result["validation"],
                          ("loss", "accuracy", "auc", "n_samples"))
    float_in("validation.loss", metrics["loss"], 0.0)
    float_in("validation.accuracy", metrics["accuracy"], 0.0, 1.0)
    if metrics["auc"] is not None:
        float_in("validation.auc", metrics["auc"], 0.0, 1.0)
    exact_int("validation.n_samples", metrics["n_samples"], context.n_validation,
               "held-out images")


def privacy_spent(value: Any, context: ContractContext) -> None:
    privacy = exact_keys("privacy", value, ("epsilon", "delta"))
    spent = float_in("privacy.epsilon", privacy["epsilon"], 0.0)
    float_in("privacy.delta", privacy["delta"], 0.0, 1.0)
    if spent > context.max_epsilon * 1.01:
        raise violation(f"privacy.epsilon is {spent:.3f}; the domain charged for "
                         f"{context.max_epsilon:.3f}")
