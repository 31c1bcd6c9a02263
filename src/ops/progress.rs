//! Progress of a long command (a rebuild, `verify`): a bar on a terminal, a plain line every two
//! seconds otherwise (a CI log, a pipe), so that neither fills a log with redraws.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress of `done` out of `total` things, named by `unit`.
pub struct Meter {
    label: &'static str,
    unit: &'static str,
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
}

impl Meter {
    /// A meter for `label` ("rebuild", "verify"), counting `unit`s.
    pub fn new(label: &'static str, unit: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            let template = format!("{label} {{bar:40.cyan/blue}} {{pos}}/{{len}} {unit}  {{msg}}");
            b.set_style(
                indicatif::ProgressStyle::with_template(&template).expect("a valid template"),
            );
            b
        });
        Self {
            label,
            unit,
            bar,
            last_line: Instant::now() - Duration::from_secs(10),
        }
    }

    /// Shows `done` of `total`, with `note` (a rate, an ETA) beside it.
    pub fn show(&mut self, done: u64, total: u64, note: &str) {
        match &self.bar {
            Some(b) => {
                b.set_length(total.max(done));
                b.set_position(done);
                b.set_message(note.to_owned());
            }
            None if self.last_line.elapsed() >= Duration::from_secs(2) => {
                eprintln!("{}: {done}/{total} {}, {note}", self.label, self.unit);
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    /// Ends the bar: `ok` leaves it full, otherwise where it stopped.
    pub fn finish(&self, ok: bool) {
        match (&self.bar, ok) {
            (Some(b), true) => b.finish(),
            (Some(b), false) => b.abandon(),
            (None, _) => {}
        }
    }
}
