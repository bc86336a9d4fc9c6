//! The process's stop trigger: SIGTERM (what orchestrators send) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => tracing::info!("Received Ctrl-C, shutting down."),
            _ = term.recv() => tracing::info!("Received SIGTERM, shutting down."),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
