"""CPU threads of the commands that run models, chosen once and deliberately.

Why: PyTorch's OpenMP threads spin while they wait for each other. On a shared machine where other
processes hold cores, every parallel region then waits for a descheduled thread: ``saerad figure``
took 4 minutes on a busy 2-core machine and 18 s with one thread. So

1. OpenMP waits passively (``OMP_WAIT_POLICY=PASSIVE``), set before torch loads unless the user set
   it (:func:`prepare_openmp`, called by the ``saerad`` entry point);
2. the default thread count is the number of cores this process may use minus the cores the
   1-minute load average says are busy, at least 1; ``--threads N`` overrides it.
"""

from __future__ import annotations

import os

from saerad.errors import ConfigError


def prepare_openmp() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None) -> int:
    cores = available_cores()
    if requested is not None:
        if not 1 <= requested <= 4 * cores:
            raise ConfigError(f"--threads must be between 1 and {4 * cores} on this machine, got {requested}")
        return requested
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return max(1, min(cores, cores - int(round(busy))))


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads (see the module docstring); returns the number chosen."""
    import torch

    threads = choose_threads(requested)
    torch.set_num_threads(threads)
    return threads
