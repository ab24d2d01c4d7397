"""Narrow changes to syft 0.9.5 behaviour on the hospital's own server process.

`run_private_pass_with`: syft runs approved code with ``exec`` in this process; the
private run goes to the sandbox dispatch instead. And after running approved code on the private data, syft
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

`reach_self_in_process`: syft's project service checks a project's leader route
by connecting to it from the server, over HTTP, with no token: the gate refuses
that, and PySyft's tutorial route `sy.Project(...).send()` failed. Routes to the
server itself now go in process; routes elsewhere are refused.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from common import syft_compat
from common.syft_compat import requires

MOCK_RESULT_NOTE = "not computed: the hospital runs approved code on private data only"
_state = threading.local()
_applied = False


_ACTION_SERVICE = "syft.service.action.action_service"


@requires(f"{_ACTION_SERVICE}:filter_twin_kwargs", f"{_ACTION_SERVICE}:execute_byte_code",
          f"{_ACTION_SERVICE}:TwinMode.MOCK", "syft.service.code.user_code:UserCodeExecutionOutput")
def run_private_pass_with(executor: Callable) -> None:
    """Make syft skip the mock re-run of approved code, and hand the private run to
    `executor(code_item, kwargs, context, output_type)` instead of its own ``exec``
    (the sandbox dispatch, `domain_setup.server.execution`). Idempotent."""
    global _applied
    if _applied:
        return
    action_service = syft_compat.resolve(f"{_ACTION_SERVICE}:")
    output_type = syft_compat.resolve("syft.service.code.user_code:UserCodeExecutionOutput")

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
            return output_type(user_code_id=code_item.id, stdout="", stderr="",
                               result=MOCK_RESULT_NOTE, errored=False)
        return executor(code_item, kwargs, context, output_type)

    original_filter = syft_compat.replace(f"{_ACTION_SERVICE}:filter_twin_kwargs",
                                          filter_twin_kwargs)
    syft_compat.replace(f"{_ACTION_SERVICE}:execute_byte_code", execute_byte_code)
    _applied = True


_TEXT_OR_BYTES = (bytes, bytearray, memoryview, str)
_ATTACH = "attach_attribute_to_syft_object"


@requires(f"syft.types.syft_object:{_ATTACH}", f"syft.service.service:{_ATTACH}")
def skip_byte_walks() -> None:
    """Make syft's post-call attribute walk skip bytes and str values (idempotent)."""
    original_attach = syft_compat.resolve(f"syft.types.syft_object:{_ATTACH}")
    if getattr(original_attach, "skips_bytes", False):
        return

    def attach_attribute_to_syft_object(result: Any, attr_dict: dict[str, Any]) -> None:
        if isinstance(result, _TEXT_OR_BYTES):
            return None
        return original_attach(result, attr_dict)

    attach_attribute_to_syft_object.skips_bytes = True  # type: ignore[attr-defined]
    # the recursion inside syft_object and the call in service.py both look the name up
    syft_compat.replace(f"syft.types.syft_object:{_ATTACH}", attach_attribute_to_syft_object)
    syft_compat.replace(f"syft.service.service:{_ATTACH}", attach_attribute_to_syft_object)


_ROUTES = "syft.service.network.routes"
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@requires(f"{_ROUTES}:route_to_connection", f"{_ROUTES}:HTTPServerRoute",
          "syft.client.client:PythonConnection", "syft.types.errors:SyftException")
def reach_self_in_process(host: str, port: int) -> None:
    """Routes the server itself follows (a project's leader route, which syft pings to
    check it) reach this very server in process, never over HTTP: an HTTP call back to
    our own URL carries no token and the gate would refuse it. A route to anywhere else
    is refused, so that researcher-supplied routes cannot make the server call out."""
    original = syft_compat.resolve(f"{_ROUTES}:route_to_connection")
    if getattr(original, "reaches_self", False):
        return
    http_route = syft_compat.resolve(f"{_ROUTES}:HTTPServerRoute")
    python_connection = syft_compat.resolve("syft.client.client:PythonConnection")
    syft_exception = syft_compat.resolve("syft.types.errors:SyftException")
    own_hosts = _LOOPBACK_NAMES | {host} if host in _LOOPBACK_NAMES else {host}

    def route_to_connection(route: Any, context: Any = None) -> Any:
        server = getattr(context, "server", None)
        if server is None:
            return original(route, context)
        if not isinstance(route, http_route):  # a Python route would build a Worker here
            raise syft_exception(public_message="this domain follows HTTP routes to itself only")
        if str(route.host_or_ip) in own_hosts and int(route.port) == int(port):
            return python_connection(server=server)
        raise syft_exception(public_message=(
            f"this domain does not connect out to {route.host_or_ip}:{route.port}; "
            "routes must point at the domain itself"))

    route_to_connection.reaches_self = True  # type: ignore[attr-defined]
    syft_compat.replace(f"{_ROUTES}:route_to_connection", route_to_connection)


_POLICY = "syft.service.policy.policy"


@requires(f"{_POLICY}:execute_policy_code", f"{_POLICY}:load_policy_code",
          "syft.types.errors:SyftException")
def refuse_custom_policy_code() -> None:
    """syft runs the Python of a researcher's custom input or output policy class with
    ``exec`` in this process (at approval, at every run, at every start). No such code
    runs here: only syft's built-in policies exist on this domain."""
    syft_exception = syft_compat.resolve("syft.types.errors:SyftException")

    def execute_policy_code(user_policy: Any) -> Any:
        raise syft_exception(public_message="custom policy classes are not run on this "
                             "domain; use MixedInputPolicy and SingleExecutionExactOutput")

    syft_compat.replace(f"{_POLICY}:execute_policy_code", execute_policy_code)


def apply_all(host: str, port: int, executor: Callable) -> None:
    """Every patch in this module, and the write and read guards of `syft_guards`; the
    hospital's server calls this once at start.

    Refuses (DomainError) when the installed syft lacks a name any compat function or
    patch relies on, naming each, instead of running half-patched."""
    from common.errors import DomainError
    from domain_setup.server.syft_guards import apply_guards  # registers its syft names

    problems = syft_compat.missing_names()
    if problems:
        raise DomainError("; ".join(problems))
    run_private_pass_with(executor)
    refuse_custom_policy_code()
    skip_byte_walks()
    reach_self_in_process(host, port)
    apply_guards()
