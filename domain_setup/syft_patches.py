"""Narrow changes to syft 0.9.5 behaviour on the hospital's own server process.

`skip_mock_reexecution`: after running approved code on the private data, syft
0.9.5 runs it a second time on the mocks to build the mock half of a "twin"
result (`ActionService._user_code_execute`). For a training plan that doubles
the time of every approved request, and code that depends on a private value
(the aggregation plan opens sealed shares with the hospital's key) fails on the
mock and makes the whole request fail. Researchers run plans on the mock
themselves, so the mock half of the result becomes a short note instead, and
the mock inputs are not even loaded.

`skip_byte_walks`: after every service call syft walks the result recursively
(`attach_attribute_to_syft_object`) to stamp server ids on syft objects. It
treats `bytes` and `str` as sequences and visits them one element at a time, so
a 13 MB blob read or a result holding sealed shares cost seconds of pure Python
looping. Neither can hold a syft object; the walk now steps over them.
"""

from __future__ import annotations

import threading
from typing import Any

MOCK_RESULT_NOTE = "not computed: the hospital runs approved code on private data only"
_state = threading.local()
_applied = False


def skip_mock_reexecution() -> None:
    """Make syft skip the mock re-run of approved code (idempotent)."""
    global _applied
    if _applied:
        return
    from syft.service.action import action_service
    from syft.service.code.user_code import UserCodeExecutionOutput

    original_filter = action_service.filter_twin_kwargs
    original_execute = action_service.execute_byte_code

    def filter_twin_kwargs(kwargs: dict, twin_mode: Any, allow_python_types: bool = False) -> Any:
        # only the mock pass of _user_code_execute asks for MOCK with python types allowed;
        # the execute_byte_code call that follows it on this thread is that pass
        if twin_mode == action_service.TwinMode.MOCK and allow_python_types:
            _state.skip_next = True
            kwargs = {}  # the mock pass is skipped: do not load the mock inputs either
        return original_filter(kwargs, twin_mode, allow_python_types=allow_python_types)

    def execute_byte_code(code_item: Any, kwargs: dict, context: Any) -> Any:
        if getattr(_state, "skip_next", False):
            _state.skip_next = False
            return UserCodeExecutionOutput(user_code_id=code_item.id, stdout="", stderr="",
                                           result=MOCK_RESULT_NOTE, errored=False)
        return original_execute(code_item, kwargs, context)

    action_service.filter_twin_kwargs = filter_twin_kwargs
    action_service.execute_byte_code = execute_byte_code
    _applied = True


_TEXT_OR_BYTES = (bytes, bytearray, memoryview, str)


def skip_byte_walks() -> None:
    """Make syft's post-call attribute walk skip bytes and str values (idempotent)."""
    from syft.service import service
    from syft.types import syft_object

    original_attach = syft_object.attach_attribute_to_syft_object
    if getattr(original_attach, "skips_bytes", False):
        return

    def attach_attribute_to_syft_object(result: Any, attr_dict: dict[str, Any]) -> None:
        if isinstance(result, _TEXT_OR_BYTES):
            return None
        return original_attach(result, attr_dict)

    attach_attribute_to_syft_object.skips_bytes = True  # type: ignore[attr-defined]
    # the recursion inside syft_object and the call in service.py both look the name up
    syft_object.attach_attribute_to_syft_object = attach_attribute_to_syft_object
    service.attach_attribute_to_syft_object = attach_attribute_to_syft_object


def apply_all() -> None:
    """Every patch in this module; the hospital's server calls this once at start."""
    skip_mock_reexecution()
    skip_byte_walks()
