//! The NATS fixture itself (tests/support/nats.rs): the server it starts speaks JetStream
//! (work-queue stream, file storage, `Nats-Msg-Id` dedupe), and `restart` keeps what was
//! stored. Skipped without a `nats-server` (see the fixture).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

use crate::nats::NatsServer;

/// Bound of every JetStream request and fetch here.
const WAIT: Duration = Duration::from_secs(10);

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

async fn connect(server: &NatsServer) -> jetstream::Context {
    let client = async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", server.url(), server.log()));
    let mut context = jetstream::new(client);
    context.set_timeout(WAIT);
    context
}

/// A work-queue stream on file storage, as the cluster executor uses them.
async fn work_queue(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "TASKS".into(),
        subjects: vec!["tasks.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create the work-queue stream")
}

async fn publish_once(js: &jetstream::Context, id: &str, payload: &'static str) -> bool {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers("tasks.run", headers, payload.into())
        .await
        .expect("publish")
        .await
        .expect("the publish's ack")
        .duplicate
}

#[test]
fn jetstream_answers_and_dedupes_by_message_id() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    block_on(async {
        let js = connect(&server).await;
        let mut stream = work_queue(&js).await;
        assert!(!publish_once(&js, "task-1", "first").await);
        assert!(
            publish_once(&js, "task-1", "again").await,
            "the second publish with the same Nats-Msg-Id is a duplicate"
        );
        let info = stream.info().await.expect("stream info");
        assert_eq!(info.state.messages, 1, "the duplicate was not stored");
    });
}

#[test]
fn restart_keeps_a_stored_message() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let port = server.port();
    let pid = server.pid();
    block_on(async {
        let js = connect(&server).await;
        work_queue(&js).await;
        publish_once(&js, "task-1", "kept").await;
    });

    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), pid, "a new process");

    block_on(async {
        let js = connect(&server).await;
        let stream = js.get_stream("TASKS").await.expect("the stream survives");
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("worker".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("create a pull consumer");
        let mut messages = consumer
            .batch()
            .max_messages(1)
            .expires(WAIT)
            .messages()
            .await
            .expect("fetch");
        let message = messages
            .next()
            .await
            .unwrap_or_else(|| panic!("no message after the restart\n{}", server.log()))
            .expect("a message");
        assert_eq!(&message.payload[..], b"kept");
        message.ack().await.expect("ack");
    });
}
