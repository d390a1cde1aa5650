"""Conveyor: a GraphQL API server that runs database change pipelines."""
