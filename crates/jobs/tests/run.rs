//! A job end to end on one archive: inputs streamed in odd-sized chunks, lines split
//! across chunk boundaries, the output written as a version, and the run recorded in
//! the audit log with the code's hash and the exact inputs.
#![allow(clippy::unwrap_used)] // a panic is how a test reports

use std::time::Duration;

use archive::{PutOptions, VersionSel};
use bytes::Bytes;
use jobs::{JobSpec, JobState, Jobs, Limits};
use sha2::Digest;

const WORD_COUNT: &str = r#"
    function map(line) for w in line:gmatch("%S+") do emit(w, 1) end end
    function reduce(w, ones) return #ones end
"#;

async fn wait(jobs: &Jobs, id: &str) -> jobs::JobInfo {
    for _ in 0..600 {
        let i = jobs.get(id).unwrap();
        if i.state != JobState::Running {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job {id} did not finish");
}

fn spec(code: &str, prefix: &str) -> JobSpec {
    JobSpec {
        bucket: "data".into(),
        prefix: prefix.into(),
        as_of: None,
        runtime: "lua".into(),
        code: code.into(),
        input: jobs::InputMode::Lines,
        output: Some("out/result.jsonl".into()),
        output_bucket: None,
        limits: Limits::default(),
        incremental: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_word_count_reads_every_line_and_is_recorded_in_the_ledger() {
    let t = testkit::archive_with_bucket(3, "data").await;
    let a = &t.archive;
    // 3 objects; lines cross the 7-byte chunks the body arrives in; no final newline.
    let texts = ["a b\nc a\r\nb", "a\n\nlong-word a\n", "x"];
    let mut versions = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let pieces: Vec<std::io::Result<Bytes>> = text
            .as_bytes()
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let v = a
            .put(
                "data",
                &format!("in/{i}.txt"),
                futures::stream::iter(pieces),
                PutOptions::default(),
            )
            .await
            .unwrap();
        versions.push((format!("in/{i}.txt"), v.version_id, v.etag));
    }
    let jobs = Jobs::new(a.clone(), 2);
    let id = jobs
        .submit(spec(WORD_COUNT, "in/"), Some("@admin".into()))
        .unwrap()
        .id;
    let info = wait(&jobs, &id).await;
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!((info.tasks_total, info.tasks_done), (3, 3));
    assert_eq!(info.records, 3 + 3 + 1);
    let out = info.output.unwrap();
    let (_, _, body) = a
        .get("data", "out/result.jsonl", &VersionSel::Latest, None)
        .await
        .unwrap();
    let body: Vec<Bytes> = futures::StreamExt::collect::<Vec<_>>(body)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let body = body.concat();
    assert_eq!(
        String::from_utf8(body.clone()).unwrap(),
        "{\"key\":\"a\",\"value\":4}\n{\"key\":\"b\",\"value\":2}\n{\"key\":\"c\",\"value\":1}\n{\"key\":\"long-word\",\"value\":1}\n{\"key\":\"x\",\"value\":1}\n"
    );
    let hex = |b: &[u8]| -> String {
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    };
    assert_eq!(out.sha256, hex(&body));

    // The last ledger entry is the run: the code's hash, the inputs' list, the output.
    let size = a.catalog().ledger_size().unwrap();
    let entry = a.catalog().ledger_entry(size - 1).unwrap().unwrap();
    let record = ledger::record::Record::from_bytes(&entry).unwrap();
    let mut listing = Vec::new();
    for (k, v, etag) in &versions {
        listing.extend_from_slice(format!("{k}\0{v}\0{etag}\n").as_bytes());
    }
    match record.change {
        ledger::record::Change::JobRun {
            job_id,
            code_sha256,
            inputs,
            inputs_sha256,
            output_key,
            output_version_id,
            output_sha256,
            ..
        } => {
            assert_eq!(job_id, id);
            assert_eq!(code_sha256, hex(WORD_COUNT.as_bytes()));
            assert_eq!(inputs, 3);
            assert_eq!(inputs_sha256, hex(&listing));
            assert_eq!(output_key, "out/result.jsonl");
            assert_eq!(output_version_id, out.version_id);
            assert_eq!(output_sha256, out.sha256);
        }
        other => panic!("the last entry is {other:?}"),
    }
    assert_eq!(record.actor.as_deref(), Some("@admin"));

    // A rerun does not read its own earlier output even when it lies under the prefix.
    let mut s = spec(WORD_COUNT, "");
    s.output = Some("out/result.jsonl".into());
    let again = wait(&jobs, &jobs.submit(s, None).unwrap().id).await;
    assert_eq!(again.tasks_total, 3, "{again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_failing_task_fails_the_job_with_its_object_named() {
    let t = testkit::archive_with_bucket(4, "data").await;
    for i in 0..4 {
        t.archive
            .put_bytes(
                "data",
                &format!("in/{i}"),
                Bytes::from(format!("{i}\n")),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let jobs = Jobs::new(t.archive.clone(), 2);
    let code = r#"function map(line) if line == "2" then error("bad record " .. line) end emit(line, 1) end"#;
    let info = wait(&jobs, &jobs.submit(spec(code, "in/"), None).unwrap().id).await;
    assert_eq!(info.state, JobState::Failed);
    let e = info.error.unwrap();
    assert!(e.contains("in/2") && e.contains("bad record 2"), "{e}");
    assert!(info.output.is_none());
}

/// An incremental rerun runs only the inputs that changed (new, rewritten) and drops
/// deleted ones, and its result equals a full run's; other code runs everything again.
#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_rerun_runs_only_changed_inputs_and_equals_a_full_run() {
    let t = testkit::archive_with_bucket(3, "data").await;
    let a = &t.archive;
    let put = |key: &str, body: &str| {
        let (key, body) = (key.to_string(), body.to_string());
        async move {
            a.put_bytes("data", &key, Bytes::from(body), PutOptions::default())
                .await
                .unwrap();
        }
    };
    for i in 0..5 {
        put(&format!("in/{i}.txt"), &format!("a b\nc {i}\n")).await;
    }
    let jobs = Jobs::new(a.clone(), 2);
    let run = |incremental: bool, code: &str, output: &str| {
        let mut s = spec(code, "in/");
        s.incremental = incremental;
        s.output = Some(output.into());
        let id = jobs.submit(s, None).unwrap().id;
        let jobs = jobs.clone();
        async move { wait(&jobs, &id).await }
    };
    let body = |key: &str| {
        let key = key.to_string();
        async move {
            String::from_utf8(
                a.get_bytes("data", &key, &VersionSel::Latest)
                    .await
                    .unwrap(),
            )
            .unwrap()
        }
    };
    let first = run(true, WORD_COUNT, "out/inc.jsonl").await;
    assert_eq!((first.tasks_done, first.tasks_reused), (5, 0), "{first:?}");

    put("in/1.txt", "a a a\n").await; // changed
    put("in/9.txt", "z\n").await; // new
    a.delete("data", "in/3.txt", None).await.unwrap(); // gone
    let second = run(true, WORD_COUNT, "out/inc.jsonl").await;
    assert_eq!(second.state, JobState::Succeeded, "{second:?}");
    assert_eq!(
        (second.tasks_total, second.tasks_reused),
        (5, 3),
        "{second:?}"
    );
    assert_eq!(
        second.records, 2,
        "only the changed and the new input were read"
    );
    let full = run(false, WORD_COUNT, "out/full.jsonl").await;
    assert_eq!(full.tasks_reused, 0);
    assert_eq!(body("out/inc.jsonl").await, body("out/full.jsonl").await);
    assert!(
        body("out/inc.jsonl")
            .await
            .contains("{\"key\":\"a\",\"value\":6}")
    );

    // Other code: nothing is reused. No output key: refused.
    let other = format!("{WORD_COUNT}\n-- changed");
    let third = run(true, &other, "out/inc.jsonl").await;
    assert_eq!(third.tasks_reused, 0, "{third:?}");
    let mut s = spec(WORD_COUNT, "in/");
    s.incremental = true;
    s.output = None;
    assert!(matches!(
        jobs.submit(s, None),
        Err(jobs::JobError::Invalid(_))
    ));
}

/// With records kept, a restarted node still knows its finished jobs (state, output,
/// logs), and a job that was running when it stopped comes back as failed.
#[tokio::test(flavor = "multi_thread")]
async fn job_records_outlive_a_restart() {
    let t = testkit::archive_with_bucket(3, "data").await;
    t.archive
        .put_bytes("data", "in/a", Bytes::from("x y\n"), PutOptions::default())
        .await
        .unwrap();
    let dir = t.dir.path().join("jobs");
    let jobs = Jobs::with_records(t.archive.clone(), 2, dir.clone()).unwrap();
    let code = "function map(l) log('saw ' .. l) emit(l, 1) end";
    let done = wait(&jobs, &jobs.submit(spec(code, "in/"), None).unwrap().id).await;
    assert_eq!(done.state, JobState::Succeeded);
    let mut slow = spec("function map() while true do end end", "in/");
    slow.output = Some("out/slow.jsonl".into());
    let running = jobs.submit(slow, None).unwrap().id;
    // The node "restarts" while that job runs: its record says running.

    let again = Jobs::with_records(t.archive.clone(), 2, dir).unwrap();
    let back = again.get(&done.id).unwrap();
    assert_eq!(back.state, JobState::Succeeded);
    assert_eq!(back.output, done.output);
    assert_eq!(again.logs(&done.id).unwrap(), vec!["[in/a] saw x y"]);
    let lost = again.get(&running).unwrap();
    assert_eq!(lost.state, JobState::Failed);
    assert!(lost.error.unwrap().contains("run it again"));
    assert_eq!(again.list().len(), 2);
    jobs.cancel(&running); // so the test does not wait for the endless loop
}
