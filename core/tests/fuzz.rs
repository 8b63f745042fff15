//! Fuzzing with arbitrary bytes and strings (proptest: cargo-fuzz needs a
//! nightly toolchain this project does not require). What a peer or a
//! client can send must give a typed error or a valid value, never a panic.
//! Bounded: `PROPTEST_CASES` (default below) cases per property.

use std::time::Duration;

use proptest::prelude::*;
use purgecast_core::testing::{member, Net};
use purgecast_core::wire::{decode, encode};
use purgecast_core::{Config, Message, Mode, NodeId, Selector};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2_000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A valid frame to mutate: a push of a purge with every selector kind.
fn valid_frame() -> Vec<u8> {
    let mut net = Net::new(vec![member(0, 0, 0), member(1, 0, 0)], Config::default(), 1);
    let sel = vec![
        Selector::url("https://a.example/x?y").expect("valid"),
        Selector::host("a.example").expect("valid"),
        Selector::prefix("a.example/static/").expect("valid"),
        Selector::tag("t").expect("valid"),
    ];
    let purge = net.originate(0, sel, Mode::Soft).ok();
    match purge {
        Some(p) => {
            encode(NodeId(1), &Message::Push { purge: std::sync::Arc::new(p), stage: purgecast_core::Stage::Gossip })
        }
        None => Vec::new(),
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes decode to a message or a typed error; a message that
    /// decodes is then handled by a live engine without panicking.
    #[test]
    fn arbitrary_frames_never_panic_the_decoder_or_the_engine(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok((from, msg)) = decode(&bytes) {
            let mut net = Net::new(vec![member(0, 0, 0), member(1, 0, 0)], Config::default(), 7);
            net.inject(0, 1, msg);
            net.step(Duration::from_millis(10));
            let _ = from;
        }
    }

    /// A valid frame with bytes flipped, cut or appended: same guarantee,
    /// and much closer to what a buggy peer sends.
    #[test]
    fn mutated_valid_frames_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = valid_frame();
        prop_assume!(!bytes.is_empty());
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] ^= b;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok((_, msg)) = decode(&bytes) {
            let mut net = Net::new(vec![member(0, 0, 0), member(1, 0, 0)], Config::default(), 7);
            net.inject(0, 1, msg);
            net.step(Duration::from_millis(10));
        }
    }

    /// Any string either is refused or becomes a selector that validates
    /// and is stable: parsing its normal form again gives it back.
    #[test]
    fn selector_parsing_is_total_and_idempotent(s in "\\PC{0,64}|[a-zA-Z0-9:/.?#%_ -]{0,64}") {
        let url_in = format!("https://{s}");
        let parsed = [Selector::url(&s), Selector::url(&url_in), Selector::host(&s), Selector::prefix(&s), Selector::tag(&s)];
        for sel in parsed.into_iter().flatten() {
            prop_assert!(sel.validate().is_ok(), "{sel:?} does not validate");
            let again = match &sel {
                Selector::Url(u) => Selector::url(u),
                Selector::Host(h) => Selector::host(h),
                Selector::Prefix { host, path_prefix } => Selector::prefix(&format!("{host}{path_prefix}")),
                Selector::Tag(t) => Selector::tag(t),
                Selector::Everything => Ok(Selector::Everything),
            };
            prop_assert_eq!(again.as_ref(), Ok(&sel));
        }
    }
}
