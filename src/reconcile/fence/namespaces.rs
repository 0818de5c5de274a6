//! Namespaces a preview may never be: Kubernetes' own, prenv's, the template's, and any the
//! platform reserves. Checked before a namespace is created or touched.

use super::FenceError;
use globset::{Glob, GlobSet, GlobSetBuilder};

/// Always reserved, whatever the platform adds.
const BUILT_IN: [&str; 2] = ["kube-*", "default"];

/// Names and patterns (`*` matches any run of characters) no preview namespace may match.
#[derive(Debug, Clone)]
pub struct ReservedNamespaces {
    patterns: Vec<String>,
    set: GlobSet,
}

impl ReservedNamespaces {
    /// The built-in patterns plus `extra` (prenv's own namespace, the platform's list).
    pub fn new<I, S>(extra: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut patterns: Vec<String> = BUILT_IN.iter().map(|p| p.to_string()).collect();
        patterns.extend(extra.into_iter().map(Into::into));
        patterns.sort();
        patterns.dedup();
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            let glob = Glob::new(pattern)
                .map_err(|e| format!("reserved namespace pattern {pattern:?}: {e}"))?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| e.to_string())?;
        Ok(Self { patterns, set })
    }

    /// The first pattern `name` matches, if any.
    fn matching(&self, name: &str) -> Option<&str> {
        let index = self.set.matches(name).into_iter().next()?;
        self.patterns.get(index).map(String::as_str)
    }

    /// Refuse `name` as a preview namespace of a template in `template_namespace`.
    pub fn check(&self, name: &str, template_namespace: &str) -> Result<(), FenceError> {
        let why = if name == template_namespace {
            Some("it is the template's own namespace".to_string())
        } else {
            self.matching(name)
                .map(|p| format!("it matches the reserved namespaces ({p})"))
        };
        match why {
            Some(why) => Err(FenceError::ReservedNamespace(format!(
                "preview namespace {name} is refused: {why}; change the template's `namespace` pattern"
            ))),
            None => Ok(()),
        }
    }
}

impl Default for ReservedNamespaces {
    fn default() -> Self {
        // Only the built-in patterns, which are constant and valid.
        Self::new(Vec::<String>::new()).expect("built-in reserved namespace patterns are valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_prenv_and_platform_namespaces_are_refused() {
        let reserved = ReservedNamespaces::new(["prenv-system", "platform-*"]).expect("valid");
        for name in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "default",
            "prenv-system",
            "platform-ingress",
        ] {
            let refused = reserved.check(name, "team-a").expect_err(name);
            assert_eq!(refused.reason(), "ReservedNamespace");
            assert!(refused.to_string().contains(name), "{refused}");
        }
        // The template's own namespace, whatever its name.
        assert!(reserved.check("team-a", "team-a").is_err());
        for name in ["shop-pr-1", "kubernetes-dashboard-pr-2", "defaults-pr-3"] {
            reserved.check(name, "team-a").expect(name);
        }
    }

    #[test]
    fn a_bad_pattern_is_a_clear_error() {
        let err = ReservedNamespaces::new(["team-[a"]).expect_err("unclosed class");
        assert!(err.contains("team-[a"), "{err}");
    }
}
