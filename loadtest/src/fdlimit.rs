//! The open-file limit: every signaling session is a socket, and 10,000 of them exceed the
//! usual soft limit of 1,024. The soft limit can be raised up to the hard one without
//! privileges (`setrlimit`, through nix's safe wrapper: the workspace forbids unsafe code).

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to `wanted`, or as far as the hard limit allows, and
/// returns the soft limit now in force.
pub fn raise(wanted: u64) -> std::io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    let target = target(soft, hard, wanted);
    if target > soft {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard).map_err(std::io::Error::from)?;
    }
    Ok(target)
}

/// The soft limit to set: `wanted`, within the hard limit, never lower than now.
fn target(soft: u64, hard: u64, wanted: u64) -> u64 {
    wanted.min(hard).max(soft)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_only_rises_and_stays_within_the_hard_one() {
        assert_eq!(super::target(1024, 65536, 20_000), 20_000);
        assert_eq!(super::target(1024, 4096, 20_000), 4096);
        assert_eq!(super::target(50_000, 65536, 20_000), 50_000);
        assert_eq!(super::target(1024, u64::MAX, 10), 1024);
    }

    #[test]
    fn raising_to_the_current_limit_works() {
        let now = super::raise(0).unwrap();
        assert!(now > 0);
        assert_eq!(super::raise(now).unwrap(), now);
    }
}
