//! Policy: categories, group policies and overrides. Pure data, no I/O.

pub mod category;

pub use category::{CATEGORIES, Category, CategoryKind, CategorySet};
