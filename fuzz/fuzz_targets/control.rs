//! The control socket on arbitrary bytes, both ways: a daemon parsing a request line never
//! panics; a client parsing an answer, and everything that shows one (the text of `status`
//! and `clients`, the Prometheus exposition, the status page), never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset::control::protocol::{parse_request, Envelope, Reply};
use ntp_offset::control::render;
use ntp_offset::control::status::{LoadStatus, ServeStatus, Status};
use ntp_offset::monitor::{cpu::MinuteProfile, history::History, metrics, page};

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
    let Ok(env) = serde_json::from_slice::<Envelope>(data) else {
        return;
    };
    match env.reply {
        Reply::Status(s) => {
            let _ = render::status(&s);
            let text = metrics::render(&s, Some(1.0));
            assert!(text
                .lines()
                .all(|l| l.starts_with('#') || l.starts_with("ntp_offset_")));
            let _ = page::page(
                "fuzz",
                &s,
                &History::default(),
                &MinuteProfile::default(),
                &[],
            );
        }
        Reply::Clients(c) => {
            let _ = render::clients(&c, 1_800_000_000);
            // The page's table of VMs, from whatever clients an answer lists.
            let serve = Status::Serve(ServeStatus {
                load: Some(LoadStatus::default()),
                ..ServeStatus::default()
            });
            let _ = page::plots(&serve, &History::default(), &MinuteProfile::default(), &c);
        }
        Reply::Error(_) => {}
    }
});
