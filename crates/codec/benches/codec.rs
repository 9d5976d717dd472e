//! Criterion benches of every codec stage, plus the two Reed-Solomon crates side by side
//! (the measurement behind docs/decisions.md). `cargo bench -p codec`.
#![allow(clippy::unwrap_used)] // a panic is how a test or benchmark reports

use codec::{
    ChunkParams, Chunker, DataKey, Redundancy, chunk_id, join_shards, open, seal, split_shards,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use reed_solomon_erasure::galois_8::ReedSolomon;

fn random(n: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn text(n: usize) -> Vec<u8> {
    let words = [
        "fn ", "let ", "data ", "chunk ", "shard ", "return ", "x1 ", "42 ", "\n    ",
    ];
    let mut out = Vec::with_capacity(n);
    let mut i = 7usize;
    while out.len() < n {
        i = i.wrapping_mul(1103515245).wrapping_add(12345);
        out.extend_from_slice(words[(i >> 16) % words.len()].as_bytes());
        out.extend_from_slice(format!("{}", (i >> 8) % 1000).as_bytes());
    }
    out.truncate(n);
    out
}

fn stages(c: &mut Criterion) {
    let data = random(8 << 20);
    let key = DataKey::generate();
    let chunk = &data[..64 << 10];
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk_fastcdc_8MiB", |b| {
        b.iter(|| Chunker::new(ChunkParams::default()).cut_all(&data).len())
    });
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("hash_blake3_keyed_64KiB", |b| {
        b.iter(|| chunk_id(&key, chunk))
    });
    let id = chunk_id(&key, chunk);
    g.bench_function("seal_random_64KiB", |b| {
        b.iter(|| seal(&key, &id, chunk, 3))
    });
    let t = text(64 << 10);
    let tid = chunk_id(&key, &t);
    g.bench_function("seal_text_zstd3_64KiB", |b| {
        b.iter(|| seal(&key, &tid, &t, 3))
    });
    let sealed = seal(&key, &id, chunk, 3);
    g.bench_function("open_64KiB", |b| {
        b.iter(|| open(&key, &id, sealed.clone()).unwrap())
    });
    g.finish();
}

fn erasure(c: &mut Criterion) {
    let mut g = c.benchmark_group("erasure_4_2");
    for size in [64 << 10, 1 << 20] {
        let sealed = random(size);
        g.throughput(Throughput::Bytes(size as u64));
        let ec = Redundancy::Ec { k: 4, m: 2 };
        // What the data path runs (copies into shards included).
        g.bench_with_input(
            BenchmarkId::new("codec_split_shards", size),
            &sealed,
            |b, s| b.iter(|| split_shards(ec, s)),
        );
        let shards = split_shards(ec, &sealed);
        let mut lost: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        lost[0] = None;
        lost[2] = None;
        g.bench_with_input(
            BenchmarkId::new("codec_join_shards_2_lost", size),
            &lost,
            |b, l| b.iter(|| join_shards(ec, l.clone(), size).unwrap()),
        );
        // The alternative crate, for docs/decisions.md.
        let len = size / 4;
        let data: Vec<&[u8]> = sealed.chunks(len).collect();
        g.bench_with_input(
            BenchmarkId::new("reed_solomon_simd_encode", size),
            &data,
            |b, d| b.iter(|| reed_solomon_simd::encode(4, 2, d).unwrap()),
        );
        let parity = reed_solomon_simd::encode(4, 2, &data).unwrap();
        g.bench_with_input(
            BenchmarkId::new("reed_solomon_simd_rebuild_2", size),
            &(),
            |b, _| {
                b.iter(|| {
                    reed_solomon_simd::decode(
                        4,
                        2,
                        [(1, data[1]), (3, data[3])],
                        [(0, &parity[0][..]), (1, &parity[1][..])],
                    )
                    .unwrap()
                })
            },
        );
        let rse = ReedSolomon::new(4, 2).unwrap();
        g.bench_with_input(
            BenchmarkId::new("reed_solomon_erasure_encode", size),
            &sealed,
            |b, s| {
                b.iter(|| {
                    let mut sh: Vec<Vec<u8>> = s.chunks(len).map(|c| c.to_vec()).collect();
                    sh.resize(6, vec![0u8; len]);
                    rse.encode(&mut sh).unwrap();
                    sh
                })
            },
        );
        let mut full: Vec<Vec<u8>> = sealed.chunks(len).map(|c| c.to_vec()).collect();
        full.resize(6, vec![0u8; len]);
        rse.encode(&mut full).unwrap();
        g.bench_with_input(
            BenchmarkId::new("reed_solomon_erasure_rebuild_2", size),
            &full,
            |b, f| {
                b.iter(|| {
                    let mut sh: Vec<Option<Vec<u8>>> = f.iter().cloned().map(Some).collect();
                    sh[0] = None;
                    sh[2] = None;
                    rse.reconstruct(&mut sh).unwrap();
                    sh
                })
            },
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = stages, erasure
}
criterion_main!(benches);
