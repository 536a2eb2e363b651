//! Configs for tests that run the resolver in-process.

use std::net::SocketAddr;
use std::path::Path;

use hedgerow::config::Config;

/// A config that listens on 127.0.0.1 (port 0), forwards to `upstream`,
/// reads list declarations from `lists`, keeps state in `data_dir` and never
/// updates lists on a schedule. `rest` adds the test's own tables (groups,
/// `[log]`, networks); `name` labels parse errors. A config that does not
/// parse fails the test with the error and the text.
pub fn forwarding(upstream: SocketAddr, data_dir: &Path, lists: &Path, rest: &str, name: &str) -> Config {
    // Tests keep their state in a tempdir, never in the repository.
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        data_dir.is_absolute() && !data_dir.starts_with(repository),
        "test data_dir {} must be a tempdir outside the repository",
        data_dir.display()
    );
    let text = forwarding_text(upstream, data_dir, lists, "127.0.0.1:0", rest);
    let mut config = Config::parse(&text, name).unwrap_or_else(|error| panic!("{error}\n{text}"));
    // These tests are of the DNS path: no dashboard on the default port.
    config.dashboard.listen.clear();
    config
}

/// The text of a config that listens on `dns`, forwards to `upstream`,
/// reads list declarations from `lists`, keeps state in `data_dir` and never
/// updates lists on a schedule; `rest` (groups, networks, `[dashboard]`,
/// ...) follows. For tests that write a config file or start the binary.
pub fn forwarding_text(upstream: SocketAddr, data_dir: &Path, lists: &Path, dns: &str, rest: &str) -> String {
    format!(
        r#"data_dir = {data:?}
[dns]
listen = ["{dns}"]
[upstream]
mode = "forward"
timeout_ms = 500
[[upstream.servers]]
address = "{upstream}"
[lists]
dir = {lists:?}
update_hours = 0
{rest}"#,
        data = data_dir.display().to_string(),
        lists = lists.display().to_string(),
    )
}

/// A lists folder in `dir` declaring one local source, `local-games`
/// (category games), that lists `game.test`; returns the folder.
pub fn games_lists(dir: &Path) -> std::path::PathBuf {
    let lists = dir.join("lists");
    std::fs::create_dir_all(&lists).unwrap();
    std::fs::write(lists.join("games.txt"), "game.test\n").unwrap();
    std::fs::write(
        lists.join("local.toml"),
        "[[source]]\nid = \"local-games\"\ncategory = \"games\"\nformat = \"domains\"\npath = \"games.txt\"\n",
    )
    .unwrap();
    lists
}
