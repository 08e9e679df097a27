"""``recipes/launch/slurm_ray.sbatch``, the paper's Slurm layout (Ray on the generation
nodes, torchrun on the trainer nodes).

- slow: the script submitted with ``sbatch`` to a real two-node Slurm cluster this test
  starts on loopback (slurmctld, two slurmd and munged, all on this machine; Debian's
  Slurm daemons and munge, installed by ``make test-tools``). Real ``ray start`` head (kept
  on loopback), real torchrun with 2 ranks, a 2-step run with a checkpoint; and nothing
  of it runs afterwards.
- fast: argument and parameter errors, the trainer's exit status and the teardown of Ray
  on every path, with shims (``tests/launch_shims``) for srun, scontrol, ray and torchrun.

``FS2_SEMIONLINE_LAUNCH_BACKENDS=local,vllm`` also runs the slow test with the vLLM
generator in the script's Ray cluster (about 1.5 minutes more on 2 cores; default: local).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "launch" / "slurm_ray.sbatch"
SHIMS = Path(__file__).resolve().parent / "launch_shims"
SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
SLURM_BINARIES = ["slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "scancel", "munged"]
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
MARKER = "FS2_LAUNCH_TEST_ID"  # in the environment of everything the slow test's job starts
BACKENDS = os.environ.get("FS2_SEMIONLINE_LAUNCH_BACKENDS", "local").split(",")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without an enclosing Slurm job's or Ray cluster's variables."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_")) and k != "RAY_ADDRESS"
    }
    return {**env, **extra}


# -- fast: the script's control flow, with shims -------------------------------------------


@pytest.fixture
def shim_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for shim in SHIMS.iterdir():
        shutil.copy(shim, bin_dir / shim.name)
        (bin_dir / shim.name).chmod(0o755)
    state = tmp_path / "ray_state"
    state.mkdir()
    return clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        FAKE_RAY_DIR=str(state),
        SHIM_LOG=str(tmp_path / "srun.log"),
        SLURM_JOB_NODELIST="gen1,train1",
        SLURM_SUBMIT_DIR=str(REPO),
        GPUS_PER_NODE="8",
        RAY_WAIT_S="20",
        RAY_PORT=str(free_port()),
        FAKE_PYTHON=sys.executable,
    )


def run_script(env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def steps(tmp_path: Path, command: str) -> dict[str, str]:
    """The srun shim's log: the nodes of each step that ran COMMAND, and its command line."""
    found = {}
    for line in lines(tmp_path / "srun.log"):
        nodes, _, cmd = line.partition("\t")
        if cmd.startswith(command):
            assert nodes not in found, f"two '{command}' steps on {nodes}"
            found[nodes] = cmd
    return found


def test_the_ray_and_torchrun_steps_get_the_jobs_cpus_per_task(shim_env: dict[str, str], tmp_path: Path) -> None:
    """From Slurm 22.05 a step does not inherit the job's --cpus-per-task: the script passes it."""
    env = {**shim_env, "SLURM_CPUS_PER_TASK": "7", "FAKE_TORCHRUN_STATUS": "0"}
    run = run_script(env, str(tmp_path / "out"), "tiny_online_dpo", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    got = [line.split("\t") for line in lines(tmp_path / "srun.log.cpus")]
    assert sorted((nodes, cmd.split()[0] + " " + cmd.split()[1]) for nodes, cpus, cmd in got if cpus == "7") == [
        ("gen1", "ray start"),
        ("train1", "ray start"),
        ("train1", "torchrun --nnodes=1"),
    ]
    assert all(cpus == "7" for _, cpus, _ in got)


@pytest.mark.parametrize(
    ("args", "params", "message"),
    [
        ((), {}, "usage: sbatch"),
        (("out",), {}, "usage: sbatch"),
        (("out", "p"), {"GEN_NODES": "2"}, "the job has 2 node(s), need more than GEN_NODES=2"),
        (("out", "p"), {"GEN_NODES": "0"}, "GEN_NODES must be at least 1"),
        (("out", "p"), {"GEN_NODES": "one"}, "GEN_NODES must be a non-negative integer, got 'one'"),
        (("out", "p"), {"TRAIN_PROCS_PER_NODE": "-1"}, "TRAIN_PROCS_PER_NODE must be a non-negative integer"),
        (("out", "p"), {"GEN_GPUS_PER_NODE": "0"}, "no generator replicas (GEN_GPUS_PER_NODE=0): set REPLICAS"),
        (("out", "p"), {"TP": "3"}, "GEN_GPUS_PER_NODE=8 is not a multiple of TP=3"),
        (("out", "p"), {"GEN_CPUS_PER_NODE": "x"}, "GEN_CPUS_PER_NODE must be a non-negative integer"),
        (("out", "p"), {"RAY_ON_TRAIN_NODES": "yes"}, "RAY_ON_TRAIN_NODES must be 0 or 1"),
        (("out", "p"), {"SLURM_JOB_NODELIST": ""}, "SLURM_JOB_NODELIST is not set"),
        (("out", "p"), {"LAUNCH_DIR": "/nonexistent"}, "no config file /nonexistent/join_cluster.yaml"),
    ],
)
def test_bad_parameters_exit_2_before_anything_starts(
    shim_env: dict[str, str], tmp_path: Path, args: tuple[str, ...], params: dict[str, str], message: str
) -> None:
    run = run_script({**shim_env, **params}, *args, cwd=tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr
    assert not (tmp_path / "srun.log").exists()  # nothing was launched


@pytest.mark.parametrize("status", [0, 7])
def test_exits_with_the_trainers_status_and_stops_ray(shim_env: dict[str, str], tmp_path: Path, status: int) -> None:
    state = Path(shim_env["FAKE_RAY_DIR"])
    env = {
        **shim_env,
        "SLURM_JOB_NODELIST": "gen1,gen2,train1",
        "GEN_NODES": "2",
        "TRAIN_PROCS_PER_NODE": "2",
        "GEN_GPUS_PER_NODE": "4",
        "TP": "2",
        "GEN_CPUS_PER_NODE": "16",
        "FAKE_TORCHRUN_STATUS": str(status),
    }
    run = run_script(env, str(tmp_path / "out"), "tiny_online_dpo", "regime.num_steps=2", "--no-rich", cwd=tmp_path)
    assert run.returncode == status, run.stdout + run.stderr
    assert f"trainer exited with status {status}" in run.stdout
    starts = steps(tmp_path, "ray start")  # the Ray steps start side by side, in any order
    assert sorted(starts) == ["gen1", "gen2", "train1"]
    assert "--head" in starts["gen1"] and "--num-gpus=4" in starts["gen1"] and "--num-cpus=16" in starts["gen1"]
    head = f"127.0.0.1:{env['RAY_PORT']}"
    assert f"--address={head} --num-gpus=4 --num-cpus=16" in starts["gen2"]
    assert f"--address={head} --num-gpus=0 --num-cpus=0" in starts["train1"]
    assert all(s.endswith("--block") for s in starts.values())
    assert steps(tmp_path, "torchrun").keys() == {"train1"}
    assert steps(tmp_path, "ray stop").keys() == {"gen1,gen2,train1"}
    assert sorted(lines(state / "terminated")) == sorted(lines(state / "pids"))  # every Ray step got SIGTERM
    assert len(lines(state / "stops")) == 1  # RAY_STOP_ALL=1 by default
    for pid in lines(state / "pids"):
        assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
    argv = lines(state / "torchrun_args")
    # The config file is found from the submit directory (sbatch runs a spool copy of the script).
    assert argv[argv.index("--config-file") + 1] == str(REPO / "recipes" / "launch" / "join_cluster.yaml")
    assert "--nnodes=1" in argv and "--nproc-per-node=2" in argv and "--rdzv-endpoint=127.0.0.1:29500" in argv
    assert argv[argv.index("--preset") + 1] == "tiny_online_dpo"
    overrides = argv[argv.index("--config") + 1 :]
    assert overrides == ["generator.replicas=4", "generator.tensor_parallel_size=2", "regime.num_steps=2", "--no-rich"]


def test_trainer_nodes_need_not_join_ray(shim_env: dict[str, str], tmp_path: Path) -> None:
    state = Path(shim_env["FAKE_RAY_DIR"])
    run = run_script(
        {**shim_env, "RAY_ON_TRAIN_NODES": "0", "RAY_STOP_ALL": "0"}, str(tmp_path / "out"), "p", cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert steps(tmp_path, "ray start").keys() == {"gen1"} and not lines(state / "stops")
    assert sorted(lines(state / "terminated")) == sorted(lines(state / "pids"))


def test_a_ray_step_that_dies_fails_the_job_at_once(shim_env: dict[str, str], tmp_path: Path) -> None:
    start = time.monotonic()
    run = run_script({**shim_env, "FAKE_RAY_FAIL": "1"}, str(tmp_path / "out"), "p", cwd=tmp_path)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "a Ray step exited early" in run.stderr and "failing as asked" in run.stderr
    assert time.monotonic() - start < 15  # not the whole RAY_WAIT_S
    assert not (Path(shim_env["FAKE_RAY_DIR"]) / "torchrun_args").exists()


@pytest.mark.parametrize(
    ("fake", "message"),
    [
        ({"FAKE_RAY_NO_LISTEN": "1"}, "the Ray head 127.0.0.1:{port} not up after RAY_WAIT_S=3s"),
        ({"FAKE_RAY_NODES": "1"}, "1 of 2 Ray node(s) up after RAY_WAIT_S=3s"),  # the trainer node never joins
    ],
)
def test_the_wait_for_ray_is_bounded(
    shim_env: dict[str, str], tmp_path: Path, fake: dict[str, str], message: str
) -> None:
    state = Path(shim_env["FAKE_RAY_DIR"])
    run = run_script({**shim_env, **fake, "RAY_WAIT_S": "3"}, str(tmp_path / "out"), "p", cwd=tmp_path)
    assert run.returncode == 3, run.stdout + run.stderr
    assert message.format(port=shim_env["RAY_PORT"]) in run.stderr
    assert not (state / "torchrun_args").exists()
    assert sorted(lines(state / "terminated")) == sorted(lines(state / "pids"))  # stopped on this path too


# -- slow: a real Slurm cluster on loopback ------------------------------------------------


def which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def ensure_slurm() -> None:
    """Slurm and munge come from ``make test-tools`` (run by ``make test``): missing ones
    are a failure that says how to get them, never a silent skip."""
    missing = [b for b in SLURM_BINARIES if not which(b)]
    assert not missing, (
        f"{missing} not found: run `make test-tools` (apt-get install {' '.join(SLURM_PACKAGES)}, as root)"
    )


class LoopbackSlurm:
    """slurmctld, slurmd for nodes n1 and n2 and munged, all on this machine, on loopback."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "slurm.conf"
        self.pid_files: list[Path] = []
        self.env = clean_env(SLURM_CONF=str(self.conf), PATH=SBIN_PATH)

    def start(self) -> None:
        root = self.root
        for d in ("state", "spool/n1", "spool/n2", "log", "munge"):
            (root / d).mkdir(parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = root / "munge" / "sock"
        self._daemon(
            [
                which("munged"),
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={root / 'munge' / 'pid'}",
                f"--log-file={root / 'munge' / 'log'}",
                f"--seed-file={root / 'munge' / 'seed'}",
            ],
            root / "munge" / "pid",
        )
        ctld_port, n1_port, n2_port = free_port(), free_port(), free_port()
        self.conf.write_text(f"""\
ClusterName=fs2launchtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={socket_path}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
NodeName=n1 NodeHostname=localhost NodeAddr=127.0.0.1 Port={n1_port} CPUs=2 State=UNKNOWN
NodeName=n2 NodeHostname=localhost NodeAddr=127.0.0.1 Port={n2_port} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
""")
        self._daemon([which("slurmctld"), "-f", str(self.conf)], root / "slurmctld.pid")
        for node in ("n1", "n2"):
            self._daemon([which("slurmd"), "-f", str(self.conf), "-N", node], root / f"slurmd-{node}.pid")
        deadline = time.monotonic() + 60
        while True:
            run = subprocess.run(
                [which("sinfo"), "-h", "-N", "-o", "%N %t"], env=self.env, capture_output=True, text=True, timeout=30
            )
            states = dict(line.split() for line in run.stdout.splitlines() if line.strip())
            if states.get("n1") == "idle" and states.get("n2") == "idle":
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"Slurm nodes not idle after 60 s: {run.stdout}{run.stderr}\n{self.logs()}")
            time.sleep(0.5)

    def _daemon(self, cmd: list[str | None], pid_file: Path) -> None:
        self.pid_files.append(pid_file)
        run = subprocess.run([str(c) for c in cmd], env=self.env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"{cmd[0]} failed: {run.stdout}{run.stderr}\n{self.logs()}"
        deadline = time.monotonic() + 20
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline, f"{cmd[0]} wrote no pid file\n{self.logs()}"
            time.sleep(0.1)

    def logs(self) -> str:
        return "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in sorted((self.root / "log").glob("*.log")))

    def stop(self) -> None:
        pids = []
        for pid_file in reversed(self.pid_files):
            try:
                pids.append(int(pid_file.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        procs = []
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                proc.terminate()
                procs.append(proc)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            proc.kill()

    def submit(
        self, args: list[str], env: dict[str, str], timeout_s: float, on_poll: Callable[[], None] = lambda: None
    ) -> tuple[int, str]:
        """``sbatch`` ARGS, then wait for the job (calling ON_POLL meanwhile): its exit code and output."""
        log = self.root / f"job-{uuid.uuid4().hex[:8]}.out"
        sbatch = [which("sbatch"), "--parsable", "--time=15", "-o", str(log), *args]
        run = subprocess.run(
            sbatch, env={**env, "SLURM_CONF": str(self.conf)}, cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stdout + run.stderr
        job = run.stdout.strip().split(";")[0]
        deadline = time.monotonic() + timeout_s
        while True:
            show = subprocess.run(
                [which("scontrol"), "show", "job", "-o", job], env=self.env, capture_output=True, text=True, timeout=30
            )
            state = re.search(r"JobState=(\S+)", show.stdout)
            if state and state.group(1) not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                code = re.search(r"ExitCode=(\d+):(\d+)", show.stdout)
                assert code, show.stdout
                rc = int(code.group(1)) or (128 + int(code.group(2)) if int(code.group(2)) else 0)
                return rc, log.read_text() if log.exists() else ""
            if time.monotonic() > deadline:
                subprocess.run([which("scancel"), job], env=self.env, timeout=30)
                output = log.read_text() if log.exists() else ""
                raise AssertionError(
                    f"job {job} still {state and state.group(1)} after {timeout_s} s:\n{output[-6000:]}"
                )
            on_poll()
            time.sleep(0.5)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSlurm]:
    ensure_slurm()
    cluster = LoopbackSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries MARKER=marker (the job's, Ray's included)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(MARKER) == marker:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:200] or proc.name()
    except psutil.Error:
        return f"pid {proc.pid}"


def wait_until_gone(marker: str, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return [describe(p) for p in left]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_sbatch_on_a_loopback_slurm_cluster(slurm: LoopbackSlurm, tmp_path: Path, backend: str) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:64]) + "\n")
    out = tmp_path / "out"
    marker = uuid.uuid4().hex
    # Ray's session directory, short: its socket paths must stay under 108 characters.
    ray_tmp = Path(tempfile.mkdtemp(prefix="fs2ray", dir="/tmp"))
    env = clean_env(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), SBIN_PATH]),  # the venv's ray and torchrun
        **{MARKER: marker},
        RAY_TMPDIR=str(ray_tmp),
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        OMP_NUM_THREADS="1",
        GEN_GPUS_PER_NODE="0",
        GEN_CPUS_PER_NODE="2",
        TRAIN_PROCS_PER_NODE="2",
        REPLICAS="1",
        RAY_PORT=str(free_port()),
        RDZV_PORT=str(free_port()),
        RAY_WAIT_S="180",
        RAY_STOP_ALL="0",  # `ray stop` would end every Ray process of this machine, other tests' too
        # One machine: Ray stays on loopback (by default `ray start` swaps 127.0.0.1 for the
        # machine's routable address), which allows no second Ray node, so the trainer node,
        # the head's own machine here, does not join; the shim tests cover that join.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_ON_TRAIN_NODES="0",
    )
    overrides = [
        f"dataset.math_paths=[{train}]",
        "dataset.batch_size=4",
        f"generator.backend={backend}",
        "generator.num_rollouts=4",
        "generator.max_gen_len=32",
        "regime.num_steps=2",
        "regime.checkpoint_every_n_steps=2",
        "reward.math.num_workers=1",
        "common.metric_recorders.tensorboard.enabled=false",
        "--no-rich",
    ]
    args = ["--nodes=2", "--gpus-per-node=0", "--cpus-per-task=1", str(SCRIPT), str(out), "tiny_online_dpo", *overrides]
    seen: set[str] = set()  # what ran with the marker: shows that the check below can see Ray

    def look() -> None:
        for proc in marked_processes(marker):
            try:
                seen.add(proc.name())
            except psutil.Error:
                pass

    try:
        rc, log = slurm.submit(args, env, timeout_s=480 if backend == "vllm" else 300, on_poll=look)
        assert rc == 0, log[-8000:]
        assert {"raylet", "gcs_server", "torchrun"} <= seen, seen
        assert "Ray head n1" in log and "trainer nodes n2 (2 processes each)" in log
        assert "1 Ray node(s) up" in log
        assert "Running on 2 process(es)" in log
        assert "trainer exited with status 0" in log
        rows = [json.loads(l) for l in (out / "metrics" / "train.jsonl").read_text().splitlines()]
        assert [r["Step"] for r in rows] == [1, 2]
        assert (out / "checkpoints" / "step_2").is_dir()
        left = wait_until_gone(marker, timeout_s=20)
        assert not left, f"left running after the job: {left}"
    finally:
        for proc in marked_processes(marker):
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
