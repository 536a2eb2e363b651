//! A secondary opening a policy bundle whose signature verifies (the input
//! is signed with the shared key here, so the fuzzer reaches the parsing
//! behind the signature): Ok or a refusal, never a panic, and a bundle that
//! opens names only plain relative list paths and matches its content hash.
#![no_main]

use std::sync::LazyLock;

use hedgerow::sync::SyncKey;
use hedgerow::sync::bundle;
use libfuzzer_sys::fuzz_target;

static KEY: LazyLock<SyncKey> =
    LazyLock::new(|| SyncKey::from_text("a fuzzing key of at least thirty-two characters").unwrap());

fuzz_target!(|data: &[u8]| {
    let signature = KEY.sign(data);
    if let Ok(opened) = bundle::open(data, &signature, &KEY) {
        assert_eq!(bundle::content_of(&opened.policy), opened.content);
        for file in opened.policy.lists.iter().flatten() {
            assert!(
                !file.path.is_empty()
                    && !file.path.starts_with('/')
                    && file.path.split('/').all(|part| !part.is_empty() && part != ".." && !part.starts_with('.')),
                "an unsafe list path was let through: {:?}",
                file.path
            );
        }
    }
});
