//! Bearer-token authentication (CONTRACT.md "Authentication"): with `AUTH_TOKEN`
//! (or `AUTH_TOKEN_FILE`) set, the data routes need the token, get 401 with
//! `WWW-Authenticate: Bearer` without it, and store or count nothing; the probe,
//! the docs and the status page stay open. Unset, everything is open (every other
//! test runs that way).

use reqwest::StatusCode;
use serde_json::json;
use tokio::process::Command;

use crate::helpers::{TestApp, data_dir, event, json_response, test_config};

const TOKEN: &str = "s3cret-token";

async fn protected_app(dir: &std::path::Path) -> TestApp {
    TestApp::spawn_with(event_aggregator::Config { auth_token: Some(TOKEN.into()), ..test_config(dir) }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_routes_need_the_token_and_a_refusal_changes_nothing() {
    let dir = data_dir();
    let app = protected_app(dir.path()).await;
    for auth in [None, Some("Bearer wrong"), Some("Basic s3cret-token"), Some("s3cret-token")] {
        let mut req = app.client.post(app.url("/publish")).json(&json!([event("a", "1")]));
        if let Some(value) = auth {
            req = req.header("authorization", value);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap()), Some("Bearer"));
        let (status, body) = json_response(resp).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{auth:?}"
        );
    }
    for path in ["/events", "/stats", "/metrics"] {
        assert_eq!(app.get(path).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/health", "/", "/openapi.json", "/docs/"] {
        assert_eq!(app.client.get(app.url(path)).send().await.unwrap().status(), StatusCode::OK, "{path}");
    }

    let bearer = format!("Bearer {TOKEN}");
    let stats = app.client.get(app.url("/stats")).header("authorization", &bearer).send().await.unwrap();
    let (status, stats) = json_response(stats).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (stats["received"].as_u64(), stats["topics"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "{stats}"
    );
    let req = app.client.post(app.url("/publish")).header("authorization", &bearer).json(&event("a", "1"));
    let (status, body) = json_response(req.send().await.unwrap()).await;
    assert_eq!(
        (status, body["stored"].as_u64()),
        (StatusCode::OK, Some(1)),
        "the refused tries stored nothing"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_can_come_from_a_file() {
    let dir = data_dir();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let config = event_aggregator::Config { auth_token_file: Some(file), ..test_config(dir.path()) };
    let app = TestApp::spawn_with(config).await;
    assert_eq!(app.get("/stats").await.0, StatusCode::UNAUTHORIZED);
    let resp = app.client.get(app.url("/stats")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the file's trailing newline is not part of the token");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_sends_the_token_and_the_spec_declares_it() {
    let dir = data_dir();
    let app = protected_app(dir.path()).await;
    let output = Command::new(env!("CARGO_BIN_EXE_publisher"))
        .args(["--url", &app.base, "--events", "300", "--batch-size", "10", "--json"])
        .env("AUTH_TOKEN", TOKEN)
        .output()
        .await
        .expect("publisher runs");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert!(output.status.success(), "{report:#}");
    assert_eq!(report["acknowledged_events"], 300);

    let (_, spec) = app.get("/openapi.json").await;
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(spec["paths"]["/publish"]["post"]["security"], json!([{"bearer": []}, {}]));
    assert!(spec["paths"]["/health"]["get"]["security"].is_null(), "the probe is open");
    app.shutdown().await;
}
