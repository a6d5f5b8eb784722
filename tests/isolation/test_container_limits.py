"""The agent advertises its container's limits: cgroup v1/v2 cpu quota and memory limit, cpu affinity.

Parsing and reading are tested on fake /proc and cgroup trees (a tmp dir as root); the last tests put a
real ``bmesos agent`` into real cgroup v1 cgroups with a 300 MB memory limit and a 50000/100000 cpu quota
(as root; skipped, with the reason, where cgroups cannot be made).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from broker_mesos.agent.container_limits import (
    MB,
    CgroupEntry,
    CgroupLimits,
    CgroupMount,
    CpuQuota,
    MemoryLimit,
    advertised_cpus,
    advertised_mem,
    cgroup_dir,
    find_mount,
    parse_cfs_quota,
    parse_cpu_max,
    parse_memory_limit_in_bytes,
    parse_memory_max,
    parse_mountinfo,
    parse_proc_cgroup,
    read_cgroup_limits,
)

ROOT = Path(__file__).resolve().parents[2]
V1_NO_LIMIT = "9223372036854771712"  # what memory.limit_in_bytes reads without a limit (2**63 - 4096)
GB = 1024 * MB


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("150000 100000\n", (150000, 100000)),
    ("50000 100000", (50000, 100000)),
    ("200000 250000", (200000, 250000)),
    ("max 100000\n", None),
    ("max", None),
    ("", None),
])
def test_parse_cpu_max(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_cpu_max(text) == expected


@pytest.mark.parametrize(("quota", "period", "expected"), [
    ("150000\n", "100000\n", (150000, 100000)),
    ("-1\n", "100000\n", None),
    ("50000", "100000", (50000, 100000)),
])
def test_parse_cfs_quota(quota: str, period: str, expected: tuple[int, int] | None) -> None:
    assert parse_cfs_quota(quota, period) == expected


def test_parse_memory_files() -> None:
    assert parse_memory_max("536870912\n") == 512 * MB
    assert parse_memory_max("max\n") is None
    assert parse_memory_limit_in_bytes("314572800\n") == 300 * MB
    assert parse_memory_limit_in_bytes(V1_NO_LIMIT + "\n") == 2**63 - 4096
    with pytest.raises(ValueError):
        parse_memory_max("lots")


def test_parse_proc_cgroup() -> None:
    text = "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n\n"
    assert parse_proc_cgroup(text) == [
        CgroupEntry("12", frozenset({"cpu", "cpuacct"}), "/docker/abc"),
        CgroupEntry("4", frozenset({"memory"}), "/docker/abc"),
        CgroupEntry("1", frozenset({"name=systemd"}), "/docker/abc"),
        CgroupEntry("0", frozenset(), "/"),
    ]
    assert [e.v2 for e in parse_proc_cgroup(text)] == [False, False, False, True]


def test_parse_mountinfo_keeps_cgroup_mounts_only() -> None:
    text = (
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        "30 22 0:26 / /sys/fs/cgroup ro,nosuid shared:4 - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:5 master:2 - cgroup cgroup "
        "rw,cpu,cpuacct\n"
        "32 30 0:28 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n"
        "33 30 0:29 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "broken line\n"
    )
    assert parse_mountinfo(text) == [
        CgroupMount("/docker/abc", "/sys/fs/cgroup/cpu,cpuacct", 1, frozenset({"rw", "cpu", "cpuacct"})),
        CgroupMount("/", "/sys/fs/cgroup/mem ory", 1, frozenset({"rw", "memory"})),
        CgroupMount("/", "/sys/fs/cgroup/unified", 2, frozenset({"rw", "nsdelegate"})),
    ]


@pytest.mark.parametrize(("root", "path", "expected"), [
    ("/", "/", "/sys/fs/cgroup/memory"),                              # a cgroup namespace
    ("/", "/docker/abc", "/sys/fs/cgroup/memory/docker/abc"),         # the host's whole tree
    ("/docker/abc", "/docker/abc", "/sys/fs/cgroup/memory"),          # the container's cgroup, mounted
    ("/docker/abc", "/docker/abc/inner", "/sys/fs/cgroup/memory/inner"),
    ("/docker/abc", "/elsewhere", "/sys/fs/cgroup/memory"),           # outside what is mounted
    ("/", "/../../escape", "/sys/fs/cgroup/memory/escape"),           # normalised, kept inside
])
def test_cgroup_dir(root: str, path: str, expected: str) -> None:
    assert cgroup_dir(CgroupMount(root, "/sys/fs/cgroup/memory", 1, frozenset({"memory"})), path) == expected


def test_find_mount_matches_the_hierarchy_and_the_longest_root() -> None:
    mounts = [CgroupMount("/", "/sys/fs/cgroup/cpu,cpuacct", 1, frozenset({"rw", "cpu", "cpuacct"})),
              CgroupMount("/", "/sys/fs/cgroup/memory", 1, frozenset({"rw", "memory"})),
              CgroupMount("/docker/abc", "/mnt/memory", 1, frozenset({"rw", "memory"})),
              CgroupMount("/", "/sys/fs/cgroup/unified", 2, frozenset({"rw"}))]
    assert find_mount(CgroupEntry("3", frozenset({"cpu", "cpuacct"}), "/x"), mounts) == mounts[0]
    assert find_mount(CgroupEntry("4", frozenset({"memory"}), "/x"), mounts) == mounts[1]
    assert find_mount(CgroupEntry("4", frozenset({"memory"}), "/docker/abc/y"), mounts) == mounts[2]
    assert find_mount(CgroupEntry("0", frozenset(), "/"), mounts) == mounts[3]
    assert find_mount(CgroupEntry("7", frozenset({"pids"}), "/"), mounts) is None


# -- what is advertised -------------------------------------------------------------------------------


@pytest.mark.parametrize(("logical", "affinity", "quota", "cpus", "why"), [
    (8, 8, None, 8, "8 logical cpus"),
    (8, None, None, 8, "8 logical cpus"),
    (8, 3, None, 3, "cpu affinity: 3 of 8 cpus"),
    (8, 8, (150000, 100000), 1.5, "cgroup cpu quota 150000/100000 in /cg"),
    (8, 8, (50000, 100000), 0.5, "cgroup cpu quota 50000/100000 in /cg"),
    (8, 8, (33333, 100000), 0.3, "cgroup cpu quota 33333/100000 in /cg"),      # rounded down to 0.1
    (8, 8, (199999, 100000), 1.9, "cgroup cpu quota 199999/100000 in /cg"),
    (8, 8, (125000, 250000), 0.5, "cgroup cpu quota 125000/250000 in /cg"),
    (8, 2, (300000, 100000), 2, "cpu affinity: 2 of 8 cpus"),                  # the cpuset binds
    (4, 4, (800000, 100000), 4, "4 logical cpus"),                             # a quota above the host
    (4, 4, (400000, 100000), 4, "cgroup cpu quota 400000/100000 in /cg"),      # a tie names the quota
    (8, 8, (5000, 100000), 0, "cgroup cpu quota 5000/100000 in /cg"),          # under 0.1 cpu: none
])
def test_advertised_cpus(logical: int, affinity: int | None, quota: tuple[int, int] | None, cpus: float,
                         why: str) -> None:
    assert advertised_cpus(logical, affinity, CpuQuota(*quota, "/cg") if quota else None) == (cpus, why)


@pytest.mark.parametrize(("limit", "mem", "why"), [
    (None, 16384, "host memory"),
    (300 * MB, 300, f"cgroup memory limit {300 * MB} bytes in /cg"),
    (300 * MB + MB - 1, 300, f"cgroup memory limit {301 * MB - 1} bytes in /cg"),   # rounded down
    (16 * GB, 16384, "host memory"),                                                 # = the host's: none
    (2**63 - 4096, 16384, "host memory"),                                            # v1's "no limit"
])
def test_advertised_mem(limit: int | None, mem: float, why: str) -> None:
    assert advertised_mem(16 * GB, MemoryLimit(limit, "/cg") if limit is not None else None) == (mem, why)


# -- reading fake trees ---------------------------------------------------------------------------------


def fake_tree(root: Path, proc_cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    """A /proc/self/{cgroup,mountinfo} and cgroup files under ``root``."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(proc_cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2_MOUNT = "40 30 0:38 {root} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n"
V1_MOUNTS = ("31 30 0:27 {root} /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n"
             "32 30 0:28 {root} /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
             "33 30 0:29 {root} /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids\n")
V1_CGROUP = "12:pids:{path}\n4:memory:{path}\n3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::{path}\n"


def test_v2_container_with_cpus_and_mem_limit(tmp_path: Path) -> None:
    # docker run --cpus 1.5 --memory 512m, cgroup v2 with a cgroup namespace
    root = fake_tree(tmp_path, "0::/\n", V2_MOUNT.format(root="/"),
                     {"/sys/fs/cgroup/cpu.max": "150000 100000\n", "/sys/fs/cgroup/memory.max": "536870912\n"})
    assert read_cgroup_limits(root) == CgroupLimits(CpuQuota(150000, 100000, "/sys/fs/cgroup"),
                                                    MemoryLimit(512 * MB, "/sys/fs/cgroup"))


def test_v2_without_limits(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "0::/user.slice/session-1.scope\n", V2_MOUNT.format(root="/"),
                     {"/sys/fs/cgroup/user.slice/session-1.scope/cpu.max": "max 100000\n",
                      "/sys/fs/cgroup/user.slice/session-1.scope/memory.max": "max\n",
                      "/sys/fs/cgroup/user.slice/cpu.max": "max 100000\n",
                      "/sys/fs/cgroup/user.slice/memory.max": "max\n"})
    assert read_cgroup_limits(root) == CgroupLimits()


def test_v2_the_most_restrictive_ancestor_wins(tmp_path: Path) -> None:
    # a pod's limits sit on the pod's cgroup, the container's below it; the tighter of each counts
    pod, ctr = "/sys/fs/cgroup/kubepods/pod1", "/sys/fs/cgroup/kubepods/pod1/ctr"
    root = fake_tree(tmp_path, "0::/kubepods/pod1/ctr\n", V2_MOUNT.format(root="/"), {
        f"{ctr}/cpu.max": "max 100000\n", f"{ctr}/memory.max": "1073741824\n",
        f"{pod}/cpu.max": "50000 100000\n", f"{pod}/memory.max": "314572800\n",
        "/sys/fs/cgroup/kubepods/cpu.max": "max 100000\n", "/sys/fs/cgroup/kubepods/memory.max": "max\n"})
    assert read_cgroup_limits(root) == CgroupLimits(CpuQuota(50000, 100000, pod), MemoryLimit(300 * MB, pod))
    # and a tighter quota below the parent's is the container's own
    (tmp_path / ctr.lstrip("/") / "cpu.max").write_text("20000 100000\n")
    assert read_cgroup_limits(root).cpu == CpuQuota(20000, 100000, ctr)


def test_v2_mount_rooted_at_the_container_cgroup(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "0::/docker/abc\n", V2_MOUNT.format(root="/docker/abc"),
                     {"/sys/fs/cgroup/cpu.max": "200000 100000\n", "/sys/fs/cgroup/memory.max": "max\n"})
    assert read_cgroup_limits(root) == CgroupLimits(CpuQuota(200000, 100000, "/sys/fs/cgroup"), None)


def test_v1_container_with_cpus_and_mem_limit(tmp_path: Path) -> None:
    # docker run --cpus 1.5 --memory 512m on a cgroup v1 host: the container's cgroups are mounted
    root = fake_tree(tmp_path, V1_CGROUP.format(path="/docker/abc"), V1_MOUNTS.format(root="/docker/abc"), {
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "150000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
        "/sys/fs/cgroup/pids/pids.max": "max\n"})
    assert read_cgroup_limits(root) == CgroupLimits(CpuQuota(150000, 100000, "/sys/fs/cgroup/cpu,cpuacct"),
                                                    MemoryLimit(512 * MB, "/sys/fs/cgroup/memory"))


def test_v1_without_limits(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, V1_CGROUP.format(path="/"), V1_MOUNTS.format(root="/"), {
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": V1_NO_LIMIT + "\n"})
    limits = read_cgroup_limits(root)
    assert limits.cpu is None
    # the huge number is read as it is; advertising ignores any limit not below the host's RAM
    assert limits.memory == MemoryLimit(2**63 - 4096, "/sys/fs/cgroup/memory")
    assert advertised_mem(psutil.virtual_memory().total, limits.memory)[1] == "host memory"


def test_v1_the_most_restrictive_ancestor_wins(tmp_path: Path) -> None:
    cpu, mem = "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory"
    root = fake_tree(tmp_path, V1_CGROUP.format(path="/a/b"), V1_MOUNTS.format(root="/"), {
        f"{cpu}/cpu.cfs_quota_us": "-1\n", f"{cpu}/cpu.cfs_period_us": "100000\n",
        f"{cpu}/a/cpu.cfs_quota_us": "75000\n", f"{cpu}/a/cpu.cfs_period_us": "50000\n",        # 1.5 cpus
        f"{cpu}/a/b/cpu.cfs_quota_us": "250000\n", f"{cpu}/a/b/cpu.cfs_period_us": "100000\n",  # 2.5 cpus
        f"{mem}/memory.limit_in_bytes": V1_NO_LIMIT, f"{mem}/a/memory.limit_in_bytes": "314572800\n",
        f"{mem}/a/b/memory.limit_in_bytes": V1_NO_LIMIT})
    assert read_cgroup_limits(root) == CgroupLimits(CpuQuota(75000, 50000, f"{cpu}/a"),
                                                    MemoryLimit(300 * MB, f"{mem}/a"))


def test_hybrid_host_reads_v1_controllers_and_an_empty_unified_mount(tmp_path: Path) -> None:
    # this project's CI machine: v1 controllers, plus a cgroup2 mount with no controllers in it
    mountinfo = V1_MOUNTS.format(root="/") + "41 30 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    root = fake_tree(tmp_path, V1_CGROUP.format(path="/x"), mountinfo, {
        "/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us": "50000\n",
        "/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/x/memory.limit_in_bytes": "314572800\n",
        "/sys/fs/cgroup/unified/x/cgroup.procs": ""})
    limits = read_cgroup_limits(root)
    assert limits == CgroupLimits(CpuQuota(50000, 100000, "/sys/fs/cgroup/cpu,cpuacct/x"),
                                  MemoryLimit(300 * MB, "/sys/fs/cgroup/memory/x"))


def test_no_proc_or_unreadable_files_are_no_limits(tmp_path: Path) -> None:
    assert read_cgroup_limits(tmp_path) == CgroupLimits()  # not Linux, or /proc not mounted
    root = fake_tree(tmp_path / "garbage", "0::/\n", V2_MOUNT.format(root="/"),
                     {"/sys/fs/cgroup/cpu.max": "lots\n", "/sys/fs/cgroup/memory.max": "\n"})
    assert read_cgroup_limits(root) == CgroupLimits()
    root = fake_tree(tmp_path / "nomount", "0::/\n", "", {"/sys/fs/cgroup/cpu.max": "50000 100000\n"})
    assert read_cgroup_limits(root) == CgroupLimits()


def test_this_machine_reads_without_error() -> None:
    limits = read_cgroup_limits()
    assert isinstance(limits, CgroupLimits)


# -- real cgroups: a bmesos agent in a 300 MB, 0.5 cpu cgroup v1 ------------------------------------------


def own_v1_cgroup(controller: str) -> Path:
    """This process's cgroup directory in the v1 hierarchy of ``controller``; skips, saying why, if none."""
    try:
        entries = parse_proc_cgroup(Path("/proc/self/cgroup").read_text())
        mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    except OSError as exc:
        pytest.skip(f"cannot read /proc/self/cgroup or mountinfo: {exc}")
    for entry in entries:
        if controller in entry.controllers:
            mount = find_mount(entry, mounts)
            if mount is not None:
                return Path(cgroup_dir(mount, entry.path))
    pytest.skip(f"no cgroup v1 {controller} hierarchy is mounted here (cgroup v2 only is not covered by this test)")


def remove_cgroup(path: Path) -> None:
    """rmdir ``path`` (and its sub-cgroups) once empty: kill what is left in it (our own children only)."""
    for sub in [*sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), path]:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError, ValueError):
                for pid in (sub / "cgroup.procs").read_text().split():
                    os.kill(int(pid), 9)
            try:
                sub.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def v1_cgroups() -> Iterator[dict[str, Path]]:
    """A fresh cpu cgroup and memory cgroup below this process's own (so a limit the test host puts on us
    still applies), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("cgroups are not writable: not root")
    name = f"bmesos-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made: dict[str, Path] = {}
    try:
        for controller in ("cpu", "memory"):
            parent = own_v1_cgroup(controller)
            try:
                (parent / name).mkdir()
            except OSError as exc:
                pytest.skip(f"cannot create a cgroup v1 {controller} cgroup in {parent}: {exc}")
            made[controller] = parent / name
        yield made
    finally:
        for path in made.values():
            remove_cgroup(path)
        assert not any(p.exists() for p in made.values()), f"cgroups left behind: {made}"


@pytest.mark.parametrize("where", ["own", "parent"])
def test_agent_in_a_limited_v1_cgroup_advertises_the_limits(v1_cgroups: dict[str, Path], tmp_path: Path,
                                                            where: str) -> None:
    """``own``: the limits are on the agent's cgroup; ``parent``: on its parent's (as a container runtime
    may set them), the agent one level below in a cgroup without limits."""
    cpu, memory = v1_cgroups["cpu"], v1_cgroups["memory"]
    try:
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text("50000")
        (memory / "memory.limit_in_bytes").write_text(str(300 * MB))
    except OSError as exc:
        pytest.skip(f"cannot set cgroup v1 limits in {cpu} / {memory}: {exc}")
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(300 * MB)
    if where == "parent":
        cpu, memory = cpu / "agent", memory / "agent"
        cpu.mkdir()
        memory.mkdir()

    # the shell puts itself in both cgroups, then becomes the agent; nothing listens on port 1, so the
    # agent detects, logs what it detected and gives up connecting
    agent = (f"{sys.executable} -m broker_mesos.cli.main agent --broker amqp://guest:guest@127.0.0.1:1/%2F "
             f"--connect-timeout 1 --no-checkpoint --work-dir {tmp_path / 'work'}")
    wrapper = f"echo $$ > {cpu}/cgroup.procs && echo $$ > {memory}/cgroup.procs && exec {agent}"
    result = subprocess.run(["sh", "-c", wrapper], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "cannot connect to the broker" in result.stderr, result.stderr
    quota_at, limit_at = v1_cgroups["cpu"], v1_cgroups["memory"]
    assert f"cpus:0.5 (cgroup cpu quota 50000/100000 in {quota_at})" in result.stderr, result.stderr
    assert f"mem:300 (cgroup memory limit {300 * MB} bytes in {limit_at})" in result.stderr, result.stderr


def test_agent_resources_option_overrides_the_cgroup_limits(v1_cgroups: dict[str, Path], tmp_path: Path) -> None:
    cpu, memory = v1_cgroups["cpu"], v1_cgroups["memory"]
    (cpu / "cpu.cfs_period_us").write_text("100000")
    (cpu / "cpu.cfs_quota_us").write_text("50000")
    (memory / "memory.limit_in_bytes").write_text(str(300 * MB))
    code = ("from broker_mesos.agent.detect import detect_resources; "
            "import sys; r = detect_resources(sys.argv[1]); print(r.scalar('cpus'), r.scalar('mem'))")
    wrapper = (f"echo $$ > {cpu}/cgroup.procs && echo $$ > {memory}/cgroup.procs && "
               f"exec {sys.executable} -c \"$0\" {tmp_path}")
    result = subprocess.run(["sh", "-c", wrapper, code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["0.5", "300.0"], result.stderr
    # --resources: no detection at all (the agent then fails to connect, having logged nothing detected)
    agent = (f"{sys.executable} -m broker_mesos.cli.main agent --broker amqp://guest:guest@127.0.0.1:1/%2F "
             f"--connect-timeout 1 --no-checkpoint --work-dir {tmp_path / 'work'} --resources 'cpus:4;mem:4096'")
    result = subprocess.run(["sh", "-c", f"echo $$ > {cpu}/cgroup.procs && exec {agent}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert "cannot connect to the broker" in result.stderr, result.stderr
    assert "detected resources" not in result.stderr, result.stderr
