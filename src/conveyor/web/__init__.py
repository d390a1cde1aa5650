"""The pipeline page: a browser client of the public GraphQL API, served at ``/``."""
