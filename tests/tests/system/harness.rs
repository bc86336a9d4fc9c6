//! Proves the harness itself: a real nats-server with JetStream that survives kill -9.
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use tests::NatsServer;

async fn fetch_all(consumer: &jetstream::consumer::PullConsumer, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out; got {} of {want}",
            got.len()
        );
        let mut batch = consumer
            .fetch()
            .max_messages(want - got.len())
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        while let Some(msg) = batch.next().await {
            let msg = msg.expect("message");
            got.push(String::from_utf8(msg.payload.to_vec()).unwrap());
            msg.double_ack().await.expect("ack");
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_messages_are_read_back_through_a_durable_and_survive_kill_9() {
    let mut nats = NatsServer::start();
    let js = crate::js(&nats.url()).await;
    let stream = js
        .create_stream(stream::Config {
            name: "HARNESS".into(),
            subjects: vec!["harness.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("stream");
    for i in 0..100 {
        js.publish(format!("harness.{i}"), format!("m{i}").into())
            .await
            .unwrap()
            .await
            .expect("publish ack");
    }
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("reader".into()),
            ..Default::default()
        })
        .await
        .expect("durable");
    let first = fetch_all(&consumer, 40).await;
    assert_eq!(first, (0..40).map(|i| format!("m{i}")).collect::<Vec<_>>());

    nats.kill();
    nats.start_again();

    let js = crate::js(&nats.url()).await;
    let stream = js
        .get_stream("HARNESS")
        .await
        .expect("stream survives kill -9");
    assert_eq!(
        stream.get_info().await.unwrap().state.messages,
        100,
        "no acknowledged publish lost"
    );
    let mut consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer("reader")
        .await
        .expect("durable survives");
    // Acks are at-least-once: JetStream persists consumer state lazily, so a kill -9 may forget
    // the last acks and redeliver some of m0..m39. What must hold: every unacked message is
    // delivered, in order, and the durable never skips ahead.
    let pending = consumer.info().await.unwrap().num_pending as usize;
    let rest = fetch_all(&consumer, pending).await;
    assert_eq!(rest.last().map(String::as_str), Some("m99"));
    let first: usize = rest[0][1..].parse().unwrap();
    assert!(
        first <= 40,
        "the durable skipped unacked messages: resumed at m{first}"
    );
    assert_eq!(
        rest,
        (first..100).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "contiguous and in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_port_and_the_store() {
    let mut nats = NatsServer::start();
    let port = nats.port();
    let js = crate::js(&nats.url()).await;
    js.create_stream(stream::Config {
        name: "KEEP".into(),
        subjects: vec!["keep".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish("keep", "x".into()).await.unwrap().await.unwrap();
    nats.restart();
    assert_eq!(nats.port(), port);
    let js = crate::js(&nats.url()).await;
    assert_eq!(crate::stream_messages(&js, "KEEP").await, 1);
}
