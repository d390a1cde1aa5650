"""Checking a 1,000-task plan: statement rules, Conveyor's own checks and squawk, in-process.

The statements are the migration history of tests/integration/migration_history (12 files of 2 to
12 statements), cycled to the plan's size. Printed: the time of each step for the whole plan, best
of --repeat runs, and the ratios that matter:
- the statement rules createIssue applies to every task (split, classify, refuse), by the
  hand-written lexer Conveyor had (tests/unit/old_lexer.py) beside PostgreSQL's parser (pglast);
- Conveyor's own checks (parse + rules) per plan;
- squawk run once per task beside one run for the whole plan (a file per task).
"""

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.unit import old_lexer  # noqa: E402

from conveyor.domain.checks import check_statement, default_review_policy  # noqa: E402
from conveyor.domain.statements import refusal_of  # noqa: E402
from conveyor.domain.statuses import TaskType  # noqa: E402
from conveyor.runner.squawk import lint_many_sync, lint_sync  # noqa: E402

HISTORY = sorted((ROOT / "tests" / "integration" / "migration_history").glob("*.sql"))


def best_of(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--squawk-alone", type=int, default=100, help="tasks linted one run each (scaled up)"
    )
    args = parser.parse_args()
    texts = [path.read_text() for path in HISTORY]
    plan = [texts[index % len(texts)] for index in range(args.tasks)]
    policy = default_review_policy(protected=True)

    def old_rules() -> None:
        for statement in plan:
            _ = old_lexer.parse_script(statement).refusal

    def new_rules() -> None:
        for statement in plan:
            refusal_of(statement)

    def own_checks() -> None:
        for statement in plan:
            check_statement(statement, TaskType.SCHEMA_UPDATE, policy)

    def squawk_once() -> None:
        lint_many_sync(plan)

    def squawk_each() -> None:
        for statement in plan[: args.squawk_alone]:
            lint_sync(statement)

    def whole_check() -> None:
        linted = lint_many_sync(plan)
        for statement, findings in zip(plan, linted, strict=True):
            check_statement(statement, TaskType.SCHEMA_UPDATE, policy, findings)

    old = best_of(args.repeat, old_rules)
    new = best_of(args.repeat, new_rules)
    own = best_of(args.repeat, own_checks)
    once = best_of(args.repeat, squawk_once)
    each = best_of(1, squawk_each) * args.tasks / args.squawk_alone
    whole = best_of(args.repeat, whole_check)
    statements = sum(len(old_lexer.parse_script(statement).statements) for statement in plan)

    print(f"{args.tasks:,} tasks, {statements:,} statements; best of {args.repeat}\n")
    print("| step, whole plan | ms | per task (µs) | ratio |")
    print("|---|---|---|---|")
    rows = [
        ("statement rules, old hand-written lexer", old, ""),
        (
            "statement rules, pglast (createIssue, updateTaskStatement)",
            new,
            f"{new / old:.2f}x old",
        ),
        ("Conveyor's own checks (parse + rules)", own, ""),
        (f"squawk, one run per task (from {args.squawk_alone})", each, ""),
        ("squawk, one run for the plan", once, f"{each / once:.0f}x faster than per task"),
        ("whole check: squawk once + own checks + policy", whole, ""),
    ]
    for label, seconds, ratio in rows:
        print(f"| {label} | {seconds * 1000:.1f} | {seconds / args.tasks * 1e6:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
