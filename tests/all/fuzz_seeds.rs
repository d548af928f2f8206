//! The fuzz targets' seed corpora (`fuzz/seeds/<target>/`): they are exactly what the
//! generator (`wasmpool::fuzzing::seed_corpora`, made with the real encoders) produces, and
//! replayed through the targets' entry points each one reaches the checks those run.
//!
//! `WASMPOOL_WRITE_SEEDS=1 cargo test --test all fuzz_seeds` rewrites the committed seeds.
#![cfg(unix)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use wasmpool::fuzzing::{
    Reached, Seed, load_component, parent_stream, seed_corpora, wave_args, worker_stream,
};

const REGENERATE: &str = "WASMPOOL_WRITE_SEEDS=1 cargo test --test all fuzz_seeds";

/// With `WASMPOOL_WRITE_SEEDS=1`, the generated seeds are written to `fuzz/seeds/` once,
/// before any test reads that directory.
static WRITTEN: OnceLock<()> = OnceLock::new();

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

type Corpora = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// The files of `fuzz/seeds/`, by target directory and name (written first if asked to).
fn committed() -> Corpora {
    WRITTEN.get_or_init(|| {
        if std::env::var_os("WASMPOOL_WRITE_SEEDS").is_some_and(|v| v == "1") {
            write(&generated());
        }
    });
    let mut corpora = Corpora::new();
    let seeds = fuzz_dir().join("seeds");
    for dir in std::fs::read_dir(&seeds).unwrap() {
        let dir = dir.unwrap();
        assert!(dir.file_type().unwrap().is_dir(), "{:?}", dir.path());
        let files = corpora
            .entry(dir.file_name().into_string().unwrap())
            .or_default();
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let file = file.unwrap();
            let name = file.file_name().into_string().unwrap();
            files.insert(name, std::fs::read(file.path()).unwrap());
        }
    }
    corpora
}

fn generated() -> Corpora {
    let mut corpora = Corpora::new();
    for Seed {
        target,
        name,
        bytes,
    } in seed_corpora()
    {
        let files = corpora.entry(target.to_string()).or_default();
        let again = files.insert(name.clone(), bytes);
        assert!(again.is_none(), "two seeds of {target} are named {name}");
    }
    corpora
}

/// Rewrites `fuzz/seeds/` to hold exactly the generated seeds.
fn write(corpora: &Corpora) {
    let seeds = fuzz_dir().join("seeds");
    for (target, files) in corpora {
        let dir = seeds.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for old in std::fs::read_dir(&dir).unwrap() {
            let old = old.unwrap();
            let name = old.file_name().into_string().unwrap();
            if !files.contains_key(&name) {
                std::fs::remove_file(old.path()).unwrap();
            }
        }
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

/// What differs between two corpora, one line per seed.
fn differences(committed: &Corpora, generated: &Corpora) -> Vec<String> {
    let empty = BTreeMap::new();
    let targets: BTreeSet<&String> = committed.keys().chain(generated.keys()).collect();
    let mut out = Vec::new();
    for target in targets {
        let have = committed.get(target).unwrap_or(&empty);
        let want = generated.get(target).unwrap_or(&empty);
        for name in have.keys().chain(want.keys()).collect::<BTreeSet<_>>() {
            match (have.get(name), want.get(name)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(_), Some(_)) => out.push(format!("{target}/{name}: differs")),
                (Some(_), None) => out.push(format!("{target}/{name}: not generated")),
                (None, _) => out.push(format!("{target}/{name}: missing")),
            }
        }
    }
    out
}

#[test]
fn committed_seeds_are_the_generated_ones() {
    let stale = differences(&committed(), &generated());
    assert!(
        stale.is_empty(),
        "fuzz/seeds/ is not what the seed generator (wasmpool::fuzzing::seed_corpora) \
         makes:\n  {}\nregenerate with `{REGENERATE}`",
        stale.join("\n  ")
    );
}

#[test]
fn the_comparison_of_corpora_sees_every_change() {
    let mut a = Corpora::new();
    a.entry("t".into())
        .or_default()
        .insert("x".into(), vec![1, 2]);
    assert!(differences(&a, &a).is_empty());
    let mut changed = a.clone();
    changed.get_mut("t").unwrap().insert("x".into(), vec![1, 3]);
    assert_eq!(differences(&a, &changed), ["t/x: differs"]);
    let mut more = a.clone();
    more.get_mut("t").unwrap().insert("y".into(), Vec::new());
    assert_eq!(differences(&more, &a), ["t/y: not generated"]);
    assert_eq!(differences(&a, &more), ["t/y: missing"]);
    assert_eq!(differences(&Corpora::new(), &a), ["t/x: missing"]);
}

/// The kinds of error a RESULT frame carries, as `Reached` names them.
const ERROR_KINDS: [&str; 15] = [
    "failed",
    "trap",
    "timeout",
    "out-of-fuel",
    "memory-limit",
    "stack-overflow",
    "cancelled",
    "broken-pool",
    "start",
    "panic",
    "fuel-not-enabled",
    "no-instance-slot",
    "unreturnable",
    "component-unavailable",
    "incompatible",
];

/// Checks one replayed frame stream: every frame read decoded and passed the round-trip
/// checks (and, for a worker's, the greeting did). Returns what it reached.
fn assert_all_checked(seed: &str, reached: &Reached, greeting: bool) -> Vec<String> {
    assert_eq!(
        reached.greeting, greeting,
        "{seed}: greeting, in {reached:?}"
    );
    assert!(reached.frames > 0 || greeting, "{seed}: no frame in it");
    assert_eq!(
        reached.round_trips.len(),
        reached.frames + usize::from(greeting),
        "{seed}: not every message reached the round-trip check: {reached:?}"
    );
    reached.round_trips.clone()
}

#[test]
fn every_seed_replays_and_reaches_the_checks() {
    let corpora = committed();

    // One directory per fuzz target, and a seed directory for every target.
    let targets: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|f| {
            let name = f.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").unwrap().to_string()
        })
        .collect();
    assert_eq!(
        corpora.keys().cloned().collect::<BTreeSet<_>>(),
        targets,
        "fuzz/seeds/ should hold one directory per target in fuzz/fuzz_targets/"
    );

    let mut reached: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for (target, files) in &corpora {
        assert!(!files.is_empty(), "fuzz/seeds/{target}/ is empty");
        counts.insert(target.as_str(), files.len());
        for (name, bytes) in files {
            let seed = format!("fuzz/seeds/{target}/{name}");
            let labels = match target.as_str() {
                "worker_frames" => assert_all_checked(&seed, &worker_stream(bytes), true),
                "parent_frames" => assert_all_checked(&seed, &parent_stream(bytes), false),
                "wave_args" => {
                    assert!(wave_args(bytes), "{seed}: its arguments do not parse");
                    vec!["parsed".to_string()]
                }
                "load_component" => {
                    let loads = load_component(bytes);
                    let expected = name != "core-module";
                    assert_eq!(loads, expected, "{seed}: loads");
                    vec![format!("loads: {loads}")]
                }
                other => panic!("no entry point for the seeds of {other}"),
            };
            reached.entry(target.as_str()).or_default().extend(labels);
        }
    }

    // Together, the seeds reach every message kind's round-trip check, and a RESULT of
    // every outcome.
    let mut worker = vec![
        "HELLO".to_string(),
        "OUTPUT".to_string(),
        "RESULT ok".to_string(),
    ];
    worker.extend(ERROR_KINDS.iter().map(|k| format!("RESULT {k}")));
    let parent = ["SETUP", "LOAD", "TASK", "ABORT"].map(String::from);
    for (target, want) in [
        ("worker_frames", &worker[..]),
        ("parent_frames", &parent[..]),
    ] {
        let missing: Vec<&String> = want
            .iter()
            .filter(|k| !reached[target].contains(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "no seed of {target} reaches the round-trip check of {missing:?}"
        );
    }
    assert_eq!(
        reached["load_component"],
        BTreeSet::from(["loads: true".to_string(), "loads: false".to_string()])
    );
    // Enough seeds of each shape that one lost from the generator shows.
    assert!(counts["worker_frames"] >= 40, "{counts:?}");
    assert!(counts["parent_frames"] >= 40, "{counts:?}");
    assert!(counts["wave_args"] >= 20, "{counts:?}");
}

/// The replay's measure tells a seed that reaches the checks from one that does not.
#[test]
fn a_broken_stream_does_not_count_as_reaching_the_checks() {
    let seeds = seed_corpora();
    let seed = |target: &str, name: &str| {
        seeds
            .iter()
            .find(|s| s.target == target && s.name == name)
            .unwrap_or_else(|| panic!("no seed {target}/{name}"))
            .bytes
            .clone()
    };

    let session = seed("worker_frames", "session");
    let whole = worker_stream(&session);
    assert!(whole.greeting);
    assert_eq!(
        whole.round_trips,
        [
            "HELLO",
            "OUTPUT",
            "RESULT ok",
            "OUTPUT",
            "RESULT out-of-fuel",
            "RESULT ok"
        ]
    );
    assert_eq!(whole.frames, 5);

    // Cut short: the last frame is not read whole.
    let cut = worker_stream(&session[..session.len() - 1]);
    assert_eq!((cut.frames, cut.round_trips.len()), (4, 5));

    // A frame read whole that does not decode (a RESULT with an unknown outcome byte)
    // counts as a frame but not as a check reached.
    let mut bad = seed("worker_frames", "result-ok-u32");
    let outcome = 21 + 5 + 1; // greeting, frame header, task id 7 (one byte)
    assert_eq!(bad[outcome], 0, "the outcome byte of an ok result");
    bad[outcome] = 9;
    let got = worker_stream(&bad);
    assert_eq!((got.greeting, got.frames), (true, 1));
    assert_eq!(got.round_trips, ["HELLO"]);

    // A greeting of another protocol version: the frames after it are still read and
    // checked, the greeting does not count.
    let mut other_version = session.clone();
    other_version[13] = 7;
    let got = worker_stream(&other_version);
    assert!(!got.greeting);
    assert_eq!((got.frames, got.round_trips.len()), (5, 5));

    // A parent's frames of the wrong direction are read but not decoded.
    let wrong_way = parent_stream(&session[21..]);
    assert_eq!((wrong_way.frames, wrong_way.round_trips.len()), (5, 0));

    // WAVE arguments of the wrong type (a string for `add`'s s32) do not count.
    let mut wave = seed("wave_args", "seed-0");
    assert_eq!(&wave[1..], b"1, 2");
    assert!(wave_args(&wave));
    wave.truncate(1);
    wave.extend_from_slice(b"1, \"two\"");
    assert!(!wave_args(&wave));
}

/// The round-trip check compares decoded fields, not bytes: a frame in a non-canonical
/// encoding (an ABORT whose task id, 5, is padded to two LEB128 bytes) still reaches it.
#[test]
fn a_non_canonical_frame_round_trips_by_its_fields() {
    let padded = [3, 0, 0, 0, 19, 0x85, 0x00];
    let reached = parent_stream(&padded);
    assert_eq!(
        (reached.frames, &reached.round_trips[..]),
        (1, &["ABORT".to_string()][..])
    );
    // And the canonical one is the committed seed `abort`.
    let canonical = [2, 0, 0, 0, 19, 5];
    assert!(
        seed_corpora()
            .iter()
            .any(|s| s.target == "parent_frames" && s.name == "abort" && s.bytes == canonical)
    );
}
