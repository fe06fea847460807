"""What keyturn tells its operators: Prometheus metrics, counted from what the store
commits, and JSON logs with secrets redacted. See `docs/observability.md`."""
