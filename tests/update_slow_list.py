"""Rewrite ``tests/slow_tests.txt`` from ``pytest --durations=0`` logs.

    pytest -q --durations=0 -p no:cacheprovider > whole.log                   # the whole suite, 2 cores
    pytest -q -m "not slow" --durations=0 -p no:cacheprovider > fast.log      # the fast loop
    python tests/update_slow_list.py whole.log fast.log [--budget 240]

A test's time is its setup + call + teardown, the longest over the logs given: in the fast loop a
test pays for session fixtures and compilations that slow tests paid for in the whole suite, so
give both. The slowest tests are listed until the rest add up to ``--budget`` seconds, and every
test over ``--over`` seconds is listed whatever the budget; ``conftest.py`` marks the listed tests
``slow``, so ``pytest -m "not slow"`` is the fast loop.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

LINE = re.compile(r"^\s*([0-9.]+)s (setup|call|teardown)\s+(\S.*)$")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", help="outputs of pytest --durations=0 (the whole suite, the fast loop)")
    p.add_argument("--budget", type=float, default=240.0, help="seconds the fast loop's tests may take")
    p.add_argument("--over", type=float, default=20.0, help="tests over this many seconds are always slow")
    a = p.parse_args(argv)
    times: dict[str, float] = collections.defaultdict(float)
    for log in a.logs:
        one: dict[str, float] = collections.defaultdict(float)
        for line in Path(log).read_text().splitlines():
            m = LINE.match(line)
            if m:
                one[m.group(3).strip()] += float(m.group(1))
        for node, t in one.items():
            times[node] = max(times[node], t)
    order = sorted(times.items(), key=lambda kv: -kv[1])
    rest, slow = sum(times.values()), []
    for node, t in order:
        if t <= a.over and rest <= a.budget:
            break
        slow.append((node, t))
        rest -= t
    out = Path(__file__).with_name("slow_tests.txt")
    lines = [f"# {len(slow)} tests marked slow by conftest.py: measured setup + call + teardown seconds on 2 cores",
             f"# (python tests/update_slow_list.py LOG [LOG ...]); the others add up to {rest:.0f} s"]
    lines += [f"{node}  # {t:.1f}" for node, t in sorted(slow)]
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(slow)} slow tests listed in {out}; the fast loop's tests add up to {rest:.0f} s")


if __name__ == "__main__":
    main()
