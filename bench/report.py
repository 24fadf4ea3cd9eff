"""The benchmark's results: summary statistics, results.json, results.md and
chart.png (gnuplot). `python3 bench/report.py results.json [OUTDIR]` renders
the Markdown and the chart again from a results.json; with --readme instead
of OUTDIR it prints the table of README.md's Benchmark section."""

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile

METHODS = {
    "internal": "internal `savevm`/`loadvm`, snapshots kept",
    "internal-replace": "internal, one rolling `savevm lastgood`",
    "stream": "qsnap stream",
    "stream-live": "qsnap stream, `save --live`",
    "stream-rolling": "qsnap stream, one rolling `save --replace lastgood`",
    "shared-eager": "qsnap shared RAM, eager restore",
    "shared-lazy": "qsnap shared RAM, `restore --lazy`",
}
# Chart labels: two short lines each.
SHORT = {"internal": "internal\\nkept", "internal-replace": "internal\\nrolling",
         "stream": "stream", "stream-live": "stream\\nlive",
         "stream-rolling": "stream\\nrolling", "shared-eager": "shared\\neager",
         "shared-lazy": "shared\\nlazy"}
METRICS = ("pause_s", "save_s", "restore_s", "restore_cmd_s", "disk_bytes",
           "ram_file_bytes",
           "qemu_rss_save_kib", "qemu_rss_restore_kib", "qsnap_rss_save_kib",
           "qsnap_rss_restore_kib")
BASELINES = ("internal", "internal-replace")


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ratios(base, fig):
    return {k: (base[k]["median"] / fig[k]["median"]
                if base and base.get(k) and fig.get(k) and fig[k]["median"] > 0 else None)
            for k in ("pause_s", "save_s", "restore_s")}


def build(meta, samples, errors):
    """results.json's content: the raw samples, and per workload and method
    the median, min and max of every figure plus the ratios to the baseline."""
    workloads = []
    for s in samples + errors:
        if s["workload"] not in workloads:
            workloads.append(s["workload"])
    summary = {}
    for wl in workloads:
        summary[wl] = {}
        for m in meta["methods"]:
            rows = [s for s in samples if s["workload"] == wl and s["method"] == m]
            if rows:
                summary[wl][m] = {k: stats([r.get(k) for r in rows]) for k in METRICS}
        for m, fig in summary[wl].items():
            # baseline median / method median: above 1, the method is faster.
            fig["vs"] = {b: ratios(summary[wl].get(b), fig) for b in BASELINES}
    return {"meta": meta, "methods": {m: METHODS.get(m, m) for m in meta["methods"]},
            "summary": summary, "samples": samples, "errors": errors}


# ---- Markdown -------------------------------------------------------------

def fmt_s(st):
    if not st:
        return "-"
    med, lo, hi = st["median"], st["min"], st["max"]
    digits = 3 if hi < 0.1 else 2
    if st["n"] == 1:
        return f"{med:.{digits}f} s"
    return f"{med:.{digits}f} s ({lo:.{digits}f}-{hi:.{digits}f})"


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def fmt_disk(st):
    """The disk a save took; a range where the repetitions differ (a rolling
    internal snapshot reuses the space of the one it replaces)."""
    if not st:
        return "-"
    if st["max"] - st["min"] <= 0.05 * max(st["max"], 1):
        return fmt_bytes(st["median"])
    return f"{fmt_bytes(st['median'])} ({fmt_bytes(st['min'])}-{fmt_bytes(st['max'])})"


def fmt_kib(st):
    return fmt_bytes(st["median"] * 1024) if st else "-"


def fmt_ratio(r, better, worse):
    """r = baseline / method: above 1 the method is better."""
    if r is None:
        return "-"
    if 1 / 1.1 < r < 1.1:
        return f"{r:.2f}x (same)"
    if r >= 1:
        return f"**{r:.1f}x {better}**"
    return f"{1 / r:.1f}x {worse}"


def workload_title(wl):
    memory, fill = wl.split("-", 1)
    what = {"random": "half of RAM seeded random data in tmpfs",
            "zero": "freshly booted, RAM mostly zero (4 MiB of data)"}[fill]
    return f"{memory[:-1]} {memory[-1]}iB guest, {what}"


def machine_line(meta):
    qemu = meta["qemu"].replace("QEMU emulator version ", "QEMU ")
    return (f"{meta['date']}, {meta['host_cpu']} host with {meta['host_cores']} cores and "
            f"{meta['host_memory_gib']} GiB ({meta['os']}, Linux {meta['host_kernel']}), "
            f"accel {meta['accel']} (no KVM), {qemu}, qsnap {meta['qsnap_commit']}")


def qsnap_methods(methods):
    return [(m, fig) for m, fig in methods.items() if m not in BASELINES]


def headline(results):
    lines = []
    for wl, methods in results["summary"].items():
        for m, fig in qsnap_methods(methods):
            for b, r in fig["vs"].items():
                lines.append(f"{wl} {m} vs {b}: guest paused "
                             f"{fmt_ratio(r['pause_s'], 'shorter', 'longer').strip('*')}, "
                             f"restore {fmt_ratio(r['restore_s'], 'faster', 'slower').strip('*')}")
    return "\n".join(lines)


def markdown(results):
    meta, summary = results["meta"], results["summary"]
    reps = ", ".join(f"{n} ({m})" for m, n in zip(meta["memory"], meta["reps"]))
    out = [
        "# qsnap benchmark: qsnap against QEMU's internal snapshots",
        "",
        f"Measured {machine_line(meta)}. Guest: {meta['guest']}. "
        f"Repetitions per method: {reps}; every cell is the median (min-max). "
        f"The whole run took {meta['duration_s'] // 60} min {meta['duration_s'] % 60} s; "
        f"load average {meta['load_before']:.1f} before, {meta['load_after']:.1f} after "
        f"(the benchmark's own VMs count in the latter). Made by `make bench` (bench/run).",
        "",
        "## Against internal snapshots",
        "",
        "The internal median divided by the method's median, both from the same run. "
        "*kept*: every internal snapshot is kept, so each savevm follows a loadvm of a "
        "snapshot that stays (qcow2 then copies the vmstate clusters the two share); "
        "*rolling*: one snapshot name that each savevm replaces.",
        "",
        "| workload | method | paused by save, vs kept | vs rolling "
        "| restore to running, vs kept | vs rolling |",
        "|---|---|---|---|---|---|",
    ]
    for wl, methods in summary.items():
        for m, fig in qsnap_methods(methods):
            vs = [fig["vs"][b] for b in BASELINES]
            out.append(f"| {wl} | {results['methods'][m]} | "
                       + " | ".join(fmt_ratio(r["pause_s"], "shorter", "longer") for r in vs)
                       + " | "
                       + " | ".join(fmt_ratio(r["restore_s"], "faster", "slower") for r in vs)
                       + " |")
    for wl, methods in summary.items():
        ram_file = any(fig.get("ram_file_bytes") for fig in methods.values())
        out += ["", f"## {workload_title(wl)}", "",
                "| method | guest paused by save | save until durable | restore to running "
                "| snapshot on disk | QEMU peak RSS: save / restore "
                + ("| guest RAM file " if ram_file else "")
                + "| qsnap peak RSS: save / restore |",
                "|---|---|---|---|---|---|" + ("---|" if ram_file else "") + "---|"]
        for m, fig in methods.items():
            qs = "-" if not fig["qsnap_rss_save_kib"] else \
                f"{fmt_kib(fig['qsnap_rss_save_kib'])} / {fmt_kib(fig['qsnap_rss_restore_kib'])}"
            rf = fig.get("ram_file_bytes")
            out.append(f"| {results['methods'][m]} | {fmt_s(fig['pause_s'])} | "
                       f"{fmt_s(fig['save_s'])} | {fmt_s(fig['restore_s'])} | "
                       f"{fmt_disk(fig['disk_bytes'])} | "
                       f"{fmt_kib(fig['qemu_rss_save_kib'])} / {fmt_kib(fig['qemu_rss_restore_kib'])} "
                       + (f"| {fmt_bytes(rf['median']) if rf else '-'} " if ram_file else "")
                       + f"| {qs} |")
    if results.get("milestones"):
        out += ["", milestones_section(results["milestones"], meta["qemu"])]
    if results["errors"]:
        out += ["", "## Failures", ""]
        out += [f"- {e['workload']} {e['method']} (repetition {e['rep']}): {e['error']}"
                for e in results["errors"]]
    out += ["", "## How the figures are taken", "",
            "- **guest paused by save**: from QEMU's own `STOP` and `RESUME` events, read on a "
            "second QMP monitor that every VM has (the same extra `-qmp` argument for all "
            "methods): the stopped time while the save ran.",
            "- **save until durable**: wall time of `qsnap save`, which returns once the "
            "snapshot is fsynced and committed; internal: from submitting "
            "the `snapshot-save` job until QEMU reports it concluded, or until QEMU answers "
            "HMP `savevm`. All end with the snapshot written and flushed (qcow2 flushes when "
            "it writes the snapshot table). The internal snapshots are driven over the same "
            "second monitor, because QEMU answers only when the save is done, later than "
            "`qsnap qmp` waits.",
            "- **restore to running**: from the restore command (`qsnap restore`, the "
            "`snapshot-load` job, HMP `loadvm`) until the guest answers a command on its "
            "serial console.",
            "- **snapshot on disk**: disk blocks the save allocated in the VM's `layers/` and "
            "`snapshots/` (internal: growth of the qcow2 image). A rolling internal snapshot "
            "grows the image once; later saves reuse the space of the snapshot they replace.",
            "- **Why kept internal snapshots save so slowly**: after `loadvm`, the image's "
            "active state shares the loaded snapshot's vmstate clusters, so the next `savevm` "
            "copies every one of them on write, ordering qcow2's metadata updates with "
            "`fdatasync`: traced here, 14,381 `fdatasync` calls for one 600 MB savevm instead "
            "of 30 (24.6 s instead of 4.8 s).",
            "- **QEMU peak RSS**: VmHWM of the QEMU process, reset before the save and read "
            "after it; for the restore, the VmHWM of the QEMU that runs afterwards, read as "
            "soon as the guest answers. In shared-RAM mode the guest's RAM is a file (in "
            "/dev/shm by default) whose pages count in QEMU's RSS only once QEMU touches them, "
            "so the *guest RAM file* column shows its size. **qsnap peak RSS**: ru_maxrss of "
            "the qsnap command; a shared-RAM save maps the RAM file to copy it, which counts "
            "there.",
            "- After every restore the guest's `md5sum` of its data must match the host-side "
            "md5, a file written after the save must be gone and one written before it "
            "present; the guest idles during saves and restores. Each save and restore starts after a host "
            "`sync`, and nothing is dropped from the page cache: a restore right after a "
            "save finds there what that save left (qsnap's snapshot files, like `savevm`'s "
            "vmstate, are written through the page cache).",
            ""]
    return "\n".join(out)


def readme_table(results):
    """The compact table of README.md's Benchmark section."""
    out = ["| workload | method | guest paused by save | save until durable "
           "| restore to running | snapshot on disk |",
           "|---|---|---|---|---|---|"]
    for wl, methods in results["summary"].items():
        for m, fig in methods.items():
            out.append(f"| {wl} | {results['methods'][m]} | {fmt_s(fig['pause_s'])} | "
                       f"{fmt_s(fig['save_s'])} | {fmt_s(fig['restore_s'])} | "
                       f"{fmt_disk(fig['disk_bytes'])} |")
    return "\n".join(out)


# ---- milestones (bench/milestones) ---------------------------------------

def _mib(n):
    return "-" if n is None else f"{n / (1 << 20):.1f} MiB"


def _target_value(v, unit):
    if v is None:
        return "-"
    if unit == "bytes":
        return _mib(v)
    if unit == "s":
        return f"{v:.3f} s" if v < 0.1 else f"{v:.2f} s"
    return f"{v:g} {unit}"


def _phases(samples, top=4):
    """Median seconds of each save phase over the samples, the largest first."""
    per = {}
    for s in samples:
        for ph in s.get("phases") or []:
            per.setdefault(ph["name"], []).append(ph["s"])
    meds = sorted(((statistics.median(v), k) for k, v in per.items()), reverse=True)
    return ", ".join(f"{k} {v:.2f} s" for v, k in meds[:top]) or "-"


def milestones_targets_text(ms):
    lines = []
    for t in ms["targets"]:
        ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "-"
        lines.append(f"{'PASS' if t['pass'] else 'MISS'}  {t['target']}: "
                     f"{_target_value(t['measured'], t['unit'])} against "
                     f"{_target_value(t['limit'], t['unit'])} (ratio {ratio})"
                     + (f"; {t['note']}" if t["note"] else ""))
    return "\n".join(lines)


def milestones_section(ms, qemu):
    qemu = qemu.replace("QEMU emulator version ", "QEMU ")
    fs = lambda v: "-" if v is None else (f"{v:.3f} s" if v < 0.1 else f"{v:.2f} s")  # noqa: E731
    out = [
        "## Milestones (differential snapshots)",
        "",
        f"{qemu}. A {ms['memory'][:-1]} {ms['memory'][-1]}iB shared-RAM guest (`qsnap init "
        f"--ram-mode shared`) with {ms['data_mib']} MiB of the seeded random data in its "
        f"tmpfs is saved as `base` (a shared-RAM save) and restored `--lazy`; then "
        f"{ms['rounds']} rounds of: the guest writes {ms['write_mib']} MiB (half into a new "
        f"file in its tmpfs, half over part of the existing file with `dd conv=notrunc`, both "
        f"from the data disk with O_DIRECT), `qsnap save --diff m<i>`. Every "
        f"{'' if ms['full_every'] == 1 else str(ms['full_every']) + 'nd '}round (and the last) "
        f"the same VM is also saved in full (a plain `qsnap save`, which after a lazy restore "
        f"carries all of RAM in the stream; deleted after), and a second VM with anonymous RAM "
        f"that got the same data and writes saves one rolling internal snapshot (HMP `savevm "
        f"lastgood`), the three in rotating order. Then `restore --lazy` of the last "
        f"milestone, the middle one and `base` ({ms['restore_reps']}x), and `loadvm` of the "
        f"rolling snapshot, each checked against the md5 of the guest's data at that save "
        f"(the first `restore --lazy base`, before the rounds, only by a file: reading "
        f"all the data in the guest writes its kernel's page metadata, 64 bytes per 4 KiB "
        f"page, which `m1` would carry). "
        f"Pauses from QEMU's STOP/RESUME events; *until durable* is the save command's wall "
        f"time. The workload took {ms['duration_s'] // 60} min {ms['duration_s'] % 60} s; "
        f"load average {ms['load_before']:.1f} before, {ms['load_after']:.1f} after.",
        "",
        "| target | measured | limit | measured / limit | result |",
        "|---|---|---|---|---|",
    ]
    for t in ms["targets"]:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}"
        out.append(f"| {t['target']}" + (f" ({t['note']})" if t["note"] else "")
                   + f" | {_target_value(t['measured'], t['unit'])} "
                   f"| {_target_value(t['limit'], t['unit'])} | {ratio} "
                   f"| **{'PASS' if t['pass'] else 'MISS'}** |")
    out += ["", "| save | written since the previous save | snapshot's own size (qsnap list) "
            "| excess over written | guest paused | until durable | where the time went "
            "(largest phases) |",
            "|---|---|---|---|---|---|---|"]
    rows = ([("`base` (shared-RAM save)", ms["base"])] if ms.get("base") else []) + \
        [(f"`{s['snapshot']}` (`--diff`)", s) for s in ms["milestones"]] + \
        [(f"full save, round {s['round']}", s) for s in ms["full"]] + \
        [(f"rolling `savevm lastgood`, round {s['round']}", s) for s in ms["internal"]]
    for label, s in rows:
        w = s.get("written_bytes")
        size = s.get("size_bytes")
        out.append(f"| {label} | {_mib(w)} | {_mib(size)} "
                   f"| {_mib(size - w) if w is not None and size is not None else '-'} "
                   f"| {fs(s['pause_s'])} | {fs(s['save_s'])} | {_phases([s], 3)} |")
    out += ["", "| restore | to running | restore command | exact |", "|---|---|---|---|"]
    for r in ms["restores"]:
        how = "`loadvm lastgood`" if r["kind"] == "loadvm" else f"`restore --lazy {r['snapshot']}`"
        exact = {True: "yes", False: "NO", None: "not checked (before the rounds)"}[r["exact"]]
        out.append(f"| {how} | {fs(r['restore_s'])} | {fs(r['restore_cmd_s'])} | {exact} |")
    out += ["", f"Where a save's time goes (median seconds per phase, qsnap save --json): "
            f"milestones: {_phases(ms['milestones'], 6)}; full saves: {_phases(ms['full'], 6)}."]
    if ms["errors"]:
        out += ["", "Failures: " + "; ".join(ms["errors"])]
    return "\n".join(out) + "\n"


def milestones_document(meta, ms):
    return ("# qsnap benchmark: milestones (differential snapshots)\n\n"
            f"Measured {machine_line(meta)}. Made by `bench/milestones` (also run by "
            "`make bench` as bench/run's `milestones` method).\n\n"
            + milestones_section(ms, meta["qemu"]))


# ---- chart ----------------------------------------------------------------

def chart(results, png, scratch):
    """Pause and restore time side by side per method, one panel per
    workload, log scale, medians with min-max bars."""
    summary = results["summary"]
    wls = [wl for wl in summary if summary[wl]]     # a workload where all failed has none
    if not wls:
        return
    cols = 2 if len(wls) > 1 else 1
    rows = (len(wls) + cols - 1) // cols
    gp = [f"set terminal pngcairo size {760 * cols},{440 * rows} font 'sans,10'",
          f"set output '{png}'",
          f"set multiplot layout {rows},{cols} title "
          f"'qsnap vs internal snapshots: {results['meta']['accel']}, "
          f"{results['meta']['qemu'].split('(')[0].replace('QEMU emulator version', 'QEMU')}"
          f"- median, bars min..max' font ',12'",
          "set style data histogram",
          "set style histogram errorbars gap 1 lw 1",
          "set style fill solid 0.85 border -1",
          "set boxwidth 0.9",
          "set logscale y",
          "set ylabel 'seconds (log scale)'",
          "set grid ytics",
          "set key top left",
          "set xtics nomirror",
          "set bmargin 4",
          ]
    for i, wl in enumerate(wls):
        lines = []
        for m, fig in summary[wl].items():
            p, r = fig["pause_s"], fig["restore_s"]
            lines.append(f"\"{SHORT.get(m, m)}\" {p['median']:.4f} {p['min']:.4f} {p['max']:.4f} "
                         f"{r['median']:.4f} {r['min']:.4f} {r['max']:.4f}")
        top = max(max(f["pause_s"]["max"], f["restore_s"]["max"]) for f in summary[wl].values())
        low = min(min(f["pause_s"]["min"], f["restore_s"]["min"]) for f in summary[wl].values())
        bottom = 10 ** math.floor(math.log10(max(low, 1e-4)) - 0.3)
        gp += [f"$d{i} << EOD", *lines, "EOD",
               f"set title '{workload_title(wl)}'",
               # headroom above the bars for the key and the value labels
               f"set yrange [{bottom:g}:{top * 8:.3f}]",
               f"plot $d{i} using 2:3:4:xtic(1) title 'guest paused by save' lc rgb '#c0392b', "
               f"'' using 5:6:7 title 'restore to running' lc rgb '#2471a3', "
               # the median's value above each bar and its max whisker
               f"'' using ($0-0.17):($4*1.2):(sprintf($2 < 0.1 ? '%.3f' : '%.2f', $2)) "
               f"with labels notitle font ',8', "
               f"'' using ($0+0.17):($7*1.2):(sprintf($5 < 0.1 ? '%.3f' : '%.2f', $5)) "
               f"with labels notitle font ',8'"]
    gp.append("unset multiplot")
    script = os.path.join(scratch, "chart.gp")
    with open(script, "w") as f:
        f.write("\n".join(gp) + "\n")
    subprocess.run(["gnuplot", script], check=True)


def write_all(results, out, scratch):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results))
    chart(results, os.path.join(out, "chart.png"), scratch)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: report.py results.json [OUTDIR | --readme]")
    with open(sys.argv[1]) as f:
        res = json.load(f)
    if sys.argv[2:] == ["--readme"]:
        print(readme_table(res))
        sys.exit(0)
    outdir = sys.argv[2] if len(sys.argv) == 3 else os.path.dirname(os.path.abspath(sys.argv[1]))
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_all(res, outdir, tmp)
