//! Reads `mi_option_purge_delay`'s number from the very `mimalloc.h` that libmimalloc-sys
//! compiles (it exports its include directory as `DEP_MIMALLOC_INCLUDE_DIR`), because the
//! crate's bindings do not name that option: `main.rs` then sets the option by its name's
//! number, never by a number written by hand that a mimalloc upgrade could silently repoint.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MIMALLOC_INCLUDE_DIR");
    let dir = std::env::var("DEP_MIMALLOC_INCLUDE_DIR")
        .expect("libmimalloc-sys exports DEP_MIMALLOC_INCLUDE_DIR");
    let header = Path::new(&dir).join("mimalloc.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let text = std::fs::read_to_string(&header).expect("reading mimalloc.h");
    let number = option_number(&text, "mi_option_purge_delay")
        .expect("mimalloc.h's mi_option_e names mi_option_purge_delay");
    println!("cargo:rustc-env=TICKET_LEDGER_MI_OPTION_PURGE_DELAY={number}");
}

/// The value of `name` in `typedef enum mi_option_e { ... }`: its position among the entries
/// (none of the entries before it carries an explicit value).
fn option_number(header: &str, name: &str) -> Option<usize> {
    let body = header.split("typedef enum mi_option_e {").nth(1)?;
    let body = body.split('}').next()?;
    let entries = body
        .lines()
        .map(|l| l.split("//").next().unwrap_or("").trim())
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    for (i, e) in entries.enumerate() {
        if e.contains('=') {
            return None; // an explicit value before `name`: the count would be wrong
        }
        if e == name {
            return Some(i);
        }
    }
    None
}
