"""Where a profiled crawl spends its time, per component of the project (for crawl_overhead.py).

A component's time is the cumulative time of its functions as called from outside its module
(Scrapy calling a pipeline's ``process_item``, a signal reaching an extension), so it includes
the libraries the component calls (csv, confluent-kafka, itemadapter). cProfile sees the reactor
thread only: librdkafka's threads and the report extension's HTTP threads are not in
these figures (the ablation in crawl_overhead.py measures them).
"""

from __future__ import annotations

import pstats
from pathlib import Path

COMPONENTS = {
    "crawler/middlewares/useragent.py": "User-Agent rotation",
    "crawler/middlewares/proxy.py": "proxy pool (no proxies: off)",
    "crawler/pipelines/validation.py": "validation pipeline",
    "crawler/pipelines/csv.py": "CSV pipeline",
    "crawler/pipelines/kafka.py": "Kafka pipeline (reactor thread)",
    "crawler/extensions/report.py": "report extension (reactor thread)",
    "crawler/pipelines/coverage.py": "field coverage",
    "crawler/spiders/books.py": "the spider's parsing (both sides)",
}


def _component(filename: str) -> str | None:
    return next((suffix for suffix in COMPONENTS if filename.endswith(suffix)), None)


def component_times(profile: Path) -> tuple[float, dict[str, float]]:
    """(total profiled seconds, seconds per component file)."""
    stats = pstats.Stats(str(profile))
    raw = stats.stats  # type: ignore[attr-defined]
    # Wall-clock profile: leave out the time the reactor sat waiting in epoll/select.
    total = sum(
        entry[2]
        for (filename, _line, name), entry in raw.items()
        if not (filename == "~" and ("epoll" in name or "select.select" in name))
    )
    times = dict.fromkeys(COMPONENTS, 0.0)
    for (filename, _line, name), (_cc, _nc, _tt, _ct, callers) in raw.items():
        component = _component(filename)
        if component is None or name == "<module>":
            continue  # imports happen before the spider opens, outside the measured span
        for (caller_file, _l, _n), caller_entry in callers.items():
            if _component(caller_file) != component:
                times[component] += caller_entry[3]
    return total, times


def component_table(profile: Path) -> str:
    total, times = component_times(profile)
    lines = [
        f"profiled full-stack crawl (reactor thread, waits excluded): {total:.2f} s",
        f"{'component':<40} {'time':>9} {'share':>7}",
    ]
    for suffix, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        lines.append(f"{COMPONENTS[suffix]:<40} {seconds:7.3f} s {100 * seconds / total:5.1f} %")
    return "\n".join(lines)
