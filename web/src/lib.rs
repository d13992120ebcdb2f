//! HTTP API, task inbox, cockpit, auth and metrics (issues 3 and 5; not built yet).
