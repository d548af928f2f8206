//! The cluster executor against a real NATS JetStream server (tests/support/nats.rs).

use std::time::Duration;

use wasmpool::cluster::{ClusterExecutor, ClusterWorker};
use wasmpool::{Executor, TaskErrorKind};

use crate::common::{call, fixtures};
use crate::nats::NatsServer;

#[test]
fn smoke_results_equal_the_thread_pools() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let worker = ClusterWorker::builder(server.url())
        .workers(2)
        .start()
        .expect("worker");
    let cluster = ClusterExecutor::connect(&server.url()).expect("cluster");
    let calls: Vec<_> = (0..50)
        .map(|i| call(fixtures(), &format!("add({i}, 1)")))
        .collect();
    let results: Vec<i64> = cluster
        .map(calls)
        .expect("map")
        .map(|r| r.expect("ok").as_i64().expect("int"))
        .collect();
    assert_eq!(results, (1..=50).collect::<Vec<i64>>());
    let chunked: Vec<_> = (0..1000)
        .map(|i| call(fixtures(), &format!("add({i}, 1)")))
        .collect();
    let sum: i64 = cluster
        .map_chunked(chunked, 100)
        .expect("map")
        .map(|r| r.expect("ok").as_i64().expect("int"))
        .sum();
    assert_eq!(sum, (1..=1000).sum::<i64>());
    let f = cluster
        .submit(call(fixtures(), "loop-forever()"))
        .expect("submit");
    f.wait_started(Duration::from_secs(30)).expect("started");
    assert!(f.abort());
    let _ = TaskErrorKind::Refused;
    drop(cluster);
    worker.stop();
    let summary = worker.join().expect("join");
    assert!(summary.tasks >= 1050, "{summary:?}");
}
