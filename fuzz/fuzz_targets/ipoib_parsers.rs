//! Every IPoIB wire parser (encapsulation header, hardware address, ARP,
//! MGID, GRH) on arbitrary bytes, with round-trip checks. All the checking is
//! in `ipoib::wire::fuzz_parse`; a panic there is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ipoib::wire::fuzz_parse(data);
});
