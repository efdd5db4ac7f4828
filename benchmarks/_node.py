"""The "node" workload: hosts scraped by node_exporter (job="node"), as a fleet mix.

Metric names, label names and value resolutions follow what node_exporter 1.5
exposes with its default collectors on Linux, plus the synthetic series
Prometheus adds per target (``up``, ``scrape_*``) and a few request-duration
histograms standing in for applications that share the hosts. Host profiles
differ in CPUs, network devices, disks, mounts and sensors; the weighted mix
averages about a thousand series per host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from benchmarks.workloads import Kind, Profile, SeriesSpec

__all__ = ["node_profiles"]

_GIB = 1 << 30


@dataclass(frozen=True)
class _Host:
    name: str
    weight: float
    cpus: int
    net: tuple[str, ...]
    disks: tuple[str, ...]
    mounts: tuple[tuple[str, str, str], ...]  # device, fstype, mountpoint
    sensors: int
    mem_gib: int
    handlers: tuple[str, ...]


_BASE_MOUNTS = (
    ("/dev/sda1", "ext4", "/"),
    ("/dev/sda15", "vfat", "/boot/efi"),
    ("tmpfs", "tmpfs", "/run"),
    ("tmpfs", "tmpfs", "/run/lock"),
    ("tmpfs", "tmpfs", "/run/user/1000"),
)


def _pod_mounts(n: int) -> tuple[tuple[str, str, str], ...]:
    """Kubernetes nodes expose a tmpfs per pod volume, with long mountpoints."""
    return tuple(
        (
            "tmpfs",
            "tmpfs",
            (
                f"/var/lib/kubelet/pods/{i:08x}-5e1c-4c2b-9a7d-{i * 7919:012x}"
                f"/volumes/kubernetes.io~projected/kube-api-access-{i * 31 % 99999:05d}"
            ),
        )
        for i in range(n)
    )


_HOSTS = (
    _Host("vm-2cpu", 0.20, 2, ("lo", "eth0"), ("sda",), _BASE_MOUNTS, 0, 4, ("/",)),
    _Host(
        "vm-8cpu",
        0.30,
        8,
        ("lo", "eth0", "docker0", "veth1a2b3c4"),
        ("sda", "sdb"),
        _BASE_MOUNTS + (("/dev/sdb1", "xfs", "/var/lib/docker"),),
        3,
        32,
        ("/", "/api/v1/items"),
    ),
    _Host(
        "k8s-16cpu",
        0.35,
        16,
        ("lo", "eth0", "eth1", "cni0", "flannel.1") + tuple(f"veth{i:07x}" for i in range(8)),
        ("nvme0n1", "nvme1n1", "dm-0", "dm-1"),
        _BASE_MOUNTS + (("/dev/nvme1n1p1", "ext4", "/var/lib/kubelet"),) + _pod_mounts(12),
        9,
        64,
        ("/", "/api/v1/items", "/api/v1/orders"),
    ),
    _Host(
        "db-32cpu",
        0.15,
        32,
        ("lo", "eno1", "eno2", "bond0"),
        ("nvme0n1", "nvme1n1", "nvme2n1", "nvme3n1", "md0"),
        _BASE_MOUNTS + (("/dev/md0", "xfs", "/var/lib/postgresql"),),
        17,
        256,
        ("/", "/api/v1/query", "/api/v1/write", "/metrics"),
    ),
)


def _counter(
    name: str, rate: float, /, *, div: int = 1, cv: float = 0.3, start: float = 0.0, **labels: str
) -> SeriesSpec:
    return SeriesSpec(
        {"__name__": name, **labels},
        Kind.COUNTER,
        div=div,
        rate=rate,
        shape=1.0 / (cv * cv),
        start=start,
    )


def _gauge(
    name: str, lo: float, hi: float, /, *, step: float = 0.01, div: int = 1, **labels: str
) -> SeriesSpec:
    return SeriesSpec({"__name__": name, **labels}, Kind.GAUGE, div=div, lo=lo, hi=hi, step=step)


def _const(name: str, value: float, /, **labels: str) -> SeriesSpec:
    return SeriesSpec({"__name__": name, **labels}, Kind.CONST, div=1, start=value)


def _histogram(
    name: str, group: int, rate: float, median: float, /, **labels: str
) -> list[SeriesSpec]:
    """A classic histogram with log-normal observations: _bucket{le}, _sum, _count."""
    les = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    sigma = 1.0

    def cdf(le: float) -> float:
        return 0.5 * (1.0 + math.erf(math.log(le / median) / (sigma * math.sqrt(2.0))))

    specs = [
        SeriesSpec(
            {"__name__": f"{name}_bucket", **labels, "le": str(le)},
            Kind.BUCKET,
            rate=rate,
            group=group,
            cdf=cdf(le),
        )
        for le in les
    ]
    specs.append(
        SeriesSpec(
            {"__name__": f"{name}_bucket", **labels, "le": "+Inf"},
            Kind.BUCKET,
            rate=rate,
            group=group,
        )
    )
    mean = median * math.exp(sigma * sigma / 2)
    specs.append(
        SeriesSpec(
            {"__name__": f"{name}_sum", **labels},
            Kind.SUM,
            div=1_000_000,
            rate=rate,
            group=group,
            scale=mean,
        )
    )
    specs.append(
        SeriesSpec({"__name__": f"{name}_count", **labels}, Kind.BUCKET, rate=rate, group=group)
    )
    return specs


_CPU_MODES = {
    "idle": 0.7,
    "iowait": 0.01,
    "irq": 0.0,
    "nice": 0.001,
    "softirq": 0.005,
    "steal": 0.002,
    "system": 0.06,
    "user": 0.2,
}


def _cpu(host: _Host) -> list[SeriesSpec]:
    specs: list[SeriesSpec] = []
    for c in map(str, range(host.cpus)):
        specs += [
            _counter("node_cpu_seconds_total", r, div=100, cv=0.2, cpu=c, mode=m)
            for m, r in _CPU_MODES.items()
        ]
        specs += [
            _counter("node_cpu_guest_seconds_total", 0.0, div=100, cpu=c, mode=m)
            for m in ("nice", "user")
        ]
        specs += [
            _counter("node_softnet_processed_total", 40.0, cpu=c),
            _counter("node_softnet_dropped_total", 0.0, cpu=c),
            _counter("node_softnet_times_squeezed_total", 0.001, cv=3.0, cpu=c),
            _counter("node_schedstat_running_seconds_total", 0.3, div=1_000_000_000, cpu=c),
            _counter("node_schedstat_waiting_seconds_total", 0.02, div=1_000_000_000, cpu=c),
            _counter("node_schedstat_timeslices_total", 300.0, cpu=c),
            _gauge("node_cpu_scaling_frequency_hertz", 1.2e9, 3.5e9, step=0.2, cpu=c),
            _const("node_cpu_scaling_frequency_max_hertz", 3.5e9, cpu=c),
            _const("node_cpu_scaling_frequency_min_hertz", 1.2e9, cpu=c),
        ]
    return specs


_MEM_CONST = (
    "MemTotal",
    "SwapTotal",
    "CommitLimit",
    "VmallocTotal",
    "Hugepagesize",
    "DirectMap4k",
    "DirectMap2M",
    "DirectMap1G",
)
_MEM_GAUGES = (
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "SwapCached",
    "SwapFree",
    "Active",
    "Inactive",
    "Active_anon",
    "Inactive_anon",
    "Active_file",
    "Inactive_file",
    "Unevictable",
    "Mlocked",
    "Dirty",
    "Writeback",
    "AnonPages",
    "Mapped",
    "Shmem",
    "KReclaimable",
    "Slab",
    "SReclaimable",
    "SUnreclaim",
    "KernelStack",
    "PageTables",
    "NFS_Unstable",
    "Bounce",
    "WritebackTmp",
    "Committed_AS",
    "VmallocUsed",
    "VmallocChunk",
    "Percpu",
    "HardwareCorrupted",
    "AnonHugePages",
    "ShmemHugePages",
    "ShmemPmdMapped",
    "FileHugePages",
    "FilePmdMapped",
    "Hugetlb",
)


def _memory(host: _Host) -> list[SeriesSpec]:
    total = host.mem_gib * _GIB
    specs = [
        _const(f"node_memory_{n}_bytes", total * 0.5**i // 4096 * 4096)
        for i, n in enumerate(_MEM_CONST)
    ]
    # Page-granular gauges, each wandering inside its own share of memory.
    for i, n in enumerate(_MEM_GAUGES):
        share = 0.6 / (1 + i % 7)
        hi = total * share // 4096 * 4096
        specs.append(_gauge(f"node_memory_{n}_bytes", hi * 0.3, hi, step=0.002, div=1))
    specs += [_const(f"node_memory_HugePages_{n}", 0) for n in ("Total", "Free", "Rsvd", "Surp")]
    return specs


_NET_COUNTERS = {
    "receive_bytes": 2e5,
    "receive_packets": 300.0,
    "receive_errs": 0.0,
    "receive_drop": 0.001,
    "receive_fifo": 0.0,
    "receive_frame": 0.0,
    "receive_compressed": 0.0,
    "receive_multicast": 0.05,
    "transmit_bytes": 1.5e5,
    "transmit_packets": 250.0,
    "transmit_errs": 0.0,
    "transmit_drop": 0.0,
    "transmit_fifo": 0.0,
    "transmit_colls": 0.0,
    "transmit_carrier": 0.0,
    "transmit_compressed": 0.0,
}


def _network(host: _Host) -> list[SeriesSpec]:
    specs: list[SeriesSpec] = []
    for i, dev in enumerate(host.net):
        specs += [
            _counter(f"node_network_{n}_total", r, cv=0.5, device=dev)
            for n, r in _NET_COUNTERS.items()
        ]
        specs += [
            _const("node_network_up", 1 if dev != "lo" else 0, device=dev),
            _const("node_network_mtu_bytes", 65536 if dev == "lo" else 1500, device=dev),
            _const("node_network_speed_bytes", 1.25e9, device=dev),
            _const("node_network_carrier", 1, device=dev),
            _const("node_network_transmit_queue_length", 1000, device=dev),
            _const("node_network_flags", 4099, device=dev),
            _const("node_network_iface_id", i + 1, device=dev),
            _const("node_network_iface_link", i + 1, device=dev),
            _const("node_network_dormant", 0, device=dev),
            _const("node_network_protocol_type", 772 if dev == "lo" else 1, device=dev),
            _const("node_network_net_dev_group", 0, device=dev),
            _const("node_network_address_assign_type", 0, device=dev),
            _const("node_network_device_id", 0, device=dev),
            _counter("node_network_carrier_changes_total", 0.0, device=dev),
            _counter("node_network_carrier_up_changes_total", 0.0, device=dev),
            _counter("node_network_carrier_down_changes_total", 0.0, device=dev),
            _const(
                "node_network_info",
                1,
                device=dev,
                address=f"02:42:ac:11:00:{i:02x}",
                broadcast="ff:ff:ff:ff:ff:ff",
                duplex="full",
                operstate="up",
            ),
            _gauge("node_arp_entries", 0, 40, step=0.05, device=dev),
        ]
    return specs


def _filesystems(host: _Host) -> list[SeriesSpec]:
    specs: list[SeriesSpec] = []
    for device, fstype, mountpoint in host.mounts:
        size = (8 if fstype == "tmpfs" else 200) * _GIB
        per_mount = [
            _gauge("node_filesystem_avail_bytes", size * 0.2, size * 0.9, step=0.0005),
            _gauge("node_filesystem_free_bytes", size * 0.25, size * 0.95, step=0.0005),
            _const("node_filesystem_size_bytes", size),
            _const("node_filesystem_files", size // 16384),
            _gauge("node_filesystem_files_free", size // 32768, size // 16384, step=0.0005),
            _const("node_filesystem_readonly", 0),
            _const("node_filesystem_device_error", 0),
        ]
        fs = {"device": device, "fstype": fstype, "mountpoint": mountpoint}
        specs += [replace(s, labels={**s.labels, **fs}) for s in per_mount]
    return specs


_DISK_COUNTERS = {
    "reads_completed": (20.0, 1),
    "reads_merged": (2.0, 1),
    "read_bytes": (4e5, 1),
    "read_time_seconds": (0.02, 1000),
    "writes_completed": (40.0, 1),
    "writes_merged": (10.0, 1),
    "written_bytes": (8e5, 1),
    "write_time_seconds": (0.05, 1000),
    "io_time_seconds": (0.05, 1000),
    "io_time_weighted_seconds": (0.08, 1000),
    "discards_completed": (0.01, 1),
    "discards_merged": (0.0, 1),
    "discarded_sectors": (5.0, 1),
    "discard_time_seconds": (0.0, 1000),
    "flush_requests": (1.0, 1),
    "flush_requests_time_seconds": (0.001, 1000),
}


def _disks(host: _Host) -> list[SeriesSpec]:
    specs: list[SeriesSpec] = []
    for i, dev in enumerate(host.disks):
        specs += [
            _counter(f"node_disk_{n}_total", r, div=d, cv=0.8, device=dev)
            for n, (r, d) in _DISK_COUNTERS.items()
        ]
        specs += [
            _gauge("node_disk_io_now", 0, 8, step=0.1, device=dev),
            _const(
                "node_disk_info",
                1,
                device=dev,
                major=str(259 if "nvme" in dev else 8),
                minor=str(i * 16),
            ),
        ]
    return specs


_NETSTAT = (
    "Icmp_InErrors",
    "Icmp_InMsgs",
    "Icmp_OutMsgs",
    "Icmp6_InErrors",
    "Icmp6_InMsgs",
    "Icmp6_OutMsgs",
    "Ip6_InOctets",
    "Ip6_OutOctets",
    "IpExt_InOctets",
    "IpExt_OutOctets",
    "TcpExt_ListenDrops",
    "TcpExt_ListenOverflows",
    "TcpExt_SyncookiesFailed",
    "TcpExt_SyncookiesRecv",
    "TcpExt_SyncookiesSent",
    "TcpExt_TCPSynRetrans",
    "TcpExt_TCPTimeouts",
    "Tcp_ActiveOpens",
    "Tcp_InErrs",
    "Tcp_InSegs",
    "Tcp_OutRsts",
    "Tcp_OutSegs",
    "Tcp_PassiveOpens",
    "Tcp_RetransSegs",
    "Udp_InDatagrams",
    "Udp_InErrors",
    "Udp_NoPorts",
    "Udp_OutDatagrams",
    "Udp_RcvbufErrors",
    "Udp_SndbufErrors",
    "Udp6_InDatagrams",
    "Udp6_InErrors",
    "Udp6_NoPorts",
    "Udp6_OutDatagrams",
    "Udp6_RcvbufErrors",
    "Udp6_SndbufErrors",
    "UdpLite_InErrors",
    "UdpLite6_InErrors",
)
_SOCKSTAT = (
    "FRAG_inuse",
    "FRAG_memory",
    "RAW_inuse",
    "TCP_alloc",
    "TCP_inuse",
    "TCP_mem",
    "TCP_mem_bytes",
    "TCP_orphan",
    "TCP_tw",
    "UDPLITE_inuse",
    "UDP_inuse",
    "UDP_mem",
    "UDP_mem_bytes",
    "sockets_used",
    "FRAG6_inuse",
    "FRAG6_memory",
    "RAW6_inuse",
    "TCP6_inuse",
    "UDP6_inuse",
    "UDPLITE6_inuse",
)
_COLLECTORS = (
    "arp",
    "bcache",
    "bonding",
    "btrfs",
    "conntrack",
    "cpu",
    "cpufreq",
    "diskstats",
    "dmi",
    "edac",
    "entropy",
    "fibrechannel",
    "filefd",
    "filesystem",
    "hwmon",
    "infiniband",
    "ipvs",
    "loadavg",
    "mdadm",
    "meminfo",
    "netclass",
    "netdev",
    "netstat",
    "nfs",
    "nfsd",
    "nvme",
    "os",
    "powersupplyclass",
    "pressure",
    "rapl",
    "schedstat",
    "selinux",
    "sockstat",
    "softnet",
    "stat",
    "tapestats",
    "textfile",
    "thermal_zone",
    "time",
    "timex",
    "udp_queues",
    "uname",
    "vmstat",
    "xfs",
    "zfs",
)
_TIMEX = (
    "estimated_error_seconds",
    "frequency_adjustment_ratio",
    "loop_time_constant",
    "maxerror_seconds",
    "offset_seconds",
    "pps_calibration_total",
    "pps_error_total",
    "pps_frequency_hertz",
    "pps_jitter_seconds",
    "pps_jitter_total",
    "pps_shift_seconds",
    "pps_stability_exceeded_total",
    "pps_stability_hertz",
    "status",
    "sync_status",
    "tai_offset_seconds",
    "tick_seconds",
)
_GO_GAUGES = (
    "alloc_bytes",
    "buck_hash_sys_bytes",
    "gc_sys_bytes",
    "heap_alloc_bytes",
    "heap_idle_bytes",
    "heap_inuse_bytes",
    "heap_objects",
    "heap_released_bytes",
    "heap_sys_bytes",
    "mcache_inuse_bytes",
    "mcache_sys_bytes",
    "mspan_inuse_bytes",
    "mspan_sys_bytes",
    "next_gc_bytes",
    "other_sys_bytes",
    "stack_inuse_bytes",
    "stack_sys_bytes",
    "sys_bytes",
)


def _system(host: _Host) -> list[SeriesSpec]:
    """Host-wide series: load, processes, kernel tables, exporter and scrape bookkeeping."""
    specs = [
        _gauge("node_load1", 0, host.cpus * 0.8, step=0.05, div=100),
        _gauge("node_load5", 0, host.cpus * 0.7, step=0.02, div=100),
        _gauge("node_load15", 0, host.cpus * 0.6, step=0.01, div=100),
        _gauge("node_procs_running", 1, host.cpus, step=0.2),
        _gauge("node_procs_blocked", 0, 3, step=0.2),
        _counter("node_context_switches_total", 2000.0 * host.cpus),
        _counter("node_forks_total", 5.0),
        _counter("node_intr_total", 1500.0 * host.cpus),
        _const("node_boot_time_seconds", 1.69e9),
        _counter("node_time_seconds", 1.0, div=1_000_000, cv=0.0005, start=1.7e9),
        _gauge("node_entropy_available_bits", 256, 4096, step=0.05),
        _const("node_entropy_pool_size_bits", 4096),
        _gauge("node_filefd_allocated", 1000, 20000, step=0.01),
        _const("node_filefd_maximum", 9.2e18),
        _gauge("node_nf_conntrack_entries", 100, 30000, step=0.01),
        _const("node_nf_conntrack_entries_limit", 262144),
        _const("node_selinux_enabled", 0),
        _const("node_textfile_scrape_error", 0),
        _counter("node_vmstat_oom_kill", 0.0),
        _counter("node_vmstat_pgfault", 5000.0),
        _counter("node_vmstat_pgmajfault", 0.5, cv=2.0),
        _counter("node_vmstat_pgpgin", 400.0),
        _counter("node_vmstat_pgpgout", 800.0),
        _counter("node_vmstat_pswpin", 0.0),
        _counter("node_vmstat_pswpout", 0.0),
        _counter("node_pressure_cpu_waiting_seconds_total", 0.01, div=1_000_000),
        _counter("node_pressure_io_stalled_seconds_total", 0.005, div=1_000_000),
        _counter("node_pressure_io_waiting_seconds_total", 0.006, div=1_000_000),
        _counter("node_pressure_memory_stalled_seconds_total", 0.0, div=1_000_000),
        _counter("node_pressure_memory_waiting_seconds_total", 0.0001, div=1_000_000, cv=3.0),
        _const(
            "node_uname_info",
            1,
            domainname="(none)",
            machine="x86_64",
            nodename="node",
            release="6.1.0-18-amd64",
            sysname="Linux",
            version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
        ),
        _const(
            "node_os_info",
            1,
            id="debian",
            name="Debian GNU/Linux",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
            version="12 (bookworm)",
            version_codename="bookworm",
            version_id="12",
        ),
        _const("node_os_version", 12, id="debian", name="Debian GNU/Linux"),
        _const(
            "node_exporter_build_info",
            1,
            branch="debian/sid",
            goarch="amd64",
            goos="linux",
            goversion="go1.19.8",
            revision="1.5.0-1+b6",
            tags="netgo osusergo static_build",
            version="1.5.0",
        ),
        _const(
            "node_dmi_info",
            1,
            bios_date="04/01/2014",
            bios_vendor="SeaBIOS",
            bios_version="1.16.2",
            product_name="Standard PC (Q35 + ICH9, 2009)",
            system_vendor="QEMU",
        ),
    ]
    for n in _NETSTAT:
        steady = n.endswith(("Octets", "Segs", "Datagrams", "InMsgs", "OutMsgs", "Opens"))
        specs.append(
            _counter(f"node_netstat_{n}", 50.0 if steady else 0.002, cv=0.6 if steady else 3.0)
        )
    specs.append(_gauge("node_netstat_Tcp_CurrEstab", 5, 500, step=0.02))
    specs += [_gauge(f"node_sockstat_{n}", 0, 2000, step=0.02) for n in _SOCKSTAT]
    specs += [
        _gauge("node_udp_queues", 0, 10, step=0.1, ip=ip, queue=q)
        for ip in ("v4", "v6")
        for q in ("rx", "tx")
    ]
    specs += [_const(f"node_timex_{n}", 0) for n in _TIMEX]
    specs += [
        _counter(f"node_nf_conntrack_stat_{n}", r, cv=2.0)
        for n, r in (
            ("drop", 0.0),
            ("early_drop", 0.0),
            ("found", 0.1),
            ("ignore", 5.0),
            ("insert", 0.0),
            ("insert_failed", 0.0),
            ("invalid", 0.05),
            ("search_restart", 0.01),
        )
    ]
    for c in _COLLECTORS:
        specs.append(
            _gauge(
                "node_scrape_collector_duration_seconds",
                1e-5,
                0.02,
                step=0.1,
                div=1_000_000_000,
                collector=c,
            )
        )
        specs.append(_const("node_scrape_collector_success", 1, collector=c))
    return specs


def _sensors(host: _Host) -> list[SeriesSpec]:
    specs: list[SeriesSpec] = []
    chips = ["platform_coretemp_0", "pci0000:00_0000:00:18_3", "nvme_nvme0"]
    for i in range(host.sensors):
        chip, sensor = chips[i % len(chips)], f"temp{i // len(chips) + 1}"
        specs += [
            _gauge(
                "node_hwmon_temp_celsius", 30, 80, step=0.02, div=1000, chip=chip, sensor=sensor
            ),
            _const("node_hwmon_temp_crit_alarm_celsius", 0, chip=chip, sensor=sensor),
            _const("node_hwmon_temp_crit_celsius", 100, chip=chip, sensor=sensor),
            _const("node_hwmon_temp_max_celsius", 84, chip=chip, sensor=sensor),
        ]
    specs += [
        _const("node_hwmon_chip_names", 1, chip=c, chip_name=c.split("_")[0])
        for c in chips[: min(host.sensors, len(chips))]
    ]
    return specs


def _exporter_process() -> list[SeriesSpec]:
    """The exporter's own Go runtime, process and HTTP handler series."""
    specs = [
        _gauge("go_gc_duration_seconds", 1e-5, 1e-3, step=0.05, div=1_000_000_000, quantile=q)
        for q in ("0", "0.25", "0.5", "0.75", "1")
    ]
    specs += [
        _counter("go_gc_duration_seconds_sum", 2e-5, div=1_000_000_000),
        _counter("go_gc_duration_seconds_count", 0.05, cv=1.0),
        _gauge("go_goroutines", 6, 12, step=0.1),
        _gauge("go_threads", 6, 10, step=0.02),
        _const("go_info", 1, version="go1.19.8"),
        _gauge("go_memstats_last_gc_time_seconds", 1.7e9, 1.7e9 + 60, step=0.2, div=1_000_000_000),
        _counter("go_memstats_alloc_bytes_total", 1e5, cv=0.5),
        _counter("go_memstats_frees_total", 1000.0, cv=0.5),
        _counter("go_memstats_lookups_total", 0.0),
        _counter("go_memstats_mallocs_total", 1000.0, cv=0.5),
        _counter("process_cpu_seconds_total", 0.01, div=100, cv=0.5),
        _const("process_max_fds", 1048576),
        _gauge("process_open_fds", 8, 12, step=0.1),
        _gauge("process_resident_memory_bytes", 15e6, 25e6, step=0.02),
        _const("process_start_time_seconds", 1.69e9),
        _gauge("process_virtual_memory_bytes", 7.2e8, 7.4e8, step=0.02),
        _const("process_virtual_memory_max_bytes", 1.8446744073709552e19),
        _counter("promhttp_metric_handler_errors_total", 0.0, cause="encoding"),
        _counter("promhttp_metric_handler_errors_total", 0.0, cause="gathering"),
        _gauge("promhttp_metric_handler_requests_in_flight", 1, 1),
        _counter("promhttp_metric_handler_requests_total", 1 / 15, cv=0.01, code="200"),
        _counter("promhttp_metric_handler_requests_total", 0.0, code="500"),
        _counter("promhttp_metric_handler_requests_total", 0.0, code="503"),
    ]
    specs += [_gauge(f"go_memstats_{n}", 1e6, 3e7, step=0.02) for n in _GO_GAUGES]
    return specs


def _scrape(n_series: int) -> list[SeriesSpec]:
    """Series Prometheus itself writes for every target."""
    return [
        _const("up", 1),
        _gauge("scrape_duration_seconds", 0.01, 0.2, step=0.1, div=1_000_000_000),
        _const("scrape_samples_scraped", n_series),
        _const("scrape_samples_post_metric_relabeling", n_series),
        _const("scrape_series_added", 0),
    ]


def _applications(host: _Host) -> list[SeriesSpec]:
    specs: list[SeriesSpec] = []
    for group, handler in enumerate(host.handlers):
        specs += _histogram(
            "http_request_duration_seconds",
            group,
            20.0 / (1 + group),
            0.02 * (1 + group),
            handler=handler,
            method="GET",
        )
    return specs


def _profile(host: _Host) -> Profile:
    specs = (
        _cpu(host)
        + _memory(host)
        + _network(host)
        + _filesystems(host)
        + _disks(host)
        + _system(host)
        + _sensors(host)
        + _exporter_process()
        + _applications(host)
    )
    specs += _scrape(len(specs))
    return Profile(
        host.name, host.weight, tuple(replace(s, labels={**s.labels, "job": "node"}) for s in specs)
    )


def node_profiles() -> list[Profile]:
    """Host profiles of the "node" workload, from a small VM to a 32-CPU database server."""
    return [_profile(h) for h in _HOSTS]
