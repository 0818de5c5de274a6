//! The committed CRD manifests are exactly what `prenv crds` prints.

#[test]
fn deploy_crds_yaml_matches_prenv_crds() {
    let generated = prenv::model::crds_yaml().expect("CRDs serialize");
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds.yaml"))
            .expect("deploy/crds.yaml exists");
    assert!(
        generated == committed,
        "deploy/crds.yaml is out of date: run `cargo run -- crds > deploy/crds.yaml`"
    );
}
