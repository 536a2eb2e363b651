//! The install files: the systemd unit (`docs/install/hedgerow.service`),
//! the Docker image's config (`docker/hedgerow.toml`), the compose file and
//! the Dockerfile. Docker itself does not run here, so the image is checked
//! through its parts: the config it ships passes `check-config` and serves,
//! the paths the Dockerfile copies exist, its dependency stubs match the
//! manifest. The unit is checked with `systemd-analyze verify` and
//! `security`, and its ExecStart and ExecReload are run as a user that is not
//! root holding CAP_NET_BIND_SERVICE alone, binding port 53. Needs root,
//! `systemd-analyze`, `setpriv`, `dig` and python3 with PyYAML (`.ci/run`
//! installs them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_hedgerow");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const UNIT: &str = include_str!("../docs/install/hedgerow.service");
const CONTAINER_CONFIG: &str = include_str!("../docker/hedgerow.toml");
const COMPOSE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docker/compose.yaml");
const DOCKERFILE: &str = include_str!("../docker/Dockerfile");
const MANIFEST: &str = include_str!("../Cargo.toml");

/// Where the unit and the image expect things.
const INSTALLED_BINARY: &str = "/usr/local/bin/hedgerow";
const IMAGE_LISTS: &str = "/usr/share/hedgerow/lists";
const IMAGE_CONFIG: &str = "/etc/hedgerow/hedgerow.toml";

/// The unprivileged user the capability test runs the server as.
const NOBODY: u32 = 65534;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn require(tool: &str, package: &str) {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap();
    assert!(found.status.success(), "{tool} is missing: install the Debian package {package} (.ci/run does)");
}

/// The unit with the installed binary's path replaced by this build's, and
/// the config path by `config`, in a fresh folder as `hedgerow.service`.
fn unit_for_this_build(config: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let unit = UNIT.replace(INSTALLED_BINARY, BINARY).replace(IMAGE_CONFIG, config);
    let path = dir.path().join("hedgerow.service");
    std::fs::write(&path, &unit).unwrap();
    (dir, path, unit)
}

/// `systemd-analyze verify` on a unit file: its complaints, empty when clean.
/// It exits 0 on an unknown key or a bad value (only saying so), so any
/// output at all counts.
fn verify(unit: &Path) -> String {
    let output = run(Command::new("systemd-analyze").arg("verify").arg("--man=no").arg(unit));
    let said = text(&output);
    if !output.status.success() && said.is_empty() {
        return format!("exit {}", output.status);
    }
    said
}

/// The value of `Key=` in the unit's [Service] section (the last one written).
fn service_value(unit: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    unit.lines().filter_map(|line| line.strip_prefix(&prefix)).last().map(str::to_owned)
}

#[test]
fn the_systemd_unit_verifies_and_scores_ok() {
    require("systemd-analyze", "systemd");
    let (_dir, path, _) = unit_for_this_build(IMAGE_CONFIG);
    let complaints = verify(&path);
    assert!(complaints.is_empty(), "systemd-analyze verify docs/install/hedgerow.service:\n{complaints}");

    let output = run(Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&path));
    let said = text(&output);
    let exposure: f64 = said
        .lines()
        .find_map(|line| line.split("Overall exposure level for hedgerow.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in systemd-analyze security's output:\n{said}"));
    // 1.6 when written; 10 is a unit with no hardening at all.
    assert!(exposure <= 2.0, "the unit's exposure rose to {exposure} (was 1.6):\n{said}");
}

#[test]
fn verify_catches_a_misspelt_hardening_option() {
    require("systemd-analyze", "systemd");
    let (dir, _, unit) = unit_for_this_build(IMAGE_CONFIG);
    let broken = dir.path().join("broken").join("hedgerow.service");
    std::fs::create_dir(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, unit.replace("ProtectSystem=strict", "ProtectSytem=strict")).unwrap();
    let complaints = verify(&broken);
    assert!(complaints.contains("ProtectSytem"), "verify said nothing of an unknown key: {complaints:?}");
}

#[test]
fn the_unit_runs_as_its_own_user_with_one_capability_and_reloads_the_whole_policy() {
    let wanted = [
        ("Type", "exec"),
        ("User", "hedgerow"),
        ("StateDirectory", "hedgerow"),
        ("ReadWritePaths", "/etc/hedgerow"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("UMask", "0077"),
        ("Restart", "on-failure"),
        ("ExecStart", "/usr/local/bin/hedgerow serve --config /etc/hedgerow/hedgerow.toml"),
        ("ExecReload", "/usr/local/bin/hedgerow reload --config /etc/hedgerow/hedgerow.toml"),
    ];
    for (key, value) in wanted {
        assert_eq!(service_value(UNIT, key).as_deref(), Some(value), "hedgerow.service: {key}=");
    }
    // Background threads ask for SCHED_IDLE and setpriority: the filter must let them.
    assert_eq!(service_value(UNIT, "SystemCallFilter").as_deref(), Some("~@privileged"));
    assert!(UNIT.contains("SystemCallFilter=@system-service\n"));
}

/// The container config as `check-config` here can read it: the image's
/// lists folder is this repository's `lists/`. Everything else as shipped.
fn container_config_here() -> String {
    assert!(CONTAINER_CONFIG.contains(&format!("dir = \"{IMAGE_LISTS}\"")));
    CONTAINER_CONFIG.replace(IMAGE_LISTS, &format!("{REPO}/lists"))
}

#[test]
fn the_container_config_is_valid_as_shipped_with_the_image_lists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hedgerow.toml");
    std::fs::write(&file, container_config_here()).unwrap();
    let output = run(Command::new(BINARY).arg("check-config").arg(&file));
    let effective = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "docker/hedgerow.toml is not valid:\n{}", text(&output));
    for line in [
        "data_dir = \"/var/lib/hedgerow\"",
        "listen = [\"0.0.0.0:53\", \"[::]:53\"]",
        "listen = [\"0.0.0.0:8080\"]",
        "listen = [\"0.0.0.0:80\"]",
    ] {
        assert!(effective.contains(line), "check-config's effective config lacks {line}:\n{effective}");
    }
    assert!(text(&output).contains("22 list sources enabled"), "{}", text(&output));
}

/// The Dockerfile copies what exists, and its stub build names every bench
/// the manifest declares (a missing stub fails `cargo build` in the image).
#[test]
fn the_dockerfile_copies_what_exists_and_stubs_every_bench() {
    for line in DOCKERFILE.lines().filter(|line| line.starts_with("COPY ") && !line.contains("--from")) {
        let words: Vec<&str> = line.split_whitespace().filter(|word| !word.starts_with("--")).collect();
        for source in &words[1..words.len() - 1] {
            assert!(Path::new(REPO).join(source).exists(), "Dockerfile: {line}: {source} does not exist");
        }
    }
    let benches: Vec<&str> = MANIFEST
        .split("[[bench]]")
        .skip(1)
        .filter_map(|table| table.lines().find_map(|line| line.strip_prefix("name = ")))
        .map(|name| name.trim_matches('"'))
        .collect();
    assert!(!benches.is_empty());
    let stubbed = DOCKERFILE
        .lines()
        .find_map(|line| line.trim().strip_prefix("&& for bench in "))
        .and_then(|rest| rest.split("; do").next())
        .expect("the Dockerfile's stub loop over the benches");
    let stubbed: Vec<&str> = stubbed.split_whitespace().collect();
    assert_eq!(stubbed, benches, "the Dockerfile's bench stubs differ from Cargo.toml's [[bench]] names");
    // The config the image runs and checks its health with is the one it ships.
    assert!(DOCKERFILE.contains(&format!("docker/hedgerow.toml {IMAGE_CONFIG}")));
    assert!(DOCKERFILE.contains(&format!("CMD [\"hedgerow\", \"status\", \"--config\", \"{IMAGE_CONFIG}\"]")));
    assert!(DOCKERFILE.contains(&format!("CMD [\"serve\", \"--config\", \"{IMAGE_CONFIG}\"]")));
    assert!(DOCKERFILE.contains("setcap cap_net_bind_service=+ep"));
    let lists = Path::new(REPO).join("lists");
    assert!(lists.join("hedgerow.toml").is_file() && lists.join("safesearch").is_dir());
    // hadolint where it is installed (it is not packaged in Debian).
    if let Ok(output) = Command::new("hadolint").arg(Path::new(REPO).join("docker/Dockerfile")).output() {
        assert!(output.status.success(), "hadolint docker/Dockerfile:\n{}", text(&output));
    }
}

#[test]
fn the_compose_file_is_yaml_with_the_ports_volume_and_capabilities() {
    require("python3", "python3");
    let output = run(Command::new("python3").args([
        "-c",
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        COMPOSE,
    ]));
    assert!(output.status.success(), "docker/compose.yaml does not load (python3-yaml?):\n{}", text(&output));
    let compose: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let service = &compose["services"]["hedgerow"];
    let strings = |value: &serde_json::Value| -> Vec<String> {
        value.as_array().unwrap_or(&Vec::new()).iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    };
    assert_eq!(strings(&service["ports"]), ["53:53/udp", "53:53/tcp", "80:80/tcp", "8080:8080/tcp"]);
    assert_eq!(strings(&service["volumes"]), ["hedgerow-data:/var/lib/hedgerow", "./config:/etc/hedgerow:rw"]);
    assert!(compose["volumes"].as_object().unwrap().contains_key("hedgerow-data"));
    assert_eq!(strings(&service["cap_drop"]), ["ALL"]);
    assert_eq!(strings(&service["cap_add"]), ["NET_BIND_SERVICE"]);
    assert_eq!(service["read_only"], serde_json::Value::Bool(true));
    assert_eq!(strings(&service["tmpfs"]), ["/tmp"]);
    assert_eq!(service["restart"], "unless-stopped");
    assert_eq!(service["build"]["dockerfile"], "docker/Dockerfile");
    assert!(
        Path::new(COMPOSE)
            .parent()
            .unwrap()
            .join(service["build"]["context"].as_str().unwrap())
            .join("Cargo.toml")
            .is_file()
    );
}

/// The unit's ExecStart, with the container config (networks and listen
/// addresses moved to loopback), run as nobody holding CAP_NET_BIND_SERVICE
/// and nothing else: it binds port 53 (and 80), answers, and the unit's
/// ExecReload, run as the same user, reloads it.
#[test]
fn the_server_binds_port_53_as_a_user_with_only_cap_net_bind_service() {
    require("setpriv", "util-linux");
    require("dig", "dnsutils");
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test runs as root (as CI does), to drop to nobody");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = dir.path().join("hedgerow.toml");
    let address = "127.0.77.1";
    // The binary and the lists are copied into the test's own folder: a CI
    // checkout may sit under a folder nobody cannot enter.
    let binary = dir.path().join("hedgerow");
    std::fs::copy(BINARY, &binary).unwrap();
    let lists = dir.path().join("lists");
    copy_folder(&Path::new(REPO).join("lists"), &lists);
    let text_config = CONTAINER_CONFIG
        .replace(IMAGE_LISTS, lists.to_str().unwrap())
        .replace("/var/lib/hedgerow", data.to_str().unwrap())
        .replace("\"0.0.0.0:53\", \"[::]:53\"", &format!("\"{address}:53\""))
        .replace("0.0.0.0:8080", &format!("{address}:8080"))
        .replace("0.0.0.0:80", &format!("{address}:80"))
        .replace("10.10.0.0/16", "127.0.77.0/24");
    std::fs::write(&config, text_config).unwrap();
    for path in [dir.path(), &data, &config] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let (_unit_dir, _, unit) = unit_for_this_build(config.to_str().unwrap());
    let unit = unit.replace(BINARY, binary.to_str().unwrap());
    let as_nobody = |command_line: &str| {
        let mut command = Command::new("setpriv");
        command.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--inh-caps=-all,+net_bind_service",
            "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service",
            "--no-new-privs",
        ]);
        command.args(command_line.split_whitespace());
        command
    };
    let exec_start = service_value(&unit, "ExecStart").unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let server = KillOnDrop(
        as_nobody(&exec_start).stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start hedgerow serve"),
    );
    let started = Instant::now();
    loop {
        let status = run(Command::new(BINARY).args(["status", "--config"]).arg(&config));
        if status.status.success() {
            break;
        }
        let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not start as nobody:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = server.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)).unwrap().trim().to_owned();
    assert!(field("Uid:").starts_with(&NOBODY.to_string()), "{status}");
    // Bit 10 is CAP_NET_BIND_SERVICE; nothing else is held.
    assert_eq!(field("CapEff:"), "0000000000000400");
    assert_eq!(field("CapBnd:"), "0000000000000400");

    // A shipped seed-list name, blocked for pupils (NXDOMAIN by default).
    let dig = run(Command::new("dig").args([
        "-b",
        address,
        &format!("@{address}"),
        "-p",
        "53",
        "www.bet365.com",
        "A",
        "+time=3",
        "+tries=2",
    ]));
    assert!(text(&dig).contains("status: NXDOMAIN"), "no answer on {address}:53:\n{}", text(&dig));

    let exec_reload = service_value(&unit, "ExecReload").unwrap();
    let reload = run(&mut as_nobody(&exec_reload));
    assert!(reload.status.success(), "ExecReload as nobody:\n{}", text(&reload));
    assert!(text(&reload).contains("reloaded"), "{}", text(&reload));
}

/// Copies a folder (files and subfolders), readable by anyone.
fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
