"""``custom``: any other code. Its whole return value is one field that needs the admin's
trust; it runs only after an admin read it (an override with a reason, audited)."""

from domain_setup.sandbox.errors import PlainDataError
from domain_setup.sandbox.plain_data import encode_parts
from domain_setup.vetting import contract_parts as part
from domain_setup.vetting.registry import CUSTOM, Bound, PlanKind, Released, register


def check(result, context):
    """Any plain data whose encoding is at most ``context.max_custom_bytes`` (the sandbox
    refuses a larger result by its size, before anything decodes it)."""
    try:
        parts = encode_parts(result)
    except PlainDataError as exc:  # names the path, e.g. "result['t'] is a torch tensor; ..."
        raise part.violation(str(exc)) from None
    size = sum(chunk.nbytes if isinstance(chunk, memoryview) else len(chunk) for chunk in parts)
    if size > context.max_custom_bytes:
        raise part.violation(f"result encodes to {size} bytes; custom results are limited to "
                             f"{context.max_custom_bytes} bytes")


KIND = register(PlanKind(
    name=CUSTOM, function=None, inputs={}, constants=(), contract=check, whole_result=True,
    releases=(Released("result", Bound.TRUSTED,
                       "whatever the code returns (plain data, at most "
                       "releases.custom_max_result_kb): only the admin's reading bounds it"),),
    summary="custom code: read by an admin, approved only with an override"))
