//! The whole catalog as one blob, for Raft snapshots: a replica that fell too far behind
//! the log installs it instead of replaying every change. Every table is copied as is;
//! the format is postcard of `(table, key, value)` rows with u64 keys and values as
//! big-endian bytes (docs/format.md).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::records::*;
use crate::{Catalog, CatalogError, Result};

const SNAPSHOT_FORMAT: u8 = 1;

type Row = (u8, Vec<u8>, Vec<u8>);

const STR_BYTES: [(u8, TableDefinition<&str, &[u8]>); 4] =
    [(1, BUCKETS), (2, UPLOADS), (3, ACCESS_KEYS), (10, CLUSTER)];
const BYTES_BYTES: [(u8, TableDefinition<&[u8], &[u8]>); 3] =
    [(4, VERSIONS), (5, CHUNKS), (6, PARTS)];
const BYTES_U64: (u8, TableDefinition<&[u8], u64>) = (7, CURRENT);
const STR_U64: (u8, TableDefinition<&str, u64>) = (8, META);
const U64_BYTES: (u8, TableDefinition<u64, &[u8]>) = (9, LEDGER);

impl Catalog {
    /// Every record of every table as committed durably at one point; `also` reads more
    /// from the same transaction (the replication layer's own state). Runs on the
    /// writer, whose durable commit also makes every earlier change durable, so a
    /// snapshot never covers changes a crash could roll back.
    pub async fn dump_with<T: Send + 'static>(
        &self,
        also: impl FnOnce(&WriteTransaction) -> T + Send + 'static,
    ) -> Result<(Vec<u8>, T)> {
        self.writer
            .write(move |txn| {
                let extra = also(txn);
                Ok((dump_tables(txn)?, extra))
            })
            .await
    }
}

fn dump_tables(txn: &WriteTransaction) -> Result<Vec<u8>> {
    // Ledger records of earlier commits and of this transaction may be buffered still.
    crate::audit::flush(txn, true)?;
    let mut rows: Vec<Row> = Vec::new();
    for (id, def) in STR_BYTES {
        for e in txn.open_table(def)?.iter()? {
            let (k, v) = e?;
            rows.push((id, k.value().as_bytes().to_vec(), v.value().to_vec()));
        }
    }
    for (id, def) in BYTES_BYTES {
        for e in txn.open_table(def)?.iter()? {
            let (k, v) = e?;
            rows.push((id, k.value().to_vec(), v.value().to_vec()));
        }
    }
    let (id, def) = BYTES_U64;
    for e in txn.open_table(def)?.iter()? {
        let (k, v) = e?;
        rows.push((id, k.value().to_vec(), v.value().to_be_bytes().to_vec()));
    }
    let (id, def) = STR_U64;
    for e in txn.open_table(def)?.iter()? {
        let (k, v) = e?;
        rows.push((
            id,
            k.value().as_bytes().to_vec(),
            v.value().to_be_bytes().to_vec(),
        ));
    }
    let (id, def) = U64_BYTES;
    for e in txn.open_table(def)?.iter()? {
        let (k, v) = e?;
        rows.push((id, k.value().to_be_bytes().to_vec(), v.value().to_vec()));
    }
    let mut out = vec![SNAPSHOT_FORMAT];
    out.extend(postcard::to_stdvec(&rows).expect("rows serialize"));
    Ok(out)
}

impl Catalog {
    /// Replaces every table with the contents of `snapshot`, in one transaction with
    /// `also` (which records the log position the snapshot stands for).
    pub async fn restore(
        &self,
        snapshot: Vec<u8>,
        also: impl FnOnce(&WriteTransaction) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let bad = |reason: String| CatalogError::Corrupt {
            table: "snapshot".into(),
            key: String::new(),
            reason,
        };
        let rows: Vec<Row> = match snapshot.split_first() {
            Some((&SNAPSHOT_FORMAT, rest)) => {
                postcard::from_bytes(rest).map_err(|e| bad(e.to_string()))?
            }
            _ => return Err(bad("unknown snapshot format".into())),
        };
        let r = self
            .writer
            .write(move |txn| {
                // Every table is replaced, the ledger's included: records buffered or
                // appended earlier in this transaction go with the changes they recorded.
                crate::audit::replaced();
                clear(txn)?;
                for (id, k, v) in rows {
                    insert(txn, id, &k, &v).map_err(|e| match e {
                        CatalogError::Invalid(m) => bad(m),
                        e => e,
                    })?;
                }
                also(txn)
            })
            .await;
        self.cluster_changed.send_modify(|v| *v += 1);
        r
    }
}

fn clear(txn: &WriteTransaction) -> Result<()> {
    for (_, def) in STR_BYTES {
        txn.delete_table(def)?;
        txn.open_table(def)?;
    }
    for (_, def) in BYTES_BYTES {
        txn.delete_table(def)?;
        txn.open_table(def)?;
    }
    txn.delete_table(BYTES_U64.1)?;
    txn.open_table(BYTES_U64.1)?;
    txn.delete_table(STR_U64.1)?;
    txn.open_table(STR_U64.1)?;
    txn.delete_table(U64_BYTES.1)?;
    txn.open_table(U64_BYTES.1)?;
    Ok(())
}

fn insert(txn: &WriteTransaction, id: u8, k: &[u8], v: &[u8]) -> Result<()> {
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| CatalogError::Invalid(format!("table {id}: key is not UTF-8")))
    };
    let number = |b: &[u8]| {
        <[u8; 8]>::try_from(b)
            .map(u64::from_be_bytes)
            .map_err(|_| CatalogError::Invalid(format!("table {id}: not an 8-byte number")))
    };
    if let Some((_, def)) = STR_BYTES.iter().find(|(i, _)| *i == id) {
        txn.open_table(*def)?.insert(text(k)?.as_str(), v)?;
    } else if let Some((_, def)) = BYTES_BYTES.iter().find(|(i, _)| *i == id) {
        txn.open_table(*def)?.insert(k, v)?;
    } else if id == BYTES_U64.0 {
        txn.open_table(BYTES_U64.1)?.insert(k, number(v)?)?;
    } else if id == STR_U64.0 {
        txn.open_table(STR_U64.1)?
            .insert(text(k)?.as_str(), number(v)?)?;
    } else if id == U64_BYTES.0 {
        txn.open_table(U64_BYTES.1)?.insert(number(k)?, v)?;
    } else {
        return Err(CatalogError::Invalid(format!("unknown table {id}")));
    }
    Ok(())
}
