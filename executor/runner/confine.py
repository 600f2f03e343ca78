"""Privilege drop and syscall filter for the user's process, applied in the child between fork and user code.

The supervisor is root of the sandbox (holding only SETUID, SETGID and KILL); the child becomes uid/gid
65534 with no capabilities, so it cannot open the supervisor's descriptors, memory or pipes through
/proc (runsc does not honour PR_SET_DUMPABLE there, so a uid boundary is what separates them). The
seccomp filter then refuses the kernel surface that untrusted code has no use for: namespaces (a user
namespace would hand the code a full capability set inside it), ptrace, cross-process memory access,
keyrings, BPF, io_uring, mounts. gVisor implements seccomp for the programs it runs.

Standard library only: this file runs inside the sandbox image.
"""

import ctypes
import os
import platform
import struct

NOBODY = 65534
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
EPERM, ENOSYS = 1, 38

# seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0_LOW = 0, 4, 16
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
X32_SYSCALL_BIT = 0x40000000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
# The one bit of the file type that character (0o020000) and block (0o060000) devices share and no other
# type has: mknod of a FIFO stays allowed, of a device it is refused.
S_IFCHR_BIT = 0o020000
SUPERVISOR_PID = 1
PRIO_PROCESS = 0

ARCHITECTURES = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "clone": 56,
        "clone3": 435,
        "mknod": {133: 1, 259: 2},  # syscall number: index of the mode argument (mknod, mknodat)
        "refused": {
            "unshare": 272, "setns": 308, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
            "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "userfaultfd": 323,
            "perf_event_open": 298, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
            "io_uring_setup": 425, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432,
            "kcmp": 312, "personality": 135,
        },
        # syscall number: index of its pid argument (runsc 0.0~20240729 lets another uid use these on PID 1)
        "on_pid": {203: 0, 274: 0, 144: 0, 142: 0, 314: 0, 302: 0},
        "setpriority": 141,
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "clone": 220,
        "clone3": 435,
        "mknod": {33: 2},  # mknodat; aarch64 has no mknod
        "refused": {
            "unshare": 97, "setns": 268, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
            "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280, "userfaultfd": 282,
            "perf_event_open": 241, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
            "io_uring_setup": 425, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsmount": 432,
            "kcmp": 272, "personality": 92,
        },
        "on_pid": {122: 0, 100: 0, 119: 0, 118: 0, 274: 0, 261: 0},
        "setpriority": 140,
    },
}


class ConfinementError(RuntimeError):
    """The child could not be confined; it must not run user code."""


def drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    # Changing uid from 0 clears every capability; prove the way back is closed before going on.
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise ConfinementError("the child could regain uid 0")
    if os.getuid() != NOBODY or os.geteuid() != NOBODY or os.getgid() != NOBODY:
        raise ConfinementError("the child did not become nobody")


class Program:
    """A tiny BPF assembler: statements with symbolic jump targets, resolved when assembled."""

    def __init__(self) -> None:
        self.statements: list[tuple[int, int, str | None, str | None]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.statements)

    def add(self, code: int, k: int, true: str | None = None, false: str | None = None) -> None:
        self.statements.append((code, k, true, false))

    def assemble(self) -> bytes:
        def offset(here: int, target: str | None) -> int:
            return 0 if target is None else self.labels[target] - here - 1

        return b"".join(
            struct.pack("=HBBI", code, offset(here, true), offset(here, false), k)
            for here, (code, k, true, false) in enumerate(self.statements)
        )


def filter_program(arch: dict) -> bytes:
    """Refuse the listed syscalls (EPERM), clone3 (ENOSYS, so libc falls back to clone), clone with a
    namespace flag and mknod of a device (EPERM); kill a process that uses another ABI."""
    program = Program()
    program.add(LD_W_ABS, OFFSET_ARCH)
    program.add(JEQ_K, arch["audit_arch"], false="kill")
    program.add(LD_W_ABS, OFFSET_NR)
    program.add(JGE_K, X32_SYSCALL_BIT, true="enosys")
    for number in sorted(arch["refused"].values()):
        program.add(JEQ_K, number, true="eperm")
    program.add(JEQ_K, arch["clone3"], true="enosys")
    program.add(JEQ_K, arch["clone"], true="clone")
    for number in sorted(arch["mknod"]):
        program.add(JEQ_K, number, true=f"mknod_{number}")
    for number in sorted(arch["on_pid"]):
        program.add(JEQ_K, number, true=f"on_pid_{number}")
    program.add(JEQ_K, arch["setpriority"], true="setpriority")
    program.add(RET_K, RET_ALLOW)
    # The supervisor is PID 1: the user's processes may tune themselves, never it. runsc 0.0~20240729 skips
    # the cross-uid check for setpriority, sched_setaffinity and get_robust_list on it (see the README's
    # threat model), so the pid argument is checked here; the scheduler and rlimit calls go with them.
    for number, argument in sorted(arch["on_pid"].items()):
        program.label(f"on_pid_{number}")
        program.add(LD_W_ABS, OFFSET_ARG0_LOW + 8 * argument)
        program.add(JEQ_K, SUPERVISOR_PID, true="eperm")
        program.add(RET_K, RET_ALLOW)
    # setpriority(which, who, prio): only PRIO_PROCESS of a process other than PID 1 (a process group or a
    # user's processes could include the supervisor).
    program.label("setpriority")
    program.add(LD_W_ABS, OFFSET_ARG0_LOW)
    program.add(JEQ_K, PRIO_PROCESS, false="eperm")
    program.add(LD_W_ABS, OFFSET_ARG0_LOW + 8)
    program.add(JEQ_K, SUPERVISOR_PID, true="eperm")
    program.add(RET_K, RET_ALLOW)
    program.label("clone")
    program.add(LD_W_ABS, OFFSET_ARG0_LOW)
    program.add(JSET_K, CLONE_NAMESPACE_FLAGS, true="eperm")
    program.add(RET_K, RET_ALLOW)
    for number, argument in sorted(arch["mknod"].items()):
        program.label(f"mknod_{number}")
        program.add(LD_W_ABS, OFFSET_ARG0_LOW + 8 * argument)
        program.add(JSET_K, S_IFCHR_BIT, true="eperm")
        program.add(RET_K, RET_ALLOW)
    program.label("eperm")
    program.add(RET_K, RET_ERRNO | EPERM)
    program.label("enosys")
    program.add(RET_K, RET_ERRNO | ENOSYS)
    program.label("kill")
    program.add(RET_K, RET_KILL_PROCESS)
    return program.assemble()


def install_syscall_filter() -> None:
    arch = ARCHITECTURES.get(platform.machine())
    if arch is None:
        raise ConfinementError(f"no syscall filter for architecture {platform.machine()}")
    program = filter_program(arch)
    buffer = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise ConfinementError(f"PR_SET_NO_NEW_PRIVS failed: errno {ctypes.get_errno()}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise ConfinementError(f"installing the seccomp filter failed: errno {ctypes.get_errno()}")


def confine_child() -> None:
    """Become nobody, then filter syscalls. Called in the forked child before it runs anything of the user."""
    drop_to_nobody()
    install_syscall_filter()


def keep_only_capabilities(*capabilities: int) -> None:
    """Shrink the supervisor's own capability sets once it no longer needs SETUID/SETGID (after the fork)."""
    mask = 0
    for capability in capabilities:
        mask |= 1 << capability

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (Data * 2)(Data(mask, mask, 0), Data(0, 0, 0))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise ConfinementError(f"capset failed: errno {ctypes.get_errno()}")
