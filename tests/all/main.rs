mod as_completed;
mod bad_inputs;
mod caller_helps;
mod capabilities;
mod chaos;
mod chunks;
mod cli;
mod cluster;
mod common;
mod components;
mod escapes;
mod examples;
mod executor_suite;
mod futures;
mod fuzz_seeds;
mod instances;
mod json_values;
mod lifeline;
#[path = "../support/nats.rs"]
mod nats;
mod nats_fixture;
mod process_pool;
#[path = "../support/procfs.rs"]
mod procfs;
mod python_guest;
mod sandbox_suite;
mod wait;
