//! `rescan` and `forget`: the person's levers on tokens and PINs.

use std::sync::atomic::Ordering;

use smime_agent_proto::{ForgetResult, RescanResult};
use tracing::info;

use super::OpContext;

/// Looks for tokens now. Modules that cannot report new tokens to a running process
/// (no slot events, like SoftHSM) are re-initialized first, once no operation runs on them.
pub async fn rescan(ctx: &OpContext<'_>) -> RescanResult {
    let mut result = RescanResult::default();
    for (i, m) in ctx.services.modules.modules.iter().enumerate() {
        if !m.is_loaded() {
            result.skipped.push(format!(
                "{}: {}",
                m.path().display(),
                m.error.as_deref().unwrap_or("not loaded")
            ));
            continue;
        }
        let reinit = !m.slot_events.load(Ordering::Relaxed);
        match crate::presence::rescan_module(&ctx.services.presence, i, reinit).await {
            Ok((inserted, removed)) => {
                result.inserted.extend(inserted);
                result.removed.extend(removed);
            }
            Err(e) => result.skipped.push(format!("{}: {e}", m.path().display())),
        }
    }
    if ctx.services.modules.soft.is_some() {
        let (inserted, removed) = crate::presence::rescan_soft(&ctx.services.presence).await;
        result.inserted.extend(inserted);
        result.removed.extend(removed);
    }
    info!(client = %ctx.peer, inserted = result.inserted.len(), removed = result.removed.len(), "rescan");
    result
}

/// Wipes every cached PIN and logs every token out.
pub async fn forget(ctx: &OpContext<'_>) -> ForgetResult {
    let mut tokens = vec![];
    for entry in &ctx.services.store.snapshot().tokens {
        // The PIN goes now; the logout follows as soon as no operation uses the token.
        entry.token.forget_pin();
        tokio::spawn(entry.token.clone().logout());
        tokens.push(entry.token.token_ref().clone());
    }
    info!(client = %ctx.peer, tokens = tokens.len(), "every cached PIN forgotten");
    ForgetResult { tokens }
}
