//! A task sees nothing of the host unless granted: files, environment variables, sockets.
//! Each is refused inside the guest (as a WASI error) without a grant, and works with one.

use wasmpool::{Capabilities, Executor, TaskError, TaskValue, ThreadPoolExecutor};

use crate::common::{SOON, call, fixtures};
use crate::escapes::refused;

/// The text of the WASI error a path outside every grant gets: to the guest, the host's
/// file does not exist.
const NOT_FOUND: &str = "No such file or directory";

/// The text of the WASI error a grant's limits give: a read-only grant written to, or a
/// path leaving a granted directory.
const NOT_PERMITTED: &str = "Operation not permitted";

fn run_with(caps: Capabilities, wave: &str) -> Result<TaskValue, TaskError> {
    let pool = ThreadPoolExecutor::builder()
        .workers(1)
        .capabilities(caps)
        .build()
        .unwrap();
    pool.submit(call(fixtures(), wave)).unwrap().result()
}

fn wave(s: &str) -> String {
    format!("{s:?}")
}

/// `result` is the guest's refusal with the WASI error whose text starts `error`.
fn refused_with(result: Result<TaskValue, TaskError>, error: &str, what: &str) {
    let message = refused(result, what);
    assert!(message.starts_with(error), "{what}: {message}");
}

#[test]
fn host_files_are_invisible_without_a_grant() {
    refused_with(
        run_with(Capabilities::default(), r#"read-file("/etc/passwd")"#),
        NOT_FOUND,
        "read /etc/passwd",
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let path = wave(secret.to_str().unwrap());
    refused_with(
        run_with(Capabilities::default(), &format!("read-file({path})")),
        NOT_FOUND,
        "read an existing host file by its absolute path",
    );
}

#[test]
fn a_granted_directory_is_readable_and_read_only_unless_stated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello from the host").unwrap();
    let ro = Capabilities::default().dir(dir.path(), "/data");
    let v = run_with(ro.clone(), r#"read-file("/data/in.txt")"#).unwrap();
    assert_eq!(v.as_str(), Some("hello from the host"));
    refused_with(
        run_with(ro, r#"write-file("/data/out.txt", "x")"#),
        NOT_PERMITTED,
        "write into a read-only grant",
    );
    assert!(!dir.path().join("out.txt").exists());

    let rw = Capabilities::default().dir_writable(dir.path(), "/data");
    run_with(rw, r#"write-file("/data/out.txt", "written by a task")"#).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "written by a task"
    );
}

#[test]
fn dot_dot_does_not_leave_a_granted_directory() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("outside.txt"), "not yours").unwrap();
    let inner = outer.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(inner.join("inside.txt"), "yours").unwrap();
    let caps = Capabilities::default().dir(&inner, "/data");
    // The grant works: the refusals below are about the path.
    let v = run_with(caps.clone(), r#"read-file("/data/inside.txt")"#).unwrap();
    assert_eq!(v.as_str(), Some("yours"));
    refused_with(
        run_with(caps.clone(), r#"read-file("/data/../outside.txt")"#),
        NOT_PERMITTED,
        "read with ..",
    );
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outer.path().join("outside.txt"), inner.join("link")).unwrap();
        refused_with(
            run_with(caps, r#"read-file("/data/link")"#),
            NOT_PERMITTED,
            "read through a symlink out of the grant",
        );
    }
}

#[test]
fn environment_variables_only_when_granted() {
    // The test process has PATH; the guest must not see it.
    assert!(std::env::var("PATH").is_ok());
    let v = run_with(Capabilities::default(), r#"get-env("PATH")"#).unwrap();
    assert_eq!(v.to_wave(), "none");
    let v = run_with(
        Capabilities::default().env("GREETING", "hi"),
        r#"get-env("GREETING")"#,
    )
    .unwrap();
    assert_eq!(v.to_wave(), r#"some("hi")"#);
}

#[test]
fn sockets_only_when_granted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = wave(&listener.local_addr().unwrap().to_string());
    refused_with(
        run_with(Capabilities::default(), &format!("tcp-connect({addr})")),
        "Permission denied",
        "connect without the grant",
    );
    assert_eq!(
        listener.accept().map(drop).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing reached the host without the grant"
    );
    let granted = run_with(
        Capabilities::default().network(true),
        &format!("tcp-connect({addr})"),
    );
    assert_eq!(granted, Ok(TaskValue::unit()), "connect with the grant");
    // The guest's connection is in the listener's backlog (accepted on another thread so
    // that a missing one fails within the bound instead of blocking the test).
    listener.set_nonblocking(false).unwrap();
    let (accepted, arrived) = std::sync::mpsc::channel();
    std::thread::spawn(move || accepted.send(listener.accept().map(|(_, peer)| peer)));
    let peer = arrived
        .recv_timeout(SOON)
        .expect("the guest's connection reaches the listener")
        .expect("accept");
    assert!(peer.ip().is_loopback(), "{peer}");
}

#[test]
fn arguments_come_from_the_grant_or_the_call() {
    let v = run_with(Capabilities::default(), "args()").unwrap();
    assert_eq!(v.to_wave(), "[]");
    let v = run_with(Capabilities::default().args(["prog", "-v"]), "args()").unwrap();
    assert_eq!(v.to_wave(), r#"["prog", "-v"]"#);
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let f = pool
        .submit(call(fixtures(), "args()").with_args(["task", "7"]))
        .unwrap();
    assert_eq!(f.result().unwrap().to_wave(), r#"["task", "7"]"#);
}
