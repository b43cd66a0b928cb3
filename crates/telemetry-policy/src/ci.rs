//! Detects continuous-integration systems, where nobody can answer a prompt.

use crate::env::EnvSnapshot;

/// Variables that CI vendors set, after the npm `ci-info` package's vendor list.
/// Any of them being set (to anything) means CI, unless `CI=false`.
const VENDOR_VARIABLES: &[&str] = &[
    "AGOLA_GIT_REF",
    "APPCENTER_BUILD_ID",
    "APPVEYOR",
    "BITBUCKET_COMMIT",
    "BITRISE_IO",
    "BUDDY_WORKSPACE_ID",
    "BUILDKITE",
    "BUILD_ID",
    "BUILD_NUMBER",
    "CIRCLECI",
    "CIRRUS_CI",
    "CI_NAME",
    "CF_BUILD_ID",
    "CM_BUILD_ID",
    "CODEBUILD_BUILD_ARN",
    "CONTINUOUS_INTEGRATION",
    "DRONE",
    "DSARI",
    "EAS_BUILD",
    "GERRIT_PROJECT",
    "GITEA_ACTIONS",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "GO_PIPELINE_LABEL",
    "HARNESS_BUILD_ID",
    "HUDSON_URL",
    "JENKINS_URL",
    "LAYERCI",
    "MAGNUM",
    "NETLIFY",
    "NEVERCODE",
    "NOW_BUILDER",
    "PROW_JOB_ID",
    "RELEASE_BUILD_ID",
    "RENDER",
    "RUN_ID",
    "SAILCI",
    "SCREWDRIVER",
    "SEMAPHORE",
    "SOURCEHUT",
    "STRIDER",
    "TASK_ID",
    "TEAMCITY_VERSION",
    "TF_BUILD",
    "TRAVIS",
    "VELA",
    "VERCEL",
    "WOODPECKER",
    "XCS",
    "bamboo_planKey",
];

/// Whether the environment looks like a CI system.
///
/// `CI=false` (or `0`) means not CI whatever else is set, so a developer can run a CI-like
/// shell interactively; any other value of `CI`, or any vendor variable, means CI.
pub fn is_ci(env: &EnvSnapshot) -> bool {
    match env.get("CI") {
        Some(Ok(value)) if is_false(value) => return false,
        Some(_) => return true,
        None => {}
    }
    VENDOR_VARIABLES.iter().any(|name| env.contains(name))
}

fn is_false(value: &str) -> bool {
    let value = value.trim();
    value.eq_ignore_ascii_case("false") || value == "0"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_ci() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("CI", "true")], true),
            (&[("CI", "1")], true),
            (&[("CI", "")], true),
            (&[("CI", "false")], false),
            (&[("CI", "FALSE")], false),
            (&[("CI", "0")], false),
            (&[("CI", "false"), ("GITHUB_ACTIONS", "true")], false),
            (&[("GITHUB_ACTIONS", "true")], true),
            (&[("GITLAB_CI", "true")], true),
            (&[("TF_BUILD", "True")], true),
            (&[("JENKINS_URL", "https://ci.example")], true),
            (&[("bamboo_planKey", "X")], true),
            (&[("HOME", "/root"), ("TERM", "xterm")], false),
        ];
        for (vars, expected) in cases {
            let env = EnvSnapshot::from_pairs(vars.iter().copied());
            assert_eq!(is_ci(&env), *expected, "{vars:?}");
        }
    }
}
