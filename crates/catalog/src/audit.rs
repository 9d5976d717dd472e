//! The audit log's entries live here, in the catalog: each mutation appends its leaf
//! record in the same write transaction, so a change and its record are committed
//! together or not at all (no acknowledged write without a leaf, no leaf for a write
//! that never happened). The Merkle tree over them is derived data (`crates/ledger`).
//!
//! Records are inserted into the `ledger` table in rows of many records, keyed by the
//! index of the first: a row is `0x00`, then each record as a u32 big-endian length and
//! its bytes. A row that starts with `{` is a single record (catalogs written before
//! rows held batches).
//!
//! A commit that need not reach the disk (changes applied from the Raft log, which
//! replays them after a crash) leaves its records in memory, in the catalog's
//! `Unflushed` buffer, and a later commit inserts them as one row: once the buffer holds
//! `FLUSH_BYTES` or its oldest record is `FLUSH_AGE` old, and always with a durable
//! commit, so whatever is durable holds every record of its changes. Readers see the
//! buffer's committed records as part of the log. Opening and updating one table more
//! in every commit was most of what the log cost a small write over S3.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ledger::record::{Change, Record};
use redb::{ReadableTable, WriteTransaction};

use crate::records::*;
use crate::{Catalog, CatalogError, Result};

/// The version metadata key holding the version's ledger index.
pub const LEDGER_INDEX: &str = ":ledger-index";

/// Buffered records are inserted once they fill this many bytes (a row this size is
/// still quick to read for one entry)...
const FLUSH_BYTES: usize = 64 * 1024;
/// ...or once the oldest is this old (checked at each commit).
const FLUSH_AGE: Duration = Duration::from_secs(1);

/// The records committed but not yet in the table, shared by the catalog's writer
/// thread (which alone changes them) and its readers.
#[derive(Default)]
pub(crate) struct Unflushed(Mutex<Buffer>);

impl Unflushed {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Nothing in the buffer panics half-way through an update.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Buffer {
    log: Buffered,
    /// The records (count, bytes of `row`) the open transaction inserted into the table.
    inserted: Option<(u64, usize)>,
    /// The buffer as it was before a snapshot replaced every table in the open
    /// transaction; restored if it does not commit.
    replaced: Option<Buffered>,
}

#[derive(Default)]
struct Buffered {
    /// Records in the table as last committed; None until looked up.
    size: Option<u64>,
    /// `BATCH`, then the records from index `size` on that are not in the table: those
    /// of committed transactions, then the open one's.
    row: Vec<u8>,
    /// Records in `row`.
    count: u64,
    /// Records (count, bytes of `row`) of committed transactions: what readers see, and
    /// what a failed commit goes back to.
    committed: (u64, usize),
    /// When the oldest record in `row` was appended.
    since: Option<Instant>,
}

thread_local! {
    /// The buffer of the catalog whose writer runs on this thread, if it keeps the audit
    /// log. Every write runs on its catalog's writer thread, so this is per catalog.
    static WRITER: std::cell::RefCell<Option<Arc<Unflushed>>> = const { std::cell::RefCell::new(None) };
}

/// Called once by the writer thread: its catalog's buffer, or None when the log is off.
pub(crate) fn attach_to_this_thread(buffer: Option<Arc<Unflushed>>) {
    WRITER.with_borrow_mut(|w| *w = buffer);
}

/// Runs `f` on this thread's buffer; `off` when the log is off.
fn with_buffer<T>(off: T, f: impl FnOnce(&mut Buffer) -> T) -> T {
    WRITER.with_borrow(|w| match w {
        Some(u) => f(&mut u.lock()),
        None => off,
    })
}

/// The index answered when the log is off (benchmarks only).
pub const NOT_LOGGED: u64 = u64::MAX;

/// Appends one leaf record to the transaction; returns its index. Call it last in an
/// operation, after every check that can fail. The record reaches the table in a
/// `flush`, which the writer runs before every commit.
pub(crate) fn append(
    txn: &WriteTransaction,
    time_ns: u64,
    actor: Option<String>,
    change: Change,
) -> Result<u64> {
    with_buffer(Ok(NOT_LOGGED), |b| {
        let log = &mut b.log;
        let size = match log.size {
            Some(n) => n,
            // Entries are numbered densely from 0: the next follows the last row's records.
            None => *log.size.insert(size_of(&txn.open_table(LEDGER)?)?),
        };
        if log.count == 0 {
            log.row.clear();
            log.row.push(BATCH);
            log.since = Some(Instant::now());
        }
        let at = log.row.len();
        log.row.extend_from_slice(&[0; 4]);
        Record::new(time_ns, actor, change).write_to(&mut log.row);
        let len = u32::try_from(log.row.len() - at - 4)
            .map_err(|_| CatalogError::Invalid("a ledger record is over 4 GiB".into()))?;
        log.row[at..at + 4].copy_from_slice(&len.to_be_bytes());
        log.count += 1;
        Ok(size + log.count - 1)
    })
}

/// Inserts the buffered records into the table if they are due: always when `durable`
/// (the commit reaches the disk, or a snapshot reads the table), else by size and age.
/// The writer calls it before each commit, and `finish` after.
pub(crate) fn flush(txn: &WriteTransaction, durable: bool) -> Result<()> {
    with_buffer(Ok(()), |b| {
        let (done, from) = b.inserted.unwrap_or((0, 1));
        let log = &b.log;
        if log.count == done {
            return Ok(());
        }
        // Once this transaction inserted some, it inserts the rest: it commits all or none.
        let due = durable
            || b.inserted.is_some()
            || log.row.len() >= FLUSH_BYTES
            || log.since.is_some_and(|t| t.elapsed() >= FLUSH_AGE);
        if !due {
            return Ok(());
        }
        let first = log
            .size
            .expect("the size is known while records are buffered")
            + done;
        let mut table = txn.open_table(LEDGER)?;
        if from == 1 {
            table.insert(first, log.row.as_slice())?;
        } else {
            let rest = [&[BATCH], &log.row[from..]].concat();
            table.insert(first, rest.as_slice())?;
        }
        b.inserted = Some((log.count, log.row.len()));
        Ok(())
    })
}

/// After the writer's commit (or its failure): records inserted leave the buffer; the
/// rest become visible to readers; a failed transaction's records are dropped.
pub(crate) fn finish(committed: bool) {
    with_buffer((), |b| {
        let inserted = b.inserted.take();
        if committed {
            b.replaced = None;
            let log = &mut b.log;
            if let Some((n, _)) = inserted {
                // A transaction that inserted records inserted all of them (`flush`).
                log.size = log.size.map(|s| s + n);
                log.row.clear();
                if log.row.capacity() > 1 << 20 {
                    // A rare huge batch (a multipart upload of many parts) gives its
                    // memory back.
                    log.row = Vec::new();
                }
                log.count = 0;
                log.since = None;
            }
            log.committed = (log.count, log.row.len());
        } else {
            if let Some(before) = b.replaced.take() {
                b.log = before;
            }
            let log = &mut b.log;
            (log.count, _) = log.committed;
            log.row.truncate(log.committed.1);
            if log.count == 0 {
                log.since = None;
            }
        }
    })
}

/// Every table is being replaced (a snapshot installed): the buffered records go with
/// the changes they recorded, and the table's size is looked up again.
pub(crate) fn replaced() {
    with_buffer((), |b| {
        let before = std::mem::take(&mut b.log);
        b.inserted = None;
        b.replaced.get_or_insert(before);
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

impl Catalog {
    /// A read transaction, and `seen` applied to the buffered records of committed
    /// transactions (the index of the first, their row). Taken together under the
    /// buffer's lock: a commit that inserts buffered records takes them out of the
    /// buffer only after the table has them, so no record falls between the two.
    fn ledger_view<T>(
        &self,
        seen: impl FnOnce(u64, &[u8]) -> T,
    ) -> Result<(redb::ReadTransaction, Option<T>)> {
        let b = self.unflushed.lock();
        let log = &b.log;
        let pending = match log.size {
            Some(first) if log.committed.0 > 0 => Some(seen(first, &log.row[..log.committed.1])),
            _ => None,
        };
        Ok((self.read()?, pending))
    }

    /// How many entries the audit log holds.
    pub fn ledger_size(&self) -> Result<u64> {
        let (txn, end) =
            self.ledger_view(|first, row| row_records(first, row).map(|r| first + r.len() as u64))?;
        let table = size_of(&txn.open_table(LEDGER)?)?;
        Ok(end.transpose()?.map_or(table, |end| end.max(table)))
    }

    /// Entries `from..to` (fewer if the log is shorter), read in one transaction.
    pub fn ledger_entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>> {
        // Of the buffered records, only those asked for are copied out from under the lock.
        let (txn, pending) = self.ledger_view(|first, row| {
            let wanted = (first..).zip(row_records(first, row)?);
            let wanted = wanted.filter(|(i, _)| (from..to).contains(i));
            let wanted: Vec<(u64, Vec<u8>)> = wanted.map(|(i, r)| (i, r.to_vec())).collect();
            Ok::<_, CatalogError>((first, wanted))
        })?;
        let t = txn.open_table(LEDGER)?;
        // Start at the row holding `from`: the last one keyed at or before it.
        let start = match t.range(..=from)?.next_back() {
            Some(row) => row?.0.value(),
            None => from,
        };
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        // The index after the last record read: rows must follow on from it.
        let mut expected = start;
        let follow_on = |first: u64, expected: u64| {
            if first > expected && first < to {
                return Err(CatalogError::Corrupt {
                    table: "ledger".into(),
                    key: first.to_string(),
                    reason: format!("records {expected}..{first} are missing"),
                });
            }
            Ok(())
        };
        for row in t.range(start..to)? {
            let (k, v) = row?;
            follow_on(k.value(), expected)?;
            for (i, r) in (k.value()..).zip(row_records(k.value(), v.value())?) {
                if i >= expected && (from..to).contains(&i) {
                    out.push(r.to_vec());
                }
                expected = expected.max(i + 1);
            }
        }
        if let Some(pending) = pending {
            let (first, records) = pending?;
            follow_on(first, expected)?;
            // A record both in the table and still buffered is read once.
            out.extend(
                records
                    .into_iter()
                    .filter(|(i, _)| *i >= expected)
                    .map(|(_, r)| r),
            );
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

impl crate::Catalog {
    /// Appends `change` to the audit log on its own, for what no other command records
    /// (a compute job's run); through Raft in a cluster, like every change.
    pub async fn record(&self, change: Change, actor: Option<String>) -> Result<()> {
        let change_json = serde_json::to_string(&change)
            .map_err(|e| CatalogError::Invalid(format!("cannot encode a ledger change: {e}")))?;
        self.execute(crate::command::Command::Record { change_json, actor })
            .await?;
        Ok(())
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

    fn key_created(i: u64) -> Change {
        Change::KeyCreated {
            access_key: format!("k{i}"),
        }
    }

    /// The rows of the ledger table: (first index, records).
    fn table_rows(c: &Catalog) -> Vec<(u64, usize)> {
        let txn = c.read().unwrap();
        let t = txn.open_table(LEDGER).unwrap();
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), row_records(k.value(), v.value()).unwrap().len())
            })
            .collect()
    }

    /// Commits that need not reach the disk leave their records buffered, readable as
    /// part of the log; a durable commit inserts them all as one row; so does a buffer
    /// that fills up.
    #[tokio::test]
    async fn lazy_commits_buffer_records_and_durable_ones_insert_them() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.redb"), Default::default()).unwrap();
        let lazy = |i: u64| {
            c.writer
                .write_with(false, move |txn| append(txn, i, None, key_created(i)))
        };
        for i in 0..3 {
            assert_eq!(lazy(i).await.unwrap(), i);
        }
        assert_eq!(table_rows(&c), vec![]);
        assert_eq!(c.ledger_size().unwrap(), 3);
        let r = Record::from_bytes(&c.ledger_entry(1).unwrap().unwrap()).unwrap();
        assert_eq!(r.change, key_created(1));
        assert_eq!(c.ledger_entries(0, 10).unwrap().len(), 3);
        let durable = c
            .writer
            .write(|txn| append(txn, 3, None, key_created(3)))
            .await
            .unwrap();
        assert_eq!(durable, 3);
        assert_eq!(table_rows(&c), vec![(0, 4)]);
        assert_eq!(c.ledger_size().unwrap(), 4);
        // Buffered records past FLUSH_BYTES go in at the next commit, lazy or not.
        let mut i = 4;
        while table_rows(&c).len() == 1 {
            assert_eq!(lazy(i).await.unwrap(), i);
            i += 1;
            assert!(i < 10_000, "the buffer never flushed");
        }
        assert_eq!(c.ledger_size().unwrap(), i);
        let all = c.ledger_entries(0, i).unwrap();
        for (n, e) in all.iter().enumerate() {
            let r = Record::from_bytes(e).unwrap();
            assert_eq!(r.change, key_created(n as u64));
        }
    }

    /// A transaction that does not commit takes only its own records with it, even
    /// when it had inserted the buffered ones of earlier commits, and a snapshot's
    /// replacement of the tables that does not commit leaves the buffer as it was.
    #[test]
    fn a_failed_commit_drops_only_its_own_records() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(&dir.path().join("catalog.redb"), Default::default()).unwrap();
        // This thread plays the writer's part, by hand.
        attach_to_this_thread(Some(c.unflushed.clone()));
        let txn = |durable: bool| {
            let mut t = c.db.begin_write().unwrap();
            if !durable {
                t.set_durability(redb::Durability::None).unwrap();
            }
            t
        };
        let t = txn(false);
        assert_eq!(append(&t, 0, None, key_created(0)).unwrap(), 0);
        assert_eq!(append(&t, 1, None, key_created(1)).unwrap(), 1);
        flush(&t, false).unwrap();
        t.commit().unwrap();
        finish(true);
        // Inserts the two buffered records and its own, then fails.
        let t = txn(true);
        assert_eq!(append(&t, 2, None, key_created(2)).unwrap(), 2);
        flush(&t, true).unwrap();
        t.abort().unwrap();
        finish(false);
        assert_eq!(table_rows(&c), vec![]);
        assert_eq!(c.ledger_size().unwrap(), 2);
        // A snapshot replaced every table, then did not commit.
        let t = txn(true);
        replaced();
        t.abort().unwrap();
        finish(false);
        assert_eq!(c.ledger_size().unwrap(), 2);
        let t = txn(true);
        assert_eq!(append(&t, 3, None, key_created(3)).unwrap(), 2);
        flush(&t, true).unwrap();
        t.commit().unwrap();
        finish(true);
        assert_eq!(table_rows(&c), vec![(0, 3)]);
        let changes: Vec<Change> = c
            .ledger_entries(0, 3)
            .unwrap()
            .iter()
            .map(|e| Record::from_bytes(e).unwrap().change)
            .collect();
        assert_eq!(
            changes,
            vec![key_created(0), key_created(1), key_created(3)]
        );
        attach_to_this_thread(None);
    }
}
