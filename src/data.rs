//! Opening a data folder's store directly, for the server and for the commands that work on a
//! data folder (`ciclo token create --data DIR`): they refuse clearly when a server holds it.

use std::path::Path;
use std::sync::Arc;

use ciclo_engine::store::{Store, StoreError};

/// Opens the durable store of a data folder (`sled`: `<data>/store`, `redb`:
/// `<data>/store-redb`).
pub fn open_store(data: &Path, kind: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store: Result<Arc<dyn Store>, StoreError> = match kind {
        "redb" => ciclo_engine::store::redb::RedbStore::open(
            ciclo_engine::store::redb::RedbOptions::new(data.join("store-redb")),
        )
        .map(|s| Arc::new(s) as Arc<dyn Store>),
        _ => ciclo_engine::store::sled::SledStore::open(
            ciclo_engine::store::sled::SledOptions::new(data.join("store")),
        )
        .map(|s| Arc::new(s) as Arc<dyn Store>),
    };
    store.map_err(|e| match e {
        StoreError::Locked(_) => anyhow::anyhow!(
            "the data folder {} is in use by another ciclo process (a running server?); stop it first, or talk to the server with --server",
            data.display()
        ),
        other => anyhow::anyhow!("cannot open the store in {}: {other}", data.display()),
    })
}

/// The store to open on a data folder: the one asked for (`sled` or `redb`, anything else
/// refused), else the one the folder holds, else `sled` for a new folder. Asking for the store
/// the folder does not hold is refused, as is asking for none of a folder that holds both:
/// either would open an empty store beside the folder's own, whose instances would seem lost.
pub fn store_kind(data: &Path, asked: Option<&str>) -> anyhow::Result<String> {
    let sled = data.join("store").exists();
    let redb = data.join("store-redb").exists();
    let held = |kind: &str| if kind == "sled" { sled } else { redb };
    match asked {
        Some(kind @ ("sled" | "redb")) => {
            let other = if kind == "sled" { "redb" } else { "sled" };
            if !held(kind) && held(other) {
                anyhow::bail!(
                    "the data folder {} holds a {other} store, not a {kind} one: use --store {other} (or give another --data folder for a new {kind} store)",
                    data.display()
                );
            }
            Ok(kind.to_string())
        }
        Some(kind) => anyhow::bail!("unknown store `{kind}`: use `sled` or `redb`"),
        None if sled && redb => anyhow::bail!(
            "the data folder {} holds both a sled store (store/) and a redb store (store-redb/): say which with --store sled or --store redb",
            data.display()
        ),
        None if redb => Ok("redb".into()),
        None => Ok("sled".into()),
    }
}
