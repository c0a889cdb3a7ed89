"""The search on a real Ray cluster: two ``ray start`` nodes on this machine, and ``ray up ray_cluster.yaml``
over SSH to 127.0.0.1 (CI provisions openssh-server and rsync; elsewhere the test says why it skips)."""

from __future__ import annotations

import copy
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, write_subset_manifest
from tests.search._cluster_util import (
    RAY_TOKEN,
    RAY_TOKEN_FILE,
    SMALL_SEARCH,
    VENV_BIN,
    LocalRayNodes,
    cli,
    descendants,
    env,
    kill_all,
    trials,
    wait_for,
    wait_for_gone,
)

RAY_PORTS = {6379, 8265, 8076, 10001}


def _copy_subset(esc10: Path, dest: Path, per_class_per_fold: int = 2) -> Path:
    """A self-contained dataset folder (audio copied, relative paths) of real ESC-10 clips."""
    return write_subset_manifest(esc10, dest / "metadata.csv", per_class_per_group=per_class_per_fold,
                                 columns=("filename", "label", "fold"), group_column="fold", copy_audio=True).parent


# ---------------------------------------------------------------------------------------------------------------
# The two cluster YAMLs pass Ray's own config check and keep the security rules.


def _ray_check(config: dict) -> dict:
    """What ``ray up`` does to a YAML before it touches a machine: fill defaults, then validate (schema + rules)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.mark.parametrize("name", ["ray_cluster.yaml", "ray_cluster.aws.yaml"])
def test_cluster_yaml_passes_rays_config_check_and_keeps_the_security_rules(name):
    config = yaml.safe_load((REPO / name).read_text())
    prepared = _ray_check(config)
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for cmd in starts + config["setup_commands"][:1]:
        assert ".venv/bin:$PATH" in cmd, cmd  # the venv's ray, also for `ray stop` over ssh
    assert "source" not in " ".join(starts)
    assert [c for c in starts if "ray start" in c] and all("RAY_AUTH_MODE=token" in c for c in starts
                                                           if "ray start" in c)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in yaml.safe_dump(config)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the token reaches every node
    assert any("make -C ~/asc-search install" in c for c in config["setup_commands"])
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:  # nothing opens a Ray port to the world
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        assert not (world and RAY_PORTS & set(range(rule["FromPort"], rule["ToPort"] + 1)))
    if name == "ray_cluster.aws.yaml":
        types = prepared["available_node_types"]
        assert types[prepared["head_node_type"]]["resources"].get("GPU", 0) == 0
        assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
        assert any(t.get("max_workers", 0) > 0 and not t["resources"].get("GPU") for k, t in types.items()
                   if k != prepared["head_node_type"])
    broken = dict(config, not_a_ray_key=1)  # the check is real: an unknown key fails it
    with pytest.raises(Exception, match="not_a_ray_key"):
        _ray_check(broken)


# ---------------------------------------------------------------------------------------------------------------
# Two Ray nodes on this machine (separate `ray start` processes, 1 CPU each); the search joins with --address.


@pytest.mark.slow
def test_search_runs_on_both_nodes_of_a_two_node_cluster(esc10, tmp_path):
    data = _copy_subset(esc10, tmp_path / "data")
    cluster = LocalRayNodes(Path("/tmp") / f"asc-2n-{uuid.uuid4().hex[:6]}", cpus_per_node=1)
    try:
        cluster.start_head()
        cluster.add_worker()
        run = tmp_path / "run"
        p = cli(["--data", str(data), "--trials", "6", "--out", str(run), "--address", cluster.address,
                 *SMALL_SEARCH], cwd=tmp_path)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert "2 at a time on 2 node(s)" in p.stdout
    finally:
        leftovers = cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    assert leftovers == []  # SIGTERM to the two `ray start` processes stopped every Ray process they started
    rows = [r for r in trials(run) if r["status"] != "rejected"]
    assert len(rows) == 6 and all(r["status"] == "completed" for r in rows)
    session = json.loads((run / "cluster.json").read_text())[-1]
    cluster_nodes = {n["node_id"] for n in session["nodes"]}
    assert len(cluster_nodes) == 2 and session["address"] == cluster.address
    assert {r["node_id"] for r in rows} == cluster_nodes  # trials ran on both nodes
    assert "Trials per node" in (run / "report.md").read_text()


def _running_on(run: Path, node_id: str) -> str | None:
    """Id of a trial whose latest result is an unfinished epoch on ``node_id``."""
    for path in (run / "tune").glob("trial_*/result.json"):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        try:
            last = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            continue
        if last.get("node_id") == node_id and not last.get("final"):
            return last["trial_id"]
    return None


@pytest.mark.slow
def test_a_trial_on_a_node_that_dies_is_retried_on_another(esc10, tmp_path):
    data = _copy_subset(esc10, tmp_path / "data")
    cluster = LocalRayNodes(Path("/tmp") / f"asc-nf-{uuid.uuid4().hex[:6]}", cpus_per_node=1)
    run = tmp_path / "run"
    # While the hold file exists every trial waits after each reported epoch, so the trial on the second node is
    # surely mid-training when that node is killed (a short trial could otherwise finish between two polls).
    hold = tmp_path / "hold"
    hold.touch()
    driver = None
    try:
        cluster.start_head()
        cluster.add_worker()
        head, worker = cluster.node_id(0), cluster.node_id(1)
        args = [a if a != "2" else "4" for a in SMALL_SEARCH]
        driver = subprocess.Popen([str(VENV_BIN / "python"), "-m", "asc_search.cli", "--data", str(data), "--trials",
                                   "3", "--out", str(run), "--address", cluster.address, *args], cwd=tmp_path,
                                  env=env(ASC_SEARCH_HOLD_FILE=str(hold)), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        victim = wait_for(lambda: _running_on(run, worker), 300, "a trial running on the second node")
        cluster.kill_node(1)
        hold.unlink()
        out, _ = driver.communicate(timeout=600)
        assert driver.returncode == 0, out[-3000:]
    finally:
        hold.unlink(missing_ok=True)
        if driver is not None and driver.poll() is None:
            kill_all([driver.pid, *descendants(driver.pid)])
        leftovers = cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    assert leftovers == []
    rows = {r["trial_id"]: r for r in trials(run) if r["status"] != "rejected"}
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows.values())
    assert rows[victim]["node_id"] == head  # finished on the node that was left
    results = [json.loads(ln) for ln in (run / "tune" / f"trial_{victim}" / "result.json").read_text().splitlines()]
    assert [r["node_id"] for r in results if r.get("epoch") == 1] == [worker, head]  # started twice


def test_address_without_a_cluster_is_a_usage_error(esc10, tmp_path):
    data = _copy_subset(esc10, tmp_path / "data", per_class_per_fold=1)
    port = LocalRayNodes(tmp_path / "unused").port  # a free port: nothing listens there
    p = cli(["--data", str(data), "--trials", "1", "--out", str(tmp_path / "run"), "--address",
             f"127.0.0.1:{port}", *SMALL_SEARCH], cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("asc-search: error: --address 127.0.0.1:") and "ray up ray_cluster.yaml" in last


# ---------------------------------------------------------------------------------------------------------------
# `ray up ray_cluster.yaml` against this machine over SSH.


def _why_no_sshd() -> str | None:
    """Why this machine cannot host the test's sshd on 127.0.0.1:22 (None: it can)."""
    if shutil.which("rsync") is None:
        return "rsync is not installed (Debian: apt-get install rsync)"
    if not Path("/usr/sbin/sshd").exists() or shutil.which("ssh-keygen") is None:
        return "openssh-server is not installed (Debian: apt-get install openssh-server)"
    if os.geteuid() != 0:
        return "the test's sshd must listen on 127.0.0.1:22, which needs root"
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 22)) == 0:
            return "something already listens on 127.0.0.1:22 (the test starts its own sshd there)"
    return None


def _foreign_ray() -> list[str]:
    """Ray processes already running here: `ray up`/`ray down` run `ray stop`, which would stop them."""
    import psutil

    names = ("raylet", "gcs_server")
    return [" ".join(p.info["cmdline"] or [])[:120] for p in psutil.process_iter(["cmdline", "name"])
            if p.info["name"] in names]


def _head_ray_processes() -> list[int]:
    """Ray processes of the `ray up` head (GCS port 6379 of ray_cluster.yaml)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if re.search(r"gcs_server_port=6379\b|:6379\b", cmd) and "pytest" not in cmd:
            out.append(p.info["pid"])
    return out


def _alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def _ssh_clients(key: Path) -> list[int]:
    """ssh/rsync client processes that use the test's key."""
    import psutil

    return [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
            if str(key) in " ".join(p.info["cmdline"] or []) and p.info["pid"] != os.getpid()]


def _start_sshd(d: Path) -> tuple[subprocess.Popen, Path]:
    """sshd on 127.0.0.1:22 only, accepting only a key made for this test."""
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], check=True)
    shutil.copyfile(d / "id_ed25519.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(
        f"Port 22\nListenAddress 127.0.0.1\nHostKey {d / 'host_ed25519'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        f"AllowUsers {getpass.getuser()}\nMaxStartups 50\nMaxSessions 50\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=open(d / "sshd.log", "w"), stderr=subprocess.STDOUT)

    def listening():
        assert proc.poll() is None, (d / "sshd.log").read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", 22)) == 0

    wait_for(listening, 30, "sshd on 127.0.0.1:22")
    return proc, key


def _test_yaml(d: Path, key: Path, data: Path, remote_data: Path) -> Path:
    """ray_cluster.yaml pointed at this machine: head 127.0.0.1, no workers, the test's key and user; the
    checkout's remote path is the checkout itself (so `make install` finds the built .venv), the data goes
    to ``remote_data`` by rsync. Everything else, commands included, is the repo's file."""
    text = (REPO / "ray_cluster.yaml").read_text()
    text = text.replace("$HOME/asc-search", str(REPO)).replace("~/asc-search", str(REPO))
    config = yaml.safe_load(text)
    config["cluster_name"] = f"asc-search-test-{uuid.uuid4().hex[:6]}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {"ssh_user": getpass.getuser(), "ssh_private_key": str(key)}
    mounts = config["file_mounts"]
    assert mounts.pop("~/asc-data") and mounts[str(REPO)] == "."
    mounts[str(remote_data)] = str(data) + "/"
    path = d / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.slow
def test_ray_up_cluster_yaml_runs_a_search_with_address_auto(esc10, tmp_path):
    why = _why_no_sshd()
    if why is None and not os.environ.get("CI") and _foreign_ray():
        why = f"other Ray processes run here and `ray up`/`ray down` would stop them: {_foreign_ray()[:2]}"
    if why is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the ray up test, but {why}; .ci/run provisions openssh-server and rsync")
        pytest.skip(f"ray up test needs sshd on 127.0.0.1: {why}")
    d = tmp_path / "ssh"
    d.mkdir()
    data = _copy_subset(esc10, tmp_path / "data")
    remote_data = tmp_path / "remote-data"
    run = tmp_path / "run"
    home = Path.home()
    bashrc = home / ".bashrc"
    bashrc_before = bashrc.read_bytes() if bashrc.exists() else None
    bootstrap_before = {p: p.exists() for p in (home / "ray_bootstrap_config.yaml", home / "ray_bootstrap_key.pem")}
    tmp_before = set(Path("/tmp").glob("ray-config-*")) | set(Path("/tmp").glob("ray_ssh_*"))
    # ray_cluster.yaml copies ~/.ray/auth_token to the node (README: `ray get-auth-token --generate` once);
    # on a machine without one the test writes its session token there and removes it afterwards.
    made_token = not RAY_TOKEN_FILE.is_file()
    if made_token:
        RAY_TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
        RAY_TOKEN_FILE.write_text(RAY_TOKEN)
        RAY_TOKEN_FILE.chmod(0o600)
    sshd, key = _start_sshd(d)
    cfg = _test_yaml(d, key, data, remote_data)
    cluster_name = yaml.safe_load(cfg.read_text())["cluster_name"]
    ray = str(VENV_BIN / "ray")
    up = down = None
    try:
        up = subprocess.run([ray, "up", "-y", "--no-config-cache", str(cfg)], cwd=REPO, env=env(),
                            capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert (remote_data / "metadata.csv").exists()  # the data directory's file mount reached the node
        search = (f"asc-search --data {remote_data} --trials 3 --out {run} --address auto "
                  + " ".join(SMALL_SEARCH))
        ex = subprocess.run([ray, "exec", str(cfg), search], cwd=REPO, env=env(), capture_output=True, text=True,
                            timeout=600)
        assert ex.returncode == 0, ex.stdout[-3000:] + ex.stderr[-3000:]
    finally:
        if up is not None:
            down = subprocess.run([ray, "down", "-y", str(cfg)], cwd=REPO, env=env(), capture_output=True,
                                  text=True, timeout=300)
        left = wait_for_gone(_head_ray_processes, timeout=30)
        kill_all(left)
        sessions = descendants(sshd.pid)  # the per-connection sshd processes
        sshd.terminate()
        sshd.wait(30)
        # ssh connections Ray keeps open (ControlPersist 10 s) end by themselves; whatever is left is killed.
        ssh_left = wait_for_gone(lambda: _alive(sessions) + _ssh_clients(key), timeout=30)
        kill_all(ssh_left)
        if made_token:
            RAY_TOKEN_FILE.unlink(missing_ok=True)
        if bashrc_before is None:
            bashrc.unlink(missing_ok=True)
        else:
            bashrc.write_bytes(bashrc_before)
        for p, existed in bootstrap_before.items():
            if not existed:
                p.unlink(missing_ok=True)
        for suffix in ("state", "lock"):  # the local provider's node state
            Path(f"/tmp/ray/cluster-{cluster_name}.{suffix}").unlink(missing_ok=True)
        # ray up's config cache and ssh control sockets
        for p in (set(Path("/tmp").glob("ray-config-*")) | set(Path("/tmp").glob("ray_ssh_*"))) - tmp_before:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    assert down is not None and down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    assert left == []  # `ray down` stopped the head's Ray: the venv's ray was on PATH over ssh
    assert sshd.returncode is not None and ssh_left == []  # no sshd or ssh process left behind
    rows = [r for r in trials(run) if r["status"] != "rejected"]
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    session = json.loads((run / "cluster.json").read_text())[-1]
    assert session["address"] == "auto" and session["gcs_address"].endswith(":6379")  # the cluster ray up made
    assert {r["node_id"] for r in rows} <= {n["node_id"] for n in session["nodes"]}
    assert session["driver_node_id"] in {r["node_id"] for r in rows}  # the head ran the trials
