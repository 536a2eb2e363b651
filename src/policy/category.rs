//! The categories Hedgerow filters by: the UK Safer Internet Centre's
//! "appropriate filtering" themes, the bypass categories, and the usual
//! school extras (docs/standards.md says what each answers).
//!
//! Categories are data: `lists/categories.toml`, built into the binary, so
//! every command and the config compiler know them without reading a file.
//! Each declares its bit (0-63): its place in a [`CategorySet`] and in
//! compiled list files, stable for ever, so adding a category never moves
//! another. A school adds its own in the config (`[[categories.custom]]`),
//! which [`register`] adds to the known categories of this process.
//!
//! The illegal-content categories ([`ALWAYS_LOCKED`]: `csam`, `terrorism`)
//! are locked by this code, whatever any file says: a data file declaring
//! them unlocked is refused, a custom category cannot take their id or bit,
//! and [`locked`] contains them regardless.
//!
//! The known categories live in 64 write-once slots, one per bit: reading
//! them takes no lock and never allocates; registering one only fills an
//! empty slot, so a category once known keeps its id and bit until the
//! process ends (a changed custom category needs a restart).

use std::fmt;
use std::sync::{LazyLock, OnceLock};

use serde::Deserialize;

/// How many categories a set (and a compiled list) can hold.
pub const MAX_CATEGORIES: usize = 64;

/// Always locked, enforced here rather than in any file.
pub const ALWAYS_LOCKED: [&str; 2] = ["csam", "terrorism"];

/// The shipped declarations (see the module docs).
pub const SHIPPED_TEXT: &str = include_str!("../../lists/categories.toml");

/// The groups whose shipped defaults [`Category::blocked_for`] names.
pub const DEFAULT_GROUPS: [&str; 3] = ["pupil", "staff", "guest"];

/// Where a category comes from, for grouping on screens and in the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CategoryKind {
    /// UKSIC "inappropriate content".
    Uksic,
    /// Ways around the filter.
    Bypass,
    /// Usual school extras.
    Extra,
}

impl CategoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CategoryKind::Uksic => "uksic",
            CategoryKind::Bypass => "bypass",
            CategoryKind::Extra => "extra",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Category {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub kind: CategoryKind,
    /// Always blocked for every group; no config, user or API can turn it off.
    pub locked: bool,
    /// Its bit in a [`CategorySet`] (0-63).
    pub bit: u8,
    /// Which part of the standards it answers (docs/standards.md).
    pub answers: &'static str,
    /// The shipped groups ([`DEFAULT_GROUPS`]) that block it by default.
    pub blocked_for: &'static [&'static str],
}

/// One declaration as written, in `lists/categories.toml` or the config's
/// `[[categories.custom]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CategoryDecl {
    pub id: String,
    pub bit: u8,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: CategoryKind,
    #[serde(default)]
    pub answers: String,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub blocked_for: Vec<String>,
}

impl CategoryDecl {
    /// Checks one declaration on its own: the id, the bit, the groups, and
    /// that an always-locked category is declared locked.
    pub fn check(&self) -> Result<(), String> {
        let id = &self.id;
        let good_id = !id.is_empty()
            && id.len() <= 40
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !id.starts_with('-');
        if !good_id {
            return Err(format!("category id {id:?} must be 1-40 lower-case letters, digits and '-', e.g. \"vaping\""));
        }
        if matches!(id.as_str(), "default" | "uksic" | "bypass") {
            return Err(format!(
                "category id {id:?} is a word the config's `block` lists use for a set; choose another"
            ));
        }
        if usize::from(self.bit) >= MAX_CATEGORIES {
            return Err(format!("category {id:?} has bit {}; bits go from 0 to {}", self.bit, MAX_CATEGORIES - 1));
        }
        if self.name.trim().is_empty() {
            return Err(format!("category {id:?} has no name; give it one for screens and the review"));
        }
        if let Some(group) = self.blocked_for.iter().find(|g| !DEFAULT_GROUPS.contains(&g.as_str())) {
            return Err(format!(
                "category {id:?}: blocked_for names {group:?}; it takes the shipped groups {}",
                DEFAULT_GROUPS.join(", ")
            ));
        }
        if ALWAYS_LOCKED.contains(&id.as_str()) && !self.locked {
            return Err(format!(
                "category {id:?} is illegal content and always locked: no file can unlock it; set locked = true"
            ));
        }
        Ok(())
    }

    fn leak(self) -> &'static Category {
        let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
        let blocked_for: Vec<&'static str> = self.blocked_for.into_iter().map(leak).collect();
        Box::leak(Box::new(Category {
            locked: self.locked || ALWAYS_LOCKED.contains(&self.id.as_str()),
            id: leak(self.id),
            name: leak(self.name),
            description: leak(self.description),
            kind: self.kind,
            bit: self.bit,
            answers: leak(self.answers),
            blocked_for: Box::leak(blocked_for.into_boxed_slice()),
        }))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoriesFile {
    #[serde(default)]
    category: Vec<CategoryDecl>,
}

/// Parses and checks a categories file (the shipped one's format): each
/// declaration is checked, ids and bits are unique, and `csam` and
/// `terrorism` are declared and locked. An error says what to change.
pub fn parse_declarations(text: &str) -> Result<Vec<CategoryDecl>, String> {
    let file: CategoriesFile = toml::from_str(text).map_err(|error| error.to_string())?;
    for (i, decl) in file.category.iter().enumerate() {
        decl.check()?;
        if let Some(other) = file.category[..i].iter().find(|other| other.id == decl.id || other.bit == decl.bit) {
            return Err(format!("categories {:?} and {:?} share an id or a bit (bit {})", other.id, decl.id, decl.bit));
        }
    }
    for id in ALWAYS_LOCKED {
        if !file.category.iter().any(|decl| decl.id == id) {
            return Err(format!("the always-locked category {id:?} is missing"));
        }
    }
    Ok(file.category)
}

type Slots = [OnceLock<&'static Category>; MAX_CATEGORIES];

/// The known categories by bit: the shipped ones, then any registered.
static SLOTS: LazyLock<Slots> = LazyLock::new(|| {
    let slots: Slots = std::array::from_fn(|_| OnceLock::new());
    for category in SHIPPED.iter() {
        let _ = slots[usize::from(category.bit)].set(category);
    }
    slots
});

/// The shipped categories, as references, in bit order.
static SHIPPED: LazyLock<Vec<&'static Category>> = LazyLock::new(|| {
    let mut declared = parse_declarations(SHIPPED_TEXT)
        .unwrap_or_else(|why| panic!("lists/categories.toml is checked by a unit test: {why}"));
    declared.sort_by_key(|decl| decl.bit);
    declared.into_iter().map(CategoryDecl::leak).collect()
});

/// The shipped categories (`lists/categories.toml`) in bit order; a school's
/// own are in [`all`] as well.
pub static CATEGORIES: LazyLock<Vec<Category>> = LazyLock::new(|| SHIPPED.iter().map(|c| **c).collect());

/// Adds a school's category to the known ones. Registering the same id at
/// the same bit again is a no-op (a config read twice); an id or bit taken by
/// another category is refused, and so is a shipped id (which is how no
/// config can unlock `csam` or `terrorism`).
///
/// A category dropped from the config stays known (its id and bit) until
/// the process ends; it only matters if something still names it, and its
/// bit cannot be given to another id before a restart.
pub fn register(decl: CategoryDecl) -> Result<&'static Category, String> {
    decl.check()?;
    let slots = &*SLOTS;
    if let Some(shipped) = SHIPPED.iter().find(|c| c.id == decl.id) {
        return Err(format!(
            "{:?} is a shipped category (bit {}); a custom category adds a new id. Lock a shipped one with \
             [categories] lock = [{:?}]",
            decl.id, shipped.bit, decl.id
        ));
    }
    let slot = &slots[usize::from(decl.bit)];
    let (bit, id) = (decl.bit, decl.id.clone());
    let taken_by = |existing: &Category| {
        format!(
            "bit {bit} is taken by category {:?}; give {id:?} a free bit (a category's bit never changes while \
             Hedgerow runs: restart to renumber one)",
            existing.id
        )
    };
    if let Some(existing) = slot.get() {
        return if existing.id == decl.id { Ok(existing) } else { Err(taken_by(existing)) };
    }
    if let Some(elsewhere) = all().find(|c| c.id == decl.id) {
        return Err(format!(
            "category {:?} already has bit {} in this process; keep that bit, or restart to renumber it",
            decl.id, elsewhere.bit
        ));
    }
    let category = decl.leak();
    match slot.set(category) {
        Ok(()) => Ok(category),
        Err(_) => match slot.get() {
            Some(existing) if existing.id == category.id => Ok(existing),
            Some(existing) => Err(taken_by(existing)),
            None => Err(format!("bit {bit} could not be registered")),
        },
    }
}

/// Every known category (shipped and registered), in bit order.
pub fn all() -> impl Iterator<Item = &'static Category> {
    SLOTS.iter().filter_map(|slot| slot.get().copied())
}

/// The ids of every known category, for messages.
pub fn known_ids() -> Vec<&'static str> {
    all().map(|c| c.id).collect()
}

/// The UKSIC categories, for default policies.
pub fn uksic() -> CategorySet {
    CategorySet::from_predicate(|c| c.kind == CategoryKind::Uksic)
}

/// The bypass categories.
pub fn bypass() -> CategorySet {
    CategorySet::from_predicate(|c| c.kind == CategoryKind::Bypass)
}

/// The categories locked by default (always blocked for everyone): the
/// shipped ones declared locked, and always `csam` and `terrorism`. A
/// config adds its own custom categories declared locked (they stay known
/// after a reload drops them, so they are not counted here).
pub fn locked() -> CategorySet {
    let always = ALWAYS_LOCKED
        .iter()
        .filter_map(|id| index_of(id))
        .fold(CategorySet::EMPTY, |set, bit| set.union(CategorySet::of(bit)));
    SHIPPED.iter().filter(|c| c.locked).fold(always, |set, c| set.union(CategorySet::of(c.bit)))
}

/// The bit of a category id.
pub fn index_of(id: &str) -> Option<u8> {
    all().find(|c| c.id == id).map(|c| c.bit)
}

pub fn by_index(index: u8) -> Option<&'static Category> {
    SLOTS.get(usize::from(index)).and_then(|slot| slot.get().copied())
}

/// A set of categories as a bitmask (bit i = the category with `bit = i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CategorySet(pub u64);

impl CategorySet {
    pub const EMPTY: CategorySet = CategorySet(0);

    pub fn from_predicate(keep: impl Fn(&Category) -> bool) -> CategorySet {
        CategorySet(all().filter(|c| keep(c)).fold(0, |mask, c| mask | 1 << c.bit))
    }

    pub fn of(index: u8) -> CategorySet {
        CategorySet(1u64.checked_shl(u32::from(index)).unwrap_or(0))
    }

    pub fn contains(self, index: u8) -> bool {
        index < 64 && self.0 & (1 << index) != 0
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

    /// The known categories in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = &'static Category> {
        self.indexes().filter_map(by_index)
    }

    /// Bit indexes in order.
    pub fn indexes(self) -> impl Iterator<Item = u8> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros() as u8;
            rest &= rest - 1;
            Some(bit)
        })
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
        assert!(CATEGORIES.len() <= MAX_CATEGORIES, "compiled lists keep 64 bits for categories");
        for c in CATEGORIES.iter() {
            assert_eq!(index_of(c.id), Some(c.bit), "{} is listed once", c.id);
        }
        assert_eq!(locked().to_string(), "csam, terrorism, malware");
        // The 11 UKSIC themes of 2023, then misinformation and fraud (2025).
        assert_eq!(uksic().iter().count(), 13);
        assert_eq!(bypass().to_string(), "vpn-proxy, encrypted-dns");
    }

    #[test]
    fn the_shipped_bits_never_move() {
        let shipped: Vec<(&str, u8)> = CATEGORIES.iter().map(|c| (c.id, c.bit)).collect();
        let first = [
            "csam",
            "terrorism",
            "discrimination",
            "drugs",
            "extremism",
            "gambling",
            "malware",
            "pornography",
            "piracy",
            "self-harm",
            "violence",
            "vpn-proxy",
            "encrypted-dns",
            "social-media",
            "games",
            "dating",
            "chat",
            "ai-chat",
            "streaming",
            "ads",
            "misinformation",
            "fraud",
        ];
        for (bit, id) in first.iter().enumerate() {
            assert_eq!(shipped[bit], (*id, bit as u8));
        }
    }

    #[test]
    fn no_declaration_unlocks_the_illegal_content_categories() {
        let unlocking = SHIPPED_TEXT.replacen("locked = true", "locked = false", 1);
        let error = parse_declarations(&unlocking).unwrap_err();
        assert!(error.contains("csam") && error.contains("always locked"), "{error}");
        let missing = SHIPPED_TEXT.replace("id = \"terrorism\"", "id = \"terror\"");
        assert!(parse_declarations(&missing).unwrap_err().contains("terrorism"));
        let decl = CategoryDecl {
            id: "csam".into(),
            bit: 60,
            name: "x".into(),
            description: String::new(),
            kind: CategoryKind::Extra,
            answers: String::new(),
            locked: false,
            blocked_for: Vec::new(),
        };
        assert!(register(decl).is_err());
        assert!(locked().contains(index_of("csam").unwrap()) && locked().contains(index_of("terrorism").unwrap()));
    }

    #[test]
    fn sets_hold_sixty_four_bits() {
        let set = CategorySet::of(63).union(CategorySet::of(2));
        assert!(set.contains(63) && set.contains(2) && !set.contains(64));
        assert_eq!(set.indexes().collect::<Vec<_>>(), [2, 63]);
        assert_eq!(CategorySet::of(64), CategorySet::EMPTY);
    }
}
