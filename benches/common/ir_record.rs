//! The last instruction counts per task, kept in `benches/INSTRUCTIONS.json`: written by
//! `cargo bench --bench instructions` (each scenario it measured replaces its entry), read
//! by `cargo bench --bench compare`, which prints them beside the performance goals'
//! ratios in RESULTS.md. Counts repeat within 1% from run to run (see `instructions.rs`),
//! so the last ones measured are quoted with their date and commit.

use std::path::Path;

/// Where the counts are kept.
pub const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/INSTRUCTIONS.json");

/// One count: instructions per task of `scenario`'s `side`, and when and on what it was
/// measured.
#[derive(Debug, Clone)]
pub struct Count {
    pub ir: f64,
    pub date: String,
    pub commit: String,
}

/// The key of a scenario's side: `"thread-fresh all threads"`, `"process-fresh worker"`.
pub fn key(scenario: &str, side: &str) -> String {
    format!("{scenario} {side}")
}

/// Every count kept, by key; empty when the file is missing or unreadable.
pub fn read() -> std::collections::BTreeMap<String, Count> {
    read_from(Path::new(PATH))
}

fn read_from(path: &Path) -> std::collections::BTreeMap<String, Count> {
    let json: Option<serde_json::Value> = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let Some(serde_json::Value::Object(entries)) = json else {
        return Default::default();
    };
    entries
        .into_iter()
        .filter_map(|(key, entry)| {
            let text = |field: &str| entry.get(field)?.as_str().map(str::to_string);
            let count = Count {
                ir: entry.get("ir")?.as_f64()?,
                date: text("date")?,
                commit: text("commit")?,
            };
            Some((key, count))
        })
        .collect()
}

/// Replaces (or adds) the counts of `measured`, keeping the others; the date and commit
/// are now's and `HEAD`'s.
pub fn write(measured: &[(String, f64)]) -> std::io::Result<()> {
    let path = Path::new(PATH);
    let mut counts = read_from(path);
    let (date, commit) = (command_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]), head());
    for (key, ir) in measured {
        counts.insert(
            key.clone(),
            Count {
                ir: *ir,
                date: date.clone(),
                commit: commit.clone(),
            },
        );
    }
    let json: serde_json::Map<String, serde_json::Value> = counts
        .into_iter()
        .map(|(key, c)| {
            let entry =
                serde_json::json!({"ir": c.ir.round() as u64, "date": c.date, "commit": c.commit});
            (key, entry)
        })
        .collect();
    let json = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
    std::fs::write(path, json + "\n")
}

/// `HEAD`'s short hash, with `+` when the library's code (`host/`) differs from it;
/// `unknown` outside git.
fn head() -> String {
    let hash = command_line(&[
        "git",
        "-C",
        env!("CARGO_MANIFEST_DIR"),
        "rev-parse",
        "--short",
        "HEAD",
    ]);
    let dirty = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "diff",
            "--quiet",
            "HEAD",
            "--",
            "host",
        ])
        .status()
        .is_ok_and(|s| !s.success());
    if dirty { format!("{hash}+") } else { hash }
}

/// The first line a command prints, or `unknown`.
fn command_line(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}
