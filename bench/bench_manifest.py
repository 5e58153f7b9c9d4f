"""What viewer-ready output costs for a big book: `--format iiif` writing one item of 5,000 canvases.

    python bench/bench_manifest.py                        # 5,000 canvases, one crop each, 3 rounds
    python bench/bench_manifest.py --canvases 20000 --crops-per-canvas 2 --rounds 5

An NDL-like book (Presentation 2.1, as NDL serves it, so the copy is upgraded to 3; `--v3` for a 3.0
source) is saved as the crawl would (`{input}/{pid}.manifest.json`), with one manifest.csv row per crop
(box, pid, page). Each round writes the item with tagging's own write_item (no model: every crop has
two tags above the threshold, picture and stamp): the AnnotationPage through iiif-prezi3, then
`{item}.manifest.json`, both atomically. Reported: the median wall time of a round and its range, the
time of the page alone (render_page), CPU seconds of this process beside each (less moved by other
jobs on a shared machine than the wall time), the two files' sizes, and the peak Python memory of one
round (tracemalloc, in a round of its own: tracing slows it).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from tagestimate import formats  # noqa: E402
from tagestimate.labels import LABELS  # noqa: E402
from tagestimate.manifest import EXTENDED_FIELDS, MANIFEST_NAME  # noqa: E402
from tagestimate.model import ModelConfig  # noqa: E402
from tagestimate.records import Record, RunContext  # noqa: E402
from tagestimate.tag.inference import write_item  # noqa: E402
from bench_report import cpu_model  # noqa: E402 (lscpu's model name, /proc/cpuinfo without lscpu)

PID = "1054192"
BASE = "https://www.dl.ndl.go.jp/api/iiif"
CONFIG = ModelConfig(labels=LABELS, image_size=64, channel_order="RGB", default_threshold=0.4)


def v2_book(canvases):
    manifest = f"{BASE}/{PID}/manifest.json"
    items = []
    for page in range(1, canvases + 1):
        service = f"{BASE}/{PID}/R{page:07d}"
        items.append({"@id": f"{manifest}/canvas/{page}", "@type": "sc:Canvas", "label": f"{page}",
                      "width": 4000, "height": 6000, "images": [{
                          "@type": "oa:Annotation", "motivation": "sc:painting", "on": f"{manifest}/canvas/{page}",
                          "resource": {"@id": service + "/full/full/0/default.jpg", "@type": "dctypes:Image",
                                       "format": "image/jpeg", "width": 4000, "height": 6000,
                                       "service": {"@context": "http://iiif.io/api/image/2/context.json",
                                                   "@id": service,
                                                   "profile": "http://iiif.io/api/image/2/level1.json"}}}]})
    return {"@context": "http://iiif.io/api/presentation/2/context.json", "@id": manifest, "@type": "sc:Manifest",
            "label": "源氏物語", "viewingDirection": "right-to-left",
            "sequences": [{"@type": "sc:Sequence", "canvases": items}]}


def v3_book(canvases):
    manifest = f"{BASE}/{PID}/manifest.json"
    items = []
    for page in range(1, canvases + 1):
        canvas, service = f"{manifest}/canvas/{page}", f"{BASE}/{PID}/R{page:07d}"
        items.append({"id": canvas, "type": "Canvas", "label": {"none": [str(page)]}, "width": 4000, "height": 6000,
                      "items": [{"id": canvas + "/page", "type": "AnnotationPage", "items": [{
                          "id": canvas + "/image", "type": "Annotation", "motivation": "painting", "target": canvas,
                          "body": {"id": service + "/full/max/0/default.jpg", "type": "Image",
                                   "service": [{"id": service, "type": "ImageService2", "profile": "level1"}]}}]}]})
    return {"@context": "http://iiif.io/api/presentation/3/context.json", "id": manifest, "type": "Manifest",
            "label": {"ja": ["源氏物語"]}, "items": items}


def make_input(folder, canvases, per_canvas, v3):
    """The crawl's leftovers (rows and the saved manifest) and the records tagging would hand write_item."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{PID}.manifest.json"), "w", encoding="utf-8") as handle:
        json.dump(v3_book(canvases) if v3 else v2_book(canvases), handle)
    rows, records = [], []
    probabilities = np.array([{"picture": 0.91, "stamp": 0.62}.get(label, 0.1) for label in LABELS], np.float32)
    for page in range(1, canvases + 1):
        for n in range(per_canvas):
            key = f"{PID}_{page}_{n}"
            x, y = 5.0 + 40 * (n % 2), 5.0 + 30 * (n // 2 % 3)
            rows.append({"id": key, "folder": PID, "pid": PID, "page": str(page), "x": repr(x), "y": repr(y),
                         "w": "40.0", "h": "25.0", "title": "源氏物語",
                         "source_url": f"{BASE}/{PID}/R{page:07d}/pct:{x},{y},40.0,25.0/,256/0/default.jpg"})
            records.append(Record(key, os.path.join(folder, PID, key + ".jpg"), (256, 256), probabilities))
    import csv

    with open(os.path.join(folder, MANIFEST_NAME), "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=EXTENDED_FIELDS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return records


def one_round(input_dir, output, records):
    context = RunContext(input_dir=input_dir, weights_name="w.h5", weights_sha256="ab" * 32,
                         id_base="https://example.org/tags", created="2026-12-05T00:00:00Z")
    os.makedirs(output, exist_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    write_item(output, PID, records, CONFIG, "iiif", context=context)
    return time.perf_counter() - started, time.process_time() - cpu, context


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--canvases", type=int, default=5000)
    parser.add_argument("--crops-per-canvas", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--v3", action="store_true", help="a Presentation 3 source (copied, not upgraded)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        input_dir = os.path.join(folder, "input")
        records = make_input(input_dir, args.canvases, args.crops_per_canvas, args.v3)
        times, cpu_times, page_times, page_cpu = [], [], [], []
        for round_number in range(args.rounds):
            seconds, cpu, context = one_round(input_dir, os.path.join(folder, f"out{round_number}"), records)
            times.append(seconds)
            cpu_times.append(cpu)
            started, cpu = time.perf_counter(), time.process_time()
            formats.render_iiif(PID, records, CONFIG, context)
            page_times.append(time.perf_counter() - started)
            page_cpu.append(time.process_time() - cpu)
        out = os.path.join(folder, "out0")
        sizes = {name: os.path.getsize(os.path.join(out, name)) for name in sorted(os.listdir(out))}
        with open(os.path.join(out, f"{PID}.manifest.json"), encoding="utf-8") as handle:
            copy = json.load(handle)
        assert sum(bool(c.get("annotations")) for c in copy["items"]) == args.canvases  # every canvas tagged
        tracemalloc.start()
        one_round(input_dir, os.path.join(folder, "traced"), records)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    source = "3.0 (copied)" if args.v3 else "2.1 (upgraded to 3)"
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); load average {os.getloadavg()[0]:.2f}")
    print(f"book: {args.canvases:,} canvases, {len(records):,} crops, {2 * len(records):,} annotations; "
          f"source manifest Presentation {source}")
    print(f"write_item (page + annotated copy, atomic): median {statistics.median(times):.2f} s wall "
          f"(range {min(times):.2f}-{max(times):.2f} s over {args.rounds} rounds), "
          f"{statistics.median(cpu_times):.2f} s CPU")
    print(f"  of which the AnnotationPage alone (render_page, iiif-prezi3's models included): median "
          f"{statistics.median(page_times):.2f} s wall, {statistics.median(page_cpu):.2f} s CPU")
    print("  files: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sizes.items()))
    print(f"peak Python memory of one round (tracemalloc): {peak / 2 ** 20:.0f} MiB")


if __name__ == "__main__":
    main()
