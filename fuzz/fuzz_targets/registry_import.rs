//! The pure part of a registry import (`crates/store/src/import.rs`): tell
//! the list from its header, read the rows (CSV or JSON lines), and check
//! each row as an elder and as a device, as `import` and the registry API
//! do before anything is written.
#![no_main]

use eldercare_store::import::{self, ListKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Import files are read with `read_to_string`.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(kind) = import::detect(text) else {
        return;
    };
    let Ok(rows) = import::rows(text) else {
        return;
    };
    // Every row is held to the `Row` contract (trimmed, non-empty
    // values): a blank JSON `secret` once became the device's secret
    // (corpus/registry_import/devices_blank_secret.jsonl). The read-back
    // check is for CSV rows, whose text form is the one written back.
    let csv = !text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .trim_start()
        .starts_with('{');
    for (_line, row) in rows {
        let Ok(row) = row else {
            continue;
        };
        // The kind decides which check `import` runs; the registry API
        // runs either on rows of its own, so both get every row.
        let elder = import::elder_from_row(&row);
        let device = import::device_from_row(&row);
        assert!(
            row.values().all(|v| !v.is_empty() && v.trim() == v),
            "{row:?}"
        );
        if !csv {
            continue;
        }
        // What is accepted reads back the same from its own row.
        match kind {
            ListKind::Elders => {
                if let Ok(e) = elder {
                    assert_eq!(import::elder_from_row(&import::elder_to_row(&e)), Ok(e));
                }
            }
            ListKind::Devices => {
                if let Ok(d) = device {
                    let stored = d.clone().into_device(String::new(), String::new());
                    assert_eq!(
                        import::device_from_row(&import::device_to_row(&stored)),
                        Ok(d)
                    );
                }
            }
            // No write-back form: each is only held to its own checks
            // (which must not panic on any row).
            ListKind::Providers => {
                let _ = import::provider_from_row(&row);
            }
            ListKind::Carers => {
                let _ = import::carer_from_row(&row);
            }
            ListKind::VisitPlans => {
                let _ = import::visit_plan_from_row(&row);
            }
        }
    }
});
