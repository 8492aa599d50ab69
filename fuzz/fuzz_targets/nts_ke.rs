//! NTS-KE records as a client sends them (and as a server answers, for the client side the
//! tests use): reading never panics, a request is complete only with its End of Message, and
//! whatever is decided can be answered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntp_offset_proto::nts::ke::{self, Negotiated, RequestRead};

fuzz_target!(|data: &[u8]| {
    match ke::read_request(data) {
        RequestRead::Complete(req) => {
            // An End of Message last (its critical bit is not insisted on).
            let end = &data[data.len().saturating_sub(4)..];
            assert!(end.len() == 4 && end[0] & 0x7f == 0 && end[1..] == [0, 0, 0]);
            let answer = match req.negotiate() {
                Ok(Negotiated::Ntpv4(aead)) => ke::ntp_response(aead, &[vec![1; 100]], None, None),
                Ok(Negotiated::NoCommonProtocol) => ke::no_protocol_response(),
                Err(e) => ke::error_response(e.code()),
            };
            assert!(ke::read_server_response(&answer).is_some());
        }
        RequestRead::Incomplete => assert!(data.len() < ke::MAX_REQUEST_LEN),
        RequestRead::Refused(e) => {
            let _ = e.to_string();
        }
    }
    let _ = ke::read_server_response(data);
});
