"""The comparison's two figures: throughput against concurrency, and latency
percentiles per concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {
    "keyturn": "#1f77b4",
    "django-oauth-toolkit": "#2ca02c",
    "simplejwt": "#ff7f0e",
    "oidc-provider": "#d62728",
}
STYLES = {"sqlite": "-", "postgres": "--", "memory": ":"}
MARKERS = {1: "o", 2: "s"}


def throughput(rows: list[dict[str, Any]], caption: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for label in labels:
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["concurrency"])
        first = mine[0]
        ax.plot(
            [r["concurrency"] for r in mine],
            [r["rotations_per_second"] for r in mine],
            STYLES.get(first["store"], "-"),
            marker=MARKERS.get(first["workers"], "o"),
            color=COLOURS.get(first["system"], "grey"),
            label=label,
        )
    levels = sorted({r["concurrency"] for r in rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("concurrent refresh-token chains (HTTP connections)")
    ax.set_ylabel("rotations per second (checked answers; log scale)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_title("Refresh-token rotations per second over HTTP", fontsize=11)
    fig.text(0.01, 0.01, caption, fontsize=6.5, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def latency(rows: list[dict[str, Any]], caption: str, path: Path) -> None:
    levels = sorted({r["concurrency"] for r in rows})
    labels = list(dict.fromkeys(r["label"] for r in rows))
    fig, axes = plt.subplots(len(levels), 1, figsize=(9, 2.6 * len(levels) + 1.2), dpi=110)
    if len(levels) == 1:
        axes = [axes]
    for ax, level in zip(axes, levels, strict=True):
        at = {r["label"]: r for r in rows if r["concurrency"] == level}
        ys = range(len(labels))
        for name, key, colour in (
            ("p50", "p50_ms", "#4c72b0"),
            ("p90", "p90_ms", "#dd8452"),
            ("p99", "p99_ms", "#c44e52"),
        ):
            ax.scatter(
                [at[label][key] if label in at else float("nan") for label in labels],
                list(ys),
                label=name,
                color=colour,
                s=18,
                zorder=3,
            )
        ax.set_yticks(list(ys), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_title(f"concurrency {level}", fontsize=9)
        ax.set_xlabel("latency per rotation, ms (log scale)", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.text(0.01, 0.005, caption, fontsize=6.5, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path)
    plt.close(fig)
