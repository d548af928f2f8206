mod as_completed;
mod common;
mod components;
mod examples;
mod executor_suite;
mod futures;
mod wait;
