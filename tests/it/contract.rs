//! The HTTP contract (shared/CONTRACT.md), one behaviour per test.

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, counts, data_dir, event, test_config};

async fn app() -> (TestApp, tempfile::TempDir) {
    let dir = data_dir();
    (TestApp::spawn(dir.path()).await, dir)
}

async fn assert_nothing_stored(app: &TestApp) {
    assert_eq!(counts(&app.stats().await), (0, 0, 0));
    assert!(app.all_events(None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_event_is_accepted_and_readable() {
    let (app, _dir) = app().await;
    let (status, body) = app.publish(&event("sensor.room1.temp", "e-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "accepted", "received": 1, "accepted": 1, "stored": 1, "duplicates": 0,
               "duplicate_indices": []})
    );
    let events = app.all_events(Some("sensor.room1.temp")).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e["event_id"].as_str(), e["source"].as_str()), (Some("e-1"), Some("test")));
    assert_eq!(e["timestamp"], "2026-11-21T10:00:00Z");
    assert_eq!(e["payload"], json!({"id": "e-1"}));
    assert_eq!(e["seq"], 1);
    assert!(e["received_at"].as_str().unwrap().ends_with('Z'));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_events_wrapper_and_ndjson_are_batches() {
    let (app, _dir) = app().await;
    let (status, body) = app.publish(&json!([event("t", "1"), event("t", "2")])).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(2)));
    let (status, body) = app.publish(&json!({"events": [event("t", "3"), event("t", "1")]})).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(body["duplicate_indices"], json!([1]));
    let ndjson = format!("{}\n{}\n", event("t", "4"), event("t", "5"));
    let (status, body) = app.publish_bytes(ndjson.into_bytes(), "application/x-ndjson", None).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(2)));
    assert_eq!(app.all_events(Some("t")).await.len(), 5);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_zstd_bodies_are_accepted() {
    let (app, _dir) = app().await;
    let body = json!([event("z", "1"), event("z", "2")]).to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let (status, resp) = app.publish_bytes(gz.finish().unwrap(), "application/json", Some("gzip")).await;
    assert_eq!((status, resp["stored"].as_u64()), (StatusCode::OK, Some(2)));
    let body = json!([event("z", "3")]).to_string();
    let zst = ruzstd::encoding::compress_to_vec(body.as_bytes(), ruzstd::encoding::CompressionLevel::Fastest);
    let (status, resp) = app.publish_bytes(zst, "application/json", Some("zstd")).await;
    assert_eq!((status, resp["stored"].as_u64()), (StatusCode::OK, Some(1)));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_batch_is_ok_with_zeros() {
    let (app, _dir) = app().await;
    let (status, body) = app.publish(&json!([])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["received"].as_u64(), body["stored"].as_u64()), (Some(0), Some(0)));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_in_same_batch_is_stored_once() {
    let (app, _dir) = app().await;
    let (status, body) = app.publish(&json!([event("t", "a"), event("t", "b"), event("t", "a")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["stored"].as_u64(), body["duplicates"].as_u64()), (Some(2), Some(1)));
    assert_eq!(body["duplicate_indices"], json!([2]));
    assert_eq!(counts(&app.stats().await), (3, 2, 1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_event_id_in_two_topics_is_two_events_and_case_matters() {
    let (app, _dir) = app().await;
    let (_, body) = app.publish(&json!([event("a", "x"), event("b", "x"), event("a", "X")])).await;
    assert_eq!(body["stored"], 3);
    assert_eq!(app.stats().await["topics"], json!(["a", "b"]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400_and_changes_nothing() {
    let (app, _dir) = app().await;
    let (status, body) = app.publish_bytes(b"{\"topic\": ".to_vec(), "application/json", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("not valid JSON"));
    let ndjson = format!("{}\n{{broken\n", event("t", "1"));
    let (status, body) = app.publish_bytes(ndjson.into_bytes(), "application/x-ndjson", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("line 2"), "{body}");
    assert_nothing_stored(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_event_rejects_the_batch_naming_every_bad_index_and_field() {
    let (app, _dir) = app().await;
    let batch = json!([
        event("ok", "1"),
        {"topic": "", "event_id": "2"},
        event("ok", "3"),
        {"topic": "t", "event_id": "4", "timestamp": "not a time", "payload": [1, 2]},
        "not an object",
    ]);
    let (status, body) = app.publish(&batch).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let errors: Vec<(u64, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [(1, "topic"), (3, "timestamp"), (3, "payload"), (4, "event")];
    assert_eq!(errors, expected.map(|(i, f)| (i, f.to_owned())));
    assert!(body["errors"][0]["reason"].as_str().unwrap().contains("empty"));
    assert_nothing_stored(&app).await;
    // The valid events of the refused batch were not claimed either.
    let (_, body) = app.publish(&event("ok", "1")).await;
    assert_eq!(body["stored"], 1);
    app.shutdown().await;
}

/// Field limits count bytes, not characters: 85 three-byte characters (255
/// bytes) fit; one more (258 bytes, still far under 255 characters) is refused
/// with its index and field named. Stored text comes back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_limits_count_the_bytes_of_multi_byte_text() {
    let (app, _dir) = app().await;
    let topic = "日".repeat(85);
    let fits = json!({"topic": topic, "event_id": "ü".repeat(127), "source": "é".repeat(127)});
    let (status, body) = app.publish(&fits).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    let stored = app.all_events(Some(&topic)).await;
    assert_eq!((&stored[0]["event_id"], &stored[0]["source"]), (&fits["event_id"], &fits["source"]));

    let too_long = [("topic", "日".repeat(86)), ("event_id", "ü".repeat(128)), ("source", "é".repeat(128))];
    for (field, value) in too_long {
        let mut bad = event("t", "1");
        bad[field] = json!(value);
        let (status, body) = app.publish(&json!([event("t", "0"), bad])).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {body}");
        let error = &body["errors"][0];
        assert_eq!((error["index"].as_u64(), error["field"].as_str()), (Some(1), Some(field)), "{body}");
        assert!(error["reason"].as_str().unwrap().contains("255 bytes"), "{body}");
    }
    assert_eq!(counts(&app.stats().await), (1, 1, 0), "the refused batches changed nothing");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_that_is_not_an_event_shape_is_422() {
    let (app, _dir) = app().await;
    for body in [json!(42), json!("x"), json!({"events": "nope"}), json!({"event_id": "1"})] {
        let (status, resp) = app.publish(&body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {resp}");
    }
    assert_nothing_stored(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_413_and_change_nothing() {
    let dir = data_dir();
    let config = event_aggregator::Config {
        max_body_bytes: 4096,
        max_batch_events: 3,
        max_payload_bytes: 100,
        ..test_config(dir.path())
    };
    let app = TestApp::spawn_with(config).await;
    let big_payload = json!({"topic": "t", "event_id": "1", "payload": {"x": "y".repeat(200)}});
    let (status, body) = app.publish(&json!([event("t", "0"), big_payload])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        (body["errors"][0]["index"].as_u64(), body["errors"][0]["field"].as_str()),
        (Some(1), Some("payload"))
    );
    let batch: Vec<Value> = (0..4).map(|i| event("t", &i.to_string())).collect();
    assert_eq!(app.publish(&json!(batch)).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let huge = json!({"topic": "t", "event_id": "1", "source": "s".repeat(5000)});
    assert_eq!(app.publish(&huge).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // A zip bomb stops at the limit too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 1 << 20]).unwrap();
    let (status, _) = app.publish_bytes(gz.finish().unwrap(), "application/json", Some("gzip")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let long_id = json!({"topic": "t", "event_id": "i".repeat(256)});
    assert_eq!(app.publish(&long_id).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_nothing_stored(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_media_is_415_and_wrong_method_405() {
    let (app, _dir) = app().await;
    let body = event("t", "1").to_string().into_bytes();
    assert_eq!(
        app.publish_bytes(body.clone(), "text/plain", None).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let (status, resp) = app.publish_bytes(body, "application/json", Some("br")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(resp["detail"].as_str().unwrap().contains("br"));
    assert_eq!(app.get("/publish").await.0, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(app.get("/nowhere").await.0, StatusCode::NOT_FOUND);
    assert_nothing_stored(&app).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_paginate_in_arrival_order() {
    let (app, _dir) = app().await;
    for chunk in 0..5 {
        let batch: Vec<Value> = (0..5).map(|i| event("p", &format!("{chunk}-{i}"))).collect();
        app.publish(&json!(batch)).await;
        app.publish(&event("other", &chunk.to_string())).await;
    }
    let mut after = 0;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (status, page) = app.get(&format!("/events?topic=p&limit=10&after={after}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["topic"], "p");
        pages += 1;
        let events = page["events"].as_array().unwrap();
        assert_eq!(page["count"].as_u64(), Some(events.len() as u64));
        seen.extend(events.iter().map(|e| e["seq"].as_u64().unwrap()));
        match page["next_after"].as_u64() {
            Some(next) => {
                assert_eq!(Some(next), seen.last().copied());
                after = next;
            }
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 25));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending seq: {seen:?}");
    assert_eq!(app.all_events(None).await.len(), 30);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topic_is_an_empty_page_and_bad_limits_are_422() {
    let (app, _dir) = app().await;
    let (status, page) = app.get("/events?topic=nobody").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({"topic": "nobody", "count": 0, "events": [], "next_after": null}));
    for q in ["limit=0", "limit=10001", "limit=abc", "after=-1"] {
        let (status, body) = app.get(&format!("/events?{q}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_and_timestamp_come_back_byte_for_byte() {
    let (app, _dir) = app().await;
    let payload = r#"{ "temperature" : 31.40, "tags":["a",  "é"], "nested": {"z": 1e3, "a": null} }"#;
    let body = format!(
        r#"[{{"topic":"raw","event_id":"1","timestamp":"2026-11-21T10:00:00.5+07:00","payload":{payload}}},
            {{"topic":"raw","event_id":"2"}}]"#
    );
    let (status, _) = app.publish_bytes(body.into_bytes(), "application/json", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = app.client.get(app.url("/events?topic=raw")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(&format!(r#""payload":{payload}"#)), "{text}");
    assert!(text.contains(r#""timestamp":"2026-11-21T10:00:00.5+07:00""#));
    let events = app.all_events(Some("raw")).await;
    assert_eq!(events[1]["payload"], json!({}));
    assert!(events[1]["timestamp"].as_str().unwrap().starts_with("20"), "server time when absent");
    app.shutdown().await;
}

/// Bodies over 256 KiB are decoded on a blocking thread and their events copied
/// out; smaller ones are read in place. Both store the same bytes, escapes undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_large_bodies_store_the_same_fields() {
    let (app, _dir) = app().await;
    let padding = "x".repeat(200);
    for (topic, n) in [("small", 10), ("large", 2_000)] {
        let events: Vec<Value> = (0..n)
            .map(|i| {
                json!({"topic": topic, "event_id": format!("id\"{i}"), "source": "s\u{e9}",
                            "timestamp": "2026-11-21T10:00:00Z", "payload": {"pad": padding}})
            })
            .collect();
        let body = json!(events).to_string();
        assert_eq!(body.len() > 256 << 10, topic == "large", "{} bytes", body.len());
        let (status, body) = app.publish_bytes(body.into_bytes(), "application/json", None).await;
        assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(n)));
        let stored = app.all_events(Some(topic)).await;
        assert_eq!(stored.len(), n as usize);
        let last = &stored[n as usize - 1];
        assert_eq!(last["event_id"], format!("id\"{}", n - 1));
        assert_eq!(
            (last["source"].as_str(), last["payload"]["pad"].as_str()),
            (Some("s\u{e9}"), Some(&*padding))
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_stats_report_the_contract_fields() {
    let (app, _dir) = app().await;
    let (status, health) = app.get("/health").await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    let resp = app.client.get(app.url("/health")).header("x-request-id", "trace-7").send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-7", "request ids are echoed");
    let resp = app.client.get(app.url("/health")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"), "and assigned when absent");
    assert_eq!(health["consumer_running"], true);
    app.publish(&json!([event("b", "1"), event("a", "1"), event("a", "1")])).await;
    let stats = app.stats().await;
    assert_eq!(counts(&stats), (3, 2, 1));
    assert_eq!(stats["topics"], json!(["a", "b"]));
    for field in ["uptime", "uptime_seconds", "queue_size", "consumer_running", "writer", "dedup"] {
        assert!(!stats[field].is_null(), "{field} missing: {stats}");
    }
    // Clients read the bodies with the service's own wire types.
    let typed: event_aggregator::api::StatsBody = serde_json::from_value(stats.clone()).expect("StatsBody");
    assert_eq!((typed.unique_processed.0, typed.dedup.duplicates_in_memory.0), (2, 1));
    let health: event_aggregator::api::HealthBody = serde_json::from_value(health).expect("HealthBody");
    assert_eq!(health.status, event_aggregator::api::Health::Ok);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_ack_is_stored_within_the_flush_interval() {
    let (app, _dir) = app().await;
    let req = app.client.post(app.url("/publish?ack=buffered")).json(&event("buf", "1"));
    let (status, body) = crate::helpers::json_response(req.send().await.unwrap()).await;
    assert_eq!((status, body["stored"].as_u64()), (StatusCode::OK, Some(1)));
    let stored = crate::helpers::eventually(std::time::Duration::from_secs(5), async || {
        app.all_events(Some("buf")).await.len() == 1
    })
    .await;
    assert!(stored);
    let (status, _) = app.get("/publish?ack=sometimes").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let req = app.client.post(app.url("/publish?ack=sometimes")).json(&event("buf", "2"));
    assert_eq!(req.send().await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_with_counters_histograms_and_gauges() {
    let (app, _dir) = app().await;
    app.publish(&json!([event("m", "1"), event("m", "1")])).await;
    app.publish_bytes(b"{".to_vec(), "application/json", None).await;
    let resp = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    // Each /stats figure under its path: `dedup.duplicates_in_memory` is
    // `aggregator_dedup_duplicates_in_memory`; rejections by their body's code.
    for line in [
        "aggregator_received_total 2",
        "aggregator_unique_processed_total 1",
        "aggregator_duplicate_dropped_total 1",
        "aggregator_dedup_duplicates_in_memory_total 1",
        "aggregator_requests_rejected_total{reason=\"malformed_body\"} 1",
        "aggregator_queue_size 0",
        "aggregator_consumer_running 1",
        "aggregator_writer_batches_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    for prefix in [
        "aggregator_http_request_duration_seconds_count{route=\"/publish\",status=\"2xx\"} 1",
        "aggregator_writer_commit_duration_seconds_bucket",
        "aggregator_writer_batch_events_bucket",
        "aggregator_dedup_recent_keys ",
        "aggregator_dedup_filter_items ",
    ] {
        assert!(text.contains(prefix), "missing {prefix:?} in:\n{text}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_is_self_contained_html_polling_stats() {
    let (app, _dir) = app().await;
    let resp = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("fetch(\"/stats\""), "polls /stats");
    assert!(!html.contains("http://") && !html.contains("https://"), "no external assets");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_spec_describes_every_route_and_docs_are_served_from_the_binary() {
    let (app, _dir) = app().await;
    let (status, spec) = app.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/publish", "/events", "/stats", "/health", "/metrics", "/"] {
        assert!(spec["paths"].get(path).is_some(), "{path} missing from the spec");
    }
    let publish = &spec["paths"]["/publish"]["post"]["responses"];
    for code in ["200", "400", "413", "415", "422", "429", "503"] {
        assert!(publish.get(code).is_some(), "POST /publish does not document {code}");
    }
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger") && !html.contains("https://"), "vendored Swagger UI");
    app.shutdown().await;
}
