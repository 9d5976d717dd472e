//! The audit log's entries live here, in the catalog: each mutation appends its leaf
//! record in the same write transaction, so a change and its record are committed
//! together or not at all (no acknowledged write without a leaf, no leaf for a write
//! that never happened). The Merkle tree over them is derived data (`crates/ledger`).
//!
//! The records of one write transaction share one row of the `ledger` table, keyed by
//! the index of its first record: a B-tree insert per change was most of what the log
//! cost a small write. A row is `0x00`, then each record as a u32 big-endian length and
//! its bytes. A row that starts with `{` is a single record (catalogs written before
//! rows held batches).

use ledger::record::{Change, Record};
use redb::{ReadableTable, WriteTransaction};

use crate::records::*;
use crate::{Catalog, CatalogError, Result};

/// The version metadata key holding the version's ledger index.
pub const LEDGER_INDEX: &str = ":ledger-index";

thread_local! {
    /// Whether the catalog whose writer runs on this thread keeps the audit log. Every
    /// write runs on its catalog's writer thread, so this is per catalog.
    static ENABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    /// The records appended in the write transaction open on this thread, inserted
    /// together by `flush` just before it commits: one table lookup per batch rather
    /// than one per change (the log's cost on small writes is mostly per-change work).
    static PENDING: std::cell::RefCell<Pending> = const {
        std::cell::RefCell::new(Pending { next: None, count: 0, row: Vec::new(), committed: None })
    };
}

struct Pending {
    /// The index the next record gets; None until the first append of a transaction.
    next: Option<u64>,
    /// Records in `row`.
    count: u64,
    /// The row being built, records written straight into it (its buffer is reused
    /// from one transaction to the next).
    row: Vec<u8>,
    /// How many records the table holds once the transactions flushed so far commit
    /// (only this thread writes it): spares each commit a lookup of the table's last
    /// row. None when unknown; `discard` forgets it.
    committed: Option<u64>,
}

pub(crate) fn set_enabled_on_this_thread(on: bool) {
    ENABLED.with(|e| e.set(on));
}

/// The index answered when the log is off (benchmarks only).
pub const NOT_LOGGED: u64 = u64::MAX;

/// Appends one leaf record to the transaction; returns its index. Call it last in an
/// operation, after every check that can fail. The record reaches the table in
/// `flush`, which the writer runs before every commit.
pub(crate) fn append(
    txn: &WriteTransaction,
    time_ns: u64,
    actor: Option<String>,
    change: Change,
) -> Result<u64> {
    if !ENABLED.with(|e| e.get()) {
        return Ok(NOT_LOGGED);
    }
    let next = match PENDING.with_borrow(|p| p.next.or(p.committed)) {
        Some(n) => n,
        // Entries are numbered densely from 0: the next follows the last row's records.
        None => size_of(&txn.open_table(LEDGER)?)?,
    };
    let record = Record::new(time_ns, actor, change);
    PENDING.with_borrow_mut(|p| {
        if p.count == 0 {
            p.row.clear();
            p.row.push(BATCH);
        }
        let at = p.row.len();
        p.row.extend_from_slice(&[0; 4]);
        record.write_to(&mut p.row);
        let len = u32::try_from(p.row.len() - at - 4)
            .map_err(|_| CatalogError::Invalid("a ledger record is over 4 GiB".into()))?;
        p.row[at..at + 4].copy_from_slice(&len.to_be_bytes());
        p.next = Some(next + 1);
        p.count += 1;
        Ok(next)
    })
}

/// Inserts the records appended in this transaction. The writer calls it before each
/// commit; anything that reads the ledger table inside a write transaction calls it
/// first.
pub(crate) fn flush(txn: &WriteTransaction) -> Result<()> {
    PENDING.with_borrow_mut(|p| {
        let Some(next) = p.next.take() else {
            return Ok(());
        };
        let first = next - std::mem::take(&mut p.count);
        txn.open_table(LEDGER)?.insert(first, p.row.as_slice())?;
        p.committed = Some(next);
        if p.row.capacity() > 1 << 20 {
            // A rare huge batch (a multipart upload of many parts) gives its memory back.
            p.row = Vec::new();
        }
        Ok(())
    })
}

/// The first byte of a row holding a batch of records.
const BATCH: u8 = 0;

/// The records of one row, in order.
fn row_records(first: u64, row: &[u8]) -> Result<Vec<&[u8]>> {
    let corrupt = |reason: &str| CatalogError::Corrupt {
        table: "ledger".into(),
        key: first.to_string(),
        reason: reason.into(),
    };
    match row.split_first() {
        Some((&BATCH, mut rest)) => {
            let mut out = Vec::new();
            while !rest.is_empty() {
                let (len, tail) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| corrupt("a record's length is cut short"))?;
                let len = u32::from_be_bytes(*len) as usize;
                if tail.len() < len {
                    return Err(corrupt("a record is cut short"));
                }
                out.push(&tail[..len]);
                rest = &tail[len..];
            }
            Ok(out)
        }
        Some((b'{', _)) => Ok(vec![row]),
        _ => Err(corrupt("not a ledger row")),
    }
}

/// How many records the table holds.
fn size_of(t: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64> {
    match t.last()? {
        Some((k, v)) => Ok(k.value() + row_records(k.value(), v.value())?.len() as u64),
        None => Ok(0),
    }
}

/// Forgets the records of a transaction that will not commit, or whose tables are
/// replaced wholesale (a snapshot being installed), and the table's size: the writer
/// calls it whenever a commit fails.
pub(crate) fn discard() {
    PENDING.with_borrow_mut(|p| {
        p.next = None;
        p.count = 0;
        p.committed = None;
    });
}

impl Catalog {
    /// How many entries the audit log holds.
    pub fn ledger_size(&self) -> Result<u64> {
        size_of(&self.read()?.open_table(LEDGER)?)
    }

    /// Entries `from..to` (fewer if the log is shorter), read in one transaction.
    pub fn ledger_entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        let txn = self.read()?;
        let t = txn.open_table(LEDGER)?;
        // Start at the row holding `from`: the last one keyed at or before it.
        let start = match t.range(..=from)?.next_back() {
            Some(row) => row?.0.value(),
            None => from,
        };
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        let mut expected = start;
        for row in t.range(start..to)? {
            let (k, v) = row?;
            if k.value() != expected {
                return Err(CatalogError::Corrupt {
                    table: "ledger".into(),
                    key: k.value().to_string(),
                    reason: format!("records {expected}..{} are missing", k.value()),
                });
            }
            let records = row_records(k.value(), v.value())?;
            expected += records.len() as u64;
            for (i, r) in (k.value()..).zip(records) {
                if (from..to).contains(&i) {
                    out.push(r.to_vec());
                }
            }
        }
        Ok(out)
    }

    /// One entry's canonical bytes.
    pub fn ledger_entry(&self, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.ledger_entries(index, index + 1)?.pop())
    }
}

/// The catalog as the ledger's entry store.
pub struct LedgerEntries(pub Catalog);

impl ledger::entries::EntryStore for LedgerEntries {
    fn len(&self) -> u64 {
        self.0.ledger_size().unwrap_or(0)
    }

    fn get(&self, index: u64) -> ledger::Result<Vec<u8>> {
        match self.0.ledger_entry(index) {
            Ok(Some(e)) => Ok(e),
            Ok(None) => Err(ledger::LedgerError::Missing {
                what: "entry",
                index,
            }),
            Err(e) => Err(ledger::LedgerError::Invalid(e.to_string())),
        }
    }

    fn range(&self, from: u64, to: u64) -> ledger::Result<Vec<Vec<u8>>> {
        let got = self
            .0
            .ledger_entries(from, to)
            .map_err(|e| ledger::LedgerError::Invalid(e.to_string()))?;
        if got.len() as u64 != to - from {
            return Err(ledger::LedgerError::Missing {
                what: "entry",
                index: from + got.len() as u64,
            });
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of one record each (catalogs from before batched rows) and batched rows
    /// read as one dense log; a gap is reported, not skipped.
    #[tokio::test]
    async fn single_and_batched_rows_read_as_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.redb");
        let rec = |i: u64| format!("{{\"n\":{i}}}").into_bytes();
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(LEDGER).unwrap();
                t.insert(0, rec(0).as_slice()).unwrap();
                t.insert(1, rec(1).as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let c = Catalog::open(&path, Default::default()).unwrap();
        assert_eq!(c.ledger_size().unwrap(), 2);
        // A transaction of three records after them: one row at index 2.
        c.writer
            .write(|txn| {
                for i in 2..5 {
                    append(
                        txn,
                        i,
                        None,
                        Change::KeyCreated {
                            access_key: format!("k{i}"),
                        },
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(c.ledger_size().unwrap(), 5);
        let all = c.ledger_entries(0, 5).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[1], rec(1));
        for i in 2..5u64 {
            let r = Record::from_bytes(&all[i as usize]).unwrap();
            assert_eq!(
                r.change,
                Change::KeyCreated {
                    access_key: format!("k{i}")
                }
            );
            assert_eq!(c.ledger_entry(i).unwrap().unwrap(), all[i as usize]);
        }
        assert_eq!(c.ledger_entries(3, 4).unwrap(), vec![all[3].clone()]);
        assert_eq!(c.ledger_entry(5).unwrap(), None);
        {
            let txn = c.db.begin_write().unwrap();
            txn.open_table(LEDGER).unwrap().remove(1).unwrap();
            txn.commit().unwrap();
        }
        let err = c.ledger_entries(0, 5).unwrap_err().to_string();
        assert!(err.contains("1..2 are missing"), "{err}");
    }
}
