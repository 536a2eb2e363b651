//! Small helpers on text the program reads (config and list files). A leaf:
//! it imports nothing from the crate.

/// The 1-based line holding byte `offset` of `text` (a serde/toml span's
/// start); an offset past the end counts as the end.
pub(crate) fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::line_at;

    #[test]
    fn lines_count_from_one_and_clamp_to_the_end() {
        let text = "a = 1\nb = \"é\"\n\nc = 3";
        assert_eq!(line_at(text, 0), 1);
        assert_eq!(line_at(text, 5), 1, "the newline itself is on its line");
        assert_eq!(line_at(text, 6), 2);
        assert_eq!(line_at(text, 12), 2, "inside a multi-byte character");
        assert_eq!(line_at(text, text.len()), 4);
        assert_eq!(line_at(text, 1_000), 4);
    }
}
