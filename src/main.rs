//! `ticket-ledger`: see the library's docs for the layout.

/// mimalloc rather than glibc's malloc: ingest allocates and frees many small strings per event
/// on several threads, where glibc spent a fifth of the time and kept freed memory in per-thread
/// arenas (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, read by `build.rs` from the `mimalloc.h` that is compiled
/// in (libmimalloc-sys's bindings do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    match i32::from_str_radix(env!("TICKET_LEDGER_MI_OPTION_PURGE_DELAY"), 10) {
        Ok(n) => n,
        Err(_) => panic!("build.rs writes a number"),
    };

fn main() -> anyhow::Result<()> {
    // Freed memory goes back to the OS after 1 s unused rather than 10 ms: the fold frees and
    // reallocates the same sizes batch after batch, and each early purge cost a page fault and a
    // zeroed page on the next batch (ingest +7% on the benchmark, for ~25 MiB more RSS).
    // An operator's MIMALLOC_PURGE_DELAY (read by mimalloc itself) is left as it is.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; mimalloc allows it at any time.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000);
        }
    }
    // No transparent huge pages for this process: sled copies tree nodes on every write, and
    // with THP each fresh 2 MiB page was zeroed whole and kept resident (a sixth of the ingest's
    // CPU went to zeroing pages, and RSS grew with it).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(ticket_ledger::ops::cli::main())
}
