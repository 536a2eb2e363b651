//! The layout rule of ARCHITECTURE.md, checked: no import loops between the
//! files of `src/`. Each crate (the library from `src/lib.rs`, the binary
//! from `src/main.rs`) is walked through its `mod` declarations; every
//! `crate::`, `super::` and `self::` path (in `use` trees and in code) and
//! every `use child::...` is resolved to the file that defines it, and the
//! resulting file graph must have no cycle. A parent's `mod` declarations and
//! its `pub use child::...` re-exports are its facade, not dependencies: a
//! path that ends at a re-exported name is followed to the child that defines
//! it. Test modules (`#[cfg(test)]`) are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file of a crate: its module path and its text without
/// comments, string contents and test modules.
struct ModuleFile {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Blanks comments, string and char literals (keeping line breaks), and
/// drops everything from a `#[cfg(test)]` attribute's item onwards when that
/// item is a `mod`.
fn clean(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            i += end;
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..].find(&close).map_or(rest.len(), |e| body + e + close.len());
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            out.push_str("\"\"");
            i += end;
        } else if rest.starts_with('"') {
            let mut j = 1;
            let b = rest.as_bytes();
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            out.extend(rest[..end].chars().filter(|c| *c == '\n'));
            out.push_str("\"\"");
            i += end;
        } else if rest.starts_with('\'') {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            let b = rest.as_bytes();
            let literal = if b.get(1) == Some(&b'\\') {
                rest[2..].find('\'').map(|e| e + 3)
            } else {
                let c = rest[1..].chars().next().map_or(0, char::len_utf8);
                (rest.as_bytes().get(1 + c) == Some(&b'\'')).then_some(2 + c)
            };
            match literal {
                Some(end) => {
                    out.push_str("' '");
                    i += end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    // Test modules sit at the end of their files here.
    let mut kept = String::new();
    let lines: Vec<&str> = out.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.trim() == "#[cfg(test)]"
            && lines[n + 1..]
                .iter()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_start().starts_with("mod ") || l.trim_start().starts_with("pub mod "))
        {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `mod name;` declarations (not inline modules).
fn declared_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let mut l = line.trim();
        if let Some(rest) = l.strip_prefix("pub(crate) ") {
            l = rest;
        } else if let Some(rest) = l.strip_prefix("pub ") {
            l = rest;
        }
        if let Some(rest) = l.strip_prefix("mod ")
            && let Some(name) = rest.trim().strip_suffix(';')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

fn crate_files(root: &str) -> Vec<ModuleFile> {
    let mut files = Vec::new();
    let mut todo = vec![(src().join(root), Vec::<String>::new())];
    while let Some((path, module)) = todo.pop() {
        let text = clean(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        let name = path.file_name().unwrap().to_str().unwrap();
        let dir = if matches!(name, "lib.rs" | "main.rs" | "mod.rs") {
            path.parent().unwrap().to_path_buf()
        } else {
            path.with_extension("")
        };
        for child in declared_modules(&text) {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let file = if flat.exists() { flat } else { nested };
            let mut m = module.clone();
            m.push(child);
            todo.push((file, m));
        }
        files.push(ModuleFile { path, module, text });
    }
    files
}

/// Expands the `use` trees of a file into flat paths (`a::b::{c, d::e}` ->
/// `a::b::c`, `a::b::d::e`), with whether the `use` was `pub`.
fn use_paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = find_keyword(rest, "use ") {
        let before = rest[..at].trim_end();
        let public = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        let body_start = at + 4;
        let Some(end) = rest[body_start..].find(';') else { break };
        let tree: String = rest[body_start..body_start + end].replace(" as ", "@").split_whitespace().collect();
        expand(&tree, &mut Vec::new(), &mut |p| out.push((public, p)));
        rest = &rest[body_start + end..];
    }
    out
}

fn find_keyword(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        if at == 0 || !is_ident_byte(text.as_bytes()[at - 1]) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn expand(tree: &str, prefix: &mut Vec<String>, emit: &mut dyn FnMut(Vec<String>)) {
    // Split the top level at commas outside braces.
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[start..]);
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let len = prefix.len();
        match part.find('{') {
            Some(open) => {
                let head = part[..open].trim_end_matches("::");
                prefix.extend(head.split("::").filter(|s| !s.is_empty()).map(str::to_string));
                expand(&part[open + 1..part.len() - 1], prefix, emit);
            }
            None => {
                let path = part.split('@').next().unwrap_or(part);
                let mut p = prefix.clone();
                p.extend(path.split("::").filter(|s| !s.is_empty()).map(str::to_string));
                emit(p);
            }
        }
        prefix.truncate(len);
    }
}

/// Paths written in code: `crate::a::b`, `super::a`, `self::a::b`.
fn inline_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (is_ident_byte(text.as_bytes()[at - 1]) || text[..at].ends_with("::")) {
                continue;
            }
            let b = text.as_bytes();
            let mut end = at;
            while end < b.len() && (is_ident_byte(b[end]) || text[end..].starts_with("::")) {
                end += if b[end] == b':' { 2 } else { 1 };
            }
            out.push(text[at..end].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect());
        }
    }
    out
}

struct Crate {
    files: Vec<ModuleFile>,
    by_module: BTreeMap<Vec<String>, usize>,
    /// (module, name) -> the child module a parent's `pub use child::...` re-exports it from.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

impl Crate {
    fn new(root: &str) -> Crate {
        let files = crate_files(root);
        let by_module = files.iter().enumerate().map(|(i, f)| (f.module.clone(), i)).collect();
        let mut krate = Crate { files, by_module, reexports: BTreeMap::new() };
        for i in 0..krate.files.len() {
            let module = krate.files[i].module.clone();
            for (public, path) in use_paths(&krate.files[i].text) {
                if !public {
                    continue;
                }
                let absolute = krate.absolute(&module, &path);
                let last = path.last().unwrap().clone();
                if absolute.len() > module.len() + 1 && absolute.starts_with(&module) {
                    krate.reexports.insert((module.clone(), last), absolute[..absolute.len() - 1].to_vec());
                }
            }
        }
        krate
    }

    /// Makes a path absolute (from the crate root) as seen from `module`.
    fn absolute(&self, module: &[String], path: &[String]) -> Vec<String> {
        let mut base: Vec<String> = module.to_vec();
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                let mut child = module.to_vec();
                child.push(first.to_string());
                if !self.by_module.contains_key(&child) {
                    return Vec::new(); // an external crate or a local item
                }
            }
            None => return Vec::new(),
        }
        base.extend(rest.iter().cloned());
        base
    }

    /// The file that defines what an absolute path names.
    fn file_of(&self, absolute: &[String]) -> Option<usize> {
        for len in (0..=absolute.len()).rev() {
            let module = &absolute[..len];
            if let Some(&file) = self.by_module.get(module) {
                if let Some(name) = absolute.get(len)
                    && let Some(child) = self.reexports.get(&(module.to_vec(), name.clone()))
                {
                    let mut followed = child.clone();
                    followed.push(name.clone());
                    if followed != absolute {
                        return self.file_of(&followed);
                    }
                }
                return Some(file);
            }
        }
        None
    }

    fn edges(&self) -> BTreeMap<usize, BTreeSet<usize>> {
        let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (i, file) in self.files.iter().enumerate() {
            let mut paths: Vec<(bool, Vec<String>)> = use_paths(&file.text);
            paths.extend(inline_paths(&file.text).into_iter().map(|p| (false, p)));
            for (public, path) in paths {
                let absolute = self.absolute(&file.module, &path);
                if absolute.is_empty() {
                    continue;
                }
                // A parent's re-export of its own child is its facade.
                if public && absolute.starts_with(&file.module) && absolute.len() > file.module.len() + 1 {
                    continue;
                }
                if let Some(target) = self.file_of(&absolute)
                    && target != i
                    && !self.files[target].module.is_empty()
                {
                    edges.entry(i).or_default().insert(target);
                }
            }
        }
        edges
    }

    fn name(&self, file: usize) -> String {
        self.files[file].path.strip_prefix(src()).unwrap().display().to_string()
    }
}

/// Every strongly connected component of more than one file.
fn cycles(krate: &Crate) -> Vec<Vec<String>> {
    let edges = krate.edges();
    let n = krate.files.len();
    // Tarjan's algorithm, iteratively small enough to be recursive here.
    struct State<'a> {
        edges: &'a BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        found: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.edges.get(&v).into_iter().flatten() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.found
        .into_iter()
        .map(|c| {
            let mut names: Vec<String> = c.into_iter().map(|f| krate.name(f)).collect();
            names.sort();
            names
        })
        .collect()
}

fn describe(krate: &Crate, component: &[String]) -> String {
    let edges = krate.edges();
    let mut lines = vec![format!("  loop: {}", component.join(", "))];
    for (from, targets) in &edges {
        if !component.contains(&krate.name(*from)) {
            continue;
        }
        for to in targets {
            if component.contains(&krate.name(*to)) {
                lines.push(format!("    {} -> {}", krate.name(*from), krate.name(*to)));
            }
        }
    }
    lines.join("\n")
}

#[test]
fn no_import_loops_between_files() {
    let mut problems = Vec::new();
    for root in ["lib.rs", "main.rs"] {
        let krate = Crate::new(root);
        for component in cycles(&krate) {
            problems.push(describe(&krate, &component));
        }
    }
    assert!(
        problems.is_empty(),
        "files of src/ import each other in a loop; dependencies must point one way (ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_a_loop() {
    // Two modules naming each other, one through a use tree and one in code.
    let a = clean("use super::b::{self, Thing};\nfn f() {}\n");
    let b = clean("fn g() { crate::a::f(); }\n#[cfg(test)]\nmod tests { use super::super::c; }\n");
    let files = vec![
        ModuleFile { path: src().join("lib.rs"), module: vec![], text: "mod a;\nmod b;\n".to_string() },
        ModuleFile { path: src().join("a.rs"), module: vec!["a".into()], text: a },
        ModuleFile { path: src().join("b.rs"), module: vec!["b".into()], text: b },
    ];
    let by_module = files.iter().enumerate().map(|(i, f)| (f.module.clone(), i)).collect();
    let krate = Crate { files, by_module, reexports: BTreeMap::new() };
    assert_eq!(cycles(&krate), vec![vec!["a.rs".to_string(), "b.rs".to_string()]]);
}
#[test]
fn policy_and_lists_do_not_reach_into_each_other_for_names() {
    // Name handling lives in src/name.rs, a leaf that policy, lists and dns use.
    let krate = Crate::new("lib.rs");
    let edges = krate.edges();
    let name = krate.files.iter().position(|f| f.module == ["name"]).expect("src/name.rs exists");
    assert!(edges.get(&name).is_none_or(BTreeSet::is_empty), "src/name.rs is a leaf");
    for (from, targets) in &edges {
        let module = &krate.files[*from].module;
        if module.first().map(String::as_str) == Some("policy") {
            for to in targets {
                assert_ne!(
                    krate.files[*to].module.first().map(String::as_str),
                    Some("lists"),
                    "{} reaches up into lists ({})",
                    krate.name(*from),
                    krate.name(*to)
                );
            }
        }
    }
}

#[test]
fn one_url_rule_and_one_id_rule_for_declarations_and_downloads() {
    use hedgerow::lists::sources::{check_url, valid_id};
    // The scheme's case does not matter (the downloads accepted it, the
    // declarations did not); a user name is refused everywhere (the
    // declarations refused it, redirects did not).
    assert!(check_url("HTTPS://lists.example/x.txt").is_ok());
    assert!(check_url("https://user:pw@lists.example/x.txt").is_err());
    assert!(check_url("http://127.0.0.1:8080/x").is_ok() && check_url("http://[::1]/x").is_ok());
    assert!(check_url("http://lists.example/x").unwrap_err().contains("plain http"));
    for bad in ["ftp://lists.example/x", "lists.example/x", "https://", "https://a b/x"] {
        assert!(check_url(bad).is_err(), "{bad}");
    }
    // Ids: the same alphabet for a declaration and a download file.
    for ok in ["ut1-gambling", "hagezi_pro.plus", "a"] {
        assert!(valid_id(ok), "{ok}");
    }
    for bad in ["", ".hidden", "-x", "../escape", "a/b", "Upper", "sp ace", &"x".repeat(65)] {
        assert!(!valid_id(bad), "{bad}");
    }
}

#[test]
fn lists_is_pure_and_knows_nothing_of_downloads() {
    // `download` may use `lists`; `lists` never uses `download` or an HTTP client.
    let krate = Crate::new("lib.rs");
    let edges = krate.edges();
    for (from, targets) in &edges {
        if krate.files[*from].module.first().map(String::as_str) != Some("lists") {
            continue;
        }
        for to in targets {
            assert_ne!(
                krate.files[*to].module.first().map(String::as_str),
                Some("download"),
                "{} uses {}",
                krate.name(*from),
                krate.name(*to)
            );
        }
    }
    for file in krate.files.iter().filter(|f| f.module.first().map(String::as_str) == Some("lists")) {
        assert!(!file.text.contains("ureq"), "{} uses an HTTP client", file.path.display());
    }
}
