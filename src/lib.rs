//! prenv: a Kubernetes operator that gives every GitHub pull request its own preview
//! environment.
//!
//! The modules follow the flow: [`receive`] a delivery → [`decide`] what it means →
//! [`intake`] writes the `PreviewEnvironment` → [`reconcile`] renders, applies, prunes,
//! observes → [`report`] tells the pull request on GitHub → [`collect`] tears down.

pub mod cli;
pub mod collect;
pub mod command;
pub mod decide;
pub mod dryrun;
pub mod github;
pub mod intake;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod naming;
pub mod receive;
pub mod reconcile;
pub mod report;
pub mod resync;
pub mod serve;
pub mod serving;
pub mod status_page;
pub mod trust;
