//! The parts the DfE standards ask a school to show beyond the blocking
//! itself: the regular checks (the built-in self-test) and, later, the
//! annual filtering review.

pub mod selftest;
