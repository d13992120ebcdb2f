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
/// refused), else the one the folder holds (`redb` when only its redb folder exists), else
/// `sled`.
pub fn store_kind(data: &Path, asked: Option<&str>) -> anyhow::Result<String> {
    match asked {
        Some(kind @ ("sled" | "redb")) => Ok(kind.to_string()),
        Some(kind) => anyhow::bail!("unknown store `{kind}`: use `sled` or `redb`"),
        None if data.join("store-redb").exists() && !data.join("store").exists() => {
            Ok("redb".into())
        }
        None => Ok("sled".into()),
    }
}
