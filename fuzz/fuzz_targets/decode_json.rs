//! `eldercare_protocol::decode` on JSON payloads: the first input byte picks
//! the stream (`eldercare/v1/{device}/{stream}`), the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eldercare_fuzz::json(data));
