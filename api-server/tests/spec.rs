//! `docs/api.yaml` and the server agree: every route served is in the spec with the same
//! method, and every operation in the spec is served.
//!
//! The spec is read with a deliberately small line reader (path keys at two spaces under
//! `paths:`, operation keys at four), so the check needs no YAML dependency; the spec's
//! layout is part of what this test pins.
#![allow(clippy::unwrap_used, clippy::panic)] // reason: test file; a failed unwrap is the failure.

use std::collections::BTreeSet;

use api_server::routes;

const SPEC: &str = include_str!("../../docs/api.yaml");
const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

/// `(METHOD, name)` for every operation under `paths:`.
fn spec_operations() -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in SPEC.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            current = Some(key.to_owned());
        } else if let Some(key) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            if METHODS.contains(&key) {
                let path = current
                    .clone()
                    .unwrap_or_else(|| panic!("{key} outside a path"));
                ops.insert((key.to_ascii_uppercase(), path));
            }
        }
    }
    ops
}

#[test]
fn every_route_is_specified_and_every_operation_served() {
    let spec = spec_operations();
    assert!(spec.len() > 20, "spec parsed to {spec:?}");
    let served: BTreeSet<(String, String)> = routes::all()
        .iter()
        .map(|r| (r.method.to_owned(), r.name.to_owned()))
        .collect();
    let missing_in_spec: Vec<_> = served.difference(&spec).collect();
    let not_served: Vec<_> = spec.difference(&served).collect();
    assert!(
        missing_in_spec.is_empty() && not_served.is_empty(),
        "served but not in docs/api.yaml: {missing_in_spec:?}\n\
         in docs/api.yaml but not served: {not_served:?}"
    );
}

#[test]
fn the_spec_declares_the_error_styles() {
    assert!(SPEC.contains("ChError:") && SPEC.contains("SandboxErrorBody:"));
    for code in [
        "INVALID_ARGUMENT",
        "INVALID_STATE",
        "NOT_FOUND",
        "BUSY",
        "TIMEOUT",
        "INTERNAL",
    ] {
        assert!(SPEC.contains(code), "{code}");
    }
}
