//! The config loader: any bytes give a config or a list of problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway::config::{Config, NodeOverrides};

fuzz_target!(|data: &[u8]| {
    if let Err(problems) = Config::from_bytes(data, &NodeOverrides::default()) {
        let text = problems.to_string();
        assert!(!text.is_empty());
    }
});
