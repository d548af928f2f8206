//! A task sees nothing of the host unless granted: files, environment variables, sockets.
//! Each is refused inside the guest (as a WASI error) without a grant, and works with one.

use wasmpool::{Capabilities, Executor, TaskError, TaskValue, ThreadPoolExecutor};

use crate::common::{call, fixtures};

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

#[test]
fn host_files_are_invisible_without_a_grant() {
    let err = run_with(Capabilities::default(), r#"read-file("/etc/passwd")"#).unwrap_err();
    assert_eq!(err.kind(), wasmpool::TaskErrorKind::Failed, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let path = wave(secret.to_str().unwrap());
    assert!(run_with(Capabilities::default(), &format!("read-file({path})")).is_err());
}

#[test]
fn a_granted_directory_is_readable_and_read_only_unless_stated() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "hello from the host").unwrap();
    let ro = Capabilities::default().dir(dir.path(), "/data");
    let v = run_with(ro.clone(), r#"read-file("/data/in.txt")"#).unwrap();
    assert_eq!(v.as_str(), Some("hello from the host"));
    let err = run_with(ro, r#"write-file("/data/out.txt", "x")"#).unwrap_err();
    assert_eq!(err.kind(), wasmpool::TaskErrorKind::Failed);
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
    let caps = Capabilities::default().dir(&inner, "/data");
    assert!(run_with(caps.clone(), r#"read-file("/data/../outside.txt")"#).is_err());
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outer.path().join("outside.txt"), inner.join("link")).unwrap();
        assert!(run_with(caps, r#"read-file("/data/link")"#).is_err());
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
    let err = run_with(Capabilities::default(), &format!("connect({addr})")).unwrap_err();
    assert_eq!(err.kind(), wasmpool::TaskErrorKind::Failed, "{err}");
    assert!(err.to_string().contains("ermission denied"), "{err}");
    assert_eq!(
        listener.accept().map(drop).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing reached the host without the grant"
    );
    // With the grant, the host no longer refuses: the error, if any, is not a denial.
    // (A Rust std guest on this toolchain then traps in wasi-libc's `free` before its
    // connection is made — a known issue, recorded in the fixture and the closing note.)
    let granted = run_with(
        Capabilities::default().network(true),
        &format!("connect({addr})"),
    );
    assert!(
        !format!("{granted:?}").contains("ermission denied"),
        "{granted:?}"
    );
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
