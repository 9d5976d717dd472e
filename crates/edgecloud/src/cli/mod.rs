//! The commands: each file is one `edgecloud` subcommand (or family), parsing its
//! arguments and printing results; the work happens in the node (`serve`) or, for
//! client commands, through the admin API (`client`).

pub mod admin_tls;
pub mod client;
pub mod cluster;
pub mod compose;
pub mod container;
pub mod image;
pub mod job;
pub mod key;
pub mod ledger;
pub mod mount;
pub mod node_image;
pub mod objects;
pub mod serve;
