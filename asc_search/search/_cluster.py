"""The Ray session of a search: start or join Ray (token authentication on a cluster), record the cluster in
``cluster.json``, check every node sees the run directory, and how many trials run at once."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

import ray
from ray._raylet import Config
from ray.exceptions import AuthenticationError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from asc_search._errors import UserInputError
from asc_search._io import write_json
from asc_search.config import RunConfig
from asc_search.rundir import CLUSTER_FILE


def start_ray(config: RunConfig) -> bool:
    """Start or join Ray; returns True when this call started it (and must shut it down).

    Joining a cluster (``--address``) uses Ray's token authentication (``RAY_AUTH_MODE=token`` unless the
    environment says otherwise): a driver whose auth mode differs from the cluster's connects, but every
    trial then dies, so the mode is set before connecting.

    Raises:
        UserInputError: No cluster at the address, or the token is missing or wrong.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if config.address:
        _check_reachable(config.address)
        _token_auth_for_this_process()
        try:
            ray.init(address=config.address, log_to_driver=False)
        except ConnectionError as exc:
            raise UserInputError(
                f"--address {config.address}: no Ray cluster found there ({str(exc).splitlines()[0]}); start one "
                "(ray up ray_cluster.yaml, or ray start --head) or drop --address to run on this machine"
            ) from None
        except AuthenticationError as exc:
            raise UserInputError(
                f"--address {config.address}: token authentication failed ({str(exc).splitlines()[0]}); copy the "
                "cluster's token (ray get-auth-token, on the head) to ~/.ray/auth_token or set RAY_AUTH_TOKEN"
            ) from None
    else:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    return True


def _check_reachable(address: str) -> None:
    """Fail at once when nothing listens at ``HOST:PORT`` (``ray.init`` would retry for minutes).

    Raises:
        UserInputError: The address is malformed or nothing accepts a connection there.
    """
    if address == "auto" or address.startswith(("ray://", "local")):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserInputError(f"--address {address!r} is not auto or HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise UserInputError(
            f"--address {address}: no Ray cluster found there ({exc.strerror or exc}); start one (ray up "
            "ray_cluster.yaml, or ray start --head) or drop --address to run on this machine"
        ) from None


def _token_auth_for_this_process() -> None:
    """``RAY_AUTH_MODE=token`` unless the environment chose a mode; Ray caches its configuration when it is
    imported, so the cached copy is refreshed as ``ray start`` does for itself."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")


def alive_nodes() -> list[dict]:
    """The cluster's alive nodes: ``node_id``, ``ip``, ``cpus``, ``gpus``."""
    return [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU", 0.0),
             "gpus": n["Resources"].get("GPU", 0.0)} for n in ray.nodes() if n.get("Alive")]


def record_cluster(run_dir: Path, config: RunConfig, *, resumed: bool) -> list[dict]:
    """Append this session's cluster (address, nodes, resources) to ``cluster.json``; return the nodes."""
    nodes = alive_nodes()
    path = run_dir / CLUSTER_FILE
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append({"started_at": time.time(), "resumed": resumed, "address": config.address or "local",
                     "gcs_address": ray.get_runtime_context().gcs_address,
                     "driver_node_id": ray.get_runtime_context().get_node_id(), "nodes": nodes})
    write_json(path, sessions)
    return nodes


def record_search_time(run_dir: Path, *, started_at: float, wall_s: float, trial_slots: int) -> None:
    """Add this session's search start (``time.time()``), wall time (s, ``Tuner.fit`` from start to end) and trial
    slots (trials run at once) to its entry of ``cluster.json``: with the trials' own run times
    (``tune/trial_*/result.json``) they give the share of the search spent outside training
    (``bench/orchestration.py --run DIR``)."""
    path = run_dir / CLUSTER_FILE
    sessions = json.loads(path.read_text()) if path.exists() else [{}]
    sessions[-1].update({"search_started_at": float(started_at), "search_wall_s": round(float(wall_s), 3),
                         "trial_slots": int(trial_slots)})
    write_json(path, sessions)


def nodes_seeing(path: str | Path, nodes: list[dict] | None = None) -> list[str]:
    """Ids of the alive nodes on which ``path`` exists (a zero-CPU probe pinned to each node)."""
    nodes = alive_nodes() if nodes is None else nodes
    probe = ray.remote(num_cpus=0)(os.path.exists)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)).remote(str(path))
            for n in nodes]
    return [n["node_id"] for n, seen in zip(nodes, ray.get(refs, timeout=120), strict=True) if seen]


def check_storage_reachable(folder: Path, nodes: list[dict] | None = None, *, flag: str = "--out") -> None:
    """Every node must see ``folder`` (the run directory, the prepared-data folder): the data preparation's
    workers write the waveform store there, and trials write their checkpoints and feature files.

    Args:
        folder: An existing folder.
        nodes: The cluster's alive nodes (``alive_nodes()``); None: read them now.
        flag: The option that named the folder, for the message.

    Raises:
        UserInputError: A node does not see it (the folder is not on shared storage).
    """
    nodes = alive_nodes() if nodes is None else nodes
    if len(nodes) < 2:
        return
    marker = Path(folder) / f".storage-check-{uuid.uuid4().hex}"
    marker.write_text("asc-search")
    try:
        seeing = set(nodes_seeing(marker, nodes))
    finally:
        marker.unlink(missing_ok=True)
    blind = [f"{n['node_id'][:12]} ({n['ip']})" for n in nodes if n["node_id"] not in seeing]
    if blind:
        raise UserInputError(
            f"{flag} {folder} is not visible on node(s) {', '.join(blind)}: the data preparation and the trials "
            "write the waveform store, features and checkpoints there; put it on storage every node mounts "
            "(e.g. NFS)"
        )


def concurrency(config: RunConfig) -> int:
    """Trials at once: what the cluster's CPUs (and GPUs, when trials ask for them) allow.

    Raises:
        UserInputError: A trial asks for more CPUs or GPUs than the cluster has.
    """
    res = ray.cluster_resources()
    cpus, gpus = res.get("CPU", 1.0), res.get("GPU", 0.0)
    if config.cpus_per_trial > cpus:
        raise UserInputError(f"--cpus-per-trial {config.cpus_per_trial:g} is more than the {cpus:g} CPUs Ray "
                             "has; lower it (or join a larger cluster with --address)")
    if config.gpus_per_trial > gpus:
        raise UserInputError(f"--gpus-per-trial {config.gpus_per_trial:g} is more than the {gpus:g} GPUs Ray has; "
                             "lower it, drop it to train on CPUs, or join a cluster with GPU workers (--address)")
    limit = int(cpus // config.cpus_per_trial)
    if config.gpus_per_trial > 0:
        limit = min(limit, int(round(gpus / config.gpus_per_trial, 6)))
    return config.max_concurrent or max(1, limit)
