//! Key-value operations: put, get, range-100 and txn-cas.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::runner::{Ctx, Done};
use super::RANGE_KEYS;

fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// One Put of key `index mod keys`.
pub(super) async fn put(c: &mut Client, ctx: &Ctx, index: u64) -> Result<Done, String> {
    let key = ctx.keys.key(index);
    c.put(key.clone(), ctx.value.clone(), None)
        .await
        .map_err(|e| format!("put {}: {e}", shown(&key)))?;
    Ok(Done::now())
}

/// One Range of a single random key, which must exist.
pub(super) async fn get(
    c: &mut Client,
    ctx: &Ctx,
    rng: &mut fastrand::Rng,
) -> Result<Done, String> {
    let key = ctx.keys.key(rng.u64(0..ctx.keys.count));
    let resp = c
        .get(key.clone(), None)
        .await
        .map_err(|e| format!("get {}: {e}", shown(&key)))?;
    let done = Done::now();
    if resp.kvs().is_empty() {
        return Err(format!("get {}: the key is missing", shown(&key)));
    }
    Ok(done)
}

/// One Range over `RANGE_KEYS` consecutive keys from a random start; all
/// must be there.
pub(super) async fn range(
    c: &mut Client,
    ctx: &Ctx,
    rng: &mut fastrand::Rng,
) -> Result<Done, String> {
    assert!(ctx.keys.count >= RANGE_KEYS, "validated: enough keys");
    let first = rng.u64(0..=ctx.keys.count - RANGE_KEYS);
    let start = ctx.keys.key(first);
    // The smallest key after the last one wanted. (Not the key of
    // `first + RANGE_KEYS`, which may not exist and can be one digit longer.)
    let mut end = ctx.keys.key(first + RANGE_KEYS - 1);
    end.push(0);
    let resp = c
        .get(start.clone(), Some(GetOptions::new().with_range(end)))
        .await
        .map_err(|e| format!("range from {}: {e}", shown(&start)))?;
    let done = Done::now();
    if resp.kvs().len() as u64 != RANGE_KEYS {
        return Err(format!(
            "range from {}: {} keys instead of {RANGE_KEYS}",
            shown(&start),
            resp.kvs().len()
        ));
    }
    Ok(done)
}

/// A Kubernetes-style optimistic update of a random key: read it, then put
/// it only if nobody changed it since (`mod_revision` unchanged), otherwise
/// read it again, as a client would before retrying. The failed compare is
/// a conflict, which is the workload's point, not an error.
pub(super) async fn txn_cas(
    c: &mut Client,
    ctx: &Ctx,
    rng: &mut fastrand::Rng,
) -> Result<Done, String> {
    let key = ctx.keys.key(rng.u64(0..ctx.keys.count));
    let read = c
        .get(key.clone(), None)
        .await
        .map_err(|e| format!("get {}: {e}", shown(&key)))?;
    let seen = read
        .kvs()
        .first()
        .ok_or_else(|| format!("get {}: the key is missing", shown(&key)))?
        .mod_revision();
    let txn = Txn::new()
        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, seen)])
        .and_then([TxnOp::put(key.clone(), ctx.value.clone(), None)])
        .or_else([TxnOp::get(key.clone(), None)]);
    let resp = c
        .txn(txn)
        .await
        .map_err(|e| format!("txn on {}: {e}", shown(&key)))?;
    Ok(Done {
        conflict: !resp.succeeded(),
        ..Done::now()
    })
}
