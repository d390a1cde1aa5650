"""The media types of GraphQL over HTTP answers, chosen from a request's Accept header.

`application/graphql-response+json` (the GraphQL-over-HTTP spec's own) lets the status code
say what happened: a request that fails before execution (syntax, validation, variable
values, a limit) gets 4xx and no `data`. `application/json`, which older clients know, always
answers 200 for those, as the spec wants for it. It stays the default, so that no client that
works today sees a change: for no Accept header and for `*/*` (the spec's rule before its
2025 watershed, still allowed after it, and what the graphql-http audit expects), and for
Accept headers naming neither type (the spec's "disregard the Accept header" choice, rather
than 406).
"""

from collections.abc import Mapping

JSON = "application/json"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def _weight(media_range: str) -> tuple[str, float] | None:
    """The media range and its q-value of one Accept item, or None if its q is malformed."""
    media_type, *parameters = (part.strip().lower() for part in media_range.split(";"))
    weight = 1.0
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "q":
            try:
                weight = float(value.strip())
            except ValueError:
                return None
    return media_type, weight


def response_media_type(accept: str | None) -> str:
    """`application/graphql-response+json` when the client names it, with a weight no lower
    than application/json's (wildcards count for application/json only); else
    `application/json`."""
    weights = [weighted for item in (accept or "").split(",") if (weighted := _weight(item))]
    named = [weight for media_type, weight in weights if media_type == GRAPHQL_RESPONSE_JSON]
    if not named or max(named) <= 0:
        return JSON
    # The most specific range that matches application/json decides its weight.
    for matching in (JSON, "application/*", "*/*"):
        json_weights = [weight for media_type, weight in weights if media_type == matching]
        if json_weights:
            return GRAPHQL_RESPONSE_JSON if max(named) >= max(json_weights) else JSON
    return GRAPHQL_RESPONSE_JSON


def failed_before_execution(response: Mapping[str, object]) -> bool:
    """Whether a GraphQL response is the refusal of the request before execution began: no
    data, and no error about a field (those carry a `path`)."""
    errors = response.get("errors")
    return (
        response.get("data") is None
        and isinstance(errors, list)
        and bool(errors)
        and all(isinstance(error, dict) and "path" not in error for error in errors)
    )
