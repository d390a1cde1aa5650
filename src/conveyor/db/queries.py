"""Named SQL, kept in `sql/*.sql` as procrastinate keeps its queries: `-- name: x` starts the
query x; the comment lines under it say what it does and what its parameters are."""

from importlib.resources import files


def load_queries(file_name: str) -> dict[str, str]:
    """The queries of `sql/<file_name>`, by name."""
    text = (files("conveyor.db") / "sql" / file_name).read_text()
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: "]:
        if line.startswith("-- name:"):
            if name is not None:
                queries[name] = "\n".join(lines).strip().rstrip(";")
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name is not None and not line.startswith("--"):
            lines.append(line)
    return queries


#: The runner's hot path (sql/runner.sql).
RUNNER = load_queries("runner.sql")

#: In a statement's RETURNING list: its transaction commits without waiting for its WAL to
#: reach the disk. Only for writes that hold a lease and nothing else: one that a crash of the
#: server loses is taken again once it would have expired anyway, which is what a lease is
#: for. Never for a write with an event: a subscriber could see a number the log then loses.
#: In RETURNING, so that only a statement that wrote a row sets it.
ASYNCHRONOUS_COMMIT = "set_config('synchronous_commit', 'off', true)"
