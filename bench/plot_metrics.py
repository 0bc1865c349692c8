"""Renders docs/grafana/flint-dashboard.png: the dashboard's main panels plotted from
real metrics of an embedded limiter (a stand-in for a Grafana screenshot).

An embedded ``flint.Limiter`` (``sync=batch``) on a manual clock serves 30 simulated
minutes of traffic: 50 clients at about 2 requests/s each against the template
``ip:*`` (10/s per client), one client flooding at 150 requests/s from minute 8 to
minute 16, and logged-in users against ``user:*``; a compaction runs at minute 20.
Every 15 simulated seconds ``flint.prometheus.metrics_text()`` is scraped, and the
plot shows what the dashboard's queries compute from those scrapes: checks per second
by outcome, denials per second by template, the log and snapshot sizes, and the keys
holding state. The decisions, sizes and keys are the engine's own; only the clock is
simulated, so that half an hour takes seconds (which is also why the fsync panel is
left out: syncs run on the real clock, not the simulated one).

    .venv/bin/python bench/plot_metrics.py [output.png]
"""

from __future__ import annotations

import random
import re
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import flint
from flint.prometheus import metrics_text

MINUTES = 30
SCRAPE_EVERY = 15  # simulated seconds
SERIES = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def parse(text: str) -> dict[str, float]:
    """``name{labels}`` → value, for every sample of a metrics text."""
    samples = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if m:
            samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return samples


def simulate(data_dir: Path) -> list[tuple[float, dict[str, float]]]:
    rng = random.Random(11)
    clock = flint.ManualClock(start=1_700_000_000.0)
    scrapes = []
    with flint.Limiter(data_dir=data_dir, sync="batch", clock=clock) as limiter:
        limiter.limit("ip:*", rate=10, per="1s")
        limiter.limit("user:*", rate=100, per="1m")
        clients = [f"ip:10.0.0.{i}" for i in range(50)]
        users = [f"user:{i}" for i in range(20)]
        for second in range(MINUTES * 60):
            minute = second / 60
            keys = [c for c in clients for _ in range(rng.choice((1, 2, 3)))]
            keys += [u for u in users if rng.random() < 0.7 + 0.9 * (10 <= minute < 14)]
            keys += [u for u in users[:3] for _ in range(2)] if 10 <= minute < 14 else []
            if 8 <= minute < 16:
                keys += ["ip:203.0.113.7"] * 150
            rng.shuffle(keys)
            step = 1.0 / max(len(keys), 1)
            for key in keys:
                limiter.check(key)
                clock.advance(step)
            if second == 20 * 60:
                limiter.compact()
            if second % SCRAPE_EVERY == 0:
                scrapes.append((minute, parse(metrics_text(limiter))))
    return scrapes


def rate(scrapes: list[tuple[float, dict[str, float]]], name: str) -> list[float]:
    """Per-second rate of a counter between consecutive scrapes."""
    return [
        (b.get(name, 0.0) - a.get(name, 0.0)) / SCRAPE_EVERY
        for (_, a), (_, b) in zip(scrapes, scrapes[1:])
    ]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/grafana/flint-dashboard.png")
    with tempfile.TemporaryDirectory() as tmp:
        scrapes = simulate(Path(tmp) / ".flint")
    minutes = [m for m, _ in scrapes[1:]]
    fig, axes = plt.subplots(2, 2, figsize=(13, 7.5), sharex=True)
    fig.suptitle("Flint: an embedded limiter's metrics, scraped every 15 s (30 simulated minutes)")

    checks = axes[0][0]
    for outcome, color in (("allowed", "tab:green"), ("denied", "tab:red")):
        values = rate(scrapes, f'flint_checks_total{{outcome="{outcome}"}}')
        checks.plot(minutes, values, label=outcome, color=color)
    checks.set_title("Checks per second by outcome — rate(flint_checks_total[…])")
    checks.set_ylabel("checks/s")
    checks.legend()

    templates = axes[0][1]
    for template in ("ip:*", "user:*"):
        name = f'flint_template_checks_total{{template="{template}",outcome="denied"}}'
        templates.plot(minutes, rate(scrapes, name), label=template)
    templates.set_title(
        'Denials per second by template — flint_template_checks_total{outcome="denied"}'
    )
    templates.set_ylabel("denials/s")
    templates.legend(title="template")

    sizes = axes[1][0]
    for name, label in (("flint_log_bytes", "log"), ("flint_snapshot_bytes", "snapshot")):
        sizes.plot(minutes, [s[name] / 1e6 for _, s in scrapes[1:]], label=label)
    sizes.set_title("Log and snapshot size — flint_log_bytes, flint_snapshot_bytes")
    sizes.set_ylabel("MB")
    sizes.set_xlabel("minute")
    sizes.legend()

    keys = axes[1][1]
    for name, label in (
        ("flint_keys", "entries (flint_keys)"),
        ("flint_template_keys", "keys made from templates"),
    ):
        keys.plot(minutes, [s[name] for _, s in scrapes[1:]], label=label)
    keys.set_title("Keys holding state — flint_keys, flint_template_keys")
    keys.set_ylabel("keys")
    keys.set_xlabel("minute")
    keys.legend()

    for ax in (checks, templates, sizes, keys):
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
