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
