"""The seccomp filters of the sandbox, built with pyseccomp (libseccomp).

Stage 1 (``sandbox_filter``) is loaded by bwrap for everything in the sandbox:
default ALLOW, EPERM for networking, debugging other processes, mounts and
namespaces, kernel keyrings, BPF, io_uring, module loading, clock/reboot/swap and
other host administration; ENOSYS for clone3 (its flags are behind a pointer, so
glibc must fall back to clone, whose flags the filter can check).

Stage 2 (``plan_filter``) is stage 1 plus no new programs and no new processes:
execve, execveat, fork, vfork and clone without CLONE_THREAD (threads still work,
torch needs them). The runner installs it on itself, for all its threads, just
before it compiles the researcher's code.

Both are exported as raw BPF (``export_bpf``) so that neither bwrap nor the runner
needs libseccomp at load time.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from .errors import SandboxUnavailable

DENIED_SYSCALLS = (
    # networking (the sandbox also has its own empty network namespace)
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    # mounts and namespaces
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    # kernel attack surface
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "open_by_handle_at", "name_to_handle_at",
    # host administration
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "iopl", "ioperm", "acct", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "quotactl", "syslog",
)
PLAN_DENIED_SYSCALLS = ("execve", "execveat", "fork", "vfork")

CLONE_THREAD = 0x00010000
CLONE_NEW_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


def _seccomp() -> Any:
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as exc:
        raise SandboxUnavailable(f"pyseccomp/libseccomp not usable ({exc}): "
                                 f"apt-get install libseccomp2 && pip install pyseccomp") from None
    return pyseccomp


def _deny_personality_changes(seccomp: Any, filt: Any, action: int) -> None:
    """EPERM for personality(x) unless x is PER_LINUX (0) or the query 0xffffffff.

    The kernel reads x as an unsigned int. libseccomp cannot test one argument twice
    in a rule, so the 32 bits are covered by "two adjacent bits differ" rules: true
    for every value except all zeros and all ones.
    """
    for bit in range(31):
        pair = 0b11 << bit
        for value in (0b01 << bit, 0b10 << bit):
            filt.add_rule(action, "personality", seccomp.Arg(0, seccomp.MASKED_EQ, pair, value))


def sandbox_filter() -> Any:
    """Stage 1: the ``pyseccomp.SyscallFilter`` bwrap installs for the whole sandbox."""
    seccomp = _seccomp()
    filt = seccomp.SyscallFilter(seccomp.ALLOW)
    deny = seccomp.ERRNO(errno.EPERM)
    for name in DENIED_SYSCALLS:
        filt.add_rule(deny, name)
    filt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NEW_FLAGS.values():
        filt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    _deny_personality_changes(seccomp, filt, deny)
    return filt


def plan_filter() -> Any:
    """Stage 2: stage 1 plus no exec and no new processes (threads allowed)."""
    seccomp = _seccomp()
    filt = sandbox_filter()
    deny = seccomp.ERRNO(errno.EPERM)
    for name in PLAN_DENIED_SYSCALLS:
        filt.add_rule(deny, name)
    filt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    return filt


def export_bpf(filt: Any) -> bytes:
    """The filter as a raw BPF program (``struct sock_filter`` array) for bwrap/seccomp(2)."""
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as handle:
        filt.export_bpf(handle)
        handle.seek(0)
        return handle.read()


def seccomp_syscall_number() -> int:
    """The number of the seccomp(2) syscall on this architecture (for the runner)."""
    seccomp = _seccomp()
    return int(seccomp.resolve_syscall(seccomp.Arch.NATIVE, "seccomp"))
