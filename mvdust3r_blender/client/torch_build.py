"""Which PyTorch build a machine should get, and why: the fallback for when uv cannot run.

uv's ``--torch-backend=auto`` reads the GPU driver and picks PyTorch's index itself. Where uv
cannot run (a platform without a bundled uv, a locked-down machine), pip installs torch, and pip
knows nothing of GPUs: PyPI's default torch is CUDA-enabled on Linux but CPU-only on Windows. This
module does what uv does, in spirit, so the pip path still gets the GPU build:

- an NVIDIA driver (``nvidia-smi``) → the newest CUDA build the driver runs (NVIDIA's minimum
  driver versions, the same table uv uses);
- on Linux, AMD's ROCm kernel driver (``/dev/kfd``) → the ROCm build;
- macOS → PyPI's default build (MPS on Apple silicon);
- anything else → the CPU build (on Linux that saves the ~3 GB of PyPI's CUDA default).

The facts (:class:`MachineFacts`) are gathered by :func:`probe_machine` here, or by running the
same commands elsewhere (a remote worker over ssh runs :data:`NVIDIA_SMI_QUERY` there and passes its
output to :func:`parse_nvidia_driver`); :func:`torch_build_for` turns facts into a
:class:`TorchBuild` and does no I/O.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional

PYTORCH_INDEX = "https://download.pytorch.org/whl"
DEFAULT = "default"  # PyPI's own torch: no PyTorch index
AUTO = "auto"        # uv decides (uv's --torch-backend=auto); never reaches pip

# The builds of PyTorch offered by name (uv's --torch-backend values and PyTorch's index folders),
# newest CUDA first. ``auto`` lets uv detect the GPU.
TORCH_BACKENDS: tuple[str, ...] = (AUTO, "cpu", "cu130", "cu128", "cu126", "rocm6.4")
ROCM_BACKEND = "rocm6.4"

# (build, minimum driver on Linux, minimum driver on Windows): NVIDIA's CUDA toolkit release notes
# (table 3; CUDA 12.x runs on any 12.x driver through minor version compatibility). Newest first.
CUDA_BUILDS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("cu130", (580,), (580,)),
    ("cu128", (525, 60, 13), (528, 33)),
)
CUDA_NAMES = {"cu130": "CUDA 13.0", "cu128": "CUDA 12.8", "cu126": "CUDA 12.6"}

# What the fallback runs to read the NVIDIA driver's version (one line per GPU, e.g. "570.86.10").
NVIDIA_SMI_QUERY: tuple[str, ...] = ("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")


@dataclass(frozen=True)
class MachineFacts:
    """What decides the build: ``system`` as ``sys.platform`` says it (``linux``, ``win32``,
    ``darwin``), ``machine`` as ``platform.machine()`` (``x86_64``, ``arm64``, ``AMD64``), the
    NVIDIA driver version (None: no NVIDIA driver) and whether AMD's ROCm kernel driver is loaded."""

    system: str
    machine: str
    nvidia_driver: Optional[str] = None
    rocm: bool = False


@dataclass(frozen=True)
class TorchBuild:
    """A PyTorch build and the reason it was chosen (shown in the install log and by Check).

    `backend` is a uv ``--torch-backend`` value (``auto``, ``cpu``, ``cu128``, ``rocm6.4``) or
    :data:`DEFAULT` (PyPI's own torch)."""

    backend: str
    reason: str

    @property
    def index_url(self) -> Optional[str]:
        """PyTorch's index for pip (None: PyPI's default torch)."""
        if self.backend == AUTO:
            raise ValueError("the 'auto' build is uv's to resolve: pip needs torch_build_for()'s choice")
        return None if self.backend == DEFAULT else f"{PYTORCH_INDEX}/{self.backend}"

    def describe(self) -> str:
        """``cu128 (NVIDIA driver 570.86.10 runs CUDA 12.8)``."""
        name = "PyPI's default" if self.backend == DEFAULT else self.backend
        return f"{name} ({self.reason})"


def parse_nvidia_driver(output: str) -> Optional[str]:
    """The driver version from :data:`NVIDIA_SMI_QUERY`'s output (the first GPU's), or None."""
    for line in output.splitlines():
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)*)\s*", line)
        if match:
            return match.group(1)
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def torch_build_for(facts: MachineFacts) -> TorchBuild:
    """The build pip should install on a machine with these facts, and why (no I/O)."""
    if facts.system == "darwin":
        if facts.machine.lower() in ("arm64", "aarch64"):
            return TorchBuild(DEFAULT, "Apple silicon: PyPI's build uses the Apple GPU (MPS)")
        return TorchBuild(DEFAULT, "Intel Mac: PyPI's build (CPU; PyTorch makes no GPU build for it)")
    windows = facts.system == "win32"
    if facts.nvidia_driver is not None:
        driver = _version(facts.nvidia_driver)
        for backend, linux_min, windows_min in CUDA_BUILDS:
            minimum = windows_min if windows else linux_min
            if driver >= minimum:
                return TorchBuild(backend, f"NVIDIA driver {facts.nvidia_driver} runs {CUDA_NAMES[backend]}")
        oldest = ".".join(map(str, CUDA_BUILDS[-1][2 if windows else 1]))
        return TorchBuild("cpu", f"NVIDIA driver {facts.nvidia_driver} is older than {oldest}, which "
                                 f"{CUDA_NAMES[CUDA_BUILDS[-1][0]]} needs: update the driver for the GPU build")
    if facts.system == "linux" and facts.rocm:
        return TorchBuild(ROCM_BACKEND, "AMD ROCm driver found (/dev/kfd)")
    return TorchBuild("cpu", "no NVIDIA driver (nvidia-smi) or AMD ROCm driver found")


def nvidia_driver(timeout: float = 10.0) -> Optional[str]:
    """This machine's NVIDIA driver version from ``nvidia-smi`` on PATH, or None (none, or it failed)."""
    try:
        done = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_driver(done.stdout) if done.returncode == 0 else None


def probe_machine(kfd_path: str = "/dev/kfd") -> MachineFacts:
    """The facts of this machine (runs ``nvidia-smi``; `kfd_path` is AMD's ROCm device)."""
    return MachineFacts(system=sys.platform, machine=platform.machine(), nvidia_driver=nvidia_driver(),
                        rocm=sys.platform.startswith("linux") and os.path.exists(kfd_path))


def choose_build(choice: str, uv_runs: bool, facts: Optional[MachineFacts] = None) -> TorchBuild:
    """The build to install for the preference `choice` (one of :data:`TORCH_BACKENDS`).

    A fixed choice is used as is. ``auto`` stays ``auto`` when uv runs (uv detects the driver; the
    reason says what this module would have picked, for the log); without uv it becomes
    :func:`torch_build_for`'s choice. `facts` default to :func:`probe_machine`'s.
    """
    if choice not in TORCH_BACKENDS:
        raise ValueError(f"unknown PyTorch build '{choice}': choose one of {', '.join(TORCH_BACKENDS)}")
    if choice != AUTO:
        return TorchBuild(choice, "chosen in the preferences")
    detected = torch_build_for(facts if facts is not None else probe_machine())
    if uv_runs:
        return TorchBuild(AUTO, f"uv detects the GPU driver; this add-on's own probe says {detected.describe()}")
    return detected
