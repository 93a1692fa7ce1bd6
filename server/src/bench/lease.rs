//! lease-churn: the life of a short-lived lease, as a lock or a session
//! holder goes through it.

use etcd_client::{Client, PutOptions};

use super::runner::{Ctx, Done};

/// TTL of the churned leases. Long enough that none expires during its
/// operation; a lease whose revoke failed still goes away by itself.
const LEASE_TTL_S: i64 = 60;

/// LeaseGrant, Put of key `index mod keys` attached to the lease,
/// LeaseRevoke (which deletes the key).
pub(super) async fn churn(c: &mut Client, ctx: &Ctx, index: u64) -> Result<Done, String> {
    let id = c
        .lease_grant(LEASE_TTL_S, None)
        .await
        .map_err(|e| format!("lease grant: {e}"))?
        .id();
    c.put(
        ctx.keys.key(index),
        ctx.value.clone(),
        Some(PutOptions::new().with_lease(id)),
    )
    .await
    .map_err(|e| format!("put with lease {id:x}: {e}"))?;
    c.lease_revoke(id)
        .await
        .map_err(|e| format!("lease revoke {id:x}: {e}"))?;
    Ok(Done::now())
}
