"""Two builds of Conveyor in one run, alternating: one read under wrk (by default the
100-task plain read; `--case "page, 100"` picks the case whose name holds that text).

    git archive <commit> src | tar -x -C /tmp/before
    python bench/tree_before_after.py /tmp/before/src [--seconds 3] [--rounds 3] [--case TEXT]

The "before" server runs the source tree given (put first on PYTHONPATH), the "after" one this
tree; both start as `conveyor serve` on the seeded data set (see tree_seed.py), with the
settings of tree_reads.py. Prints the medians of the rounds per build and client count.
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

import tree_seed
from common import server_url, with_database
from tree_queries import find_cases
from tree_reads import Load, run_wrk
from tree_servers import REQUEST_TIMEOUT_SECONDS, post, running

CLIENTS = (1, 4)
WARM_UP_REQUESTS = 50


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before_source", type=Path, help="the src directory of the other build")
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--case", help="the case whose name holds this text")
    args = parser.parse_args()
    database_url = with_database(server_url(), tree_seed.DEFAULT_DATABASE)
    cases = await find_cases(database_url)
    case = next(case for case in cases if (args.case in case.name if args.case else not case.page))
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-before-after-") as temporary:
        work_dir = Path(temporary)
        (work_dir / "before").mkdir()
        (work_dir / "after").mkdir()
        os.environ["PYTHONPATH"] = str(args.before_source)
        async with running(["conveyor"], database_url, work_dir / "before", {}) as before:
            del os.environ["PYTHONPATH"]
            async with (
                running(["conveyor"], database_url, work_dir / "after", {}) as after,
                httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as client,
            ):
                servers = {"before": before["conveyor"], "after": after["conveyor"]}
                body_path = work_dir / "body.json"
                body_path.write_bytes(case.body("conveyor"))
                for server in servers.values():
                    for _ in range(WARM_UP_REQUESTS):
                        await post(client, server, body_path.read_bytes())
                loads: dict[tuple[str, int], list[Load]] = {
                    (name, clients): [] for name in servers for clients in CLIENTS
                }
                for round_number in range(args.rounds):
                    for name, server in servers.items():
                        for clients in CLIENTS:
                            load = await run_wrk(server, body_path, clients, args.seconds)
                            loads[(name, clients)].append(load)
                            print(
                                f"round {round_number} {name:6} clients {clients}: "
                                f"p50 {load.p50_ms:.2f} ms {load.per_second:.0f}/s "
                                f"CPU {load.server_cpu_ms_per_request:.2f} ms/req",
                                file=sys.stderr,
                            )
    print(f"{case.name}, medians of {args.rounds} rounds of {args.seconds} s:\n")
    print("| build | clients | p50 ms | req/s | server CPU ms/req |")
    print("|---|---|---|---|---|")
    for (name, clients), runs in loads.items():
        p50 = statistics.median(load.p50_ms for load in runs)
        per_second = statistics.median(load.per_second for load in runs)
        cpu = statistics.median(load.server_cpu_ms_per_request for load in runs)
        print(f"| {name} | {clients} | {p50:.1f} | {per_second:.0f} | {cpu:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
