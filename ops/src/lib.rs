//! `dropline-ops`: the operator commands' own code, used by the `dropline` binary only.
//!
//! - [`audit`]: `dropline sale audit`, the terminal report around the shared audit
//!   (`dropline_audit` does the scan and the checks).
//! - [`rearm`]: `dropline sale rearm`, a sale's Redis state rebuilt from MySQL.
//! - [`users`]: `dropline user create`.
//! - [`loadtest`]: `dropline loadtest seed`.
//! - [`payments`]: `dropline payments resend`, a parked payment completion re-sent.
//! - [`demo`]: the demo sale of `dropline all --demo`.
//!
//! Each command returns the process's exit status: 0 done, 1 failed or a breach found, 2 bad
//! input (nothing changed).

pub mod audit;
pub mod demo;
pub mod loadtest;
pub mod payments;
pub mod rearm;
pub mod report;
pub mod users;
