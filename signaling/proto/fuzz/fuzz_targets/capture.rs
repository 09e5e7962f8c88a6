//! Any bytes into the capture-file parser: nothing panics, and what parses
//! writes back to the same bytes.
#![no_main]

use hush_proto::capture::{MAGIC, parse_capture, write_record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = parse_capture(data) {
        let mut again = MAGIC.to_vec();
        for r in &records {
            write_record(&mut again, r).expect("write to a Vec");
        }
        assert_eq!(again, data);
    }
});
