//! Records the git commit the binary is built from (`ORDO_GIT_COMMIT`), for the
//! `vcs.ref.head.revision` resource attribute and `ordo --version` users.

use std::process::Command;

fn main() {
    let commit = std::env::var("ORDO_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let output = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ORDO_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=ORDO_GIT_COMMIT");
    for head in ["../../.git/HEAD", "../../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={head}");
    }
}
