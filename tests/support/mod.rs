//! Shared test harness: a real Kubernetes control plane (started once per test run), the
//! GitHub stand-in, and `prenv serve` run as a real process.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod tools;

use github_standin::{Config as StandInConfig, NewPr, StandIn};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use prenv::model::{PreviewEnvironment, PreviewTemplate};
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::OnceCell;

pub const SECRET: &str = "test-webhook-secret";
pub const TOKEN: &str = "ghp_prenvtesttoken";
pub const BOT: &str = "prenv-bot";
/// The ClusterRole prenv binds each preview's deployer to by default.
pub const DEPLOYER_ROLE: &str = "prenv-deployer";

/// The kubeconfig of the test cluster (a real node: `scripts/cluster.sh`). `PRENV_TEST_KUBECONFIG`
/// names a running one (the README's test command starts one and sets it); otherwise one is
/// started under the target directory and left running for the next test binary
/// (`scripts/cluster.sh down target/tmp/cluster` stops it). Never skips: without the binaries
/// this builds them, and fails saying why when it cannot.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        if let Ok(path) = std::env::var("PRENV_TEST_KUBECONFIG") {
            return PathBuf::from(path);
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster");
        PathBuf::from(cluster_script(&["up", &dir.to_string_lossy()]))
    })
}

/// Run `scripts/cluster.sh ARGS` (serialized across test binaries): its last output line.
fn cluster_script(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster.lock");
    let out = Command::new("flock")
        .arg(&lock)
        .arg(root.join("scripts/cluster.sh"))
        .args(args)
        .stderr(Stdio::inherit())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            stdout.lines().last().unwrap_or_default().trim().to_string()
        }
        other => panic!(
            "scripts/cluster.sh {args:?} failed ({other:?}).\n\
             Run `scripts/test.sh` (it builds and starts the cluster), or \
             `scripts/cluster.sh up DIR` and set PRENV_TEST_KUBECONFIG=DIR/kubeconfig."
        ),
    }
}

/// The cluster's local registry (`host:port`): pushed to from here, pulled from by the node.
pub fn registry() -> &'static str {
    static REGISTRY: OnceLock<String> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        if let Ok(registry) = std::env::var("PRENV_TEST_REGISTRY") {
            return registry;
        }
        let dir = kubeconfig()
            .parent()
            .expect("kubeconfig in the cluster's dir");
        cluster_script(&["registry", &dir.to_string_lossy()])
    })
}

async fn admin_config() -> kube::Config {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(kubeconfig()).expect("kubeconfig readable");
    kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig valid")
}

/// A client acting as `namespace`'s ServiceAccount `name` (what a pod running as it, or a
/// stolen token of it, could do).
pub async fn client_as(namespace: &str, name: &str) -> Client {
    let mut config = admin_config().await;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    Client::try_from(config).expect("impersonating client")
}

pub async fn client() -> Client {
    let client = Client::try_from(admin_config().await).expect("client");
    install_crds(&client).await;
    install_deployer_role(&client).await;
    client
}

/// The deployer's ClusterRoles as the chart makes them (from `deploy/prenv.yaml`, which
/// `tests/chart.rs` keeps equal to the chart), so that prenv run by the tests binds the same
/// role an installed prenv does. Waits until aggregation has filled in its rules.
async fn install_deployer_role(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prenv.yaml");
        let yaml = std::fs::read_to_string(&path).expect("deploy/prenv.yaml");
        let api: Api<ClusterRole> = Api::all(client.clone());
        for doc in serde_yaml_ng::Deserializer::from_str(&yaml) {
            let doc = serde_json::Value::deserialize(doc).expect("deploy/prenv.yaml parses");
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            if doc["metadata"]["labels"]["prenv.dev/deployer-role"] != "true" {
                continue;
            }
            let role: ClusterRole = serde_json::from_value(doc.clone()).expect("a ClusterRole");
            api.patch(
                name,
                &PatchParams::apply("prenv-tests").force(),
                &Patch::Apply(&role),
            )
            .await
            .expect("deployer ClusterRole applied");
        }
        wait_for(
            "the deployer's ClusterRole aggregated",
            Duration::from_secs(30),
            || async {
                let role = api.get(DEPLOYER_ROLE).await.ok()?;
                role.rules.filter(|r| !r.is_empty()).map(|_| ())
            },
        )
        .await;
    })
    .await;
}

/// Install prenv's CRDs once per test binary (idempotent server-side apply) and wait until the
/// API server serves them.
async fn install_crds(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in [PreviewTemplate::crd(), PreviewEnvironment::crd()] {
            let name = crd.name_any();
            api.patch(
                &name,
                &PatchParams::apply("prenv-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .expect("CRD applied");
            wait_for(
                &format!("CRD {name} established"),
                Duration::from_secs(30),
                || async {
                    let crd = api.get(&name).await.ok()?;
                    crd.status?
                        .conditions?
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                        .then_some(())
                },
            )
            .await;
        }
    })
    .await;
}

/// A short random suffix, so every test has its own names in the shared cluster.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = nanos ^ (std::process::id() << 16);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..5)
        .map(|i| alphabet[((n >> (i * 5)) % 36) as usize] as char)
        .collect();
    format!("{prefix}-{suffix}")
}

/// Poll `check` until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace"),
    )
    .await
    .expect("namespace created");
}

/// Apply a `PreviewTemplate` into `namespace`.
pub async fn apply_template(client: &Client, namespace: &str, name: &str, spec: serde_json::Value) {
    let api: Api<PreviewTemplate> = Api::namespaced(client.clone(), namespace);
    let body = json!({
        "apiVersion": "prenv.dev/v1alpha1",
        "kind": "PreviewTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply("prenv-tests").force(),
        &Patch::Apply(&body),
    )
    .await
    .expect("template applied");
}

/// The demo app's image (serves `sha=$GIT_SHA` and the `FLAG_` variables on port 8080), pushed
/// to the cluster's registry once per run (`PRENV_TEST_APP_IMAGE` when the caller did it).
pub fn app_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| pushed_image("PRENV_TEST_APP_IMAGE", "scripts/demo-app/build.sh"))
}

/// prenv's own image in the cluster's registry (`PRENV_TEST_IMAGE` when the caller pushed it,
/// else built from the working tree with `scripts/image.sh`).
pub fn prenv_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| pushed_image("PRENV_TEST_IMAGE", "scripts/image.sh"))
}

/// The image reference `variable` names, or the last output line of `script REGISTRY`, which
/// builds the image and pushes it to the cluster's registry.
fn pushed_image(variable: &str, script: &str) -> String {
    if let Ok(image) = std::env::var(variable) {
        return image;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join(script))
        .arg(registry())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{script} runs: {e}"));
    assert!(out.status.success(), "{script} failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap_or_default().trim().to_string()
}

/// The node's address (the cluster bridge's gateway): where pods reach this host, so a GitHub
/// stand-in for prenv's pods listens there. Read from the kubeconfig's server URL.
pub fn node_ip() -> std::net::IpAddr {
    let text = std::fs::read_to_string(kubeconfig()).expect("kubeconfig readable");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("kubeconfig names its server");
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.parse().expect("the server is an IP address")
}

/// The cluster's containerd socket (next to its kubeconfig).
pub fn containerd_socket() -> PathBuf {
    kubeconfig()
        .parent()
        .expect("cluster dir")
        .join("containerd.sock")
}

/// A template with a ConfigMap, a Deployment and a Service that all carry the head SHA.
pub fn web_template(repository: &str) -> serde_json::Value {
    json!({
        "repository": repository,
        "url": "https://pr-{{ pr.number }}.{{ template }}.preview.example.com",
        "resources": web_resources(),
    })
}

/// The demo app at the PR's head: a Deployment whose pod serves `sha=<head>` once ready (a real
/// readiness probe), behind a Service, configured by a ConfigMap. Runs under the preview's
/// `restricted` pod security.
pub fn web_resources() -> String {
    WEB_RESOURCES.replace("APP_IMAGE", app_image())
}

const WEB_RESOURCES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  HEAD_SHA: "{{ pr.head_sha }}"
  PR_TITLE: {{ pr.title }}
  URL: {{ url }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: "APP_IMAGE"
        # In the pod template, so that a push rolls the pods (the image stays the same).
        env: [{name: GIT_SHA, value: "{{ pr.head_sha }}"}]
        envFrom:
        - configMapRef: {name: app-config}
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
        # Small: every test's previews share one 2-core node, and killed prenvs leave theirs.
        resources:
          requests: {cpu: 5m, memory: 16Mi}
          limits: {cpu: 100m, memory: 64Mi}
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
          seccompProfile: {type: RuntimeDefault}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
"#;

/// What the preview's Service `name` in `namespace` answers on `GET /` (through kube-proxy,
/// from the host) right now, if it exists and answers with success.
pub async fn try_served(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), namespace);
    let ip = api.get_opt(name).await.ok()??.spec?.cluster_ip?;
    // A new connection per try: one made before kube-proxy routed the Service must not be
    // reused.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .ok()?;
    let resp = http.get(format!("http://{ip}/")).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// Wait until the preview's Service `name` serves `sha` (`sha=` in the demo app's answer): old
/// pods may still answer for a moment after a rollout.
pub async fn wait_served_sha(client: &Client, namespace: &str, name: &str, sha: &str) {
    let want = format!("sha={sha}");
    wait_for(
        &format!("{namespace}/{name} to serve {sha}"),
        Duration::from_secs(180),
        || async {
            try_served(client, namespace, name)
                .await?
                .lines()
                .any(|l| l == want)
                .then_some(())
        },
    )
    .await;
}

/// Two free loopback ports.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Wait until the `prenv serve` whose admin port is at `admin_url` answers `/readyz` (its log
/// at `log` is named when it does not).
pub async fn wait_ready(admin_url: &str, log: &Path) {
    let ready = format!("{admin_url}/readyz");
    let http = reqwest::Client::new();
    wait_for(
        &format!("prenv ready (log: {})", log.display()),
        Duration::from_secs(30),
        || {
            let http = http.clone();
            let ready = ready.clone();
            async move {
                let resp = http.get(&ready).send().await.ok()?;
                resp.status().is_success().then_some(())
            }
        },
    )
    .await;
}

/// A same-repository pull request by `octocat` with this title.
pub fn new_pr(title: &str) -> NewPr {
    NewPr {
        title: title.to_string(),
        author: "octocat".to_string(),
        head_ref: "feature/checkout".to_string(),
        base_ref: "main".to_string(),
        ..Default::default()
    }
}

/// The head commit a `pull_request` delivery carried.
pub fn head_sha(delivered: &github_standin::Delivered) -> String {
    delivered.payload["pull_request"]["head"]["sha"]
        .as_str()
        .expect("delivery has a head sha")
        .to_string()
}

/// Whether namespace `name` exists (terminating or not).
pub async fn namespace_exists(client: &Client, name: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get namespace")
        .is_some()
}

/// `prenv serve` as a real process, scoped to one namespace.
pub struct Prenv {
    child: Option<Child>,
    pub port: u16,
    pub admin_port: u16,
    namespace: String,
    extra_args: Vec<String>,
    log: PathBuf,
}

impl Prenv {
    pub async fn start(namespace: &str, github: &StandIn) -> Prenv {
        Self::start_with(namespace, github, &[]).await
    }

    /// Start with extra arguments; GitHub feedback goes to `github` with 100 ms write pacing
    /// unless `extra` says otherwise.
    pub async fn start_with(namespace: &str, github: &StandIn, extra: &[&str]) -> Prenv {
        let mut args = vec!["--github-api-url".to_string(), github.url()];
        if !extra.contains(&"--github-write-interval") {
            args.extend(["--github-write-interval".to_string(), "100ms".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut prenv = Prenv {
            child: None,
            port: free_port(),
            admin_port: free_port(),
            namespace: namespace.to_string(),
            extra_args: args,
            log: Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prenv-{namespace}.log")),
        };
        prenv.launch().await;
        prenv
    }

    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/webhooks/github", self.port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_prenv"))
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", self.admin_port)])
            .args(["--namespace", &self.namespace])
            .args(&self.extra_args)
            .env("KUBECONFIG", kubeconfig())
            .env("PRENV_WEBHOOK_SECRET", SECRET)
            .env(
                "GITHUB_TOKEN",
                // Acting as a GitHub App instead when the test says so.
                if self.extra_args.iter().any(|a| a == "--github-app-id") {
                    ""
                } else {
                    TOKEN
                },
            )
            .env("RUST_LOG", "info,prenv=debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prenv starts");
        self.child = Some(child);
        wait_ready(&self.admin_url(), &self.log).await;
    }

    /// Stop the process (SIGTERM, as Kubernetes would), waiting for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Kill the process with SIGKILL (a crash, an OOM kill): nothing is finished or released,
    /// its leader lease runs out on its own.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the process again after [`Prenv::kill`] or [`Prenv::stop`], with the same ports
    /// and arguments, once it answers `/readyz`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "prenv is still running");
        self.launch().await;
    }

    /// The log file of the process (all its runs).
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Prenv {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A pull request from `author`'s fork, with the author association the delivery shows.
pub fn fork_pr(author: &str, association: &str) -> NewPr {
    NewPr {
        title: format!("Change by {author}"),
        author: author.to_string(),
        fork: Some(format!("{author}/shop-fork")),
        author_association: association.to_string(),
        head_ref: "patch-1".to_string(),
        ..Default::default()
    }
}

/// A stand-in GitHub with one repository whose deliveries go to `prenv`.
pub async fn github(repository: &str) -> StandIn {
    let standin = StandIn::start(StandInConfig::default())
        .await
        .expect("stand-in starts");
    standin.add_repo(repository);
    standin.add_token(TOKEN, BOT);
    standin
}

/// One test's world: its own namespace with a template serving its own repository, a GitHub
/// stand-in whose deliveries go to a `prenv serve` scoped to that namespace.
pub struct Scenario {
    pub client: Client,
    /// Namespace of the template and its environments.
    pub ns: String,
    pub template: String,
    pub repo: String,
    pub github: StandIn,
    pub prenv: Prenv,
}

impl Scenario {
    /// Start with the web template, or with the template `spec` makes from the repository name.
    pub async fn start(prefix: &str, spec: impl FnOnce(&str) -> serde_json::Value) -> Scenario {
        Self::start_before(prefix, spec, |_, _| async {}).await
    }

    /// Like [`Scenario::start`], running `before` (with the client and template name) before
    /// prenv starts.
    pub async fn start_before<F, Fut>(
        prefix: &str,
        spec: impl FnOnce(&str) -> serde_json::Value,
        before: F,
    ) -> Scenario
    where
        F: FnOnce(Client, String) -> Fut,
        Fut: Future<Output = ()>,
    {
        Self::start_custom(prefix, spec, before, StandInConfig::default(), &[]).await
    }

    /// The web template, with prenv started with `args`.
    pub async fn start_with_args(prefix: &str, args: &[&str]) -> Scenario {
        Self::start_custom(
            prefix,
            web_template,
            |_, _| async {},
            StandInConfig::default(),
            args,
        )
        .await
    }

    /// The general form: a stand-in made from `config` and prenv started with `args` (where
    /// `{ns}` stands for the scenario's namespace).
    pub async fn start_custom<F, Fut>(
        prefix: &str,
        spec: impl FnOnce(&str) -> serde_json::Value,
        before: F,
        config: StandInConfig,
        args: &[&str],
    ) -> Scenario
    where
        F: FnOnce(Client, String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let client = client().await;
        let ns = unique(prefix);
        let template = unique("shop");
        let repo = format!("acme/{template}");
        create_namespace(&client, &ns).await;
        apply_template(&client, &ns, &template, spec(&repo)).await;
        before(client.clone(), template.clone()).await;
        let github = StandIn::start(config).await.expect("stand-in starts");
        github.add_repo(&repo);
        github.add_token(TOKEN, BOT);
        // `{ns}` in an argument stands for the scenario's namespace.
        let args: Vec<String> = args.iter().map(|a| a.replace("{ns}", &ns)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let prenv = Prenv::start_with(&ns, &github, &args).await;
        github.add_hook(&prenv.webhook_url(), SECRET);
        Scenario {
            client,
            ns,
            template,
            repo,
            github,
            prenv,
        }
    }

    /// Open a pull request titled `title` (see [`new_pr`]): its number and head SHA.
    pub async fn open(&self, title: &str) -> (u64, String) {
        let opened = self
            .github
            .open_pr(&self.repo, new_pr(title))
            .await
            .expect("opened");
        let number = opened.payload["number"].as_u64().expect("number");
        (number, head_sha(&opened))
    }

    /// Name of the environment of pull request `number`.
    pub fn env_name(&self, number: u64) -> String {
        format!("{}-{number}", self.template)
    }

    /// Default name of the preview namespace of pull request `number`.
    pub fn preview_ns(&self, number: u64) -> String {
        format!("{}-pr-{number}", self.template)
    }

    pub async fn wait_env(
        &self,
        number: u64,
        what: &str,
        pred: impl Fn(&PreviewEnvironment) -> bool,
    ) -> PreviewEnvironment {
        wait_environment(&self.client, &self.ns, &self.env_name(number), what, pred).await
    }

    /// Wait until the environment of pull request `number` is in `phase` (e.g. `"Ready"`).
    pub async fn wait_phase(&self, number: u64, phase_name: &str) -> PreviewEnvironment {
        self.wait_env(number, phase_name, |e| {
            phase(e).as_deref() == Some(phase_name)
        })
        .await
    }

    /// Wait until the environment of pull request `number` runs nothing new and waits for an
    /// approval (phase `Pending`, a reason in `spec.awaitingApproval`).
    pub async fn wait_awaiting_approval(&self, number: u64, what: &str) -> PreviewEnvironment {
        self.wait_env(number, what, |e| {
            phase(e).as_deref() == Some("Pending") && e.spec.awaiting_approval.is_some()
        })
        .await
    }

    /// Wait until the environment of pull request `number` has applied head `sha` (phase
    /// `Deploying` or, once its pods are ready, `Ready`).
    pub async fn wait_deployed(&self, number: u64, sha: &str) -> PreviewEnvironment {
        self.wait_env(number, &format!("{sha} applied"), |e| {
            observed_head(e) == Some(sha)
                && matches!(phase(e).as_deref(), Some("Deploying" | "Ready"))
        })
        .await
    }

    /// Wait until prenv's own comment on pull request `number` satisfies `pred`.
    pub async fn wait_bot_comment(&self, number: u64, what: &str, pred: impl Fn(&str) -> bool) {
        wait_for(what, Duration::from_secs(30), || async {
            self.github
                .comments(&self.repo, number)
                .iter()
                .any(|c| c.login == BOT && pred(&c.body))
                .then_some(())
        })
        .await;
    }

    pub async fn wait_env_gone(&self, number: u64) {
        let name = self.env_name(number);
        wait_for("environment deleted", Duration::from_secs(60), || async {
            environment(&self.client, &self.ns, &name)
                .await
                .is_none()
                .then_some(())
        })
        .await;
    }
}

pub async fn environment(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Option<PreviewEnvironment> {
    Api::<PreviewEnvironment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .expect("get environment")
}

/// Wait until the environment satisfies `pred`, returning it.
pub async fn wait_environment(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&PreviewEnvironment) -> bool,
) -> PreviewEnvironment {
    wait_for(what, Duration::from_secs(120), || async {
        environment(client, namespace, name)
            .await
            .filter(|e| pred(e))
    })
    .await
}

/// The environment's condition of `type_`; panics naming it when missing.
pub fn condition(
    env: &PreviewEnvironment,
    type_: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    env.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_).cloned())
        .unwrap_or_else(|| panic!("no {type_} condition on {:?}", env.status))
}

/// The head commit the environment last deployed (`status.observedHeadSha`).
pub fn observed_head(env: &PreviewEnvironment) -> Option<&str> {
    env.status.as_ref()?.observed_head_sha.as_deref()
}

pub fn phase(env: &PreviewEnvironment) -> Option<String> {
    env.status.as_ref()?.phase.map(|p| p.to_string())
}

/// Events recorded about object `name` in `namespace` (events.k8s.io/v1).
pub async fn events_for(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// POST a raw delivery to prenv, signed with `secret` (or with a given signature header).
pub async fn post_delivery(
    url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> (u16, String) {
    try_post_delivery(url, event, delivery, body, signature)
        .await
        .expect("delivery sent")
}

/// [`post_delivery`] that reports a failure to reach prenv (down, killed mid-request) as
/// `Err`, the way GitHub records a failed delivery.
pub async fn try_post_delivery(
    url: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<String>,
) -> Result<(u16, String), reqwest::Error> {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

pub fn sign(body: &[u8]) -> String {
    prenv::receive::signature::sign(SECRET, body)
}
