//! indicatif progress bars that stay silent when stderr is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over `total` items, starting at `start`, showing `msg` (e.g. the loss).
pub fn bar(total: u64, start: u64, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if !std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = format!(
        "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit} {{msg}} {{per_sec}} ETA {{eta}}"
    );
    pb.set_style(
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_position(start);
    pb.reset_eta();
    pb
}

/// Prints a line above the bar, or plainly when the bar is hidden (logs, CI).
pub fn note(pb: &ProgressBar, line: String) {
    if pb.is_hidden() {
        eprintln!("{line}");
    } else {
        pb.println(line);
    }
}
