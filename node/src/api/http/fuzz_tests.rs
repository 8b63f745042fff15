//! Arbitrary bytes as request bodies and headers (proptest; cargo-fuzz
//! needs a nightly toolchain): every input is a value or a typed error,
//! never a panic. `PROPTEST_CASES` bounds the run.

use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::cloudflare::parse_cloudflare;
use super::fastly::{batch_call, surrogate_keys};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2_000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Bytes that are mostly JSON of the shapes the APIs take, mutated.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let shapes = prop_oneof![
        Just(r#"{"files":["http://a.test/x",{"url":"http://a.test/y","headers":{"a":"b"}}]}"#.to_string()),
        Just(r#"{"tags":["a","b"]}"#.to_string()),
        Just(r#"{"hosts":["a.test"]}"#.to_string()),
        Just(r#"{"prefixes":["a.test/x/"]}"#.to_string()),
        Just(r#"{"purge_everything":true}"#.to_string()),
        Just(r#"{"surrogate_keys":["k1","k2"]}"#.to_string()),
    ];
    (shapes, proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), any::<usize>()).prop_map(
        |(s, flips, cut)| {
            let mut b = s.into_bytes();
            for (at, x) in flips {
                let i = at % b.len();
                b[i] ^= x;
            }
            b.truncate(cut % (b.len() + 1));
            b
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cloudflare_bodies_never_panic(body in prop_oneof![jsonish(), proptest::collection::vec(any::<u8>(), 0..256)], zone in "[a-z]{0,8}") {
        if let Ok(call) = parse_cloudflare(&body, &zone) {
            prop_assert!(!call.selectors.is_empty());
            for s in &call.selectors {
                prop_assert!(s.validate().is_ok());
            }
        }
    }

    #[test]
    fn fastly_keys_never_panic(body in prop_oneof![jsonish(), proptest::collection::vec(any::<u8>(), 0..256)], header in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&header) {
            headers.insert("surrogate-key", v);
        }
        let _ = surrogate_keys(&headers, &body);
        if let Ok((keys, call)) = batch_call("z", &headers, &body) {
            prop_assert_eq!(keys.len(), call.selectors.len());
        }
    }
}
