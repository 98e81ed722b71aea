"""Starting or joining Ray for ``metasr serve`` and ``metasr upscale --engine ray``, with nothing phoning home.

:func:`init_ray` sets ``RAY_USAGE_STATS_ENABLED=0`` before Ray is imported (no usage report is ever sent),
then either starts an embedded local Ray (``address=None``: a new instance even where ``ray start`` runs or
``RAY_ADDRESS`` is set; no dashboard; Ray's logs at WARNING) or joins a running cluster (``address=
"HOST:PORT"`` or ``"auto"``; that cluster's own settings apply there; a HOST:PORT where nothing listens is a
one-line ``ValueError`` before Ray is imported). The caller's SIGINT / SIGTERM handlers
are put back after ``ray.init`` (Ray installs its own, which dumps a stack), so an interrupt still unwinds
through every ``finally``. Ray is imported only by the functions here, lazily: without it the caller gets a
``ModuleNotFoundError`` for ``ray`` that the command line turns into "metasr COMMAND needs ray ... (pip
install 'metasr[serve]')".
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import ModuleType

__all__ = ["check_reachable", "init_ray", "no_telemetry_env", "replica_cpus", "require_ray"]

# set in this process and handed to every Ray process it starts
_QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_USAGE_STATS_PROMPT_ENABLED": "0"}


def require_ray() -> None:
    """Raise ``ModuleNotFoundError`` (name ``ray``) when Ray is not installed, without importing it."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")


def no_telemetry_env() -> dict[str, str]:
    """The environment variables that keep Ray from sending usage statistics (set by :func:`init_ray`)."""
    return dict(_QUIET)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> ModuleType:
    """Start an embedded local Ray (``num_cpus``: None for all) or join the cluster at ``address``; returns
    the ``ray`` module. A Ray already initialised in this process is kept as it is."""
    os.environ.update(_QUIET)
    if address:
        check_reachable(address)
    import ray

    if ray.is_initialized():
        return ray
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    # Ray 2.60 warns on every start that token authentication is on (it stays on): not news on a run's stderr
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
    else:
        # address="local": always a new instance, never a cluster found on this machine or in RAY_ADDRESS
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=True)  # fmt: skip
    for s, handler in handlers.items():  # Ray's own SIGTERM handler prints a stack dump: keep the caller's
        if handler is not None:
            signal.signal(s, handler)
    return ray


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse (``ValueError``, one line) a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing listens: Ray's
    own client retried for minutes (``--address 127.0.0.1:1`` ran past 150 s, printing GCS warnings). Other
    forms (``auto``) are left to Ray."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit() or not host:
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ValueError(
            f"no Ray cluster answers at {address} ({reason}): start one (`ray start --head`) or leave out --address"
        ) from None


def replica_cpus(default: float = 1.0) -> float:
    """The CPUs Ray assigned to the calling actor (its share: ONNX Runtime's thread count), else ``default``."""
    import ray

    try:
        return float(ray.get_runtime_context().get_assigned_resources().get("CPU", default)) or default
    except Exception:  # not inside a Ray worker
        return default
