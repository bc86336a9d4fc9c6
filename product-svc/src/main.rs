use clap::Parser;
use product_svc::{App, Config};

// mimalloc: glibc malloc's arena locks and consolidation cost a fifth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    shared::telemetry::init("info,async_nats=warn");
    let config = Config::parse();
    shared::lifecycle::runtime(config.worker_threads)?.block_on(async {
        let app = App::build(config).await?;
        app.run_until_stopped(shared::shutdown::signal()).await
    })
}
