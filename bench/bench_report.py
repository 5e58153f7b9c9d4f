"""What the review report costs a tagging run: the default run against --no-report, side by side.

    python bench/bench_report.py                    # the 60 demo crops x4 (240 images), 6 rounds
    python bench/bench_report.py --repeat 10 --scans 40 --rounds 8 --backend tensorflow
    python bench/bench_report.py --root ../main          # another checkout's code (e.g. before a change)

Each round runs multiinference.main twice on the same input, each into a fresh output folder:
with the report (the default) and with --no-report, in turn first (report first in odd rounds),
so that a load coming and going on a shared machine slows both runs of a round alike. A run's
images/s is its images over its whole wall time (model loading and the report's build
included, as a user waits for it). The figure is the median over rounds of report/no-report,
with its range; a 1-minute load average above the core count means other jobs shared the CPUs.
The CPU milliseconds per image (all of this process's threads) say what the report adds in work,
which other jobs on the machine change much less than the wall time.
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


def images_per_second(input_dir, output, weights, backend, count, report):
    """(images/s over the wall time, CPU ms per image: this process's threads, so other jobs sharing
    the machine change it much less)."""
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):  # its summary line: the table says it
        code = multiinference.main(["--inputpath", input_dir, "--outputpath", output, "--weights", weights,
                                    "--backend", backend, "--quiet", *([] if report else ["--no-report"])])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert code == 0, code
    assert os.path.exists(os.path.join(output, "index.html")) == report
    return count / seconds, cpu * 1000 / count


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
                        help="rounds of one run each way, each way first in every other round: an even number puts "
                             "each first equally often (default: 6)")
    parser.add_argument("--backend", default="auto", help="backend of the tagging (default: auto)")
    parser.add_argument("--root", default=HERE, help="the checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-report-") as workdir:
        weights = weights_file(workdir)
        input_dir, count = inputs(workdir, args.repeat, args.scans)
        images_per_second(input_dir, os.path.join(workdir, "warm-up"), weights, args.backend, count, False)
        print(f"{count} images ({args.repeat} x 60 demo crops of 256 px, {args.scans} pages of 3000x2200); "
              f"backend {args.backend}; {cpu_model()}, {os.cpu_count()} cores; code: {os.path.dirname(os.path.dirname(sys.modules['tagestimate'].__file__))}; weights: {weights}\n")
        print(f"{'round':<6} {'first':<10} {'no-report img/s':>16} {'report img/s':>13} {'report/no-report':>17} "
              f"{'CPU ms/img (no-report, report)':>31} {'load (1 min)':>13}")
        ratios, rates, cpus = [], {True: [], False: []}, {True: [], False: []}
        for round_ in range(args.rounds):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            rate, cpu = {}, {}
            for report in order:
                output = os.path.join(workdir, f"out-{round_}-{'report' if report else 'plain'}")
                rate[report], cpu[report] = images_per_second(input_dir, output, weights, args.backend, count, report)
                rates[report].append(rate[report])
                cpus[report].append(cpu[report])
            ratios.append(rate[True] / rate[False])
            print(f"{round_ + 1:<6} {'report' if order[0] else 'no-report':<10} {rate[False]:>16.1f} "
                  f"{rate[True]:>13.1f} {ratios[-1]:>17.0%} {f'{cpu[False]:.1f}, {cpu[True]:.1f}':>31} "
                  f"{os.getloadavg()[0]:>13.1f}")
        median, low, high = spread(ratios)
        # The second run of a round tends to be the faster one; each order's median shows how much.
        firsts = {order: [r for n, r in enumerate(ratios) if (n % 2 == 0) == order] for order in (True, False)}
        by_order = "; ".join(f"{'report' if order else 'no-report'} first: median {spread(values)[0]:.0%} of {len(values)}"
                             for order, values in firsts.items() if values)
        print(f"\nno-report median {spread(rates[False])[0]:.1f} images/s, report median {spread(rates[True])[0]:.1f}; "
              f"report/no-report: median {median:.0%} of {args.rounds} rounds, range {low:.0%}-{high:.0%} "
              f"(goal: at least 95%; {by_order}). CPU per image, median: no-report {spread(cpus[False])[0]:.1f} ms, report "
              f"{spread(cpus[True])[0]:.1f} ms. Load average now: "
              + ", ".join(f"{value:.1f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
