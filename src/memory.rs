//! Hands the memory freed after a burst of connections back to the system.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::reach::proxy::POOL_IDLE;

/// How long after a listener's last connection closed the freed memory is handed back, so that
/// connections opened one after another cause one release, not one each.
pub(crate) const RELEASE_DELAY: Duration = Duration::from_secs(1);
/// When it is handed back again: by then the proxy's pool has closed the upstream connections
/// the burst left idle.
pub(crate) const RELEASE_AGAIN: Duration = POOL_IDLE.saturating_mul(2);

/// Asks the allocator to return the free pages it keeps, [`RELEASE_DELAY`] from now and again
/// [`RELEASE_AGAIN`] later. glibc's allocator keeps memory freed in the middle of its heap for
/// reuse; without this, a sidecar that once served 64 connections through the proxy keeps about
/// 11 MiB it no longer uses. musl has no such call (its allocator unmaps wholly freed groups
/// itself), so there this does nothing.
pub(crate) fn release_soon() {
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async {
        tokio::time::sleep(RELEASE_DELAY).await;
        PENDING.store(false, Ordering::SeqCst);
        trim();
        tokio::time::sleep(RELEASE_AGAIN).await;
        trim();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own free lists, under the
    // allocator's locks; it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
