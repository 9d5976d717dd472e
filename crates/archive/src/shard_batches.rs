//! Reading, writing and deleting many shards at once: this node's in one blocking call,
//! every other node's in a few batch requests (`cluster::shard_batch`), all nodes in
//! parallel. Repair and scrubs move shards this way; a request per shard made repair
//! bound by requests.

use std::collections::BTreeMap;

use cluster::{Fetched, PutHeader, ShardRef};
use shards::{ShardKey, ShardMeta};

use crate::Archive;
use crate::chunks::ShardReadError;
use crate::read_tally::count;
use crate::topology::{Loc, Topology};

/// The positions of `spots` grouped by where they are, this node (`None`) or another
/// node's address, each with its disk on that node.
type Groups = BTreeMap<Option<String>, Vec<(usize, usize)>>;

fn by_node(t: &Topology, spots: impl Iterator<Item = usize>) -> Groups {
    let mut groups: Groups = BTreeMap::new();
    for (pos, spot) in spots.enumerate() {
        let (node, disk) = match &t.locs[spot] {
            Loc::Local(d) => (None, *d),
            Loc::Remote { addr, disk, .. } => (Some(addr.clone()), *disk as usize),
        };
        groups.entry(node).or_default().push((pos, disk));
    }
    groups
}

/// Each node's answers put back in the order of the items asked (`missing()` for an
/// item no node answered).
fn in_order<T>(
    n: usize,
    missing: impl Fn() -> T,
    answered: Vec<(Vec<(usize, usize)>, Vec<T>)>,
) -> Vec<T> {
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (positions, answers) in answered {
        for ((p, _), a) in positions.into_iter().zip(answers) {
            out[p] = Some(a);
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(&missing))
        .collect()
}

impl Archive {
    /// Reads each (spot, shard), verified; a local spot also looks on this node's other
    /// disks. One answer per item, in order.
    pub(crate) async fn read_shards_at(
        &self,
        t: &Topology,
        items: &[(usize, ShardKey)],
    ) -> Vec<Result<Vec<u8>, ShardReadError>> {
        let groups = by_node(t, items.iter().map(|(s, _)| *s));
        let reads = groups.into_iter().map(|(node, positions)| async move {
            let answers: Vec<Result<Vec<u8>, ShardReadError>> = match &node {
                None => {
                    let store = self.inner.store.clone();
                    let wanted: Vec<(usize, ShardKey)> =
                        positions.iter().map(|&(p, d)| (d, items[p].1)).collect();
                    let n = wanted.len();
                    tokio::task::spawn_blocking(move || {
                        wanted
                            .iter()
                            .map(|(d, k)| crate::chunks::read_local(&store, *d, k))
                            .collect()
                    })
                    .await
                    .unwrap_or_else(|e| {
                        (0..n)
                            .map(|_| Err(ShardReadError::Other(e.to_string())))
                            .collect()
                    })
                }
                Some(addr) => {
                    let refs: Vec<ShardRef> = positions
                        .iter()
                        .map(|&(p, d)| ShardRef::new(Some(d as u32), &items[p].1))
                        .collect();
                    match self.client().get_shards(addr, &refs).await {
                        Ok(fetched) => fetched
                            .into_iter()
                            .map(|f| match f {
                                Fetched::Data(d) => Ok(d),
                                Fetched::Missing => Err(ShardReadError::Missing),
                                Fetched::Corrupt(why) => Err(ShardReadError::Corrupt(why)),
                            })
                            .collect(),
                        Err(e) => positions
                            .iter()
                            .map(|_| Err(ShardReadError::Other(e.to_string())))
                            .collect(),
                    }
                }
            };
            (positions, answers)
        });
        let out = in_order(
            items.len(),
            || Err(ShardReadError::Other("not read".into())),
            futures::future::join_all(reads).await,
        );
        for ((spot, _), a) in items.iter().zip(&out) {
            if let Ok(d) = a {
                count(t.origin(*spot), d.len());
            }
        }
        out
    }

    /// Writes each (spot, shard, meta, data) durably. One answer per item, in order.
    pub(crate) async fn write_shards_at(
        &self,
        t: &Topology,
        items: Vec<(usize, ShardKey, ShardMeta, Vec<u8>)>,
    ) -> Vec<Result<(), String>> {
        let groups = by_node(t, items.iter().map(|(s, ..)| *s));
        let items = &items;
        let writes = groups.into_iter().map(|(node, positions)| async move {
            let answers: Vec<Result<(), String>> = match &node {
                None => {
                    let writes = positions.iter().map(|&(p, d)| {
                        let (_, key, meta, data) = &items[p];
                        async move {
                            self.inner
                                .store
                                .disk(d)
                                .write(*key, *meta, data.clone())
                                .await
                                .map_err(|e| e.to_string())
                        }
                    });
                    futures::future::join_all(writes).await
                }
                Some(addr) => {
                    let shards: Vec<(PutHeader, &[u8])> = positions
                        .iter()
                        .map(|&(p, d)| {
                            let (_, key, meta, data) = &items[p];
                            let header = PutHeader {
                                disk: d as u32,
                                chunk: codec::hex(&key.chunk),
                                index: key.index,
                                policy: meta.policy.to_string(),
                                sealed_len: meta.sealed_len,
                            };
                            (header, data.as_slice())
                        })
                        .collect();
                    match self.client().put_shards(addr, &shards).await {
                        Ok(r) => r,
                        Err(e) => positions.iter().map(|_| Err(e.to_string())).collect(),
                    }
                }
            };
            (positions, answers)
        });
        in_order(
            items.len(),
            || Err("not written".into()),
            futures::future::join_all(writes).await,
        )
    }

    /// Removes each (spot, shard). One answer per item, in order.
    pub(crate) async fn delete_shards_at(
        &self,
        t: &Topology,
        items: &[(usize, ShardKey)],
    ) -> Vec<Result<(), String>> {
        let groups = by_node(t, items.iter().map(|(s, _)| *s));
        let deletes = groups.into_iter().map(|(node, positions)| async move {
            let answers: Vec<Result<(), String>> = match &node {
                None => {
                    let deletes = positions.iter().map(|&(p, d)| async move {
                        self.inner
                            .store
                            .disk(d)
                            .delete(items[p].1)
                            .await
                            .map_err(|e| e.to_string())
                    });
                    futures::future::join_all(deletes).await
                }
                Some(addr) => {
                    let refs: Vec<ShardRef> = positions
                        .iter()
                        .map(|&(p, d)| ShardRef::new(Some(d as u32), &items[p].1))
                        .collect();
                    match self.client().delete_shards(addr, &refs).await {
                        Ok(r) => r,
                        Err(e) => positions.iter().map(|_| Err(e.to_string())).collect(),
                    }
                }
            };
            (positions, answers)
        });
        in_order(
            items.len(),
            || Err("not deleted".into()),
            futures::future::join_all(deletes).await,
        )
    }
}
