//! The categories Hedgerow filters by: the UK Safer Internet Centre's
//! "appropriate filtering" list, the bypass categories, and the usual school
//! extras. A category's position in [`CATEGORIES`] is its bit in a
//! [`CategorySet`] and in compiled list files, so entries are only ever
//! appended, never reordered.

use std::fmt;

/// Where a category comes from, for grouping on screens and in the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CategoryKind {
    /// UKSIC "inappropriate content".
    Uksic,
    /// Ways around the filter.
    Bypass,
    /// Usual school extras.
    Extra,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub kind: CategoryKind,
    /// Always blocked for every group; no config, user or API can turn it off.
    pub locked: bool,
}

const fn category(
    id: &'static str,
    name: &'static str,
    description: &'static str,
    kind: CategoryKind,
    locked: bool,
) -> Category {
    Category { id, name, description, kind, locked }
}

use CategoryKind::{Bypass, Extra, Uksic};

/// Every category, in bit order. Append only.
pub const CATEGORIES: &[Category] = &[
    category("csam", "Child sexual abuse", "Illegal child sexual abuse content (IWF list)", Uksic, true),
    category(
        "terrorism",
        "Terrorist content",
        "Unlawful terrorist content (CTIRU / police-assessed list)",
        Uksic,
        true,
    ),
    category(
        "discrimination",
        "Discrimination",
        "Unjust or prejudicial treatment of people with protected characteristics",
        Uksic,
        false,
    ),
    category("drugs", "Drugs / substance abuse", "Illegal use of drugs or substances", Uksic, false),
    category("extremism", "Extremism", "Terrorism, terrorist ideologies, violence or intolerance", Uksic, false),
    category("gambling", "Gambling", "Sites that enable gambling", Uksic, false),
    category(
        "malware",
        "Malware / hacking",
        "Compromising systems: malware, hacking, phishing, malicious hosting",
        Uksic,
        true,
    ),
    category("pornography", "Pornography", "Sexual acts or explicit images", Uksic, false),
    category("piracy", "Piracy and copyright theft", "Illegal provision of copyrighted material", Uksic, false),
    category("self-harm", "Self-harm", "Deliberate self-harm, suicide, eating disorders", Uksic, false),
    category(
        "violence",
        "Violence",
        "Physical force intended to hurt or kill; violence against women and girls",
        Uksic,
        false,
    ),
    category(
        "vpn-proxy",
        "VPNs and proxies",
        "VPNs, anonymisers and redirectors that get round the filter",
        Bypass,
        false,
    ),
    category(
        "encrypted-dns",
        "Encrypted DNS",
        "DNS-over-HTTPS and DNS-over-TLS endpoints that get round the filter",
        Bypass,
        false,
    ),
    category("social-media", "Social media", "Social networks", Extra, false),
    category("games", "Games", "Online games", Extra, false),
    category("dating", "Dating", "Dating sites and apps", Extra, false),
    category("chat", "Chat", "Chat rooms and messaging", Extra, false),
    category("ai-chat", "Generative AI chat", "Generative AI chatbots", Extra, false),
    category("streaming", "Streaming", "Video and music streaming", Extra, false),
    category("ads", "Advertising and tracking", "Advertising and tracking networks", Extra, false),
];

/// The UKSIC categories, for default policies.
pub fn uksic() -> CategorySet {
    CategorySet::from_predicate(|c| c.kind == Uksic)
}

/// The bypass categories.
pub fn bypass() -> CategorySet {
    CategorySet::from_predicate(|c| c.kind == Bypass)
}

/// The categories locked by default (always blocked for everyone).
pub fn locked() -> CategorySet {
    CategorySet::from_predicate(|c| c.locked)
}

/// The bit index of a category id.
pub fn index_of(id: &str) -> Option<u8> {
    CATEGORIES.iter().position(|c| c.id == id).map(|i| i as u8)
}

pub fn by_index(index: u8) -> Option<&'static Category> {
    CATEGORIES.get(usize::from(index))
}

/// A set of categories as a bitmask (bit i = `CATEGORIES[i]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet(pub u32);

impl CategorySet {
    pub const EMPTY: CategorySet = CategorySet(0);

    pub fn from_predicate(keep: impl Fn(&Category) -> bool) -> CategorySet {
        CategorySet(CATEGORIES.iter().enumerate().filter(|(_, c)| keep(c)).fold(0, |mask, (i, _)| mask | 1 << i))
    }

    pub fn of(index: u8) -> CategorySet {
        CategorySet(1 << index)
    }

    pub fn contains(self, index: u8) -> bool {
        self.0 & (1 << index) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 | other.0)
    }

    pub fn intersection(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & other.0)
    }

    pub fn without(self, other: CategorySet) -> CategorySet {
        CategorySet(self.0 & !other.0)
    }

    /// The categories in bit order.
    pub fn iter(self) -> impl Iterator<Item = &'static Category> {
        CATEGORIES.iter().enumerate().filter(move |(i, _)| self.0 & (1 << i) != 0).map(|(_, c)| c)
    }

    /// Bit indexes in order.
    pub fn indexes(self) -> impl Iterator<Item = u8> {
        (0..CATEGORIES.len() as u8).filter(move |i| self.contains(*i))
    }
}

impl fmt::Display for CategorySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.iter().map(|c| c.id).collect();
        write!(f, "{}", ids.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_fit_and_ids_are_unique() {
        assert!(CATEGORIES.len() <= 24, "compiled lists keep 24 bits for categories");
        for (i, c) in CATEGORIES.iter().enumerate() {
            assert_eq!(index_of(c.id), Some(i as u8), "{} is listed once", c.id);
        }
        assert_eq!(locked().to_string(), "csam, terrorism, malware");
        assert_eq!(uksic().iter().count(), 11);
        assert_eq!(bypass().to_string(), "vpn-proxy, encrypted-dns");
    }
}
