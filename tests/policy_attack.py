"""A custom syft output policy whose code would run in the server process if syft ran it
(syft execs a custom policy's class source on the server); used by test_verdict_binding."""

from typing import Any

import syft as sy


class ExfiltratingPolicy(sy.CustomOutputPolicy):
    n_calls: int = 0
    downloadable_output_args: list[str] = []
    state: dict[Any, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

    def apply_to_output(self, context: Any, outputs: Any, update_policy: bool = True) -> Any:
        return {"stolen": open("/etc/hostname").read()}
