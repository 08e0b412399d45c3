use clap::Parser;

mod cli;

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`gateshift … | head`): Rust ignores SIGPIPE, which turns that into a panic in println!.
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
