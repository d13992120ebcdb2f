//! `ciclo fake-erp`: runs the fake ERP of `ciclo_connectors::fake_erp` for tests and demos, so
//! the ERP connector can be tried end to end without a real ERP.

use std::time::Duration;

use anyhow::Context as _;

/// Flags of `ciclo fake-erp`.
#[derive(clap::Args, Debug)]
pub struct FakeErpArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port and prints it).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Fail the next N order calls with 503 (the connector retries them).
    #[arg(long, default_value_t = 0)]
    pub fail_next: u32,
    /// Wait this many milliseconds before answering each order call.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Refuse orders of this customer code with 422 CUSTOMER_BLOCKED (repeatable).
    #[arg(long = "blocked-customer")]
    pub blocked_customers: Vec<String>,
}

pub fn run(args: FakeErpArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let erp = ciclo_connectors::FakeErp::new(ciclo_connectors::FakeErpOptions {
            fail_next: args.fail_next,
            delay: Duration::from_millis(args.delay_ms),
            blocked_customers: args.blocked_customers.into_iter().collect(),
        });
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        // Read by people and by tests: keep its shape.
        println!("listening on http://{}", listener.local_addr()?);
        erp.serve(listener).await.context("the fake ERP failed")
    })
}
