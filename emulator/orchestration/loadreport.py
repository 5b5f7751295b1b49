"""What a load run leaves: the KPI table, the latency plot (PNG and SVG) and the JSON."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from .load import IN_PROCESS
from .load import KPI_LIMIT
from .load import KPI_SHARE
from .load import PHASES
from .load import LoadResult
from .load import percentiles


def kpi_table(result: LoadResult) -> Table:
    """Per-phase percentiles, failures by reason and the TS 22.179 KPI 1 line."""
    options = result.options
    table = Table(title=f"{options.ues} UEs at {options.rate:g}/s, {result.placement}, "
                        f"capture {'on' if result.capture else 'off'}: "
                        f"{result.registered} registered in {result.seconds:.1f} s")
    for column in ("phase", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for phase in (*PHASES, "migration"):
        row = percentiles(result.samples(phase))
        table.add_row(phase, str(row["count"]),
                      *(f"{row[k]:.1f}" if k in row else "-"
                        for k in ("p50", "p90", "p99", "max")),
                      style="bold" if phase == "migration" else None)
    for reason, count in result.failures.most_common():
        table.add_row(f"failed: {reason}", str(count), "", "", "", "", style="red")
    met = result.kpi_met()
    verdict = "MET" if met else "NOT MET"
    table.caption = (f"TS 22.179 KPI 1, access time < {KPI_LIMIT * 1000:.0f} ms for "
                     f"{KPI_SHARE:.0%} of requests (project reading: the migration, security "
                     f"token to 200 REGISTER; a failure counts as late): {verdict}")
    cpu = cpu_line(result)
    if cpu:
        table.caption += "\n" + cpu
    return table


def cpu_line(result: LoadResult) -> str:
    """The CPU one migration cost, in all and by process, most first, and the rate that
    cost allows (:meth:`LoadResult.capacity`); "" if unmeasured."""
    spent = result.cpu_per_ue()
    capacity = result.capacity()
    if not spent or capacity is None:
        return ""
    if list(spent) == [IN_PROCESS]:
        where = ", all in one process (nodes and UEs)"
    else:
        where = " (" + ", ".join(f"{name} {ms:.1f}" for name, ms in spent.items()
                                 if ms >= 0.05) + ")"
    return (f"CPU per migration: {sum(spent.values()):.1f} ms{where}: at that cost "
            f"{result.cores} cores carry at most ~{capacity:.0f} migrations/s")


def write_report(result: LoadResult, run_dir: Path) -> list[Path]:
    """``load.json`` and ``latency.png``/``latency.svg`` in ``run_dir``; the files written."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = run_dir / "load.json"
    data.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return [data, *plot(result, run_dir / "latency")]


def plot(result: LoadResult, stem: Path) -> list[Path]:
    """The distribution of each phase and of the whole migration (empirical CDFs, log
    time axis), with the KPI limit marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(9, 5.5))
    for phase in (*PHASES, "migration"):
        samples = result.samples(phase)
        if not samples:
            continue
        ms = [s * 1000 for s in samples]
        share = [(i + 1) / len(ms) for i in range(len(ms))]
        axes.step(ms, share, where="post", label=phase,
                  linewidth=2.5 if phase == "migration" else 1.2)
    axes.axvline(KPI_LIMIT * 1000, color="red", linestyle="--",
                 label=f"KPI 1 limit ({KPI_LIMIT * 1000:.0f} ms)")
    axes.axhline(KPI_SHARE, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("share of UEs")
    axes.set_title(f"{result.options.ues} UEs migrating at {result.options.rate:g}/s "
                   f"({result.placement}, capture {'on' if result.capture else 'off'})")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        path = stem.with_suffix(suffix)
        figure.savefig(path)
        written.append(path)
    pyplot.close(figure)
    return written
