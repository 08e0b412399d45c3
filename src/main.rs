mod cli;

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`gateshift … | head`): Rust ignores SIGPIPE, which turns that into a panic in println!.
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_maps();
    let args = cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// glibc serves every allocation above its mmap threshold (128 KiB, raised only once such
/// blocks are freed) with a fresh mapping and returns the heap's free top beyond 128 KiB, so
/// feature maps were page-faulted in, zeroed and unmapped by the kernel forward after forward
/// (about a fifth of EfficientNet-Lite's inference in a profile). Maps up to 32 MiB (glibc's
/// maximum) now come from the heap, which keeps up to 1 GiB of freed memory for reuse:
/// EfficientNet-Lite0 + GSM inference takes a quarter less time, BN-Inception + GSM a tenth,
/// at 25–95 MiB more peak RSS (docs/PERFORMANCE.md).
fn keep_freed_maps() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called at start-up before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}
