"""What the benchmarks read off Linux: CPU seconds of a process, memory in use, the machine.

Memory in use is the sum of what Python's small-object allocator (pymalloc) has handed out, from
its own statistics, and what glibc's ``malloc`` has handed out (``mallinfo2``), which covers
Python's larger objects and everything C libraries allocate, OpenSSL's certificate stores
included. Both are exact counts of live bytes, read in about a millisecond. Two other ways were
tried and dropped: ``tracemalloc`` does not see OpenSSL's memory (most of the peer-style
baseline's) and made polling six times slower; resident-set growth is right for the first case of
a run only, because memory one case frees stays resident and the next case reuses it without
growing. Resident memory remains the fallback where glibc is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import platform
import ssl
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()
_MALLINFO2 = getattr(_LIBC, "mallinfo2", None)
if _MALLINFO2 is not None:
    _MALLINFO2.restype = _MallInfo2


def malloc_in_use() -> int | None:
    """Bytes glibc's ``malloc`` has handed out and not had back (glibc 2.33+)."""
    if _MALLINFO2 is None:
        return None
    info = _MALLINFO2()
    return int(info.uordblks + info.hblkhd)


_PYMALLOC_IN_USE = "# bytes in allocated blocks"


def pymalloc_in_use() -> int | None:
    """Bytes in Python's small-object blocks now (pymalloc's own statistics; None if not in use).

    ``sys._debugmallocstats`` writes to file descriptor 2, so it is pointed at a temporary file
    for the call (well under a millisecond). pymalloc takes its arenas straight from ``mmap``, so
    these bytes are not part of :func:`malloc_in_use`.
    """
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return None
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("ascii", "replace")
    for line in text.splitlines():
        if line.startswith(_PYMALLOC_IN_USE):
            return int(line.split("=", 1)[1].replace(",", "").strip())
    return None


def heap_in_use() -> int | None:
    """Live bytes of the process's heap: pymalloc's small blocks plus ``malloc``'s (None: unknown)."""
    in_malloc = malloc_in_use()
    if in_malloc is None:
        return None
    in_pymalloc = pymalloc_in_use()
    if in_pymalloc is None and os.environ.get("PYTHONMALLOC") not in ("malloc", "malloc_debug"):
        return None  # pymalloc is in use but its count could not be read
    return in_malloc + (in_pymalloc or 0)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    """Resident set size of this process now."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """Highest resident set size of this process since start or :func:`reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Start a new peak (``echo 5 > /proc/self/clear_refs``, Linux 4.0+); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS, so the next RSS delta starts clean.

    Without ``malloc_trim`` the memory freed by one case stays resident and the next case would
    reuse it without its RSS growing, i.e. look cheaper than it is.
    """
    gc.collect()
    if _LIBC is not None:
        with contextlib.suppress(AttributeError):
            _LIBC.malloc_trim(0)


def cpu_model() -> str:
    """The CPU's marketing name as the kernel reports it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """The facts a reader needs to compare a benchmark run with their own."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu_model()} ({platform.machine()}), {cores} cores usable, {os.cpu_count()} online",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "airflow": _version("apache-airflow"),
        "libraries": f"httpx {_version('httpx')}, pydantic {_version('pydantic')}, {ssl.OPENSSL_VERSION}",
        "executable": os.path.basename(sys.executable),
    }


def load_average() -> str:
    """``1-min / 5-min / 15-min`` load averages."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
