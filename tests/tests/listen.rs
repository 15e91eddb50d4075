//! LISTEN/NOTIFY against a real server, on both pool backends: notifications arrive in order
//! on a dedicated connection; after the server terminates that connection, the stream reports
//! the gap and later notifications arrive again.

use std::time::Duration;

use futures_util::StreamExt;
use pgdbm::{BoxStream, Database, ListenEvent, Pool};
use pgdbm_integration_tests::{both_backends, fresh_config};

/// The next event, waiting at most 20 s (a hang fails the test instead of blocking it).
async fn next_event(stream: &mut BoxStream<ListenEvent>) -> ListenEvent {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("no event within 20 s")
        .expect("the stream ended")
        .expect("the stream failed")
}

async fn notifications_arrive_in_order_and_survive_a_terminated_listener<P: Pool>() {
    let config = fresh_config("listen").unwrap();
    let database = config.database.clone();
    let db = Database::<P>::connect(config).await.unwrap();
    let before = db.pool_stats().size;
    let mut stream = db.listen(&["jobs", "Other Channel"]).await.unwrap();
    // The listener is its own connection, not one of the pool's.
    assert_eq!(db.pool_stats().size, before);

    for i in 0..50 {
        db.notify("jobs", &format!("job {i}")).await.unwrap();
    }
    db.notify("Other Channel", "x").await.unwrap();
    for i in 0..50 {
        match next_event(&mut stream).await {
            ListenEvent::Notification(n) => {
                assert_eq!(
                    (n.channel.as_str(), n.payload.clone()),
                    ("jobs", format!("job {i}"))
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    match next_event(&mut stream).await {
        ListenEvent::Notification(n) => assert_eq!(n.channel, "Other Channel"),
        other => panic!("unexpected {other:?}"),
    }

    // Terminate the listening session on the server.
    let killed: Option<i64> = db
        .fetch_value(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%') t",
            &[&database],
        )
        .await
        .unwrap();
    assert_eq!(killed, Some(1), "exactly one listening session");
    match next_event(&mut stream).await {
        ListenEvent::Reconnected { reason, .. } => {
            assert!(
                reason.contains("57P01") || reason.contains("terminat"),
                "{reason}"
            )
        }
        other => panic!("expected the gap to be reported, got {other:?}"),
    }
    // Listening again on every channel: later notifications arrive, in order.
    db.notify("Other Channel", "after").await.unwrap();
    db.notify("jobs", "after 1").await.unwrap();
    db.notify("jobs", "after 2").await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        match next_event(&mut stream).await {
            ListenEvent::Notification(n) => got.push((n.channel, n.payload)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            ("Other Channel".to_string(), "after".to_string()),
            ("jobs".to_string(), "after 1".to_string()),
            ("jobs".to_string(), "after 2".to_string()),
        ]
    );
    drop(stream);
    db.close().await;
}
both_backends!(
    listen,
    notifications_arrive_in_order_and_survive_a_terminated_listener
);
