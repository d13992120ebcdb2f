//! Logs: human-readable by default, JSON lines with `--log-format json`; to stderr, so that
//! stdout carries only what commands print for people and scripts. The level comes from
//! `CICLO_LOG` (for example `info`, `ciclo_engine=debug`), default `info`.

pub fn init(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CICLO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second call (tests starting several servers in one process) keeps the first.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
