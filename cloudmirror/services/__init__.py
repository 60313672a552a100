"""What the REST API and the CLI both call: mirrors, access (keys, audit), failures, jobs,
RPO and reports, status, and the running service (runtime). Functions raise only
`cloudmirror.errors` types for bad requests (never KeyError), so each caller maps them once."""
