//! `eldercare_protocol::decode` on protobuf payloads: the first input byte
//! picks the stream and whether the topic ends in `/pb` or the MQTT 5
//! content type says protobuf; the rest is the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eldercare_fuzz::protobuf(data));
