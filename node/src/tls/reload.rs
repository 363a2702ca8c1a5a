//! Reloads the key and trust stores when their files change, as ZooKeeper's `FileChangeWatcher` does. A poll
//! of their modification times is enough (certificates are renewed in days, not seconds) and works on every
//! filesystem. New files that do not make a configuration are logged and the old configuration kept.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{Tls, TlsError, TlsSettings};

/// How often the files' modification times are looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// A TLS configuration read from key and trust store files: the client port's ([`Tls`]) or the quorum's
/// ([`super::quorum::QuorumTls`]).
pub trait Reloadable: Send + Sync {
    /// What it is, for the log (`client TLS`, `quorum TLS`).
    fn what(&self) -> &'static str;
    /// The settings naming its files.
    fn settings(&self) -> &TlsSettings;
    /// Reads the files again and, if they make a configuration, serves it from now on.
    fn reload(&self) -> Result<(), TlsError>;
}

impl Reloadable for Tls {
    fn what(&self) -> &'static str {
        "client TLS"
    }

    fn settings(&self) -> &TlsSettings {
        Tls::settings(self)
    }

    fn reload(&self) -> Result<(), TlsError> {
        self.replace(super::context::server_config(Tls::settings(self))?);
        Ok(())
    }
}

/// Watches the stores until stopped.
pub async fn watch_files(tls: Arc<dyn Reloadable>, mut stop: watch::Receiver<bool>) {
    let what = tls.what();
    let mut seen = stamps(&*tls);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
        let now = stamps(&*tls);
        if now == seen {
            continue;
        }
        seen = now;
        match tls.reload() {
            Ok(()) => tracing::info!("{what} key or trust store changed: reloaded"),
            Err(error) => tracing::warn!(%error, "{what} files changed but cannot be used; keeping the old ones"),
        }
    }
}

/// The stores' modification times (and sizes, for filesystems with coarse times); `None` for a missing file.
fn stamps(tls: &dyn Reloadable) -> Vec<Option<(SystemTime, u64)>> {
    let settings = tls.settings();
    std::iter::once(&settings.key_store)
        .chain(settings.trust_store.as_ref())
        .map(|store| std::fs::metadata(&store.path).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}
