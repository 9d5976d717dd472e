//! The audit log's entries live here, in the catalog: each mutation appends its leaf
//! record in the same write transaction, so a change and its record are committed
//! together or not at all (no acknowledged write without a leaf, no leaf for a write
//! that never happened). The Merkle tree over them is derived data (`crates/ledger`).

use ledger::record::{Change, Record};
use redb::{ReadableTable, WriteTransaction};

use crate::records::*;
use crate::{Catalog, Result};

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
        std::cell::RefCell::new(Pending { next: None, records: Vec::new() })
    };
}

struct Pending {
    /// The index the next record gets; None until the first append of a transaction.
    next: Option<u64>,
    records: Vec<Vec<u8>>,
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
    let next = match PENDING.with_borrow(|p| p.next) {
        Some(n) => n,
        // Entries are numbered densely from 0, so the next index follows the last key.
        None => txn
            .open_table(LEDGER)?
            .last()?
            .map_or(0, |(k, _)| k.value() + 1),
    };
    let bytes = Record::new(time_ns, actor, change).to_bytes();
    PENDING.with_borrow_mut(|p| {
        p.next = Some(next + 1);
        p.records.push(bytes);
    });
    Ok(next)
}

/// Inserts the records appended in this transaction. The writer calls it before each
/// commit; anything that reads the ledger table inside a write transaction calls it
/// first.
pub(crate) fn flush(txn: &WriteTransaction) -> Result<()> {
    let (next, records) = PENDING.with_borrow_mut(|p| (p.next.take(), std::mem::take(&mut p.records)));
    let Some(next) = next else {
        return Ok(());
    };
    let mut t = txn.open_table(LEDGER)?;
    let first = next - records.len() as u64;
    for (i, r) in records.iter().enumerate() {
        t.insert(first + i as u64, r.as_slice())?;
    }
    Ok(())
}

/// Forgets the records of a transaction that will not commit, or whose tables are
/// replaced wholesale (a snapshot being installed).
pub(crate) fn discard() {
    PENDING.with_borrow_mut(|p| {
        p.next = None;
        p.records.clear();
    });
}

impl Catalog {
    /// How many entries the audit log holds.
    pub fn ledger_size(&self) -> Result<u64> {
        Ok(self
            .read()?
            .open_table(LEDGER)?
            .last()?
            .map_or(0, |(k, _)| k.value() + 1))
    }

    /// Entries `from..to` (fewer if the log is shorter), read in one transaction.
    pub fn ledger_entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        let txn = self.read()?;
        let t = txn.open_table(LEDGER)?;
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        for e in t.range(from..to)? {
            out.push(e?.1.value().to_vec());
        }
        Ok(out)
    }

    /// One entry's canonical bytes.
    pub fn ledger_entry(&self, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read()?
            .open_table(LEDGER)?
            .get(index)?
            .map(|v| v.value().to_vec()))
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
