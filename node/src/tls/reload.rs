//! Reloads the key and trust stores when their files change, as ZooKeeper's `FileChangeWatcher` does. A poll
//! of their modification times is enough (certificates are renewed in days, not seconds) and works on every
//! filesystem. New files that do not make a configuration are logged and the old configuration kept.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::Tls;

/// How often the files' modification times are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// Watches the stores until stopped.
pub async fn watch_files(tls: Arc<Tls>, mut stop: watch::Receiver<bool>) {
    let mut seen = stamps(&tls);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        let now = stamps(&tls);
        if now == seen {
            continue;
        }
        seen = now;
        match super::context::server_config(tls.settings()) {
            Ok(config) => {
                tls.replace(config);
                tracing::info!("client TLS key or trust store changed: reloaded");
            }
            Err(error) => tracing::warn!(%error, "client TLS files changed but cannot be used; keeping the old ones"),
        }
    }
}

/// The stores' modification times (and sizes, for filesystems with coarse times); `None` for a missing file.
fn stamps(tls: &Tls) -> Vec<Option<(SystemTime, u64)>> {
    let settings = tls.settings();
    std::iter::once(&settings.key_store)
        .chain(settings.trust_store.as_ref())
        .map(|store| std::fs::metadata(&store.path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}
