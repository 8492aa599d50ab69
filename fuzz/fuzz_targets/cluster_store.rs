//! What a cluster host reads from etcd and from its state_dir: watch lines (the gateway's
//! JSON), keys and values, and the saved copy. Never panic; a copy that reads reads back
//! the same after saving; events from any line only ever land as our records or count as
//! foreign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset::cluster::etcd::{parse_watch_line, WatchNews};
use ntp_offset_proto::cluster::copy::StoreCopy;

const PREFIX: &str = "/ntp-offset";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(copy) = StoreCopy::from_text(PREFIX, &text) {
        let again = StoreCopy::from_text(PREFIX, &copy.to_text()).expect("a saved copy reads");
        assert_eq!(again, copy);
    }
    let mut copy = StoreCopy::new(PREFIX);
    for line in text.lines() {
        if let Ok(WatchNews::Events { events, revision }) = parse_watch_line(line) {
            let n = events.len() as u64;
            let before = copy.foreign;
            copy.apply(events, revision);
            assert!(copy.foreign - before <= n);
        }
    }
    let saved = copy.to_text();
    assert_eq!(StoreCopy::from_text(PREFIX, &saved).expect("reads"), {
        let mut c = copy.clone();
        c.foreign = 0;
        c
    });
});
