//! Policy: categories, group policies and overrides. Pure data, no I/O.

pub mod category;
pub mod group;
pub mod safesearch;

pub use category::{CATEGORIES, Category, CategoryKind, CategorySet};
pub use group::{BlockAnswer, GroupPolicy, OverrideMatch, Overrides, YoutubeMode};
pub use safesearch::SafeSearchMap;
