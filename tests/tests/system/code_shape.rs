//! The functional core stays functional: `domain/` in both services does no I/O. It names no
//! runtime, store, network or process crate, no I/O part of `std`, and of `shared` only the
//! plain contracts (`events`, `fields`), so its rules are tested by plain unit tests.
use std::path::Path;

/// Paths a domain module may not name (a prefix of a `use` path or an inline path).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "sled",
    "async_nats",
    "tonic",
    "axum",
    "reqwest",
    "hyper",
    "prost",
    "tracing",
    "std::fs",
    "std::net",
    "std::io",
    "std::process",
    "std::thread",
    "std::env",
];
/// The parts of `shared` a domain module may use: data shapes, no plumbing.
const SHARED_ALLOWED: &[&str] = &["events", "fields"];

fn violations(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let words = code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'));
        for word in words.filter(|w| !w.is_empty()) {
            let word = word.trim_start_matches("::");
            let bad = FORBIDDEN
                .iter()
                .any(|f| word == *f || word.starts_with(&format!("{f}::")))
                || word.strip_prefix("shared::").is_some_and(|rest| {
                    !SHARED_ALLOWED
                        .iter()
                        .any(|a| rest == *a || rest.starts_with(&format!("{a}::")))
                });
            if bad {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_domain_modules_of_both_services_do_no_io() {
    let root = tests::workspace_root();
    let mut checked = 0;
    let mut found = Vec::new();
    for service in ["product-svc", "order-svc"] {
        let dir = root.join(service).join("src/domain");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                found.extend(violations(&path));
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 8,
        "the domain folders hold the modules ({checked} files)"
    );
    assert!(found.is_empty(), "I/O in the domain:\n{}", found.join("\n"));
    // The check itself sees what it must refuse.
    let probe = std::env::temp_dir().join(format!("eshop-domain-probe-{}.rs", std::process::id()));
    std::fs::write(
        &probe,
        "use tokio::sync::Mutex;\nfn f() { shared::nats::connect(); }\n",
    )
    .unwrap();
    let caught = violations(&probe);
    std::fs::remove_file(&probe).unwrap();
    assert_eq!(caught.len(), 2, "{caught:?}");
}
