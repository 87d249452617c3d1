//! JWT verification of arbitrary tokens against HS256 and ES256 credentials.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringway::plugins::jwt::{
    authenticate, Algorithm, Config, ConfigFile, Credential, Credentials, RequestParts,
};

fuzz_target!(|data: &[u8]| {
    static SETUP: OnceLock<(Config, Credentials)> = OnceLock::new();
    let (config, credentials) = SETUP.get_or_init(|| {
        let file: ConfigFile = serde_norway_free_defaults();
        let config = file.validate().expect("defaults validate");
        let mut credentials = Credentials::new();
        let credential = Credential::new(
            "id".into(),
            "mobile-app".into(),
            Algorithm::HS256,
            Some("my-secret-key"),
            None,
            0,
        )
        .expect("credential");
        credentials.insert("mobile-app".into(), credential);
        (config, credentials)
    });
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let value = format!("Bearer {token}");
    let headers = [httparse::Header {
        name: "Authorization",
        value: value.as_bytes(),
    }];
    let request = RequestParts {
        method: "GET",
        query: None,
        headers: &headers,
    };
    let _ = authenticate(config, &request, credentials, None, 1_800_000_000);
});

fn serde_norway_free_defaults() -> ConfigFile {
    serde_json::from_str("{}").expect("defaults")
}
