"""``knd prepare`` throughput: Ray Data against a plain loop and a process pool, in one run.

    .venv/bin/python bench/prepare.py                          # 24-actor synthetic corpus, 2 CPUs
    .venv/bin/python bench/prepare.py --corpus demo/corpus --num-cpus 4

The corpus is ``knd synth``'s 1440 files (RAVDESS format: 48 kHz mono 16-bit WAVs of 3-5 s),
written once to a scratch folder unless ``--corpus`` names one. The three contenders run the same
driver logic (:func:`knd.stages.prepare.prepare_files`: a hash pass, de-duplication, a featurise
pass whose tasks write their own Parquet shards, ``rejected.csv``, manifest), each into its own
output folder; only the way tasks run differs:

- **loop**: one process, the tasks one after another (torch's default threads);
- **pool**: ``multiprocessing.Pool(--num-cpus)`` (spawn) mapping the same tasks (1 torch thread);
- **ray**: ``knd.stages.prepare.run`` on a local Ray with ``--num-cpus`` CPUs: listing, the lease,
  Ray tasks (1 CPU, 1 torch thread each), commit.

Start-up is reported apart from steady state: Ray's ``init`` and the pool's creation, then a
warm-up over ``--warmup`` files (worker processes import torch and build the mel filterbank).
Steady-state throughput is the full corpus afterwards, in files/s and audio-seconds/s. Peak
memory is the largest sum over this process and all its descendants (Ray's GCS, raylet and
workers, or the pool's children), read from /proc, of resident set sizes (RSS, every 0.2 s:
shared pages, such as the CUDA build of torch each worker maps, count once per process, so an
upper bound) and of proportional set sizes (PSS, every 2 s: shared pages split among their
processes; reading it costs the kernel a page-table walk, see :class:`TreeMemory`). The
memory target is judged on PSS. CPU seconds of each contender's run are split by role: the
driver, the task workers and everything else (Ray's raylet, GCS and agents): on cores that the
workers fill, the third is what Ray gives up to a pool. Figures go to
``bench/results/prepare.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import Machine, write_results

from knd.config.loading import load_config
from knd.config.schema import RayConfig
from knd.data import storage
from knd.runtime.tasks import serial_map
from knd.stages.prepare import list_inputs, prepare_files, run

RESULTS = Path(__file__).resolve().parent / "results" / "prepare.json"
TARGETS = {"ray_vs_loop": 1.7, "ray_vs_pool": 1.0, "peak_rss_gb": 3.0}


class TreeMemory:
    """Peak summed memory and CPU time of this process and its descendants, sampled on a thread
    from /proc.

    Two memory sums: RSS (each process's resident pages, so pages shared between processes, such
    as torch's CUDA libraries mapped by every worker, count once per process: an upper bound) and
    PSS (shared pages divided among the processes sharing them: what the job takes from the
    machine). ``peak``/``peak_pss`` since the last reset, ``overall``/``overall_pss`` overall.

    CPU seconds since the last reset, by role (:meth:`cpu_by_role`): this process (the driver),
    the task workers (Ray's ``ray::`` workers or the pool's children), everything else (Ray's
    own processes: raylet, GCS, agents) and this sampler itself. On a machine the workers fill,
    what "everything else" takes is what Ray's throughput gives up to a pool's. A process that
    ends between two samples loses its last 0.2 s.

    The sampler must not take the CPU it measures: reading a process's PSS makes the kernel walk
    its page tables (~4 ms for a Ray worker that maps torch: 40 ms a sample for Ray's ten
    processes, a fifth of a core every 0.2 s, against a pool's three), so PSS is read every
    ``pss_every``-th sample only and RSS (cheap) every sample.
    """

    def __init__(self, interval: float = 0.2, pss_every: int = 10):
        self.interval, self.pss_every, self._stop = interval, pss_every, threading.Event()
        self._samples = 0
        self._sampler_s = self._sampler_s_at_reset = 0.0
        self.peak = self.overall = self.peak_pss = self.overall_pss = 0
        self._ticks_at_reset: dict[int, int] = {}
        self._ticks: dict[int, tuple[str, int]] = {}  # pid -> (role, CPU ticks when last seen)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _scan() -> tuple[dict[int, list[int]], dict[int, int]]:
        """``(children of each pid, CPU ticks (user + system) of each pid)`` from /proc."""
        children: dict[int, list[int]] = {}
        ticks: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
            except (OSError, ValueError, IndexError):  # the process ended while we looked
                continue
            children.setdefault(ppid, []).append(int(entry.name))
            ticks[int(entry.name)] = utime + stime
        return children, ticks

    @staticmethod
    def tree_pids(children: dict[int, list[int]]) -> list[int]:
        """This process and its descendants, from :meth:`_scan`'s ``children``."""
        out, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, []))
        return out

    @staticmethod
    def role(pid: int) -> str:
        """``driver``, ``workers`` (a Ray task worker or a pool's child) or ``other``."""
        if pid == os.getpid():
            return "driver"
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return "other"
        if cmdline.startswith("ray::") and "Agent" not in cmdline:
            return "workers"  # ray::IDLE, ray::_in_task, ...; the agents are Ray's own
        if "multiprocessing" in cmdline and "spawn_main" in cmdline:
            return "workers"
        return "other"

    @staticmethod
    def _kb(path: str, key: str) -> int:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def tree_memory(self, pids: list[int], pss: bool) -> tuple[int, int]:
        """``(summed RSS, summed PSS)`` of ``pids`` in bytes (PSS 0 unless ``pss``)."""
        rss = pss_sum = 0
        for pid in pids:
            rss += self._kb(f"/proc/{pid}/status", "VmRSS:") * 1024
            if pss:
                pss_sum += self._kb(f"/proc/{pid}/smaps_rollup", "Pss:") * 1024
        return rss, pss_sum

    def _sample(self, pss: bool = True) -> tuple[int, int]:
        children, ticks = self._scan()
        pids = self.tree_pids(children)
        with self._lock:
            for pid in pids:
                if pid in ticks:
                    role = self._ticks.get(pid, ("other",))[0]
                    if role == "other":  # unseen, or a worker not yet titled ray::...: look again
                        role = self.role(pid)
                    self._ticks[pid] = (role, ticks[pid])
        return self.tree_memory(pids, pss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.thread_time()
            rss, pss = self._sample(pss=self._samples % self.pss_every == 0)
            self._samples += 1
            self.peak, self.overall = max(self.peak, rss), max(self.overall, rss)
            self.peak_pss, self.overall_pss = max(self.peak_pss, pss), max(self.overall_pss, pss)
            self._sampler_s += time.thread_time() - started
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak, self.peak_pss = self._sample()
        with self._lock:
            self._ticks_at_reset = {pid: t for pid, (_, t) in self._ticks.items()}
            self._sampler_s_at_reset = self._sampler_s

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of each role since the last :meth:`reset` (a process that started since
        counts whole); the sampler's own are taken out of the driver's."""
        self._sample(pss=False)
        hz = os.sysconf("SC_CLK_TCK")
        sampler = self._sampler_s - self._sampler_s_at_reset
        out = {"driver": -sampler, "workers": 0.0, "other": 0.0, "sampler": sampler}
        with self._lock:
            for pid, (role, t) in self._ticks.items():
                out[role] += (t - self._ticks_at_reset.get(pid, 0)) / hz
        return {k: round(v, 2) for k, v in out.items()}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def corpus_dir(requested: str | None, actors: int) -> str:
    """``--corpus``, or the synthetic corpus of ``actors`` actors, written once to scratch."""
    if requested:
        return requested
    from knd.data.ravdess import actor_clips
    from knd.stages.synth import write_corpus

    folder = Path(tempfile.gettempdir()) / f"knd_bench_corpus_{actors}actors_seed0"
    expected = sum(len(actor_clips(a)) for a in range(1, actors + 1))
    if len(list(folder.rglob("*.wav"))) != expected:
        print(f"writing the {expected}-file synthetic corpus to {folder} ...", flush=True)
        write_corpus(str(folder), actors, seed=0, progress=False)
    return str(folder)


def _pool_task(job):
    fn, task, consts = job
    import torch

    torch.set_num_threads(1)  # one process per CPU, as the Ray tasks
    return fn(**task, **consts)


def pool_map(pool):
    """A :data:`knd.stages.prepare.TaskMap` over a process pool (results in completion order)."""

    def map_tasks(fn, tasks, consts):
        jobs = [(fn, task, consts) for task in tasks]
        results = pool.imap(_pool_task, jobs)
        for task in tasks:
            try:
                yield task, next(results)
            except Exception as e:  # noqa: BLE001 - reported like a failed task
                yield task, e

    return map_tasks


def run_loop(cfg, uris, paths, listing, cpus) -> list:
    kept, _, _ = prepare_files(cfg, uris, paths, listing, serial_map, cpus)
    return kept


def run_pool(pool, cfg, uris, paths, listing, cpus) -> list:
    kept, _, _ = prepare_files(cfg, uris, paths, listing, pool_map(pool), cpus)
    return kept


def measure(name, fn, memory: TreeMemory, n_files: int, audio: float | None = None):
    """Time ``fn``; ``audio`` seconds default to the durations of the rows ``fn`` returns."""
    memory.reset()
    started = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - started
    if audio is None:
        audio = float(sum(r["duration"] for r in out))
    row = {
        **_rates(seconds, n_files, audio),
        "peak_rss_gb": round(memory.peak / 2**30, 2),
        "peak_pss_gb": round(memory.peak_pss / 2**30, 2),
        "cpu_s": memory.cpu_by_role(),
    }
    print(
        f"{name:>5}: {seconds:6.1f} s  {row['files_per_s']:6.1f} files/s  "
        f"{row['audio_s_per_s']:7.1f} audio-s/s  peak RSS {row['peak_rss_gb']:.2f} GB, "
        f"PSS {row['peak_pss_gb']:.2f} GB; CPU s {row['cpu_s']}",
        flush=True,
    )
    return row, audio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="audio folder (default: synthesise --actors actors)")
    parser.add_argument("--actors", type=int, default=24)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: prepare.yaml's")
    parser.add_argument("--warmup", type=int, default=64, help="files in each warm-up run")
    parser.add_argument("--out", default=None, help="scratch output folder (default: a temp dir)")
    args = parser.parse_args(argv)

    corpus = corpus_dir(args.corpus, args.actors)
    scratch = Path(args.out or tempfile.mkdtemp(prefix="knd_bench_prepare_"))
    overrides = [f"input={corpus}", f"ray.num_cpus={args.num_cpus}"]
    if args.batch_size:
        overrides.append(f"batch_size={args.batch_size}")

    def cfg_for(name: str):
        storage.delete_dir(str(scratch / name))
        return load_config("prepare", [*overrides, f"output={scratch / name}"])

    uris, paths, listing = list_inputs(corpus)
    n, warm = len(uris), min(args.warmup, len(uris))
    machine = Machine()
    print(
        f"{n} files from {corpus}; {args.num_cpus} CPUs; load average {machine.load_before}",
        flush=True,
    )
    results: dict = {}
    with TreeMemory() as memory:
        # loop: warm-up imports torch and builds the filterbank in this process.
        cfg = cfg_for("loop-warm")
        started = time.perf_counter()
        run_loop(cfg, uris[:warm], paths[:warm], listing, args.num_cpus)
        loop_warm = time.perf_counter() - started
        # Every contender keeps the same rows, so the loop's durations serve all three.
        results["loop"], audio = measure(
            "loop",
            lambda: run_loop(cfg_for("loop"), uris, paths, listing, args.num_cpus),
            memory,
            n,
        )
        results["loop"]["startup_s"] = 0.0
        results["loop"]["warmup_s"] = round(loop_warm, 2)
        results["loop"]["torch_threads"] = _torch_threads()

        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.num_cpus) as pool:
            pool_start = time.perf_counter() - started
            started = time.perf_counter()
            run_pool(pool, cfg_for("pool-warm"), uris[:warm], paths[:warm], listing, args.num_cpus)
            pool_warm = time.perf_counter() - started
            results["pool"], _ = measure(
                "pool",
                lambda: run_pool(pool, cfg_for("pool"), uris, paths, listing, args.num_cpus),
                memory,
                n,
                audio,
            )
        results["pool"].update(startup_s=round(pool_start, 2), warmup_s=round(pool_warm, 2))

        import ray

        from knd.runtime.cluster import init_ray

        started = time.perf_counter()
        init_ray(RayConfig(address=None, num_cpus=args.num_cpus, verbose=False))
        ray_start = time.perf_counter() - started
        warm_dir = scratch / "ray-warm-input"
        _copy_subset(uris[:warm], paths[:warm], warm_dir)
        started = time.perf_counter()
        run(dataclasses.replace(cfg_for("ray-warm"), input=str(warm_dir)))
        ray_warm = time.perf_counter() - started

        results["ray"], _ = measure("ray", lambda: run(cfg_for("ray")), memory, n, audio)
        results["ray"].update(startup_s=round(ray_start, 2), warmup_s=round(ray_warm, 2))
        ray.shutdown()

    ratios = {
        "ray_vs_loop": round(results["ray"]["files_per_s"] / results["loop"]["files_per_s"], 2),
        "ray_vs_pool": round(results["ray"]["files_per_s"] / results["pool"]["files_per_s"], 2),
        "pool_vs_loop": round(results["pool"]["files_per_s"] / results["loop"]["files_per_s"], 2),
    }
    peak = round(memory.overall / 2**30, 2)
    peak_pss = round(memory.overall_pss / 2**30, 2)
    report = {
        "command": "python bench/prepare.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "corpus": corpus,
        "files": n,
        "num_cpus": args.num_cpus,
        "batch_size": load_config("prepare", [*overrides, "output=x"]).batch_size,
        "machine": machine.record(),
        "results": results,
        "ratios": ratios,
        "peak_rss_gb": peak,
        "peak_pss_gb": peak_pss,
        "targets": TARGETS,
        "meets_targets": {
            "ray_vs_loop": ratios["ray_vs_loop"] >= TARGETS["ray_vs_loop"],
            "ray_vs_pool": ratios["ray_vs_pool"] >= TARGETS["ray_vs_pool"],
            # PSS: the memory the job takes; RSS sums count shared libraries once per process.
            "peak_rss_gb": peak_pss <= TARGETS["peak_rss_gb"],
        },
    }
    print(json.dumps({"ratios": ratios, "peak_rss_gb": peak, "peak_pss_gb": peak_pss}))
    write_results(RESULTS, report)
    return 0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _copy_subset(uris, paths, folder: Path) -> None:
    """A folder with a few corpus files (hard links where possible): Ray's warm-up input."""
    for uri, rel in zip(uris, paths, strict=True):
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        try:
            os.link(uri, target)
        except OSError:
            shutil.copyfile(uri, target)


def _rates(seconds: float, n_files: int, audio: float) -> dict:
    return {
        "seconds": round(seconds, 2),
        "files_per_s": round(n_files / seconds, 1),
        "audio_s_per_s": round(audio / seconds, 1),
    }


if __name__ == "__main__":
    sys.exit(main())
