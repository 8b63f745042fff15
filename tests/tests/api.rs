//! Bad input gets the right gRPC status with a useful message, and the
//! node stays up.

use purgecast_client::{Client, ClientError};
use purgecast_proto::api::{self as pb, selector::Kind};
use purgecast_tests::*;
use tonic::Code;

fn purge_req(selectors: Vec<pb::Selector>) -> pb::PurgeRequest {
    pb::PurgeRequest { selectors, mode: 0, ..Default::default() }
}

/// A selector as sent on the wire, unchecked: the client library refuses
/// some of these itself, and the node must refuse them too.
fn raw(kind: Kind) -> pb::Selector {
    pb::Selector { kind: Some(kind) }
}

/// A bare gRPC client (no client library) for input it would not send.
async fn raw_purger(c: &Cluster) -> pb::purger_client::PurgerClient<tonic::transport::Channel> {
    pb::purger_client::PurgerClient::new(c.channel(0).await.unwrap())
}

async fn expect(c: &Cluster, req: pb::PurgeRequest, code: Code, needle: &str) {
    let err = raw_purger(c).await.purge(req).await.expect_err("must be refused");
    assert_eq!(err.code(), code, "{}", err.message());
    assert!(err.message().contains(needle), "message {:?} should mention {needle:?}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_bad_input_gets_invalid_argument() {
    let c = Cluster::start(1, Opts::default()).await.unwrap();
    let bad = Code::InvalidArgument;
    expect(&c, purge_req(vec![]), bad, "at least one selector").await;
    expect(&c, purge_req(vec![raw(Kind::Url(String::new()))]), bad, "url is empty").await;
    expect(&c, purge_req(vec![url("ftp://x.example/a")]), bad, "http://").await;
    expect(&c, purge_req(vec![url("https://bad host/")]), bad, "whitespace").await;
    expect(&c, purge_req(vec![host("no/slash")]), bad, "host").await;
    expect(&c, purge_req(vec![prefix("example.com")]), bad, "prefix").await;
    expect(&c, purge_req(vec![raw(Kind::Tag(String::new()))]), bad, "tag is empty").await;
    expect(&c, purge_req(vec![tag("a b")]), bad, "tag").await;
    expect(&c, purge_req(vec![pb::Selector { kind: None }]), bad, "no kind").await;
    expect(&c, purge_req(vec![tag("ok"), url("nope")]), bad, "selector 1").await;
    expect(&c, purge_req((0..101).map(|i| tag(&format!("t{i}"))).collect()), bad, "too many tags").await;
    expect(&c, purge_req((0..501).map(|i| url(&format!("https://a.example/{i}"))).collect()), bad, "too many").await;
    let mode = pb::PurgeRequest { selectors: vec![tag("x")], mode: 7, ..Default::default() };
    expect(&c, mode, bad, "mode").await;

    let p = c.client(0).await.unwrap();
    let e = p.status("xyz").await.unwrap_err();
    assert_eq!(e.code(), Some(bad));
    let e = p.status(&"0".repeat(32)).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::NotFound));

    let e = p.index_put(vec![entry("not-a-url", &[])]).await.unwrap_err();
    assert_eq!(e.code(), Some(bad), "{e}");
    assert!(e.to_string().contains("entry 0"), "{e}");
    let e = p.index_put(vec![]).await.unwrap_err();
    assert_eq!(e.code(), Some(bad));
    let e = p.index_get("").await.unwrap_err();
    assert_eq!(e.code(), Some(bad));
    let mut idx = pb::index_client::IndexClient::new(c.channel(0).await.unwrap());
    let e = idx.list(pb::ListEntriesRequest { filter: None, limit: 10, ..Default::default() }).await.unwrap_err();
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
    let endpoint = c.nodes[0].endpoint();
    let none = Client::connect(&endpoint, None).await.unwrap();
    let e = none.purge(vec![tag("x")], pb::PurgeMode::Hard).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated));
    assert!(e.to_string().contains("missing"), "{e}");
    let wrong = Client::connect(&endpoint, Some("guess".into())).await.unwrap();
    let e = wrong.purge(vec![tag("x")], pb::PurgeMode::Hard).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated));
    let e: ClientError = none.index_count(None).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unauthenticated), "the index API is guarded too");
}
