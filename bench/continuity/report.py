"""Figures from the plays: the table, the JSON, the plot and the generated doc section."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.continuity.population import Kind, Strategy
from bench.continuity.simulation import PlayResult, TheftResult

BEGIN = "<!-- continuity:begin -->"
END = "<!-- continuity:end -->"
NOT_MODELLED = "not modelled yet"


@dataclass(frozen=True, slots=True)
class PolicyRun:
    name: str
    family: str
    """`keyturn` (the real engine) or `model` (a peer's documented policy)."""
    systems: str
    summary: str
    sources: tuple[str, ...]
    dpop: str
    """How a thief holding the victim's DPoP key differs: `not modelled yet` (keyturn
    today) or `no key binding` (the modelled policy binds no key)."""
    result: PlayResult


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _thefts(thefts: Sequence[TheftResult]) -> dict[str, Any]:
    detected = [t.detected_after for t in thefts if t.detected_after is not None]
    undetected = [t for t in thefts if t.detected_after is None]
    return {
        "thefts": len(thefts),
        "undetected_share": len(undetected) / len(thefts) if thefts else None,
        "thief_in_at_end_share": (
            sum(t.thief_in_at_end for t in thefts) / len(thefts) if thefts else None
        ),
        "tokens_to_thief_mean": (
            statistics.fmean(t.tokens_to_thief for t in thefts) if thefts else None
        ),
        "tokens_to_thief_max": max((t.tokens_to_thief for t in thefts), default=None),
        "detection_seconds_median": statistics.median(detected) if detected else None,
        "detection_seconds_p95": _percentile(detected, 0.95),
    }


def summarise(run: PolicyRun, days: float) -> dict[str, Any]:
    r = run.result
    legit = sum(r.devices.values())
    device_days = legit * days
    per_kind = {
        kind: {
            "devices": r.devices[kind],
            "logouts": r.logouts[kind],
            "per_10k_device_days": (
                r.logouts[kind] / (r.devices[kind] * days) * 10_000 if r.devices[kind] else None
            ),
        }
        for kind in r.devices
    }
    by_strategy = {
        s.value: _thefts([t for t in r.thefts if t.strategy == s.value]) for s in Strategy
    }
    by_key = {
        key: _thefts([t for t in r.thefts if t.with_key is (key == "with_key")])
        for key in ("without_key", "with_key")
    }
    return {
        "policy": run.name,
        "family": run.family,
        "systems": run.systems,
        "summary": run.summary,
        "sources": list(run.sources),
        "dpop": run.dpop,
        "legit_device_days": device_days,
        "legit_logouts": sum(r.logouts.values()),
        "logouts_per_10k_device_days": sum(r.logouts.values()) / device_days * 10_000,
        "logouts_by_population": per_kind,
        "thieves": _thefts(r.thefts),
        "thieves_by_strategy": by_strategy,
        "thieves_by_key": by_key,
        "victim_logouts": r.victim_logouts,
        "refreshes": r.refreshes,
        "logins": r.logins,
        "wall_seconds": round(r.wall_seconds, 2),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def main_rows(summaries: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = [
        "policy",
        "engine",
        "logouts /10k dd",
        *[f"{k.value}" for k in Kind],
        "thief undetected",
        "tokens to thief (mean)",
        "detection median",
        "detection p95",
        "thief still in at end",
    ]
    rows = []
    for s in summaries:
        t = s["thieves"]
        rows.append(
            [
                s["policy"],
                "keyturn" if s["family"] == "keyturn" else "model",
                _rate(s["logouts_per_10k_device_days"]),
                *[_rate(s["logouts_by_population"][k.value]["per_10k_device_days"]) for k in Kind],
                _share(t["undetected_share"]),
                f"{t['tokens_to_thief_mean']:.1f}",
                _duration(t["detection_seconds_median"]),
                _duration(t["detection_seconds_p95"]),
                _share(t["thief_in_at_end_share"]),
            ]
        )
    return header, rows


def strategy_rows(summaries: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = [
        "policy",
        *[f"{s.value}: undetected / median / most tokens" for s in Strategy],
        "with victim's key",
    ]
    rows = []
    for s in summaries:
        cells = []
        for strategy in Strategy:
            t = s["thieves_by_strategy"][strategy.value]
            most = "—" if t["tokens_to_thief_max"] is None else str(t["tokens_to_thief_max"])
            cells.append(
                f"{_share(t['undetected_share'])} / {_duration(t['detection_seconds_median'])}"
                f" / {most}"
            )
        with_key = s["thieves_by_key"]["with_key"]
        key_cell = (
            f"{_share(with_key['undetected_share'])} undetected"
            if s["dpop"] == "dpop"
            else s["dpop"]
        )
        rows.append([s["policy"], *cells, key_cell])
    return header, rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def plot(summaries: Sequence[dict[str, Any]], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    ax.set_xscale("log")
    ax.set_xlabel("legitimate logouts per 10,000 device-days (log; 0 drawn at 0.5)")
    ax.set_ylabel("thefts never detected within the run (%)")
    ax.set_ylim(-5, 105)
    ax.set_xlim(0.3, 3e5)
    ax.grid(True, which="both", alpha=0.3)
    points = []
    for s in summaries:
        x = max(s["logouts_per_10k_device_days"], 0.5)
        y = 100 * (s["thieves"]["undetected_share"] or 0.0)
        keyturn = s["family"] == "keyturn"
        ax.scatter(
            [x],
            [y],
            s=70,
            marker="o" if keyturn else "s",
            color="#1f6feb" if keyturn else "#9a6700",
            zorder=3,
        )
        points.append((x, y, ("keyturn " if keyturn else "") + s["policy"]))
    _label(fig, ax, points)
    ax.set_title("Refresh-token rotation policies: logouts against undetected thieves", fontsize=11)
    fig.text(0.5, 0.01, subtitle, ha="center", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _label(fig: Any, ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    """Each point's label beside it, moved up or down (or to the left) until it overlaps
    no label placed before: points of equal figures land on one spot."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken: list[Any] = []
    offsets = [(dx, dy) for dy in (3, -12, 16, -25, 29, -38, 42) for dx in (6, None)]
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        for dx, dy in offsets:
            right = dx is not None
            note = ax.annotate(
                text,
                (x, y),
                textcoords="offset pixels",
                xytext=(dx if right else -6, dy),
                ha="left" if right else "right",
                fontsize=8,
                zorder=4,
            )
            box = note.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
            note.remove()


def doc_section(
    summaries: Sequence[dict[str, Any]], meta: dict[str, Any], image: str, json_name: str
) -> str:
    main = markdown_table(*main_rows(summaries))
    by_strategy = markdown_table(*strategy_rows(summaries))
    sources = "\n".join(
        f"- `{s['policy']}` ({s['systems']}): {s['summary']}. "
        + ", ".join(f"<{u}>" for u in s["sources"])
        for s in summaries
        if s["family"] == "model"
    )
    presets = "\n".join(
        f"- `{s['policy']}`: {s['summary']}." for s in summaries if s["family"] == "keyturn"
    )
    return f"""{BEGIN}
<!-- Generated by `python -m bench.continuity`; edit the generator, not this section. -->

### Simulation results ({meta["date"]})

`python -m bench.continuity --store {meta["store"]} --days {meta["days"]:g} \
--devices {meta["devices_requested"]} --seed {meta["seed"]}`: {meta["legit_devices"]:,} \
legitimate devices over {meta["days"]:g} simulated days ({meta["legit_device_days"]:,.0f} \
device-days) and {meta["thefts"]} thefts, the same event stream played against every \
policy. keyturn rows ran the real engine on {meta["store_label"]} at commit \
`{meta["commit"]}`; the other rows are models of each peer's documented policy.
Raw figures: `bench/results/{json_name}`.

![Legitimate logouts against undetected thefts per policy]({image})

Legitimate logouts per 10,000 device-days (overall and per population) and thieves:

{main}

Thefts never detected, the median time from theft to detection, and the most refreshes
answered to one thief before detection (or by the end of the run), per strategy:

{by_strategy}

How to read it: a logout is a refused refresh of the device's current session while
the device did only what its client does (a lost answer retried, tabs or processes
refreshing on their own, an old copy presented); the user must sign in again. A theft
is detected when the stolen session is ended by reuse detection; time to detection
runs from the copy. *tokens to thief* counts the refreshes answered to the thief before
detection, each with an access token.

Populations: `browser-kit` 1–5 tabs coordinated by the kit; `browser-tabs` 1–5 tabs
refreshing their own copies within 2 s of each other; `mobile` 4–12 short uses a day,
1–5 % of answers lost and retried after 0 s – 30 min (at the next launch when the app
is suspended by then); `agent` 2–4 processes sharing a token store, 2–10 % of answers
timed out and retried 30–90 s later; `cli` invocations sharing a token file and, on
20–60 % of days, a long-running process presenting its copy 1–6 h after taking it.
Thieves copy a victim's token once (victims: mobile and browser-kit devices) and use it
at once, 1 s – 1 h after the victim's next refresh, 2–8 h later, or in lockstep (the
predecessor, 0.5–3 s after every rotation of the victim's). Half of the thieves also
hold the victim's DPoP key; no policy above binds refresh tokens to a key, so that half
plays as the other (keyturn's rows: {NOT_MODELLED}).

keyturn presets (`bench/continuity/keyturn_policies.py`):

{presets}

Peer policies modelled (`bench/continuity/peer_models.py`), with their sources:

{sources}
{END}"""


def write_doc(path: Path, section: str) -> None:
    """Replace the text between the markers, or create the file around them."""
    if path.exists():
        text = path.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + section + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n" + section + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Refresh-token rotation policies\n\n"
        "A rotated-out refresh token presented again is either a legitimate client that never "
        "received its successor (a lost response, a suspended app, a retrying tool, a second "
        "process with an older copy) or a thief. This document describes how keyturn tells "
        "them apart and what each policy costs; the section below is generated by "
        "`python -m bench.continuity` from a simulation against keyturn's real engine and "
        "models of the peers' documented policies.\n\n" + section + "\n"
    )
