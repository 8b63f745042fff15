//! Bad input gets the right gRPC status with a useful message, and the
//! node stays up.

use purgecast_proto::api::{self as pb};
use purgecast_tests::*;
use tonic::Code;

fn purge_req(selectors: Vec<pb::Selector>) -> pb::PurgeRequest {
    pb::PurgeRequest { selectors, mode: 0 }
}

async fn expect(c: &Cluster, req: pb::PurgeRequest, code: Code, needle: &str) {
    let err = c.purger(0).await.unwrap().purge(req).await.expect_err("must be refused");
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(err.message().contains(needle), "message {:?} should mention {needle:?}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_bad_input_gets_invalid_argument() {
    let c = Cluster::start(1, Opts::default()).await.unwrap();
    let bad = Code::InvalidArgument;
    expect(&c, purge_req(vec![]), bad, "at least one selector").await;
    expect(&c, purge_req(vec![url("")]), bad, "url is empty").await;
    expect(&c, purge_req(vec![url("ftp://x.example/a")]), bad, "http://").await;
    expect(&c, purge_req(vec![url("https://bad host/")]), bad, "whitespace").await;
    expect(&c, purge_req(vec![host("no/slash")]), bad, "host").await;
    expect(&c, purge_req(vec![prefix("example.com")]), bad, "prefix").await;
    expect(&c, purge_req(vec![tag("")]), bad, "tag is empty").await;
    expect(&c, purge_req(vec![tag("a b")]), bad, "tag").await;
    expect(&c, purge_req(vec![pb::Selector { kind: None }]), bad, "no kind").await;
    expect(&c, purge_req(vec![tag("ok"), url("nope")]), bad, "selector 1").await;
    expect(&c, purge_req((0..300).map(|i| tag(&format!("t{i}"))).collect()), bad, "too many selectors").await;
    let mode = pb::PurgeRequest { selectors: vec![tag("x")], mode: 7 };
    expect(&c, mode, bad, "mode").await;

    let mut p = c.purger(0).await.unwrap();
    let e = p.get_purge_status(pb::PurgeStatusRequest { id: "xyz".into() }).await.unwrap_err();
    assert_eq!(e.code(), bad);
    let e = p.get_purge_status(pb::PurgeStatusRequest { id: "0".repeat(32) }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let mut idx = c.index(0).await.unwrap();
    let e = idx.put(pb::PutEntriesRequest { entries: vec![entry("not-a-url", &[])] }).await.unwrap_err();
    assert_eq!(e.code(), bad, "{}", e.message());
    assert!(e.message().contains("entry 0"), "{}", e.message());
    let e = idx.put(pb::PutEntriesRequest { entries: vec![] }).await.unwrap_err();
    assert_eq!(e.code(), bad);
    let e = idx.get(pb::GetEntryRequest { key: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), bad);
    let e = idx.list(pb::ListEntriesRequest { filter: None, limit: 10 }).await.unwrap_err();
    assert_eq!(e.code(), bad);

    // Still serving after all that.
    let ok = c.purge_and_wait(0, vec![tag("fine")], false).await.unwrap();
    assert!(ok.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_the_api() {
    let c = Cluster::start(1, Opts { tokens: vec!["s3cret".into()], ..Opts::default() }).await.unwrap();
    // The harness presents the right token: accepted.
    assert!(c.purge_and_wait(0, vec![tag("x")], false).await.unwrap().complete);
    let ch = c.channel(0).await.unwrap();
    let mut none = pb::purger_client::PurgerClient::new(ch.clone());
    let e = none.purge(purge_req(vec![tag("x")])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("missing"), "{}", e.message());
    let mut wrong = pb::purger_client::PurgerClient::with_interceptor(ch.clone(), Bearer(Some("guess".into())));
    let e = wrong.purge(purge_req(vec![tag("x")])).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut idx = pb::index_client::IndexClient::new(ch);
    let e = idx.count(pb::CountEntriesRequest { filter: None }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "the index API is guarded too");
}
