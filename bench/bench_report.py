"""What the review report costs a tagging run: the default run against --no-report, side by side.

    python bench/bench_report.py                    # the 60 demo crops x4 (240 images), 6 rounds
    python bench/bench_report.py --repeat 10 --scans 40 --rounds 8 --backend tensorflow
    python bench/bench_report.py --root ../main          # another checkout's code (e.g. before a change)
    python bench/bench_report.py --repeat 20 --inline --busy 2   # also the report without its backlog,
                                                                  # with 2 CPU-bound processes beside

Each round runs multiinference.main twice on the same input, each into a fresh output folder:
with the report (the default) and with --no-report, in turn first (report first in odd rounds),
so that a load coming and going on a shared machine slows both runs of a round alike. A run's
images/s is its images over its whole wall time (model loading and the report's build
included, as a user waits for it). The figure is the median over rounds of report/no-report,
with its range; a 1-minute load average above the core count means other jobs shared the CPUs.
The CPU milliseconds per image (all of this process's threads) say what the report adds in work,
which other jobs on the machine change much less than the wall time.
--inline adds a third run to each round (the three in turn first): the report with its thumbnails
made in the decoding threads, as before review/backlog.py, against the same --no-report run.
--busy N runs N CPU-bound processes beside the bench (a machine shared with other jobs).
Uses NDL's replica weights from ../shared when present, else a randomly initialised model.
"""

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --root: the checkout whose multiinference is measured, chosen before anything of it is imported.
ROOT = os.path.abspath(sys.argv[sys.argv.index("--root") + 1]) if "--root" in sys.argv[:-1] else HERE
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(HERE, "bench"))

import multiinference  # noqa: E402
from bench_inference import large_scans, small_crops, spread, weights_file  # noqa: E402


def cpu_model():
    """The processor's model name as `lscpu` shows it (/proc/cpuinfo where lscpu is missing)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    from bench_inference import cpu_model as from_cpuinfo

    return from_cpuinfo()


def images_per_second(input_dir, output, weights, backend, count, report, inline=False):
    """(images/s over the wall time, CPU ms per image: this process's threads, so other jobs sharing
    the machine change it much less). inline: the report's thumbnails in the decoding threads."""
    if report:
        backlog_limit(0 if inline else None)
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # its summary line: the table says it
        code = multiinference.main(["--inputpath", input_dir, "--outputpath", output, "--weights", weights,
                                    "--backend", backend, "--quiet", *([] if report else ["--no-report"])])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert code == 0, code
    assert os.path.exists(os.path.join(output, "index.html")) == report
    return count / seconds, cpu * 1000 / count


def backlog_limit(limit, default=[]):
    """Set review.backlog.LIMIT to `limit` (0: every thumbnail in its decoding thread), or back to
    its own value (None). A checkout from before the backlog has none: only --inline needs it."""
    try:
        from tagestimate.review import backlog
    except ImportError:
        if limit is None:
            return
        sys.exit("--inline: this checkout has no tagestimate/review/backlog.py; leave --inline out")
    if not default:
        default.append(backlog.LIMIT)
    backlog.LIMIT = default[0] if limit is None else limit


def busy(count):
    """`count` CPU-bound processes, to stop with stop_busy."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_busy(processes):
    for process in processes:
        process.kill()
        process.wait()


def inputs(workdir, repeat, scans):
    """One input folder: the demo crops `repeat` times, plus `scans` 3000x2200 pages as one more item."""
    folder, count = small_crops(workdir, repeat)
    if scans:
        pages, added, _ = large_scans(workdir, scans, 4)
        os.rename(os.path.join(pages, "book"), os.path.join(folder, "scans"))
        count += added
    return folder, count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=4, help="copies of the 60 demo crops (default: 4)")
    parser.add_argument("--scans", type=int, default=0, help="3000x2200 JPEG pages added (default: 0)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds of one run each way, each way first in turn: an even number puts each first "
                             "equally often (with --inline, a multiple of 3) (default: 6)")
    parser.add_argument("--backend", default="auto", help="backend of the tagging (default: auto)")
    parser.add_argument("--root", default=HERE, help="the checkout to measure (default: this one)")
    parser.add_argument("--inline", action="store_true",
                        help="also run the report with its thumbnails in the decoding threads (no backlog)")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="CPU-bound processes running beside the bench, as other jobs on a shared machine "
                             "(default: 0)")
    args = parser.parse_args(argv)
    kinds = ["report", "no-report"] + (["inline"] if args.inline else [])
    with tempfile.TemporaryDirectory(prefix="bench-report-") as workdir:
        weights = weights_file(workdir)
        input_dir, count = inputs(workdir, args.repeat, args.scans)
        images_per_second(input_dir, os.path.join(workdir, "warm-up"), weights, args.backend, count, False)
        print(f"{count} images ({args.repeat} x 60 demo crops of 256 px, {args.scans} pages of 3000x2200); "
              f"backend {args.backend}; {cpu_model()}, {os.cpu_count()} cores; code: {os.path.dirname(os.path.dirname(sys.modules['tagestimate'].__file__))}; weights: {weights}"
              + (f"; {args.busy} CPU-bound processes beside" if args.busy else "") + "\n")
        header = f"{'round':<6} {'first':<10} {'no-report img/s':>16} {'report img/s':>13} {'report/no-report':>17} "
        if args.inline:
            header += f"{'inline img/s':>13} {'inline/no-report':>17} "
        print(header + f"{'CPU ms/img (' + ', '.join(kinds) + ')':>31} {'load (1 min)':>13}")
        ratios, rates, cpus = {"report": [], "inline": []}, {kind: [] for kind in kinds}, {kind: [] for kind in kinds}
        firsts = {kind: [] for kind in kinds}  # report/no-report of the rounds each kind ran first
        others = busy(args.busy)
        try:
            for round_ in range(args.rounds):
                turn = round_ % len(kinds)
                order = kinds[turn:] + kinds[:turn]  # each first in turn
                rate, cpu = {}, {}
                for kind in order:
                    output = os.path.join(workdir, f"out-{round_}-{kind}")
                    rate[kind], cpu[kind] = images_per_second(input_dir, output, weights, args.backend, count,
                                                              kind != "no-report", inline=kind == "inline")
                    rates[kind].append(rate[kind])
                    cpus[kind].append(cpu[kind])
                line = f"{round_ + 1:<6} {order[0]:<10} {rate['no-report']:>16.1f} "
                for kind in kinds[::2]:  # report, inline
                    ratios[kind].append(rate[kind] / rate["no-report"])
                    line += f"{rate[kind]:>{13}.1f} {ratios[kind][-1]:>17.0%} "
                firsts[order[0]].append(ratios["report"][-1])
                print(line + f"{', '.join(f'{cpu[kind]:.1f}' for kind in kinds):>31} {os.getloadavg()[0]:>13.1f}")
        finally:
            stop_busy(others)
        median, low, high = spread(ratios["report"])
        # The second run of a round tends to be the faster one; each order's median shows how much.
        by_order = "; ".join(f"{kind} first: median {spread(firsts[kind])[0]:.0%} of {len(firsts[kind])}"
                             for kind in ("report", "no-report") if firsts[kind])
        print(f"\nno-report median {spread(rates['no-report'])[0]:.1f} images/s, report median "
              f"{spread(rates['report'])[0]:.1f}; report/no-report: median {median:.0%} of {args.rounds} rounds, "
              f"range {low:.0%}-{high:.0%} (goal: at least 95%; {by_order}).")
        if args.inline:
            median, low, high = spread(ratios["inline"])
            print(f"Report with its thumbnails in the decoding threads (no backlog): median {median:.0%}, "
                  f"range {low:.0%}-{high:.0%} of --no-report.")
        print("CPU per image, median: " + ", ".join(f"{kind} {spread(cpus[kind])[0]:.1f} ms" for kind in kinds)
              + ". Load average now: " + ", ".join(f"{value:.1f}" for value in os.getloadavg())
              + f" on {os.cpu_count()} cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
