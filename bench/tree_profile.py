"""py-spy on a running server, and a markdown summary of where its CPU samples lie."""

import asyncio
import sys
from collections import Counter
from pathlib import Path

PROFILE_RATE = 250


async def py_spy_record(pid: int, seconds: int, output: Path) -> None:
    """Raw collapsed stacks of process `pid` for `seconds`, sampled PROFILE_RATE times a second."""
    py_spy = Path(sys.executable).parent / "py-spy"
    process = await asyncio.create_subprocess_exec(
        str(py_spy),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(PROFILE_RATE),
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode()}")


#: Where a profiled sample's innermost frame lies, first match wins.
AREAS = (
    # First: conveyor/graphql/... is Conveyor's, not graphql-core's.
    ("Conveyor's own code", "conveyor/"),
    ("graphql-core (execution, validation)", "graphql/"),
    ("strawberry (resolvers' wrappers, types, DataLoader)", "strawberry/"),
    ("tortoise (building queries, rows → models)", "tortoise/"),
    ("pypika (SQL text)", "pypika"),
    ("asyncpg (protocol, decoding)", "asyncpg/"),
    ("JSON encoding", "json/"),
    ("starlette / uvicorn (HTTP)", "starlette/"),
    ("starlette / uvicorn (HTTP)", "uvicorn/"),
    ("asyncio (event loop, tasks, futures)", "asyncio/"),
)


def summarize_profile(raw: Path, seconds: int, rate: int = PROFILE_RATE) -> str:
    """A markdown summary of py-spy's raw output: busy share, self time by area and function."""
    by_area: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frames[-1]
        by_area[next((area for area, marker in AREAS if marker in leaf), "other")] += count
        by_function[leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split(":")[0] + ")"] += count
        for label, marker in (
            ("graphql-core execute (with everything it calls)", "graphql/execution/"),
            ("tortoise queries (with asyncpg under them)", "tortoise/"),
            ("response JSON encoding", "json/encoder"),
            ("strawberry's view: parse, validate, encode", "strawberry/http/"),
        ):
            if any(marker in frame for frame in frames):
                inclusive[label] += count
    lines = [
        f"CPU samples: {total} in {seconds:.0f} s at {rate}/s "
        f"(the process was on CPU {100 * total / (seconds * rate):.0f}% of the time).",
        "",
        "| innermost frame in | share of CPU samples |",
        "|---|---|",
        *(f"| {area} | {100 * n / total:.0f}% |" for area, n in by_area.most_common()),
        "",
        "| samples with a frame of | share |",
        "|---|---|",
        *(f"| {label} | {100 * n / total:.0f}% |" for label, n in inclusive.most_common()),
        "",
        "| top self-time functions | share |",
        "|---|---|",
        *(f"| `{name}` | {100 * n / total:.1f}% |" for name, n in by_function.most_common(15)),
    ]
    return "\n".join(lines)
