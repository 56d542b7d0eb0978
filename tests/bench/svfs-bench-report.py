#!/usr/bin/python3
"""svfs-bench's report: results.csv -> results.md (tables) and one PNG per workload.

Usage: svfs-bench-report.py RESULTS_CSV OUT_DIR

Each plot shows, per configuration (daemon and cache mode, one bar per number of VMs), the
workload's guest time and, beside it, the requests the first VM's daemon served per file;
coherence.png the share of coherence and status checks that were stale. Without
matplotlib (Debian: python3-matplotlib) only the Markdown is written.
"""
import csv
import os
import sys
from collections import OrderedDict

WORKLOADS = ["untar", "walk", "stat-cold", "stat-warm", "status", "churn", "build"]


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def configs_of(rows):
    """(daemon, mode) pairs and VM counts in the order they ran."""
    configs = OrderedDict()
    vms = []
    for r in rows:
        configs.setdefault((r["daemon"], r["mode"]), None)
        if int(r["vms"]) not in vms:
            vms.append(int(r["vms"]))
    return list(configs), sorted(vms)


def cell(rows, daemon, mode, vms, workload, key):
    for r in rows:
        if (r["daemon"], r["mode"], int(r["vms"]), r["workload"]) == (daemon, mode, vms, workload):
            return r[key]
    return None


def markdown(rows):
    configs, vm_counts = configs_of(rows)
    present = [w for w in WORKLOADS if any(r["workload"] == w for r in rows)]
    lines = []

    def table(title, note, value):
        lines.append(f"### {title}\n")
        if note:
            lines.append(note + "\n")
        lines.append("| daemon | cache | VMs | " + " | ".join(present) + " |")
        lines.append("|---|---|---:|" + "---:|" * len(present))
        for daemon, mode in configs:
            for n in vm_counts:
                values = [value(daemon, mode, n, w) for w in present]
                if all(v is None for v in values):
                    continue
                shown = ["–" if v in (None, "") else v for v in values]
                lines.append(f"| {daemon} | {mode} | {n} | " + " | ".join(shown) + " |")
        lines.append("")

    table("Guest time (s)", "Seconds in the first VM (lower is better).",
          lambda d, m, n, w: cell(rows, d, m, n, w, "secs"))
    table("Requests per file",
          "Requests the first VM's daemon served, per file the workload touched "
          "(– for virtio-9p: QEMU serves it and counts nothing).",
          lambda d, m, n, w: cell(rows, d, m, n, w, "requests_per_file"))

    lines.append("### Coherence (stale of checks)\n")
    lines.append("`coherence`: the two-VM steps (create, unlink, renames, mkdir, rmdir, chmod, chown, "
                 "truncate, writes, utimens, setxattr, link, symlink) made by another VM and by the host; "
                 "`status`: files changed elsewhere that the first VM did not see.\n")
    lines.append("| daemon | cache | VMs | coherence | status |")
    lines.append("|---|---|---:|---:|---:|")
    for daemon, mode in configs:
        for n in vm_counts:
            shown = []
            for w in ("coherence", "status"):
                s, c = cell(rows, daemon, mode, n, w, "stale"), cell(rows, daemon, mode, n, w, "checks")
                shown.append("–" if s in (None, "") else f"{s} of {c}")
            if shown != ["–", "–"]:
                lines.append(f"| {daemon} | {mode} | {n} | " + " | ".join(shown) + " |")
    lines.append("")
    return "\n".join(lines)


def plots(rows, out_dir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("svfs-bench-report: no matplotlib (apt-get install python3-matplotlib): "
              "tables only", file=sys.stderr)
        return []
    configs, vm_counts = configs_of(rows)
    made = []
    for w in WORKLOADS:
        if not any(r["workload"] == w for r in rows):
            continue
        fig, (ax_time, ax_req) = plt.subplots(1, 2, figsize=(12, 4.5))
        width = 0.8 / len(vm_counts)
        labels = [f"{d}\n{m}" for d, m in configs]
        for k, n in enumerate(vm_counts):
            xs = [i + (k - (len(vm_counts) - 1) / 2) * width for i in range(len(configs))]
            for ax, key in ((ax_time, "secs"), (ax_req, "requests_per_file")):
                ys = []
                for d, m in configs:
                    v = cell(rows, d, m, n, w, key)
                    ys.append(float(v) if v not in (None, "") else 0.0)
                ax.bar(xs, ys, width, label=f"{n} VM{'s' if n > 1 else ''}")
        for ax, title in ((ax_time, "guest time (s)"), (ax_req, "requests per file")):
            ax.set_xticks(range(len(configs)))
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_title(f"{w}: {title}")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        if any(d == "9p" for d, _ in configs):
            ax_req.text(0.01, 0.97, "virtio-9p: not counted", transform=ax_req.transAxes,
                        fontsize=7, va="top", alpha=0.7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{w}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    # Coherence: the share of checks each configuration got wrong.
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / len(vm_counts)
    for k, n in enumerate(vm_counts):
        xs = [i + (k - (len(vm_counts) - 1) / 2) * width for i in range(len(configs))]
        ys = []
        for d, m in configs:
            stale = checks = 0
            for w in ("coherence", "status"):
                s, c = cell(rows, d, m, n, w, "stale"), cell(rows, d, m, n, w, "checks")
                if s not in (None, "") and c not in (None, ""):
                    stale, checks = stale + int(s), checks + int(c)
            ys.append(100.0 * stale / checks if checks else 0.0)
        ax.bar(xs, ys, width, label=f"{n} VM{'s' if n > 1 else ''}")
    ax.set_xticks(range(len(configs)))
    ax.set_xticklabels([f"{d}\n{m}" for d, m in configs], fontsize=8)
    ax.set_ylabel("% of checks")
    ax.set_title("stale: coherence steps and status checks a guest got wrong")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, "coherence.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    made.append(path)
    return made


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    rows = load(argv[1])
    if not rows:
        print(f"svfs-bench-report: {argv[1]}: no results", file=sys.stderr)
        return 1
    md = markdown(rows)
    made = plots(rows, argv[2])
    if made:
        md += "\nPlots: " + ", ".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in made) + "\n"
    with open(os.path.join(argv[2], "results.md"), "w") as f:
        f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
