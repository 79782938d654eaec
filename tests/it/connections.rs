//! Slow, idle and too many clients, over real TCP: a client that dribbles its
//! headers is cut off at the header read timeout, an idle keep-alive connection at
//! the idle timeout, a busy one never, and past the connection bound new
//! connections wait until one closes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, data_dir, test_config};

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

async fn app_with(dir: &std::path::Path, edit: impl FnOnce(&mut event_aggregator::Config)) -> TestApp {
    let mut config = test_config(dir);
    edit(&mut config);
    TestApp::spawn_with(config).await
}

/// Read one response (enough for `/health`), or `None` if nothing comes in `wait`.
async fn response(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

/// True once the server has closed the connection (EOF or reset) within `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(limit, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dribbling_its_headers_is_cut_off() {
    let dir = data_dir();
    let app = app_with(dir.path(), |c| c.header_read_timeout_ms = 300).await;
    let mut slow = TcpStream::connect(app.app.addr).await.unwrap();
    let started = Instant::now();
    let mut cut = false;
    // One byte every 100 ms, never finishing the headers.
    for byte in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if slow.write_all(&[*byte]).await.is_err()
            || closed_within(&mut slow, Duration::from_millis(100)).await
        {
            cut = true;
            break;
        }
    }
    assert!(cut, "still open after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(2), "cut near the 300 ms limit: {:?}", started.elapsed());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let dir = data_dir();
    let app = app_with(dir.path(), |c| c.idle_timeout_ms = 1000).await;
    let mut busy = TcpStream::connect(app.app.addr).await.unwrap();
    let mut idle = TcpStream::connect(app.app.addr).await.unwrap();
    idle.write_all(GET_HEALTH).await.unwrap();
    assert!(response(&mut idle, Duration::from_secs(5)).await.is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    // Fifteen requests 100 ms apart on one connection: never idle for 1 s.
    for i in 0..15 {
        busy.write_all(GET_HEALTH).await.unwrap();
        let answer = response(&mut busy, Duration::from_secs(5)).await;
        assert!(answer.is_some_and(|r| r.starts_with("HTTP/1.1 200")), "request {i} on the busy connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await, "the idle one is closed");
    app.shutdown().await;
}

/// A client that connects and sends nothing gets the header timeout, not the
/// (longer) idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_new_connection_is_cut_at_the_header_timeout() {
    let dir = data_dir();
    let app = app_with(dir.path(), |c| {
        c.header_read_timeout_ms = 300;
        c.idle_timeout_ms = 60_000;
    })
    .await;
    let mut silent = TcpStream::connect(app.app.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await, "closed well before the idle timeout");
    app.shutdown().await;
}

/// A connection whose response bytes keep going out is not idle: a large page
/// read slowly, over longer than the idle timeout, is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowly_read_response_is_not_cut_at_the_idle_timeout() {
    let dir = data_dir();
    let app = app_with(dir.path(), |c| c.idle_timeout_ms = 2000).await;
    let filler = "x".repeat(60_000);
    let events: Vec<serde_json::Value> = (0..200)
        .map(|i| serde_json::json!({"topic": "big", "event_id": i.to_string(), "payload": {"f": filler}}))
        .collect();
    assert_eq!(app.publish(&serde_json::Value::Array(events)).await.0, reqwest::StatusCode::OK);
    let mut slow = TcpStream::connect(app.app.addr).await.unwrap();
    slow.write_all(b"GET /events?topic=big HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    // ~12 MB at 64 KiB per 15 ms: about 3 s, against a 2 s idle timeout.
    while total < 12_000_000 {
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the connection was cut after {total} bytes");
        total += n;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_bound_a_new_connection_waits_for_a_free_one() {
    let dir = data_dir();
    let app = app_with(dir.path(), |c| c.max_connections = 2).await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.app.addr).await.unwrap();
        s.write_all(GET_HEALTH).await.unwrap();
        assert!(response(&mut s, Duration::from_secs(5)).await.is_some());
        open.push(s);
    }
    let mut third = TcpStream::connect(app.app.addr).await.unwrap(); // the kernel's backlog takes it
    third.write_all(GET_HEALTH).await.unwrap();
    assert!(response(&mut third, Duration::from_millis(500)).await.is_none(), "not served past the bound");
    drop(open.pop());
    let answer = response(&mut third, Duration::from_secs(5)).await;
    assert!(answer.is_some_and(|r| r.starts_with("HTTP/1.1 200")), "served once a connection closed");
    app.shutdown().await;
}
