//! nas-client's command glue (the `nas-client` binary's library): the
//! flags of `train` ([`train_cli`]) and the `search`, `report` and
//! `compare` commands over `nas-search` ([`search`]), `grow` (neuron
//! splitting over the `splitting` crate, [`grow`]), `measure-inference`
//! (saved growth rounds' inference energy measured interleaved,
//! [`inference_ab`]), `oneshot` (one-shot search: a supernet, the
//! policy-gradient controller, the picks retrained as trials, [`oneshot`]),
//! `proxies` (zero-cost
//! proxies against trained accuracy, [`proxies_cli`]), with the trainer
//! (`tabular-nn`) and the energy model (`energy-model`) linked in process.
//!
//! Unlike the libraries below it, this crate parses command lines, shows
//! progress bars and prints: it is the top of the graph, and nothing
//! depends on it.
#![warn(missing_docs)]

pub mod grow;
pub mod inference_ab;
pub mod oneshot;
pub mod proxies_cli;
pub mod search;
pub mod train_cli;
