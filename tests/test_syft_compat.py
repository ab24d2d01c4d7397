"""Every syft internal the project relies on exists in the installed syft, and a missing
one is reported by the name of the compat function that needs it."""

from __future__ import annotations

import io
import sys
import threading

from common import syft_compat
from domain_setup.server import syft_guards  # noqa: F401  (its guards declare their targets)
from domain_setup.server import syft_patches  # noqa: F401  (its patches declare their targets)


def test_installed_syft_has_every_name_the_project_relies_on():
    assert syft_compat.missing_names() == []
    assert "run_private_pass_with" in syft_compat._REQUIRED  # the patches are covered too
    assert "signed_api_call" in syft_compat._REQUIRED


def test_a_missing_name_is_reported_with_the_function_that_needs_it():
    problems = syft_compat.missing_names({
        "user_by_email": ("syft.service.user.user_stash:UserStash.get_by_email",),
        "renamed_patch": ("syft.service.action.action_service:execute_byte_code_v2",),
        "moved_module": ("syft.no_such_module:anything",)})
    assert problems == [
        "syft_compat.renamed_patch expects syft.service.action.action_service:"
        "execute_byte_code_v2, which the installed syft does not have",
        "syft_compat.moved_module expects syft.no_such_module:anything, "
        "which the installed syft does not have"]


def test_muted_silences_only_the_thread_inside_it(capsys):
    entered, release = threading.Event(), threading.Event()

    def chatty_syft_call() -> None:
        with syft_compat.muted():
            entered.set()
            print("syft chatter")
            release.wait(5)
            print("more chatter")

    worker = threading.Thread(target=chatty_syft_call)
    worker.start()
    entered.wait(5)
    print("researcher output while a muted call runs")
    release.set()
    worker.join(5)
    print("after")
    out = capsys.readouterr().out
    assert "researcher output while a muted call runs" in out and "after" in out
    assert "chatter" not in out


def test_overlapping_muted_threads_never_leave_stdout_muted():
    original = sys.stdout
    sink = io.StringIO()
    sys.stdout = sink
    try:
        barrier = threading.Barrier(4)

        def call() -> None:
            with syft_compat.muted():
                barrier.wait(5)
                print("hidden")

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        print("visible")
    finally:
        sys.stdout = original
    assert sink.getvalue() == "visible\n"
