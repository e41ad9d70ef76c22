//! Protocol upgrades (WebSocket and friends): after both sides agreed on 101, copy bytes
//! both ways until either side closes.

use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

/// Joins the downstream and upstream upgraded connections.
pub async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut down: TokioIo<Upgraded> = TokioIo::new(down);
    let mut up: TokioIo<Upgraded> = TokioIo::new(up);
    if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
        tracing::debug!(error = %e, "upgraded tunnel closed with an error");
    }
}
