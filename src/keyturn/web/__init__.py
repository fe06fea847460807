"""The HTTP surfaces: OAuth 2.1 endpoints, the first-party API, pages. The one place
where domain errors become HTTP responses."""
